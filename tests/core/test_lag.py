"""Lag: real pipelines against a plain-Python per-event reference.

The reference walks the records in arrival order, one at a time, keeping a list of every
value seen per key::

    record r of key k ─▶ col_lag{p} = seen[k][-p] if len(seen[k]) >= p else fill
                      ─▶ seen[k].append(r.col)

Random keys (ints, strings), random batch boundaries and a snapshot/restore at a random
batch must not change a single output value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidal import Batch, ConfigError, Pipeline, PipelineError
from tidal.core.lag import Lag
from tidal.errors import StateError
from tidal.runtime.executor import Executor
from tidal.runtime.snapshot import decode, encode
from tidal.testing import MemorySink, MemorySource, collect, run

FAST = settings(max_examples=60, deadline=None)


def split(cols: dict[str, Any], cuts: list[int]) -> list[Batch]:
    n = len(next(iter(cols.values())))
    bounds = sorted({0, n, *[c for c in cuts if 0 < c < n]})
    return [
        Batch({k: np.asarray(v)[lo:hi] for k, v in cols.items()})
        for lo, hi in zip(bounds, bounds[1:], strict=False)
    ]


def reference(
    keys: list[Any] | None, cols: dict[str, list[Any]], periods: list[int], fill: Any
) -> dict[str, list[Any]]:
    n = len(next(iter(cols.values())))
    seen: dict[Any, dict[str, list[Any]]] = {}
    out: dict[str, list[Any]] = {f"{c}_lag{p}": [] for c in cols for p in periods}
    for i in range(n):
        k = None if keys is None else keys[i]
        past = seen.setdefault(k, {c: [] for c in cols})
        for c, values in cols.items():
            for p in periods:
                out[f"{c}_lag{p}"].append(past[c][-p] if len(past[c]) >= p else fill)
            past[c].append(values[i])
    return out


def same(a: list[Any], b: list[Any]) -> bool:
    def norm(v: Any) -> Any:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "<missing>"
        return v

    return [norm(v) for v in a] == [norm(v) for v in b]


def build(batches: list[Batch], keyed: bool, periods: list[int], fill: Any) -> Any:
    p = Pipeline("lags")
    s = p.source("in", MemorySource(batches))
    if keyed:
        s = s.key_by("k")
    return p, collect(s.lag("prev", ["x", "tag"], periods=periods, fill=fill))


data = st.integers(1, 120).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 6), min_size=n, max_size=n),
        st.lists(st.integers(-50, 50), min_size=n, max_size=n),
        st.lists(st.integers(0, n), max_size=8),
    )
)


@FAST
@given(
    data,
    st.sampled_from([[1], [2], [1, 3], [3, 1, 2]]),
    st.sampled_from([None, 0]),
    st.booleans(),
    st.booleans(),
)
def test_lag_equals_the_per_event_reference(
    case: Any, periods: list[int], fill: Any, keyed: bool, text_keys: bool
) -> None:
    raw_keys, xs, cuts = case
    keys = [f"key-{k}" for k in raw_keys] if text_keys else raw_keys
    tags = [f"t{v % 5}" for v in xs]
    cols = {"k": keys, "x": xs, "tag": tags}
    p, out = build(split(cols, cuts), keyed, periods, fill)
    run(p, max_wait="0ms")
    got = out.records()
    want = reference(keys if keyed else None, {"x": xs, "tag": tags}, periods, fill)
    assert [r["x"] for r in got] == xs  # order and rows kept
    for name, values in want.items():
        assert same([r[name] for r in got], values), name


@FAST
@given(data, st.sampled_from([[1], [1, 2], [4]]), st.integers(0, 10))
def test_snapshot_restore_mid_stream_gives_identical_output(
    case: Any, periods: list[int], stop_at: int
) -> None:
    keys, xs, cuts = case
    cols = {"k": keys, "x": [float(v) for v in xs], "tag": [f"t{v}" for v in xs]}
    batches = split(cols, cuts)
    p, out = build(batches, True, periods, None)
    Executor(p, max_wait="0ms", handle_signals=False).run()
    whole = out.records()

    p1, out1 = build(batches, True, periods, None)
    ex = Executor(p1, max_wait="0ms", handle_signals=False)
    ex.open()
    for _ in range(min(stop_at, len(batches))):
        ex.step()
    snap = decode(encode(ex.snapshot()))  # through bytes: arrays and JSON, nothing pickled
    p2, out2 = build(batches, True, periods, None)
    Executor(p2, max_wait="0ms", handle_signals=False).run(snapshot=snap)
    resumed = out1.records() + out2.records()
    assert len(resumed) == len(whole)
    for name in [f"{c}_lag{q}" for c in ("x", "tag") for q in periods]:
        assert same([r[name] for r in resumed], [r[name] for r in whole]), name


def test_output_types_follow_the_column_and_the_fill() -> None:
    b = Batch(
        {"i": [1, 2], "f": np.array([1.5, 2.5], np.float32), "b": [True, False], "s": ["x", "y"]}
    )
    none = Lag("l", ["i", "f", "b", "s"]).process(b, 0)[0][1]
    kinds = [none[c].dtype.kind for c in ("i_lag1", "f_lag1", "b_lag1", "s_lag1")]
    assert kinds == ["f", "f", "f", "O"]
    assert none["f_lag1"].dtype == np.float32
    assert none["s_lag1"].tolist() == [None, "x"]
    zero = Lag("l", ["i"], fill=0).process(b, 0)[0][1]
    assert zero["i_lag1"].dtype == np.int64 and zero["i_lag1"].tolist() == [0, 1]


def test_a_missing_column_is_a_clear_error() -> None:
    p = Pipeline("bad")
    s = p.source("in", MemorySource({"price": [1.0, 2.0]}))
    collect(s.lag("prev", ["pirce"]))
    with pytest.raises(PipelineError, match=r"step 'prev': columns \['pirce'\] to lag by are not"):
        run(p)
    p = Pipeline("badkey")
    s = p.source("in", MemorySource({"price": [1.0, 2.0]}))
    collect(s.key_by("sensor").lag("prev", "price"))
    with pytest.raises(PipelineError, match=r"the key column \['sensor'\]"):
        run(p)


def test_clashing_output_columns_and_bad_settings_are_refused() -> None:
    with pytest.raises(PipelineError, match="already has columns"):
        Lag("l", "x").process(Batch({"x": [1], "x_lag1": [2]}), 0)
    for bad in (0, [1, -2], [], "1"):
        with pytest.raises(ConfigError, match="periods must be whole numbers >= 1"):
            Lag("l", "x", periods=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="column names"):
        Lag("l", [])
    with pytest.raises(ConfigError, match="must not repeat"):
        Lag("l", ["x", "x"])


def test_restore_refuses_other_settings() -> None:
    a = Lag("l", "x", periods=[1, 2])
    a.process(Batch({"x": [1, 2, 3]}), 0)
    with pytest.raises(StateError, match="rename the step"):
        Lag("l", "x", periods=[1]).restore(a.snapshot())


def test_bad_keys_go_to_the_dead_letters() -> None:
    p = Pipeline("dl")
    s = p.source("in", MemorySource({"k": ["a", None, "a"], "x": [1.0, 2.0, 3.0]}))
    out = collect(s.key_by("k").lag("prev", "x"))
    summary = run(p)
    assert [(r["x"], r["x_lag1"]) for r in out.records()][1] == (3.0, 1.0)
    assert summary.dead_letters == 1


def test_state_grows_with_keys_not_events() -> None:
    op = Lag("l", "x", periods=[1, 3], key="k")
    rng = np.random.default_rng(0)
    for _ in range(20):
        op.process(Batch({"k": rng.integers(0, 5, 500), "x": rng.normal(size=500)}), 0)
    snap = op.snapshot()
    assert snap["count"].shape == (5,) and snap["hist"]["x"]["values"].shape == (5, 3)


def test_a_sink_sees_the_lags() -> None:
    p = Pipeline("sink")
    s = p.source("in", MemorySource({"y": [1, 0, 0, 1]}))
    sink = MemorySink()
    s.lag("prev", "y", periods=[1, 2], fill=-1).sink("out", sink)
    run(p)
    got = [(r["y_lag1"], r["y_lag2"]) for r in sink.records()]
    assert got == [(-1, -1), (1, -1), (0, 1), (0, 0)]
