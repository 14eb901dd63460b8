"""``tidal demo --learn``: the retrain -> shadow -> promote cycle happens, on screen."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidal.cli import main


def test_demo_learn_shows_the_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--learn", "--events", "8000", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    steps = [ln.split()[2] for ln in out.splitlines() if ln.startswith("  row")]
    loop = [s for s in steps if s != "drift"]
    assert loop[:5] == ["retrain_started", "retrain_finished", "registered", "shadow_score",
                        "promoted"], out  # fmt: skip
    assert "1 promotion(s)" in out
    assert (tmp_path / "learn" / "registry").is_dir()
