"""bench/detect.py at a tiny size: every detector and River's HST run (no timings asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import detect  # noqa: E402 - bench/ is not a package on the default path

from tidal.core.jit import has_numba  # noqa: E402
from tidal.ml.detect import DETECTORS  # noqa: E402


def test_speed_table_runs_at_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    out = detect.speed(points=3_000, keys=20, batch=1_000, per_key=650, river_points=200)
    fallback = {"hst (numpy engine)"} if has_numba() else set()  # beside numba's hst
    assert set(DETECTORS) | {"river_hst"} | fallback == set(out)
    assert all(single > 0 for single, _ in out.values())
    assert "River HST" in capsys.readouterr().out


def test_river_alerts_use_the_same_hysteresis() -> None:
    import numpy as np

    scores = np.r_[np.zeros(5), np.full(3, 0.99), np.zeros(20), 0.99]
    assert np.flatnonzero(detect.river_alerts(scores, 0.9)).tolist() == [5, 28]
