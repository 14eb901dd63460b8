"""Dedupe: real pipelines against a naive per-record reference.

The reference walks the records in arrival order, one at a time::

    record r ─▶ wm_r = max time seen before r - out_of_orderness
             ─▶ duplicate if an earlier record of r's key has t' + within > wm_r
             ─▶ remember r (kept or not)

Random batch boundaries (and so random points where the operator expires state) must not
change which records are dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from two_stream_helpers import split

from tidal import Batch, ConfigError, Pipeline, PipelineError, bounded
from tidal.core.dedupe import Dedupe, segment_running_max
from tidal.core.watermark import MIN_TIME
from tidal.runtime.executor import Executor
from tidal.runtime.snapshot import decode, encode
from tidal.testing import MemorySink, MemorySource, collect, run

FAST = settings(max_examples=50, deadline=None)


def build(batches: list[Batch], within: str, delay: int = 0) -> tuple[Pipeline, MemorySink]:
    p = Pipeline("dedupe")
    s = p.source("in", MemorySource(batches), time="ts", watermark=bounded(f"{delay}ms"))
    return p, collect(s.key_by("k").dedupe("d", within=within))


def reference(keys: list[Any], times: list[int], within: int, delay: int) -> list[int]:
    """Indices of the records that survive."""
    kept, seen, high = [], [], None
    for i, (k, t) in enumerate(zip(keys, times, strict=True)):
        wm = MIN_TIME if high is None else high - delay
        if not any(k2 == k and t2 + within > wm for k2, t2 in seen):
            kept.append(i)
        seen.append((k, t))
        high = t if high is None else max(high, t)
    return kept


@st.composite
def streams(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(0, 60) | st.integers(30, 60))
    step = draw(st.sampled_from([10, 50, 200]))
    jitter = draw(st.sampled_from([0, 3, 30]))
    offs = draw(
        st.lists(st.integers(-jitter, jitter).map(lambda o: 10 * o), min_size=n, max_size=n)
    )
    pool = draw(st.sampled_from([[1], [1, 2], [1, 2, 3, 4], list(range(10))]))
    keys = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    as_str = draw(st.booleans())
    cut_here = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return {
        "k": [f"key{k}" for k in keys] if as_str else keys,
        "ts": [5_000 + step * i + o for i, o in enumerate(offs)],
        "id": list(range(n)),
        "cuts": [i for i, c in enumerate(cut_here) if c and i > 0],
    }


def cols_of(data: dict[str, Any]) -> dict[str, Any]:
    keys = np.array(
        data["k"], dtype=object if data["k"] and isinstance(data["k"][0], str) else np.int64
    )
    return {"k": keys, "ts": np.array(data["ts"], dtype=np.int64), "id": np.array(data["id"])}


def test_module_timeline() -> None:
    data = {"k": ["k", "k", "x", "k", "k"], "ts": [10_000, 12_000, 40_000, 41_000, 43_000]}
    p, out = build([Batch(data)], "5s")
    summary = run(p)
    assert [(r["k"], r["ts"]) for r in out.records()] == [
        ("k", 10_000),
        ("x", 40_000),
        ("k", 41_000),
    ]
    assert summary.counts["duplicates"] == 2


def test_builder_needs_a_key_and_a_duration() -> None:
    p = Pipeline("e")
    s = p.source("in", MemorySource({"k": [1], "ts": [0]}), time="ts")
    with pytest.raises(PipelineError, match="key_by"):
        s.dedupe("d", within="1s")
    with pytest.raises(ConfigError):
        s.key_by("k").dedupe("d", within="-1s")
    with pytest.raises(ConfigError):
        Dedupe("d", "k", -5)


def test_state_expires_and_ids_are_reused() -> None:
    op = Dedupe("d", "k", within_ms=100)
    op.process(Batch({"k": ["a", "b"]}, time=[0, 50], wm=[0, 0]), 0)
    assert len(op.keys) == 2
    op.on_watermark(100)  # a: 0 + 100 <= 100 expires; b: 150 > 100 stays
    assert len(op.keys) == 1
    ((_, out),) = op.process(Batch({"k": ["c", "a", "b"]}, time=[100, 100, 100], wm=[100] * 3), 0)
    assert out["k"].tolist() == ["c", "a"]  # b is still remembered; a starts afresh
    assert op.keys.capacity == 3  # c took a's old id, a got a fresh one


def test_state_grows_with_live_keys_only() -> None:
    n = 5_000
    times = np.arange(n, dtype=np.int64) * 10
    keys = np.arange(n) % 2_000  # every key repeats after 20 s of event time
    p, out = build(split({"k": keys, "ts": times}, list(range(100, n, 100))), "1s")
    op = p.nodes["d"].op
    assert isinstance(op, Dedupe)
    ex = Executor(p, max_wait="0ms", handle_signals=False)
    ex.open()
    peak = 0
    while ex.step():
        peak = max(peak, len(op.keys))
    ex.finish(drain=True)
    assert len(out) == n  # repeats come 20 s later, after the 1 s state expired
    assert peak <= 250 and len(op.keys) == 0
    assert len(op.max_t) <= 512


@FAST
@given(
    data=streams(),
    within=st.sampled_from([0, 10, 100, 1_000, 10_000]),
    delay=st.sampled_from([0, 50, 500]),
)
def test_dedupe_matches_per_record_reference(data: dict[str, Any], within: int, delay: int) -> None:
    p, out = build(split(cols_of(data), data["cuts"]), f"{within}ms", delay)
    summary = run(p)
    want = reference(data["k"], data["ts"], within, delay)
    assert [r["id"] for r in out.records()] == want
    assert summary.counts.get("duplicates", 0) == len(data["id"]) - len(want)
    op = p.nodes["d"].op
    assert isinstance(op, Dedupe)
    assert len(op.keys) == 0  # the final watermark expires everything


@FAST
@given(data=streams(), steps=st.integers(0, 10), within=st.sampled_from([100, 1_000]))
def test_snapshot_restore_matches_an_uninterrupted_run(
    data: dict[str, Any], steps: int, within: int
) -> None:
    def fresh() -> tuple[Pipeline, MemorySink]:
        return build(split(cols_of(data), data["cuts"]), f"{within}ms", 50)

    p0, out0 = fresh()
    run(p0)
    p1, out1 = fresh()
    ex = Executor(p1, max_wait="0ms", handle_signals=False)
    ex.open()
    for _ in range(steps):
        ex.step()
    snap = decode(encode(ex.snapshot()))
    p2, out2 = fresh()
    Executor(p2, max_wait="0ms", handle_signals=False).run(snapshot=snap)
    assert [r["id"] for r in out1.records() + out2.records()] == [r["id"] for r in out0.records()]


def test_segment_running_max_with_times_too_far_apart_to_lift() -> None:
    big = 2**61
    values = np.array([big, -big, 0, -big, big, 3, -big], dtype=np.int64)
    seg = np.array([0, 1, 1, 2, 2, 3, 3])
    got = segment_running_max(values, seg)
    assert got.tolist() == [big, -big, 0, -big, big, 3, 3]


def test_expiry_is_exact_at_the_edge() -> None:
    op = Dedupe("d", "k", within_ms=100)
    op.process(Batch({"k": ["a"]}, time=[0], wm=[0]), 0)
    op.on_watermark(99)  # 0 + 100 > 99: a is still remembered
    assert len(op.keys) == 1
    ((_, out),) = op.process(Batch({"k": ["a", "a"]}, time=[5, 200], wm=[99, 100]), 0)
    assert len(out) == 0  # both: 5 + 100 > 100 as well


@FAST
@given(
    values=st.lists(st.integers(-(2**61), 2**61) | st.integers(-50, 50), min_size=1, max_size=30),
    data=st.data(),
)
def test_segment_running_max_against_a_loop(values: list[int], data: Any) -> None:
    starts = data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values)))
    seg = np.cumsum([True, *starts[1:]]) - 1
    want, cur = [], None
    for i, v in enumerate(values):
        cur = v if i == 0 or seg[i] != seg[i - 1] else max(cur, v)  # type: ignore[type-var]
        want.append(cur)
    got = segment_running_max(np.array(values, dtype=np.int64), seg)
    assert got.tolist() == want
