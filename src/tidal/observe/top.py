"""``tidal top``: a running pipeline's live figures in the terminal, for servers without a browser.

A run that is observed (``tidal demo``, or ``tidal run --ui/--metrics-port`` with
checkpoints, or ``--live``) rewrites ``<data dir>/live/<pipeline>.json`` once a second with
the dashboard's snapshot (:class:`~tidal.observe.live.LiveRun`). :func:`find_live` finds
those files, :func:`read_live` reads one, and :func:`render` draws a frame with rich: the
run's totals and rates, latency, watermark lag, every step's records and rate, checkpoints,
models, the latest dead letters and alerts. Rates come from two successive snapshots.

Example:
    >>> import io
    >>> from rich.console import Console
    >>> snap = {"pipeline": "p", "state": "running", "time": 10.0, "events": 500,
    ...         "steps": {"in": {"in": 0, "out": 500, "batches": 0, "seconds": 0, "late": 0}},
    ...         "graph": {"nodes": [{"name": "in", "kind": "source", "type": "S"}]}}
    >>> console = Console(width=100, record=True, file=io.StringIO())
    >>> console.print(render(snap))
    >>> "500" in console.export_text()
    True
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

__all__ = ["find_live", "read_live", "render"]

STALE_S = 5.0
"""A live file older than this, of a run that has not finished, is shown as stale."""


def find_live(data_dir: str | os.PathLike[str]) -> list[Path]:
    """The live files under ``data_dir``, newest first."""
    folder = Path(data_dir) / "live"
    if not folder.is_dir():
        return []
    files = [p for p in folder.glob("*.json") if not p.name.startswith(".")]
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)


def read_live(path: Path) -> dict[str, Any] | None:
    """The snapshot in a live file (``None`` if it is gone or half-written)."""
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        data["_age_s"] = max(0.0, time.time() - path.stat().st_mtime)
    except OSError:
        data["_age_s"] = None
    return data


def _n(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.1f}"
    return f"{int(v):,}"


def _ms(v: Any) -> str:
    return "-" if v is None else f"{float(v):.1f}ms"


def _rate(now: dict[str, Any], before: dict[str, Any] | None, get: Any) -> float | None:
    if before is None:
        return None
    dt = float(now.get("time", 0)) - float(before.get("time", 0))
    if dt <= 0:
        return None
    try:
        return (float(get(now)) - float(get(before))) / dt
    except (KeyError, TypeError):
        return None


def _state(snap: dict[str, Any]) -> Text:
    state = str(snap.get("state", "?"))
    age = snap.get("_age_s")
    if state == "running" and age is not None and age > STALE_S:
        return Text(f"stale ({age:.0f}s without an update)", style="bold red")
    return Text(state, style="bold green" if state == "running" else "bold")


def render(snap: dict[str, Any], before: dict[str, Any] | None = None) -> RenderableType:
    """One frame of ``tidal top`` for a snapshot (``before``: the previous one, for rates)."""
    rate = _rate(snap, before, lambda s: s["events"])
    lat = snap.get("latency_ms") or {}
    head = Text.assemble(
        ("tidal top ", "bold cyan"),
        (str(snap.get("pipeline", "?")), "bold"),
        "  ",
        _state(snap),
        f"   events {_n(snap.get('events'))}",
        f"   {_n(rate)} ev/s" if rate is not None else "",
        f"   p50 {_ms(lat.get('p50'))}  p99 {_ms(lat.get('p99'))}",
        f"   dead {_n((snap.get('dead_letters') or {}).get('count'))}",
        f"   late {_n(snap.get('late'))}",
        f"   alerts {_n((snap.get('alerts') or {}).get('total'))}",
    )
    parts: list[RenderableType] = [head]
    if snap.get("ui"):
        parts.append(Text(f"dashboard: {snap['ui']}", style="dim"))
    steps = Table(title="steps", title_justify="left", expand=False)
    for col in ("step", "in", "out", "in/s", "late", "ms/batch"):
        steps.add_column(col, justify="left" if col == "step" else "right")
    kinds = {n["name"]: n.get("kind") for n in (snap.get("graph") or {}).get("nodes", [])}
    for name, s in (snap.get("steps") or {}).items():
        key = "out" if kinds.get(name) == "source" else "in"
        r = _rate(snap, before, lambda x, name=name, key=key: x["steps"][name][key])
        per = 1000 * s["seconds"] / s["batches"] if s.get("batches") else None
        steps.add_row(
            name, _n(s["in"]), _n(s["out"]), _n(r), _n(s.get("late")),
            "-" if per is None else f"{per:.3f}",
        )  # fmt: skip
    parts.append(steps)
    sources = Table(title="sources", title_justify="left")
    for col in ("source", "records", "watermark lag", "consumer lag", "idle partitions"):
        sources.add_column(col, justify="left" if col == "source" else "right")
    for name, s in (snap.get("sources") or {}).items():
        lag = s.get("watermark_lag_s")
        sources.add_row(
            name, _n(s.get("records")), "-" if lag is None else f"{lag:.1f}s",
            _n(s.get("consumer_lag")), f"{s.get('idle_partitions', 0)}/{s.get('partitions', 0)}",
        )  # fmt: skip
    parts.append(sources)
    c = snap.get("checkpoints") or {}
    if c.get("count") or c.get("failures"):
        secs = c.get("last_seconds")
        parts.append(
            Text(
                f"checkpoints {c.get('count', 0)} (failed {c.get('failures', 0)}), last "
                f"#{c.get('last_id')} {_ms(None if secs is None else secs * 1000)} "
                f"{_n(c.get('last_bytes'))} bytes"
            )
        )
    for name, m in (snap.get("models") or {}).items():
        agree = m.get("shadow_agreement")
        parts.append(
            Text(
                f"model {name}: version {m.get('version')}, calls {_n(m.get('calls'))}"
                + ("" if agree is None else f", shadow agreement {100 * agree:.1f}%")
            )
        )
    for d in ((snap.get("dead_letters") or {}).get("recent") or [])[-3:]:
        parts.append(Text(f"dead letter [{d.get('step')}] {d.get('reason')}", style="yellow"))
    for a in ((snap.get("alerts") or {}).get("recent") or [])[-3:]:
        fields = "  ".join(f"{k}={v}" for k, v in a.items() if k not in ("sink", "shown_at"))
        parts.append(Text(f"alert {fields}", style="red"))
    return Group(*parts)
