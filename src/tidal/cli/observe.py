"""Watching a run from the command line: ``--ui``, ``--metrics-port`` and the live file.

``tidal run --ui`` (and ``tidal demo``, where the dashboard is on unless ``--no-ui``) serves
the live dashboard on ``--ui-host``:``--ui-port`` (default ``127.0.0.1:8765``; a busy
default port falls back to any free one) and prints its address. ``--metrics-port P``
serves Prometheus metrics on ``/metrics`` (on the dashboard's port too, when it runs). A
host other than a loopback address needs a token: ``--ui-token`` (``TIDAL_UI_TOKEN``), or
one generated and printed at start; every request must carry it.

An observed run with checkpoints (or ``--live``) also writes its figures once a second to
``<data dir>/live/<pipeline>.json``, which ``tidal top`` shows in the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from tidal.cli.options import _OFF, _count, _flag, _Option, _text
from tidal.errors import ConfigError
from tidal.observe.live import LiveRun, live_file

if TYPE_CHECKING:  # the web server (FastAPI, uvicorn) loads only when a run serves one
    from tidal.observe.web.server import ObserveServer

__all__ = ["DEMO_OBSERVE_OPTIONS", "RUN_OBSERVE_OPTIONS", "observing"]

DEFAULT_UI_PORT = 8765

_UI = _Option("--ui", _flag, False, "serve the live dashboard (see --ui-port)", is_flag=True)
_NO_UI = _Option(
    "--no-ui", _flag, False, "do not serve the live dashboard (on by default)", is_flag=True
)
_UI_PORT = _Option(
    "--ui-port",
    _count,
    None,
    f"the dashboard's port (default {DEFAULT_UI_PORT}, or any free one if that is taken; "
    "0: any free one)",
    "PORT",
)
_UI_HOST = _Option(
    "--ui-host",
    _text,
    "127.0.0.1",
    "the address the dashboard and metrics bind; any but a loopback address needs a token",
    "HOST",
)
_UI_TOKEN = _Option(
    "--ui-token",
    _text,
    None,
    "the token every dashboard/metrics request must carry (generated and printed when "
    "--ui-host is not a loopback address and none is given)",
    "TOKEN",
)
_METRICS_PORT = _Option(
    "--metrics-port", _count, None, "serve Prometheus metrics on /metrics at this port", "PORT"
)
_LIVE = _Option(
    "--live",
    _flag,
    False,
    "write the live figures to <data dir>/live/<pipeline>.json for `tidal top` (on by "
    "default when the run is observed and checkpoints)",
    is_flag=True,
)
RUN_OBSERVE_OPTIONS = (_UI, _UI_PORT, _UI_HOST, _UI_TOKEN, _METRICS_PORT, _LIVE)
DEMO_OBSERVE_OPTIONS = (_NO_UI, _UI_PORT, _UI_HOST, _UI_TOKEN, _METRICS_PORT, _LIVE)


def _start(live: LiveRun, args: argparse.Namespace, port: int, *, ui: bool) -> ObserveServer:
    from tidal.observe.web.server import ObserveServer

    return ObserveServer(live, host=args.ui_host, port=port, token=args.ui_token, ui=ui).start()


@contextlib.contextmanager
def observing(
    args: argparse.Namespace,
    pipeline: str,
    *,
    say: Callable[[str], None] | None,
) -> Iterator[LiveRun | None]:
    """Start what the options ask for; yields the observer for the executor (or ``None``).

    Raises:
        ConfigError: for a port that cannot be bound.
    """
    ui = bool(getattr(args, "ui", False)) or (hasattr(args, "no_ui") and not args.no_ui)
    metrics = args.metrics_port
    live_wanted = bool(args.live) or (
        (ui or metrics is not None) and getattr(args, "checkpoint_interval", _OFF) != _OFF
    )
    if not ui and metrics is None and not live_wanted:
        yield None
        return
    live = LiveRun(live_path=live_file(args.data_dir, pipeline) if live_wanted else None)
    servers: list[ObserveServer] = []
    tell = say or (lambda line: print(line, file=sys.stderr))
    try:
        if ui:
            server = _ui_server(live, args)
            servers.append(server)
            live.ui = server.url
            tell(f"  dashboard: {_address(server)}")
        if metrics is not None and not (ui and metrics == servers[0].port):
            server = _start(live, args, metrics, ui=False)
            servers.append(server)
            tell(f"  metrics: {_address(server, 'metrics')}")
        elif metrics is not None:
            tell(f"  metrics: {_address(servers[0], 'metrics')}")
        if servers and servers[0].token is not None and args.ui_token is None:
            tell("  (a token is required off loopback; it is in the address above)")
        yield live
    finally:
        for server in servers:
            server.stop()


def _ui_server(live: LiveRun, args: argparse.Namespace) -> ObserveServer:
    if args.ui_port is not None:
        return _start(live, args, args.ui_port, ui=True)
    try:
        return _start(live, args, DEFAULT_UI_PORT, ui=True)
    except ConfigError:  # the default port is taken (another run?): any free one
        return _start(live, args, 0, ui=True)


def _address(server: ObserveServer, path: str = "") -> str:
    url = server.url + path
    return url if server.token is None else f"{url}?token={server.token}"
