"""bench/metrics_overhead.py at a tiny size: it runs and prints its tables (no timings)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import metrics_overhead  # noqa: E402 - bench/ is not a package on the default path


def test_metrics_overhead_bench_runs_at_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    out = metrics_overhead.main(
        events=20_000, runs=1, batches=(4_096,), events_per_s=5_000, seconds=0.3, repeat=1
    )
    assert len(out["w1"]) == 1 and len(out["latency"]) == 2 and len(out["hook"]) == 1
    text = capsys.readouterr().out
    assert "metrics off" in text and "metrics on" in text and "W1, max_batch=4,096" in text
