"""bench/drift.py at a tiny size: every detector and River's run on every stream (no timings)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import drift  # noqa: E402 - bench/ is not a package on the default path

from tidal.ml.detect import DRIFT_DETECTORS  # noqa: E402


def test_quality_table_runs_at_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    out = drift.quality(at=1_200, after=600, repeats=1)
    names = {key.split("/", 1)[1] for key in out}
    assert set(DRIFT_DETECTORS) <= names and "river ADWIN" in names
    assert {key.split("/", 1)[0] for key in out} >= {"mean +1σ", "SEA errors", "Hyperplane errors"}
    fa, found, _ = out["mean +1σ/adwin"]
    assert fa == 0.0 and found == 1.0  # a one-sigma shift is found, nothing before it
    assert "false alarms / 10k" in capsys.readouterr().out


def test_speed_table_runs_at_tiny_size() -> None:
    out = drift.speed(points=3_000, keys=10, river_points=300)
    assert set(DRIFT_DETECTORS) <= set(out)
    assert all(one > 0 for one, _ in out.values())
