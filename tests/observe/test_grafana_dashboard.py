"""The Grafana dashboard in deploy/grafana queries only metrics that /metrics exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from observed_pipeline import build
from prometheus_client import generate_latest

from tidal import Executor
from tidal.observe.live import LiveRun
from tidal.observe.prometheus import METRIC_NAMES, registry_for

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "tidal.json"
_SUFFIXES = ("_bucket", "_sum", "_count")


def _queried() -> set[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    assert len(exprs) >= 25
    return {m for e in exprs for m in re.findall(r"\btidal_[a-z_]+", e)}


def test_every_metric_the_dashboard_queries_is_served() -> None:
    pipeline, _ = build(n=600)
    live = LiveRun()
    Executor(pipeline, observer=live, max_batch=128, handle_signals=False).run()
    text = generate_latest(registry_for(live)).decode()
    served = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            served.add(name)
            if kind == "histogram":
                served.update(name + s for s in _SUFFIXES)
            if kind == "counter" and not name.endswith("_total"):
                served.add(name + "_total")
    queried = _queried()
    assert queried - served == set()


def test_the_dashboard_covers_every_metric() -> None:
    queried = {re.sub(r"_(bucket|sum|count)$", "", m) for m in _queried()}
    assert set(METRIC_NAMES) - queried == set()
