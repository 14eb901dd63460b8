"""bench/resplit.py runs end to end at a tiny size (the timings themselves are not checked)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import resplit  # noqa: E402 - bench/ is not a package on the default path


def test_resplit_bench_runs_at_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    resplit.main(keys=3_000, partitions=4)
    out = capsys.readouterr().out
    assert "--workers 2 -> --workers 3" in out and "one process (no --workers)" in out
