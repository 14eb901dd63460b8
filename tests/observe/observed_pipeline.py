"""A small pipeline that exercises every figure the observers show (shared by tests)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tidal import Pipeline, bounded, tumbling
from tidal import aggregations as agg
from tidal.io.generator import GeneratorSource
from tidal.ml.handler import BaseHandler
from tidal.testing import MemorySink

EPOCH_MS = 1_700_000_000_000


class Double(BaseHandler):
    version = "v1"

    def load(self) -> None:
        pass

    def predict(self, X: Any) -> dict[str, Any]:
        return {"y": X[:, 0] * 2}


def make(seq: np.ndarray) -> dict[str, np.ndarray]:
    """10 ms apart; every 100th time unreadable, every 97th value negative, every 250th late."""
    ts = (EPOCH_MS + seq * 10).astype(object)
    late = seq % 250 == 249
    ts[late] = EPOCH_MS + seq[late] * 10 - 5_000
    ts[seq % 100 == 50] = "soon"
    value = (seq % 50).astype(np.float64)
    value[seq % 97 == 96] = -1.0
    value[seq % 400 == 399] = 1e6
    return {"ts": ts, "key": seq % 5, "value": value}


def build(n: int = 3000, rate: float | None = None) -> tuple[Pipeline, dict[str, MemorySink]]:
    p = Pipeline("observed")
    sinks = {"alerts": MemorySink(), "scores": MemorySink(), "late": MemorySink()}
    s = p.source(
        "in", GeneratorSource(make, rate=rate, total=n), time="ts", watermark=bounded("100ms")
    )
    checked = s.validate("validate", {"value must be >= 0": lambda b: b["value"] >= 0})
    win = checked.key_by("key").window(
        "win", tumbling("1s"), {"n": agg.count(), "mean": agg.mean("value")}
    )
    win.late.sink("late", sinks["late"])
    scored = win.predict("model", Double(), features=["mean"])
    scored.sink("scores", sinks["scores"])
    spikes = checked.detect("detect", "median_mad", value="value")
    spikes.filter("anomalies", lambda b: b["alert"]).sink("alerts", sinks["alerts"])
    return p, sinks
