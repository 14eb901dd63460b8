"""Windowers: ``tumbling``, ``sliding`` and ``session`` (see :mod:`tidal.core.windows`)."""

from tidal.core.windows import Session, Sliding, Tumbling, session, sliding, tumbling

__all__ = ["Session", "Sliding", "Tumbling", "session", "sliding", "tumbling"]
