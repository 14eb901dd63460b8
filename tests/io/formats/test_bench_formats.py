"""bench/formats.py at a tiny size: every format's decoded columns equal the records."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import formats  # noqa: E402 - bench/ is not a package on the default path


def test_formats_bench_runs_and_checks_every_format(capsys: pytest.CaptureFixture[str]) -> None:
    result = formats.main(3_000, runs=1, chunk=1_000)
    assert {"json", "json (reference)", "avro", "protobuf", "arrow IPC", "log arrow IPC"} <= set(
        result
    )
    assert all(v > 0 for r in result.values() for v in r.values())
    assert 95 <= result["json"]["bytes"] <= 105  # the 100-byte records of the log benchmark
    assert "Value formats, one core" in capsys.readouterr().out


def test_the_check_catches_a_wrong_decode() -> None:
    batch = formats.records(10)
    wrong = dict(batch.columns, seq=batch["seq"] + (batch["seq"] == 3))
    with pytest.raises(AssertionError):
        formats.check(wrong, batch, "tampered")
