"""``tidal top``: a running pipeline's live figures in the terminal.

::

    tidal top [--data-dir .tidal] [--pipeline NAME] [--interval 1s] [--once]

It reads ``<data dir>/live/<pipeline>.json``, which an observed run rewrites once a second
(see :mod:`tidal.cli.observe`), and redraws until the run finishes or Ctrl-C. ``--once``
prints one frame and exits (status 0 for a running or finished run, 1 when the file is
stale). Without ``--pipeline`` it shows the most recently updated run in the data dir.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from tidal.cli.options import _DATA_DIR, _duration, _flag, _Option, _text
from tidal.core.duration import to_seconds
from tidal.errors import ConfigError
from tidal.observe.live import live_file
from tidal.observe.top import STALE_S, find_live, read_live, render

__all__ = ["_add_top"]

_PIPELINE = _Option(
    "--pipeline", _text, None, "the pipeline to show (default: the latest updated)", "NAME"
)
_INTERVAL = _Option("--interval", _duration, "1s", "how often to redraw", "DURATION")
_ONCE = _Option("--once", _flag, False, "print one frame and exit", is_flag=True)
_OPTIONS = (_DATA_DIR, _PIPELINE, _INTERVAL, _ONCE)


def _add_top(commands: Any) -> None:
    p = commands.add_parser(
        "top",
        help="live figures of a running pipeline, in the terminal",
        description=(
            "Show the live figures a run writes to <data dir>/live/ (tidal demo, or tidal "
            "run with --ui/--metrics-port and checkpoints, or --live)."
        ),
    )
    for opt in _OPTIONS:
        opt.add_to(p)
    p.set_defaults(handler=_top, options=_OPTIONS)


def _path(args: argparse.Namespace) -> Any:
    if args.pipeline:
        path = live_file(args.data_dir, args.pipeline)
        if not path.exists():
            msg = (
                f"no live figures of pipeline {args.pipeline!r} in {args.data_dir}/live; is it "
                "running with --ui, --metrics-port or --live, and this --data-dir?"
            )
            raise ConfigError(msg)
        return path
    found = find_live(args.data_dir)
    if not found:
        msg = (
            f"no running pipeline writes live figures under {args.data_dir}/live; start one "
            "with `tidal demo` or `tidal run FILE.py --live` (and the same --data-dir)"
        )
        raise ConfigError(msg)
    return found[0]


def _top(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    path = _path(args)
    console = Console()
    snap = read_live(path)
    if snap is None:
        msg = f"cannot read {path}; is a run writing it?"
        raise ConfigError(msg)
    if args.once:
        console.print(render(snap))
        stale = snap.get("state") == "running" and (snap.get("_age_s") or 0) > STALE_S
        return 1 if stale else 0
    every = to_seconds(args.interval)
    before: dict[str, Any] | None = None
    with Live(render(snap), console=console, auto_refresh=False) as live:
        while True:
            new = read_live(path)
            if new is not None:
                if snap is not None and new.get("time") != snap.get("time"):
                    before = snap
                snap = new
                live.update(render(snap, before), refresh=True)
                if snap.get("state") == "finished":
                    break
            time.sleep(every)
    return 0
