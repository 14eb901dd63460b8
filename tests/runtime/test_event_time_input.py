"""Bad event times cost their own row, never the batch (issue 8, section 2).

Each test runs a real pipeline: the good rows must reach the window, the bad ones the
dead letters, with a reason and the row's position.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest

from tidal import Pipeline, bounded
from tidal import aggregations as agg
from tidal.core.batch import Batch
from tidal.io.base import BaseSource
from tidal.runtime.eventtime import event_time_ms
from tidal.testing import MemorySink, MemorySource, collect, run
from tidal.windows import tumbling


def _run(times: Any, *, n_good: int, watermark: Any = None) -> tuple[Any, MemorySink, Any]:
    column = np.empty(len(times), dtype=object)
    column[:] = list(times)
    dlq = MemorySink()
    p = Pipeline("t", dead_letters=dlq)
    src = MemorySource({"k": np.zeros(len(times), dtype=np.int64), "ts": column})
    s = p.source("in", src, time="ts", watermark=watermark)
    out = collect(s.key_by("k").window("w", tumbling("1h"), {"n": agg.count()}))
    summary = run(p)
    assert sum(r["n"] for r in out.records()) == n_good
    return summary, dlq, out


def test_iso_timestamps_with_microseconds_are_read() -> None:
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    times = [(start + dt.timedelta(microseconds=868_000 * i)).isoformat() for i in range(1802)]
    times = [t.replace("+00:00", "Z") if i % 2 else t for i, t in enumerate(times)]
    assert times[1] == "2024-01-01T00:00:00.868000Z"
    summary, _, _ = _run(times, n_good=1802)
    assert summary.dead_letters == 0


def test_iso_strings_with_every_precision_and_zone_parse_to_ms() -> None:
    col = np.array(
        [
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.5Z",
            "2024-01-01T00:00:00.123456789+01:00",
            "2024-01-01 00:00:00.25",
        ],
        dtype=object,
    )
    ms, ok = event_time_ms(col, "ms")
    base = 1_704_067_200_000
    assert ok.all()
    assert ms.tolist() == [base, base + 500, base - 3_600_000 + 123, base + 250]


@pytest.mark.parametrize("bad", ["abc", True, None, "2024-13-45T00:00:00Z", [1]])
@pytest.mark.parametrize("good", ["iso", "int"])
def test_one_unreadable_time_costs_only_its_row(bad: Any, good: str) -> None:
    times: list[Any] = (
        [f"2024-01-01T00:00:{i % 60:02d}Z" for i in range(1000)]
        if good == "iso"
        else list(range(1000))
    )
    times[500] = bad
    summary, dlq, _ = _run(times, n_good=999)
    assert summary.dead_letters == 1
    (letter,) = dlq.records()
    assert "event time in column 'ts'" in letter["reason"]


def test_one_iso_string_among_integers_and_a_bool_cost_at_most_their_rows() -> None:
    times: list[Any] = list(range(0, 1000_000, 1000))
    times[10] = "1970-01-01T00:00:10Z"
    times[20] = True
    summary, dlq, _ = _run(times, n_good=999)
    assert summary.dead_letters == 1
    assert "got True" in dlq.records()[0]["reason"]


@pytest.mark.parametrize("bad", [1e300, 2.0**64, float("nan"), float("inf"), -float("inf")])
def test_out_of_range_float_times_are_dead_letters_without_a_warning(bad: float) -> None:
    times = np.arange(100, dtype=np.float64)
    times[7] = bad
    dlq = MemorySink()
    p = Pipeline("t", dead_letters=dlq)
    src = MemorySource({"k": np.zeros(100, dtype=np.int64), "ts": times})
    s = p.source("in", src, time="ts", time_unit="s")
    out = collect(s.key_by("k").window("w", tumbling("1h"), {"n": agg.count()}))
    summary = run(p)  # filterwarnings=error: a RuntimeWarning from a cast fails this test
    assert sum(r["n"] for r in out.records()) == 99
    assert summary.dead_letters == 1
    reason = dlq.records()[0]["reason"]
    assert "event time" in reason and "'ts'" in reason


def test_huge_integers_are_dead_letters() -> None:
    summary, dlq, _ = _run([1, 2**64, 3, 2**62, -(2**63)], n_good=2)
    assert summary.dead_letters == 3
    assert all("out of range" in d["reason"] for d in dlq.records())
    ms, ok = event_time_ms(np.array([5, 2**64 - 1], dtype=np.uint64), "ms")
    assert ok.tolist() == [True, False] and ms[0] == 5


class _Rows(BaseSource):
    """One batch per poll from a list of row lists, with offsets (a replayable source)."""

    def __init__(self, batches: list[list[int]]) -> None:
        super().__init__()
        self.batches = batches
        self.at = 0

    def open(self, positions: Any) -> None:
        self.at = int(positions.get(0, 0))

    def poll(self, max_records: int, timeout: float) -> Batch | None:
        if self.at >= len(self.batches):
            return None
        times = np.asarray(self.batches[self.at], dtype=np.int64)
        first = sum(len(b) for b in self.batches[: self.at])
        self.at += 1
        n = len(times)
        return Batch(
            {"k": np.zeros(n, dtype=np.int64), "ts": times},
            offset=np.arange(first, first + n),
            partition=np.zeros(n, dtype=np.int32),
        )

    def position(self) -> dict[int, Any]:
        return {0: self.at}


YEAR_3000 = 32_503_680_000_000


def _future_run(watermark: Any) -> tuple[Any, MemorySink, MemorySink]:
    batches = [[1000, 2000], [YEAR_3000], [3000 + i for i in range(500)]]
    dlq = MemorySink()
    p = Pipeline("t", dead_letters=dlq)
    s = p.source("in", _Rows(batches), time="ts", watermark=watermark)
    w = s.key_by("k").window("w", tumbling("1s"), {"n": agg.count()})
    late = collect(w.late)
    collect(w)
    return run(p), dlq, late


def test_without_a_guard_a_year_3000_record_makes_every_later_record_late() -> None:
    summary, _, late = _future_run(bounded("1s"))
    assert summary.late == 500 and len(late.records()) == 500


def test_max_future_sends_far_future_records_to_the_dead_letters() -> None:
    summary, dlq, late = _future_run(bounded("1s", max_future="1h"))
    assert summary.late == 0 and late.records() == []
    assert summary.dead_letters == 1
    (letter,) = dlq.records()
    assert letter["reason"].startswith("event time 3000-01-01T00:00:00.000Z is more than 1h ahead")
    assert '"offset":2' in letter["position"]
