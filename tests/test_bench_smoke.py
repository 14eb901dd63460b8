"""The W1 benchmark at a tiny size: the three implementations must agree (no timings)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import w1  # noqa: E402 - bench/ is not a package on the default path


@pytest.mark.parametrize("max_batch", [65_536, 1_024])
def test_w1_implementations_agree(max_batch: int) -> None:
    data = w1.generate(20_000, keys=100)
    results = w1.compute_all(data, max_batch=max_batch)
    ref = results["python"]
    assert len(ref["key"]) > 100  # several windows, many keys
    assert int(ref["count"].sum()) == 20_000
    for name, res in results.items():
        w1.check_same(res, ref, name)


def test_w1_check_catches_a_wrong_result() -> None:
    data = w1.generate(5_000, keys=10)
    res = w1.run_numpy_at(data)
    bad = {**res, "max": res["max"] + np.where(np.arange(len(res["max"])) == 3, 1e-6, 0.0)}
    with pytest.raises(AssertionError, match="max"):
        w1.check_same(bad, res, "tampered")


def test_w1_bench_main_runs_at_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    times = w1.main(20_000, runs=1, keys=100, max_batch=4_096, batch_sizes=(1_024, 4_096))
    assert {"tidal", "numpy-sort", "numpy-at", "python", "tidal@1024"} <= set(times)
    out = capsys.readouterr().out
    assert "W1: 20,000 events" in out and "OPENBLAS_CORETYPE" in out
