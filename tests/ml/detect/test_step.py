"""The detect step in pipelines: keyed, missing values, snapshots through the runtime."""

from __future__ import annotations

import numpy as np
import pytest

from tidal import Batch, Executor, Pipeline
from tidal.errors import ConfigError, PipelineError
from tidal.ml.detect import DetectStep, explain
from tidal.runtime.snapshot import decode, encode
from tidal.testing import MemorySink, MemorySource


def _data(n: int = 3000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    hosts = np.array(["a", "b", "c"], dtype=object)[np.arange(n) % 3]
    v = 100 + rng.normal(0, 2, n) + np.where(hosts == "c", 50.0, 0.0)
    v[2400] = 200.0  # host a
    v[7::97] = np.nan
    return {"host": hosts, "latency": v, "ts": np.arange(n) * 10}


def _batches(cols: dict[str, np.ndarray], size: int = 250) -> list[Batch]:
    n = len(cols["ts"])
    return [Batch({c: v[i : i + size] for c, v in cols.items()}) for i in range(0, n, size)]


def _pipeline(batches: list[Batch]) -> tuple[Pipeline, MemorySink]:
    p = Pipeline("det")
    s = p.source("in", MemorySource(batches), time="ts")
    out = MemorySink()
    s.key_by("host").detect("anomalies", "median_mad", value="latency").sink("out", out)
    return p, out


def test_keyed_detection_in_a_pipeline() -> None:
    cols = _data()
    p, out = _pipeline(_batches(cols))
    summary = p.run()
    rows = out.records()
    assert len(rows) == 3000
    alerts = [r for r in rows if r["alert"]]
    assert [r["ts"] for r in alerts] == [24000]
    assert alerts[0]["host"] == "a" and alerts[0]["anomaly_score"] > 0.9999
    assert summary.counts["anomalies.missing"] == int(np.isnan(cols["latency"]).sum())
    missing = [r for r in rows if r["latency"] != r["latency"]]
    assert all(r["anomaly_score"] != r["anomaly_score"] and not r["alert"] for r in missing)
    assert "above the expected range" in explain(alerts[0], "latency")


def test_snapshot_mid_run_restores_in_a_fresh_pipeline() -> None:
    batches = _batches(_data())
    whole, out = _pipeline(batches)
    Executor(whole, max_wait="0ms", handle_signals=False).run()
    p1, out1 = _pipeline(batches)
    ex = Executor(p1, max_wait="0ms", handle_signals=False)
    ex.open()
    for _ in range(5):
        assert ex.step()
    snap = decode(encode(ex.snapshot()))  # through bytes: nothing pickled
    p2, out2 = _pipeline(batches)
    Executor(p2, max_wait="0ms", handle_signals=False).run(snapshot=snap)
    got = out1.records() + out2.records()
    want = out.records()
    assert len(got) == len(want) == 3000
    assert [r["alert"] for r in got] == [r["alert"] for r in want]
    np.testing.assert_array_equal([r["deviation"] for r in got], [r["deviation"] for r in want])


def test_bad_configuration_and_input() -> None:
    with pytest.raises(ConfigError, match="unknown detector"):
        DetectStep("d", "nope", value="v")
    with pytest.raises(ConfigError, match="one value column"):
        DetectStep("d", "median_mad", value=["a", "b"])
    step = DetectStep("d", "hst", value=["a", "b"])  # multivariate is fine
    assert step.detector.multivariate
    with pytest.raises(PipelineError, match="must be numeric"):
        DetectStep("d", "median_mad", value="v").detect(Batch({"v": ["x", "y"]}))
    with pytest.raises(PipelineError, match="needed"):
        DetectStep("d", "median_mad", value="v").detect(Batch({"w": [1.0]}))
