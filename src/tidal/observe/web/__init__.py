"""The live dashboard: a FastAPI app in a background thread, with plain JS/SVG pages.

See :mod:`tidal.observe.web.server`. The pages in ``static/`` are written for Tidal
(no third-party JavaScript, nothing loaded from the internet).
"""

from tidal.observe.web.server import ObserveServer, is_loopback

__all__ = ["ObserveServer", "is_loopback"]
