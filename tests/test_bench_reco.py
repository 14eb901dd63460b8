"""The recommendation/bandit benchmark at a tiny size: it runs and prints its tables."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import reco  # noqa: E402 - bench/ is not a package on the default path


def test_reco_bench_runs_at_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    reco.cli(["--ratings", "5000", "--river-ratings", "500", "--decisions", "2000",
              "--river-decisions", "100", "--batch", "1024"])  # fmt: skip
    out = capsys.readouterr().out
    for title in ("Online matrix factorization", "Contextual bandits", "Classification"):
        assert title in out
    assert "sklearn digits" in out and "Tidal OnlineMF" in out
