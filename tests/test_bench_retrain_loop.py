"""The retrain-loop benchmark at a small size: it runs, and the loop promotes a candidate."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import retrain_loop  # noqa: E402 - bench/ is not a package on the default path


def test_retrain_loop_bench_runs(capsys: pytest.CaptureFixture[str]) -> None:
    retrain_loop.cli(["--rows", "8000", "--at", "3000"])
    out = capsys.readouterr().out
    assert "after the promotion" in out and "promoted" in out
