"""KeyedState: a columnar per-key table with an event-time TTL.

TTL timeline, ``ttl_ms=100`` (a key expires once ``last touch + ttl <= wm``)::

    touch a@0   touch b@50          expire(100)      expire(150)
    size: 1     size: 2             a gone -> 1      b gone -> 0
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidal import Batch, ConfigError, Pipeline, StateError
from tidal.core.operator import Emit, Operator
from tidal.core.state import KeyedState, restore_column, snapshot_column
from tidal.runtime.executor import Executor
from tidal.runtime.snapshot import decode, encode
from tidal.testing import MemorySink, MemorySource, collect, run

FAST = settings(max_examples=50, deadline=None)


def obj(*values: Any) -> np.ndarray[Any, Any]:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def test_get_set_and_defaults() -> None:
    st_ = KeyedState({"n": np.int64, "x": np.float64, "label": str, "flag": bool})
    ids = st_.keys.ids(obj("a", "b", "a"))
    assert ids.tolist() == [0, 1, 0]
    assert st_.get("n", ids).tolist() == [0, 0, 0]
    assert st_.get("label", ids).tolist() == [None, None, None]
    assert st_.get("flag", ids).tolist() == [False, False, False]
    np.add.at(st_.column("n"), ids, 1)
    st_.set("label", ids[:2], ["first", "second"])
    st_.set("x", ids, np.array([1.0, 2.0, 3.0]))  # repeated ids: the last write wins
    assert st_.get("n", ids).tolist() == [2, 1, 2]
    assert st_.get("x", ids).tolist() == [3.0, 2.0, 3.0]
    assert st_.get("label", ids).tolist() == ["first", "second", "first"]
    assert len(st_) == 2 and st_.names == ["n", "x", "label", "flag"]
    with pytest.raises(KeyError, match="columns are"):
        st_.get("nope", ids)


def test_bad_configuration() -> None:
    with pytest.raises(ConfigError):
        KeyedState({})
    with pytest.raises(ConfigError):
        KeyedState({"n": np.int64}, ttl_ms=-1)


def test_ttl_shrinks_state_and_ids_are_reused() -> None:
    st_ = KeyedState({"n": np.int64}, ttl_ms=100)
    ids = st_.keys.ids(obj("a", "b"))
    st_.touch(ids, np.array([0, 50]))
    st_.set("n", ids, [10, 20])
    assert len(st_) == 2
    assert st_.expire(99).tolist() == [] and len(st_) == 2
    assert st_.expire(100).tolist() == [0] and len(st_) == 1
    # a new key takes the freed id and starts from zero, not from a's old value
    c = st_.keys.ids(obj("c"))
    assert c.tolist() == [0] and st_.get("n", c).tolist() == [0]
    st_.touch(c, np.array([140]))
    assert st_.expire(150).tolist() == [1] and len(st_) == 1
    assert st_.keys.values(np.array([0])).tolist() == ["c"]
    assert st_.keys.capacity == 2  # the table never grew past the live keys


def test_touch_keeps_the_highest_time() -> None:
    st_ = KeyedState({"n": np.int64}, ttl_ms=10)
    ids = st_.keys.ids(np.array([7, 7, 7]))
    st_.touch(ids, np.array([50, 80, 60]))
    assert st_.last_touch(ids[:1]).tolist() == [80]
    st_.touch(ids[:1], np.array([5]))  # an older, out-of-order record does not shorten it
    assert st_.expire(89).tolist() == [] and st_.expire(90).tolist() == [0]


def test_untouched_keys_expire_next_and_no_ttl_keeps_all() -> None:
    with_ttl = KeyedState({"n": np.int64}, ttl_ms=1_000)
    with_ttl.keys.ids(np.array([1, 2]))
    assert with_ttl.expire(-(2**62)).tolist() == [0, 1] and len(with_ttl) == 0
    forever = KeyedState({"n": np.int64})
    forever.keys.ids(np.array([1, 2]))
    assert forever.expire(2**62).tolist() == [] and len(forever) == 2
    forever.release(np.array([0]))
    assert len(forever) == 1


def test_releasing_through_the_key_index_resets_rows() -> None:
    st_ = KeyedState({"n": np.int64})
    ids = st_.keys.ids(np.array([5]))
    st_.set("n", ids, [9])
    st_.keys.release(ids)
    again = st_.keys.ids(np.array([6]))
    assert again.tolist() == ids.tolist() and st_.get("n", again).tolist() == [0]


def test_many_keys_grow_the_table() -> None:
    st_ = KeyedState({"n": np.int64, "s": object}, ttl_ms=0)
    ids = st_.keys.ids(np.arange(10_000))
    np.add.at(st_.column("n"), ids, 1)
    st_.touch(ids, np.arange(10_000))
    assert len(st_) == 10_000 and int(st_.column("n").sum()) == 10_000
    assert len(st_.expire(5_000)) == 5_001 and len(st_) == 4_999


def test_snapshot_round_trip_through_encode() -> None:
    st_ = KeyedState({"n": np.int64, "label": object, "v": np.float32}, ttl_ms=50)
    ids = st_.keys.ids(obj("x", "y", "z"))
    st_.set("n", ids, [1, 2, 3])
    st_.set("label", ids, ["one", None, "three"])
    st_.set("v", ids, [0.5, 1.5, 2.5])
    st_.touch(ids, np.array([0, 10, 100]))
    assert st_.expire(60).tolist() == [0, 1]  # x and y go; their ids are free in the snapshot
    snap = decode(encode(st_.snapshot()))
    assert snap["columns"]["label"]["data"] == [None, None, "three"]
    back = KeyedState({"n": np.int64, "label": object, "v": np.float32}, ttl_ms=50)
    back.restore(snap)
    assert len(back) == 1
    z = back.keys.lookup(obj("z"))
    assert back.get("n", z).tolist() == [3] and back.get("label", z).tolist() == ["three"]
    assert back.get("v", z).dtype == np.float32
    new = back.keys.ids(obj("w"))
    assert new.tolist() in ([0], [1]) and back.get("n", new).tolist() == [0]
    back.touch(new, np.array([100]))
    assert back.expire(150).tolist() == sorted([*new.tolist(), int(z[0])])
    with pytest.raises(StateError):
        KeyedState({"other": np.int64}).restore(snap)


def test_snapshot_column_round_trips() -> None:
    for col in (np.arange(4), np.array([True, False]), obj("a", 1, None), np.zeros((2, 3))):
        back = restore_column(decode(encode({"c": snapshot_column(col)}))["c"])
        assert back.dtype == col.dtype and back.tolist() == col.tolist()


# -- a user's stateful operator on KeyedState, in a real pipeline --------------------------
class RunningCount(Operator):
    """Running count of records per key, forgotten ``ttl`` after a key's last record."""

    outputs = ("main",)

    def __init__(self, name: str, key: str, ttl_ms: int) -> None:
        super().__init__(name)
        self.key = key
        self.state = KeyedState({"n": np.int64}, ttl_ms=ttl_ms)

    def process(self, batch: Batch, port: int) -> Emit:
        assert batch.time is not None
        ids = self.state.keys.ids(batch[self.key])
        order = np.argsort(ids, kind="stable")
        ks = ids[order]
        first = np.r_[True, ks[1:] != ks[:-1]]
        heads = np.flatnonzero(first)
        rank = np.arange(len(ks)) - np.repeat(heads, np.diff(np.r_[heads, len(ks)]))
        counts = np.empty(len(ks), dtype=np.int64)
        counts[order] = self.state.get("n", ks) + rank + 1
        np.add.at(self.state.column("n"), ids, 1)
        self.state.touch(ids, batch.time)
        return [(0, batch.with_columns(n=counts))]

    def on_watermark(self, wm: int) -> Emit:
        self.state.expire(wm)
        return []

    def snapshot(self) -> dict[str, Any]:
        return self.state.snapshot()

    def restore(self, snap: dict[str, Any]) -> None:
        self.state.restore(snap)


def counting_pipeline(batches: list[Batch], ttl: int) -> tuple[Pipeline, MemorySink, Any]:
    p = Pipeline("counts")
    s = p.source("in", MemorySource(batches), time="ts")
    op = RunningCount("count", "k", ttl)
    return p, collect(s.key_by("k").apply(op)), op


def reference_counts(batches: list[Batch], ttl: int) -> list[int]:
    """Counts as the operator defines them: state expires when the watermark advances,
    which the executor does after every batch (to the highest time seen, ``bounded("0s")``)."""
    state: dict[str, tuple[int, int]] = {}  # key -> (count, last touch)
    out: list[int] = []
    high: int | None = None
    for b in batches:
        for k, t in zip(b["k"].tolist(), b["ts"].tolist(), strict=True):
            n, last = state.get(k, (0, t))
            state[k] = (n + 1, max(last, t))
            out.append(n + 1)
            high = t if high is None else max(high, t)
        if high is not None:
            state = {key: v for key, v in state.items() if v[1] + ttl > high}
    return out


@st.composite
def streams(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(0, 60))
    keys = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n))
    gaps = draw(st.lists(st.sampled_from([0, 10, 40, 200]), min_size=n, max_size=n))
    cut_here = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return {
        "k": keys,
        "ts": np.cumsum(gaps).tolist(),
        "cuts": [i for i, c in enumerate(cut_here) if c and i > 0],
    }


def batches_of(data: dict[str, Any]) -> list[Batch]:
    n = len(data["k"])
    bounds = [0, *data["cuts"], n]
    cols = {"k": np.array(data["k"], dtype=object), "ts": np.array(data["ts"], dtype=np.int64)}
    return [
        Batch({c: v[lo:hi] for c, v in cols.items()})
        for lo, hi in zip(bounds, bounds[1:], strict=False)
        if hi > lo
    ] or [Batch(cols)]


@FAST
@given(data=streams())
def test_running_count_with_ttl_matches_reference(data: dict[str, Any]) -> None:
    batches = batches_of(data)
    p, out, op = counting_pipeline(batches, ttl=100)
    run(p)
    assert [r["n"] for r in out.records()] == reference_counts(batches, 100)
    assert len(op.state) == 0  # the end-of-input watermark expires every key


@FAST
@given(data=streams(), steps=st.integers(0, 6))
def test_running_count_snapshot_restore(data: dict[str, Any], steps: int) -> None:
    p0, out0, _ = counting_pipeline(batches_of(data), 100)
    run(p0)
    p1, out1, _ = counting_pipeline(batches_of(data), 100)
    ex = Executor(p1, max_wait="0ms", handle_signals=False)
    ex.open()
    for _ in range(steps):
        ex.step()
    snap = decode(encode(ex.snapshot()))
    p2, out2, _ = counting_pipeline(batches_of(data), 100)
    Executor(p2, max_wait="0ms", handle_signals=False).run(snapshot=snap)
    assert [r["n"] for r in out1.records() + out2.records()] == [r["n"] for r in out0.records()]


@FAST
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(
                st.just("touch"),
                st.lists(st.sampled_from("abcdef"), max_size=5),
                st.integers(0, 500),
            ),
            st.tuples(st.just("expire"), st.just([]), st.integers(0, 600)),
        ),
        max_size=30,
    )
)
def test_live_keys_match_a_dict_model(ops: list[tuple[str, list[str], int]]) -> None:
    ttl = 100
    state = KeyedState({"n": np.int64}, ttl_ms=ttl)
    model: dict[str, tuple[int, int]] = {}  # key -> (count, last touch)
    for kind, keys, t in ops:
        if kind == "touch":
            ids = state.keys.ids(obj(*keys))
            np.add.at(state.column("n"), ids, 1)
            state.touch(ids, np.full(len(ids), t))
            for k in keys:
                n, last = model.get(k, (0, t))
                model[k] = (n + 1, max(last, t))
        else:
            state.expire(t)
            model = {k: v for k, v in model.items() if v[1] + ttl > t}
        assert len(state) == len(model)
        if model:
            names = sorted(model)
            ids = state.keys.lookup(obj(*names))
            assert (ids >= 0).all()
            assert state.get("n", ids).tolist() == [model[k][0] for k in names]
        assert state.keys.capacity <= 6
