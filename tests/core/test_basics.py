"""Durations, batches, key ids and watermarks."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidal import Batch, ConfigError, PipelineError, bounded
from tidal.core.duration import to_millis, to_seconds, to_timedelta
from tidal.core.keys import KeyIndex
from tidal.core.watermark import MIN_TIME


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("250ms", 250),
        ("5s", 5000),
        ("1h", 3_600_000),
        ("1h30m", 5_400_000),
        ("1.5s", 1500),
        ("2min", 120_000),
        (" 3 s ", 3000),
        ("500us", 0),
    ],
)
def test_durations_parse(text: str, ms: int) -> None:
    assert to_millis(text) == ms


def test_durations_accept_timedelta_and_reject_nonsense() -> None:
    assert to_seconds(timedelta(milliseconds=2)) == 0.002
    assert to_timedelta("1d") == timedelta(days=1)
    for bad in ("", "5", "five s", "5 parsecs", "s5", "-1s"):
        with pytest.raises(ConfigError):
            to_timedelta(bad)
    with pytest.raises(ConfigError):
        to_timedelta(5)  # type: ignore[arg-type]


def test_batch_keeps_system_arrays_in_step() -> None:
    b = Batch(
        {"k": ["a", "b", "c"], "v": [1, 2, 3]}, time=[10, 20, 30], wm=[0, 5, 5], offset=[7, 8, 9]
    )
    f = b.filter(np.array([True, False, True]))
    assert f.time.tolist() == [10, 30] and f.offset.tolist() == [7, 9]
    t = b.take(np.array([2, 0]))
    assert t["k"].tolist() == ["c", "a"] and t.wm.tolist() == [5, 0]
    c = Batch.concat([b, t])
    assert len(c) == 5 and c.time.tolist() == [10, 20, 30, 30, 10]
    assert b.with_columns(w=[0, 0, 0]).time is b.time
    with pytest.raises(PipelineError, match="same length"):
        Batch({"a": [1], "b": [1, 2]})
    with pytest.raises(PipelineError, match="boolean mask"):
        b.filter(np.array([1, 0, 1]))
    with pytest.raises(KeyError, match="no column 'zz'"):
        b["zz"]


def test_batch_arrow_round_trip() -> None:
    b = Batch({"s": ["x", None], "f": [1.5, np.nan], "i": [1, 2]})
    back = Batch.from_arrow(b.to_arrow())
    assert back["s"].tolist() == ["x", None]
    assert back["i"].dtype == np.int64 and np.isnan(back["f"][1])


def test_key_index_ids_release_and_reuse() -> None:
    idx = KeyIndex()
    ids = idx.ids(np.array(["x", "y", "x", "z"], dtype=object))
    assert ids.tolist() == [0, 1, 0, 2] and len(idx) == 3
    idx.release(np.array([1]))
    assert len(idx) == 2
    assert idx.ids(np.array(["w"], dtype=object)).tolist() == [1]  # id reused
    assert idx.lookup(np.array(["y", "x"], dtype=object)).tolist() == [-1, 0]
    snap = idx.snapshot()
    other = KeyIndex()
    other.restore(snap)
    assert other.values(np.array([0, 1, 2])).tolist() == ["x", "w", "z"]
    ints = KeyIndex()
    assert ints.ids(np.array([5, 3, 5])).tolist() == [1, 0, 1]  # numbers: in sorted order
    assert ints.values(np.array([1])).dtype == np.int64


@settings(max_examples=100, deadline=None)
@given(
    times=st.lists(st.integers(0, 10_000), max_size=60),
    delay=st.integers(0, 2000),
    cut=st.integers(0, 60),
)
def test_per_record_watermark_matches_sequential_definition(
    times: list[int], delay: int, cut: int
) -> None:
    tracker = bounded(f"{delay}ms").tracker()
    arr = np.array(times, dtype=np.int64)
    got = np.concatenate(
        [tracker.assign(arr[:cut], None, now=0.0), tracker.assign(arr[cut:], None, now=0.0)]
    ).tolist()
    want, high = [], MIN_TIME
    for t in times:
        want.append(MIN_TIME if high == MIN_TIME else high - delay)
        high = max(high, t)
    assert got == want
    assert tracker.current(now=0.0) == (MIN_TIME if not times else max(times) - delay)
