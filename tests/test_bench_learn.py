"""bench/learn.py at a tiny size: every learner runs, River's algorithm matches (no timings)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import learn  # noqa: E402 - bench/ is not a package on the default path


def test_drift_table_runs_at_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    out = learn.drift(samples=2_000)
    assert len(out) == 4 and all(r > 0 for r, _, _ in out.values())
    # the exact mode is River's algorithm: the same predictions, so the same accuracy
    exact = out["Tidal exact per-sample (SGD)"]
    river = out["River LogisticRegression learn_one"]
    assert exact[1:] == river[1:]
    assert "concept drift" in capsys.readouterr().out


def test_packaged_data_sets_table_runs() -> None:
    out = learn.packaged()
    phishing = out[("Phishing", "Tidal, exact SGD lr 0.01 (River's step)")]
    river = out[("Phishing", "River LogisticRegression (SGD lr 0.01)")]
    assert abs(phishing - river) < 0.02  # the same algorithm on the same rows


def test_elec2_pipeline_with_stream_lag_equals_tidal_learn_lags(tmp_path: Path) -> None:
    if not learn.ELEC2.is_file():
        pytest.skip(f"{learn.ELEC2} is not here")
    lines = learn.ELEC2.read_text().splitlines()[:2_001]
    small = tmp_path / "elec2.csv"
    small.write_text("\n".join(lines) + "\n")
    out = learn.elec2(small)
    piped = out["Tidal pipeline: stream.lag 1,2 of label + 6 features, learn (exact SGD lr 0.1)"]
    shifted = out["Tidal logistic, exact SGD lr 0.1 (6 features + 2 lags)"]
    assert piped[1] == shifted[1]  # the same lag features, so the same predictions
    assert piped[1] > out["repeat the last label"][1] - 0.05
