"""The models benchmark at a tiny size: backends agree with the reference (no timings)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import models  # noqa: E402 - bench/ is not on the default path


def test_variants_match_the_float64_reference() -> None:
    mlp = models.MLP()
    X = models.make_rows(500)
    ref = mlp.reference(X)
    assert "onnxruntime fp32" in models.VARIANTS
    for name, make in models.VARIANTS.items():
        h = make(mlp)
        h.load()
        got = h.predict(X)["score"]
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4, err_msg=name)


def test_bench_main_runs_at_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    res = models.main(
        rows=2_000,
        sizes=(1, 64, 2_000),
        events_per_s=5_000,
        seconds=0.2,
        waits=("0ms",),
        throughput_events=20_000,
        max_batch=4_096,
        repeat=1,
    )
    assert all(r["max_abs_diff"] < 1e-4 for r in res["calls"])
    assert all(r["summary"].events == 1_000 for r in res["latency"])
    assert all(r["summary"].events == 20_000 for r in res["throughput"])
    out = capsys.readouterr().out
    assert "Model calls: MLP 20->64->64->1" in out and "p99 ms" in out
