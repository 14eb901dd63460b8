"""Interval join: real pipelines against a naive nested-loop reference.

The reference judges every record against the watermark of its own source when it arrived
(``max time seen so far - out_of_orderness``), then pairs every on-time left row with every
on-time right row of the same key whose time is in the band::

    left  a ──────────────[a.time + lower ........ a.time + upper]
    right b                           ▲ pairs when b.time is in the band
    late: time < watermark at arrival  ─▶ "late" output, joins nothing

Random batch boundaries on both sides (and so random interleavings of the two sources)
must not change the pairs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from two_stream_helpers import arrival_wm, split

from tidal import Batch, ConfigError, Pipeline, PipelineError, bounded
from tidal.core.join import IntervalJoin, segment_search, signed_millis
from tidal.runtime.executor import Executor
from tidal.runtime.snapshot import decode, encode
from tidal.testing import MemorySink, MemorySource, collect, run

FAST = settings(max_examples=50, deadline=None)


# -- helpers -----------------------------------------------------------------------------
def build(
    left: list[Batch],
    right: list[Batch],
    *,
    between: tuple[Any, Any],
    delay: int = 0,
) -> tuple[Pipeline, MemorySink, MemorySink]:
    p = Pipeline("join")
    wm = bounded(f"{delay}ms")
    ls = p.source("left", MemorySource(left), time="ts", watermark=wm)
    rs = p.source("right", MemorySource(right), time="ts", watermark=wm)
    j = ls.key_by("k").interval_join("j", rs.key_by("k"), between=between)
    return p, collect(j), collect(j.late)


@st.composite
def sides(draw: Any, prefix: str) -> dict[str, Any]:
    n = draw(st.integers(0, 40) | st.integers(20, 40))
    step = draw(st.sampled_from([10, 20, 50]))
    start = draw(st.sampled_from([0, 0, 0, 100, 400]))
    jitter = draw(st.sampled_from([0, 3, 15]))  # in 10 ms: times on a grid hit band edges
    offs = draw(
        st.lists(st.integers(-jitter, jitter).map(lambda o: 10 * o), min_size=n, max_size=n)
    )
    pool = draw(st.sampled_from([["a"], ["a", "b"], ["a", "b", "c"]]))
    keys = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    times = [1_000 + start + step * i + o for i, o in enumerate(offs)]
    cut_here = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return {
        "cols": {"k": keys, "ts": times, "id": [f"{prefix}{i}" for i in range(n)]},
        "cuts": [i for i, c in enumerate(cut_here) if c and i > 0],
    }


def reference(
    left: dict[str, Any], right: dict[str, Any], lower: int, upper: int, delay: int
) -> tuple[list[tuple[str, str, int]], list[tuple[str, str]]]:
    lw = arrival_wm(left["ts"], delay)
    rw = arrival_wm(right["ts"], delay)
    l_ok = [t >= w for t, w in zip(left["ts"], lw, strict=True)]
    r_ok = [t >= w for t, w in zip(right["ts"], rw, strict=True)]
    pairs = [
        (left["id"][i], right["id"][j], max(left["ts"][i], right["ts"][j]))
        for i in range(len(l_ok))
        for j in range(len(r_ok))
        if l_ok[i]
        and r_ok[j]
        and left["k"][i] == right["k"][j]
        and left["ts"][i] + lower <= right["ts"][j] <= left["ts"][i] + upper
    ]
    late = [("left", x) for x, ok in zip(left["id"], l_ok, strict=True) if not ok]
    late += [("right", x) for x, ok in zip(right["id"], r_ok, strict=True) if not ok]
    return sorted(pairs), sorted(late)


def pairs_of(out: MemorySink) -> list[tuple[str, str, int]]:
    return sorted(
        (r["id"], r["id_right"], int(t))
        for b in out.batches
        for r, t in zip(b.to_records(), b.time.tolist(), strict=True)
    )


# -- the documented timeline -------------------------------------------------------------
def test_module_timeline() -> None:
    left = [
        Batch({"k": ["u"], "ts": [10_000], "id": ["a1"]}),
        Batch({"k": ["u"], "ts": [15_000], "id": ["a2"]}),
    ]
    right = [
        Batch({"k": ["u", "u"], "ts": [9_000, 12_500], "id": ["b1", "b2"]}),
        Batch({"k": ["u", "u"], "ts": [16_000, 8_000], "id": ["b3", "b4"]}),
    ]
    p, out, late = build(left, right, between=("-1s", "2s"))
    summary = run(p)
    assert [(r["id"], r["id_right"]) for r in out.records()] == [("a1", "b1"), ("a2", "b3")]
    assert [(r["side"], r["id"]) for r in late.records()] == [("right", "b4")]
    assert summary.late == 1


def test_output_columns_time_and_watermark() -> None:
    op = IntervalJoin("j", "user", "uid", 0, 1_000)
    left = Batch(
        {"user": [1, 2], "v": [1.0, 2.0], "uid": ["x", "y"]},
        time=[100, 200],
        wm=[50, 60],
        ingest=[7, 8],
        offset=[0, 1],
    )
    right = Batch(
        {"uid": [1, 1, 2], "v": [10.0, 20.0, 30.0]},
        time=[150, 90, 1_300],
        wm=[70, 80, 90],
        ingest=[9, 9, 9],
        offset=[5, 6, 7],
    )
    assert op.process(left, 0) == []
    emitted = op.process(right, 1)
    assert [port for port, _ in emitted] == [0]
    out = emitted[0][1]
    # right "uid" clashes with a left column: it gets the suffix; keys differ so both stay
    assert out.names == ["user", "v", "uid", "uid_right", "v_right"]
    assert out.to_records() == [{"user": 1, "v": 1.0, "uid": "x", "uid_right": 1, "v_right": 10.0}]
    assert out.time is not None and out.wm is not None and out.offset is not None
    # event time: the later of the two; wm, offset: of the later-arriving row (the right one)
    assert out.time.tolist() == [150] and out.wm.tolist() == [70] and out.offset.tolist() == [5]


def test_right_columns_that_cannot_be_named_raise() -> None:
    op = IntervalJoin("j", "k", "k", 0, 10)
    op.process(Batch({"k": [1], "v": [1], "v_right": [2]}, time=[0], wm=[0]), 0)
    with pytest.raises(PipelineError, match="pass another suffix"):
        op.process(Batch({"k": [1], "v": [3]}, time=[5], wm=[0]), 1)


def test_changing_columns_raise() -> None:
    op = IntervalJoin("j", "k", "k", 0, 10)
    op.process(Batch({"k": [1], "v": [1]}, time=[0], wm=[0]), 0)
    with pytest.raises(PipelineError, match="stable columns"):
        op.process(Batch({"k": [1], "w": [1]}, time=[0], wm=[0]), 0)


def test_builder_errors_and_bounds() -> None:
    p = Pipeline("e")
    a = p.source("a", MemorySource({"k": [1], "ts": [0]}), time="ts")
    b = p.source("b", MemorySource({"k": [1], "ts": [0]}), time="ts")
    with pytest.raises(PipelineError, match="key_by"):
        a.interval_join("j", b.key_by("k"), between=("0s", "1s"))
    with pytest.raises(PipelineError, match="key_by"):
        a.key_by("k").interval_join("j", b, between=("0s", "1s"))
    with pytest.raises(ConfigError, match="lower <= upper"):
        a.key_by("k").interval_join("j", b.key_by("k"), between=("2s", "1s"))
    with pytest.raises(ConfigError):
        a.key_by("k").interval_join("j", b.key_by("k"), between=("-x", "1s"))
    assert signed_millis("-5s") == -5_000
    assert signed_millis(" +1m") == 60_000
    assert signed_millis(timedelta(milliseconds=-250)) == -250
    assert signed_millis("0s") == 0


def test_string_and_int_keys_share_one_index() -> None:
    op = IntervalJoin("j", "k", "k", -5, 5)
    op.process(Batch({"k": ["a", "b"], "x": [1, 2]}, time=[10, 10], wm=[0, 0]), 0)
    _, out = op.process(Batch({"k": ["b", "c"], "y": [3, 4]}, time=[12, 12], wm=[0, 0]), 1)[0]
    assert out.to_records() == [{"k": "b", "x": 2, "y": 3}]
    op2 = IntervalJoin("j2", "k", "k", -5, 5)
    op2.process(Batch({"k": np.array([3, 4], dtype=np.int32)}, time=[10, 10], wm=[0, 0]), 0)
    _, out2 = op2.process(Batch({"k": np.array([4], dtype=np.int64)}, time=[9], wm=[0]), 1)[0]
    assert out2["k"].tolist() == [4]


def test_self_join_pairs_each_row_with_itself_and_others() -> None:
    p = Pipeline("self")
    s = p.source("s", MemorySource({"k": ["a", "a"], "ts": [0, 5], "id": [1, 2]}), time="ts")
    out = collect(s.key_by("k").interval_join("j", s.key_by("k"), between=("0ms", "5ms")))
    run(p)
    assert sorted((r["id"], r["id_right"]) for r in out.records()) == [(1, 1), (1, 2), (2, 2)]


# -- buffers shrink with the watermark ---------------------------------------------------
def test_buffers_are_evicted_and_keys_released() -> None:
    op = IntervalJoin("j", "k", "k", -100, 200)
    op.process(Batch({"k": ["a", "b"]}, time=[1_000, 1_000], wm=[0, 0]), 0)
    op.process(Batch({"k": ["a", "c"]}, time=[1_000, 1_050], wm=[0, 0]), 1)
    assert op.buffered() == (2, 2) and len(op.keys) == 3
    op.on_watermark(1_150)  # right rows leave when wm > b.time - lower = 1_100 / 1_150
    assert op.buffered() == (2, 1) and len(op.keys) == 3
    op.on_watermark(1_151)
    assert op.buffered() == (2, 0) and len(op.keys) == 2
    op.on_watermark(1_201)  # left rows leave when wm > a.time + upper = 1_200
    assert op.buffered() == (0, 0) and len(op.keys) == 0


def test_rows_on_the_eviction_edge_still_join() -> None:
    """wm == a.time + upper keeps a; a right row at exactly that time is on time and joins."""
    op = IntervalJoin("j", "k", "k", -100, 100)
    op.process(Batch({"k": [1], "id": ["a"]}, time=[1_000], wm=[0]), 0)
    op.on_watermark(1_100)
    _, out = op.process(Batch({"k": [1], "id": ["b"]}, time=[1_100], wm=[1_100]), 1)[0]
    assert out.to_records() == [{"k": 1, "id": "a", "id_right": "b"}]
    op.on_watermark(1_101)  # a and b: 1_000 + 100 < 1_101, but b stays until wm > 1_200
    assert op.buffered() == (0, 1)
    _, out = op.process(Batch({"k": [1], "id": ["c"]}, time=[1_200], wm=[1_200]), 0)[0]
    assert out.to_records() == [{"k": 1, "id": "c", "id_right": "b"}]


def test_state_stays_bounded_on_a_long_stream() -> None:
    n = 2_000
    times = np.arange(n, dtype=np.int64) * 10
    keys = np.array([f"k{i}" for i in range(n)], dtype=object)
    left = split({"k": keys, "ts": times, "v": np.arange(n)}, list(range(50, n, 50)))
    right = split({"k": keys, "ts": times + 5, "w": np.arange(n)}, list(range(50, n, 50)))
    p, out, _ = build(left, right, between=("0ms", "20ms"))
    op = p.nodes["j"].op
    assert isinstance(op, IntervalJoin)
    ex = Executor(p, max_wait="0ms", handle_signals=False)
    ex.open()
    peak = 0
    while ex.step():
        peak = max(peak, sum(op.buffered()), len(op.keys))
    ex.finish(drain=True)
    assert len(out) == n
    assert peak < 300  # a few batches' worth, not the whole stream
    assert op.buffered() == (0, 0) and len(op.keys) == 0


# -- properties --------------------------------------------------------------------------
@FAST
@given(
    left=sides("L"),
    right=sides("R"),
    bounds=st.sampled_from([(0, 0), (-50, 50), (0, 200), (-300, -100), (100, 100), (-20, 500)]),
    delay=st.sampled_from([0, 40, 300]),
)
def test_join_matches_nested_loop_reference(
    left: dict[str, Any], right: dict[str, Any], bounds: tuple[int, int], delay: int
) -> None:
    lower, upper = bounds
    p, out, late = build(
        split(left["cols"], left["cuts"]),
        split(right["cols"], right["cuts"]),
        between=(
            f"{lower}ms" if lower >= 0 else f"-{-lower}ms",
            f"{upper}ms" if upper >= 0 else f"-{-upper}ms",
        ),
        delay=delay,
    )
    summary = run(p)
    want_pairs, want_late = reference(left["cols"], right["cols"], lower, upper, delay)
    assert pairs_of(out) == want_pairs
    assert sorted((r["side"], r["id"]) for r in late.records()) == want_late
    assert summary.late == len(want_late)
    for b in out.batches:  # joined rows are never late downstream
        assert b.time is not None and b.wm is not None
        assert (b.time >= b.wm).all()
    op = p.nodes["j"].op
    assert isinstance(op, IntervalJoin)
    assert op.buffered() == (0, 0) and len(op.keys) == 0


@FAST
@given(left=sides("L"), right=sides("R"), steps=st.integers(0, 8), delay=st.sampled_from([0, 100]))
def test_snapshot_restore_matches_an_uninterrupted_run(
    left: dict[str, Any], right: dict[str, Any], steps: int, delay: int
) -> None:
    def fresh() -> tuple[Pipeline, MemorySink, MemorySink]:
        return build(
            split(left["cols"], left["cuts"]),
            split(right["cols"], right["cuts"]),
            between=("-150ms", "100ms"),
            delay=delay,
        )

    p0, out0, late0 = fresh()
    run(p0)
    p1, out1, late1 = fresh()
    ex = Executor(p1, max_wait="0ms", handle_signals=False)
    ex.open()
    for _ in range(steps):
        ex.step()
    snap = decode(encode(ex.snapshot()))
    p2, out2, late2 = fresh()
    Executor(p2, max_wait="0ms", handle_signals=False).run(snapshot=snap)
    assert sorted(pairs_of(out1) + pairs_of(out2)) == pairs_of(out0)
    got_late = sorted(r["id"] for r in late1.records() + late2.records())
    assert got_late == sorted(r["id"] for r in late0.records())


def test_snapshot_stores_strings_as_json_lists() -> None:
    op = IntervalJoin("j", "k", "k", 0, 10)
    op.process(Batch({"k": ["a"], "s": ["x"], "v": [1.5]}, time=[0], wm=[0]), 0)
    snap = decode(encode(op.snapshot()))
    assert snap["left"]["cols"][0]["data"] == ["a"]
    assert isinstance(snap["left"]["cols"][2]["data"], np.ndarray)
    back = IntervalJoin("j", "k", "k", 0, 10)
    back.restore(snap)
    _, out = back.process(Batch({"k": ["a"], "w": [2]}, time=[5], wm=[0]), 1)[0]
    assert out.to_records() == [{"k": "a", "s": "x", "v": 1.5, "w": 2}]


@FAST
@given(
    runs=st.lists(st.lists(st.integers(-20, 20), max_size=8).map(sorted), min_size=1, max_size=6),
    targets=st.lists(st.integers(-25, 25), min_size=6, max_size=6),
    right=st.booleans(),
)
def test_segment_search_is_searchsorted_per_range(
    runs: list[list[int]], targets: list[int], right: bool
) -> None:
    values = np.array([v for r in runs for v in r], dtype=np.int64)
    bounds = np.cumsum([0] + [len(r) for r in runs])
    lo, hi = bounds[:-1], bounds[1:]
    t = np.array(targets[: len(runs)], dtype=np.int64)
    got = segment_search(values, lo, hi, t, right=right)
    side = "right" if right else "left"
    want = [
        int(a) + int(np.searchsorted(values[a:b], x, side=side))
        for a, b, x in zip(lo, hi, t, strict=True)
    ]
    assert got.tolist() == want
