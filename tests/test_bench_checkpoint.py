"""The checkpoint benchmark at a tiny size: it runs, restores after kill -9 (no timings)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import checkpoint  # noqa: E402 - bench/ is not a package on the default path


def test_checkpoint_bench_runs_at_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    cost, recovery = checkpoint.main(2_000, 1, str_keys=(False,))
    assert cost["keys"] == 2_000 and cost["mb"] > 0
    assert recovery["restored_from"] is not None
    assert recovery["events"] > 2_000  # it went on after the restore
    assert recovery["staged_before"] >= 1  # the killed worker left uncommitted output
    out = capsys.readouterr().out
    assert "Checkpoint cost" in out and "Recovery after kill -9" in out
