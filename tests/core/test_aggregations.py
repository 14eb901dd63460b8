"""Aggregations over slots against naive per-slot references.

Every property test feeds the same rows to a state split three ways:

    rows      r0 r1 r2 r3 r4 r5 r6 r7 r8 r9
    chunks    |--c0--|--c1---|c2|---c3---|      random consecutive cuts
    sub-state    A       B     A     C          random; sub-state j owns slots j*S..j*S+S-1

then merges sub-states B, C, ... into A (``dst`` repeats), resets them, and compares A's
results with a plain Python/numpy computation per slot.
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidal.core import aggregations as agg
from tidal.core.aggregations import Aggregation, AggState
from tidal.errors import ConfigError, PipelineError, StateError

S = 5  # slots per sub-state
FAST = settings(max_examples=40, deadline=None)

NUMBERS = st.one_of(
    st.sampled_from([0.0, 1.0, -2.5, 3.0, 3.0, 1e6]),
    st.floats(-1e6, 1e6, allow_subnormal=False),
    st.integers(-1000, 1000).map(float),
    st.just(math.nan),
)


@st.composite
def streams(draw: st.DrawFn, values: st.SearchStrategy[Any] = NUMBERS) -> dict[str, Any]:
    n = draw(st.integers(0, 50))
    slots = draw(st.lists(st.integers(0, S - 1), min_size=n, max_size=n))
    vals = draw(st.lists(values, min_size=n, max_size=n))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(n - 1, 1)), max_size=4))))
    bounds = [0, *[c for c in cuts if c < n], n]
    subs = draw(st.integers(1, 3))
    owner = draw(st.lists(st.integers(0, subs - 1), min_size=len(bounds), max_size=len(bounds)))
    return {
        "slots": np.array(slots, dtype=np.int64),
        "values": vals,
        "chunks": list(zip(bounds[:-1], bounds[1:], owner, strict=False)),
        "subs": subs,
        "roundtrip": draw(st.booleans()),
    }


def as_array(values: list[Any]) -> np.ndarray[Any, Any]:
    if values and all(isinstance(v, str) or v is None for v in values):
        return np.array(values, dtype=object)
    return np.array(values, dtype=np.float64)


def roundtrip(spec: Aggregation, state: AggState) -> AggState:
    """Snapshot to JSON + a pickle-free .npz, restore into a fresh state."""
    snap = state.snapshot()
    arrays = {k: v for k, v in snap.items() if isinstance(v, np.ndarray)}
    rest = {k: v for k, v in snap.items() if not isinstance(v, np.ndarray)}
    assert all(a.dtype.kind in "biuf" for a in arrays.values()), snap
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        loaded = {k: npz[k] for k in npz.files}
    fresh = spec.new_state()
    fresh.restore({**json.loads(json.dumps(rest)), **loaded})
    return fresh


def run(spec: Aggregation, stream: dict[str, Any], weights: list[float] | None = None) -> Any:
    """Feed the stream's chunks to sub-states, merge them into sub-state 0, read slots 0..S-1."""
    state = spec.new_state()
    values = as_array(stream["values"])
    w = None if weights is None else np.array(weights)
    for k, (lo, hi, owner) in enumerate(stream["chunks"]):
        state.update(
            stream["slots"][lo:hi] + owner * S,
            None if spec.column is None else values[lo:hi],
            **({} if w is None else {"weights": w[lo:hi]}),
        )
        if stream["roundtrip"] and k == 0:
            state = roundtrip(spec, state)
    if stream["subs"] > 1:
        src = np.arange(S, S * stream["subs"], dtype=np.int64)
        state.merge(src % S, src)
        state.reset(src)
        empty = spec.new_state().result(src)
        np.testing.assert_array_equal(state.result(src), empty)
    return state.result(np.arange(S, dtype=np.int64))


def per_slot(stream: dict[str, Any]) -> list[list[Any]]:
    out: list[list[Any]] = [[] for _ in range(S)]
    for s, v in zip(stream["slots"].tolist(), stream["values"], strict=True):
        out[s].append(v)
    return out


def clean(values: list[Any]) -> list[Any]:
    return [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


# -- dense aggregations -----------------------------------------------------------------


@FAST
@given(streams())
def test_count_min_max_exact(stream: dict[str, Any]) -> None:
    counts, mins, maxs = (run(a, stream) for a in (agg.count(), agg.min("x"), agg.max("x")))
    assert counts.dtype == np.int64 and mins.dtype == maxs.dtype == np.float64
    for s, vals in enumerate(per_slot(stream)):
        good = clean(vals)
        assert counts[s] == len(vals)
        if good:  # == so that -0.0 and 0.0 are equal, as min() may return either
            assert mins[s] == min(good) and maxs[s] == max(good)
        else:
            assert math.isnan(mins[s]) and math.isnan(maxs[s])


@FAST
@given(streams(), st.integers(0, 2))
def test_sum_mean_var_std_close(stream: dict[str, Any], ddof: int) -> None:
    sums, means = run(agg.sum("x"), stream), run(agg.mean("x"), stream)
    vars_, stds = run(agg.var("x", ddof), stream), run(agg.std("x", ddof), stream)
    for s, vals in enumerate(per_slot(stream)):
        x = np.array(clean(vals))
        scale = float(np.abs(x).sum()) if len(x) else 0.0
        assert abs(sums[s] - math.fsum(x)) <= 1e-9 * scale
        if not len(x):
            assert math.isnan(means[s])
        else:
            assert abs(means[s] - math.fsum(x) / len(x)) <= 1e-9 * scale / len(x)
        if len(x) <= ddof:
            assert math.isnan(vars_[s]) and math.isnan(stds[s])
            continue
        want = float(np.var(x, ddof=ddof))
        tol = 1e-9 * want + 1e-15 * float(np.max(x * x)) + 1e-300  # floor: subnormals
        assert abs(vars_[s] - want) <= tol
        assert abs(stds[s] - math.sqrt(want)) <= 1e-9 * math.sqrt(want) + math.sqrt(tol)


def test_var_is_stable_with_a_large_offset() -> None:
    rng = np.random.default_rng(7)
    noise = rng.normal(size=10_000)
    state = agg.var("x").new_state()
    for part in np.array_split(1e9 + noise, 7):
        state.update(np.zeros(len(part), dtype=np.int64), part)
    got = state.result(np.array([0]))[0]
    assert abs(got / np.var(noise, ddof=1) - 1) < 1e-6


def test_ints_bools_and_objects_cast_to_float() -> None:
    state = agg.sum("x").new_state()
    state.update(np.array([0, 0]), np.array([1, 2], dtype=np.int8))
    state.update(np.array([0, 0]), np.array([True, False]))
    state.update(np.array([0, 0, 0]), np.array([0.5, None, np.nan], dtype=object))
    assert state.result(np.array([0])).tolist() == [4.5]


# -- quantile ---------------------------------------------------------------------------

QS = st.one_of(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 0.99, 1.0]), st.floats(0, 1))


@FAST
@given(streams(), QS, st.sampled_from([0.01, 0.05]))
def test_quantile_within_accuracy_and_split_independent(
    stream: dict[str, Any], q: float, accuracy: float
) -> None:
    spec = agg.quantile("x", q, relative_accuracy=accuracy)
    got = run(spec, stream)
    whole = spec.new_state()
    whole.update(stream["slots"], as_array(stream["values"]))
    assert got.tobytes() == whole.result(np.arange(S)).tobytes()  # bit-identical
    for s, vals in enumerate(per_slot(stream)):
        good = clean(vals)
        if not good:
            assert math.isnan(got[s])
            continue
        want = float(np.quantile(good, q, method="inverted_cdf"))
        assert abs(got[s] - want) <= accuracy * abs(want) * (1 + 1e-9)


def test_quantile_large_stream_against_numpy() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.lognormal(0, 2, 20_000), -rng.exponential(5, 5_000), np.zeros(50)])
    slots = rng.integers(0, 3, len(x))
    for q in (0.0, 0.01, 0.5, 0.77, 1.0):
        state = agg.quantile("x", q).new_state()
        for part in np.array_split(np.arange(len(x)), 9):
            state.update(slots[part], x[part])
        got = state.result(np.arange(3))
        for s in range(3):
            want = np.quantile(x[slots == s], q, method="inverted_cdf")
            assert abs(got[s] - want) <= 0.01 * abs(want) * (1 + 1e-9)


def test_quantile_infinities() -> None:
    state = agg.quantile("x", 1.0).new_state()
    state.update(np.array([0, 0, 1]), np.array([1.0, np.inf, -np.inf]))
    assert state.result(np.array([0, 1])).tolist() == [np.inf, -np.inf]


# -- top_k ------------------------------------------------------------------------------

WORDS = st.one_of(st.sampled_from(["a", "b", "c", "dd", "é", "a"]), st.none())


def top_ref(values: list[Any], k: int, weights: list[float] | None = None) -> list[Any]:
    counts: Counter[Any] = Counter()
    for i, v in enumerate(values):
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            counts[v] += 1 if weights is None else weights[i]
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


@FAST
@given(st.one_of(streams(WORDS), streams()), st.integers(1, 4))
def test_top_k_exact(stream: dict[str, Any], k: int) -> None:
    got = run(agg.top_k("x", k), stream)
    assert got.dtype == object
    for s, vals in enumerate(per_slot(stream)):
        assert got[s] == top_ref(vals, k)


@FAST
@given(streams(WORDS), st.integers(1, 3), st.data())
def test_top_k_weighted(stream: dict[str, Any], k: int, data: st.DataObject) -> None:
    n = len(stream["slots"])
    weights = data.draw(st.lists(st.integers(1, 9).map(float), min_size=n, max_size=n))
    got = run(agg.top_k("x", k, weight="w"), stream, weights)
    for s in range(S):
        idx = np.flatnonzero(stream["slots"] == s)
        assert got[s] == top_ref([stream["values"][i] for i in idx], k, [weights[i] for i in idx])


def test_top_k_weighted_needs_weights() -> None:
    state = agg.top_k("x", 2, weight="w").new_state()
    with pytest.raises(PipelineError, match="weights"):
        state.update(np.array([0]), np.array(["a"], dtype=object))


def test_top_k_ints_and_floats_share_values() -> None:
    state = agg.top_k("x", 2).new_state()
    state.update(np.array([0, 0]), np.array([1, 2]))
    state.update(np.array([0]), np.array([1.0]))
    assert state.result(np.array([0]))[0] == [(1, 2), (2, 1)]


def test_top_k_forgets_values_of_reset_slots() -> None:
    state = agg.top_k("x", 2).new_state()
    state.update(np.zeros(5000, dtype=np.int64), np.arange(5000))
    state.update(np.array([1, 1, 1]), np.array([7, 9, 9]))
    state.reset(np.array([0]))
    assert state.snapshot()["values"] == [7, 9]
    state.update(np.array([0, 1]), np.array([4999, 7]))
    assert state.result(np.array([0, 1])).tolist() == [[(4999, 1)], [(7, 2), (9, 2)]]


# -- distinct ---------------------------------------------------------------------------

MASK = (1 << 64) - 1


def splitmix_ref(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def hll_ref(values: list[Any], p: int) -> list[int]:
    """Registers of one slot, one value at a time in plain Python."""
    import hashlib

    regs = [0] * (1 << p)
    for v in clean(values):
        if isinstance(v, str):
            h = int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little")
        else:
            h = splitmix_ref(struct.unpack("<Q", struct.pack("<d", float(v) + 0.0))[0])
        rest = (h << p) & MASK
        rank = min(64 - rest.bit_length() + 1, 65 - p)
        regs[h >> (64 - p)] = max(regs[h >> (64 - p)], rank)
    return regs


@FAST
@given(st.one_of(streams(WORDS), streams()), st.sampled_from([4, 8, 12]))
def test_distinct_registers_exact_and_estimate_close(stream: dict[str, Any], p: int) -> None:
    spec = agg.distinct("x", precision=p)
    state = spec.new_state()
    values = as_array(stream["values"])
    for lo, hi, owner in stream["chunks"]:
        state.update(stream["slots"][lo:hi] + owner * S, values[lo:hi])
    state.merge(np.arange(S * 3) % S, np.arange(S, S * 4))
    regs = state.snapshot()["registers"]
    got = state.result(np.arange(S))
    whole = spec.new_state()
    whole.update(stream["slots"], values)
    assert got.tolist() == whole.result(np.arange(S)).tolist()
    for s, vals in enumerate(per_slot(stream)):
        assert regs[s].tolist() == hll_ref(vals, p)
        truth = len(set(clean(vals)))
        if p == 12:  # linear counting: exact but for register collisions
            assert abs(got[s] - truth) <= 2


@pytest.mark.parametrize(("p", "n"), [(10, 30_000), (12, 5_000), (12, 200_000), (14, 50_000)])
def test_distinct_large_within_three_standard_errors(p: int, n: int) -> None:
    rng = np.random.default_rng(p * n)
    values = rng.permutation(np.arange(n)).repeat(2) * 3.5
    state = agg.distinct("x", precision=p).new_state()
    for part in np.array_split(values, 5):
        state.update(np.zeros(len(part), dtype=np.int64), part)
    est = state.result(np.array([0]))[0]
    assert abs(est / n - 1) <= 3 * 1.04 / math.sqrt(2**p)


def test_distinct_normalizes_numbers_and_hashes_strings() -> None:
    state = agg.distinct("x").new_state()
    state.update(np.array([0, 0, 0]), np.array([1, 2, 0]))
    state.update(np.array([0, 0, 0]), np.array([1.0, -0.0, np.nan]))
    state.update(np.array([0, 0]), np.array([2, None], dtype=object))
    state.update(np.array([1, 1, 1]), np.array(["a", None, "a"], dtype=object))
    assert state.result(np.array([0, 1])).tolist() == [3, 1]


# -- state contract ---------------------------------------------------------------------

SPECS = [
    agg.count(),
    agg.sum("x"),
    agg.mean("x"),
    agg.min("x"),
    agg.max("x"),
    agg.var("x"),
    agg.std("x", ddof=0),
    agg.quantile("x", 0.5),
    agg.top_k("x", 2),
    agg.top_k("x", 2, weight="w"),
    agg.distinct("x", precision=4),
]


def feed(state: AggState, spec: Aggregation, slots: Any, values: Any) -> None:
    slots = np.asarray(slots, dtype=np.int64)
    weights = np.ones(len(slots)) if spec.weight else None
    state.update(slots, np.asarray(values), weights=weights)


def same(a: Any, b: Any) -> bool:
    return bool(a.dtype == b.dtype and a.tolist() == b.tolist()) or (
        a.dtype.kind == "f" and np.array_equal(a, b, equal_nan=True)
    )


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_snapshot_restore_round_trip(spec: Aggregation) -> None:
    state = spec.new_state()
    feed(state, spec, [0, 1, 1, 3, 3, 3], [5.0, 1.0, 2.0, 3.0, 3.0, np.nan])
    snap = state.snapshot()
    json.dumps({k: v for k, v in snap.items() if not isinstance(v, np.ndarray)})
    for v in snap.values():
        assert not isinstance(v, np.ndarray) or v.dtype.kind in "biuf"
    restored = roundtrip(spec, state)
    slots = np.arange(5)
    assert same(restored.result(slots), state.result(slots))
    again = restored.snapshot()
    assert again.keys() == snap.keys()
    for k, v in snap.items():
        if isinstance(v, np.ndarray):
            assert np.array_equal(v, again[k], equal_nan=v.dtype.kind == "f")
        else:
            assert v == again[k]
    feed(state, spec, [3], [1.0])  # the snapshot is a copy
    for k, v in snap.items():
        if isinstance(v, np.ndarray):
            assert np.array_equal(v, again[k], equal_nan=v.dtype.kind == "f")


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_reset_then_reuse_and_growth(spec: Aggregation) -> None:
    state = spec.new_state()
    big = 12_345
    feed(state, spec, [0, big, big], [1.0, 2.0, 4.0])
    fresh = spec.new_state()
    feed(fresh, spec, [0], [1.0])
    state.reset(np.array([big]))
    assert same(state.result(np.array([0, big, big + 10])), fresh.result(np.array([0, 1, 2])))
    feed(state, spec, [big], [1.0])
    assert same(state.result(np.array([big])), fresh.result(np.array([0])))
    state.merge(np.array([20_000]), np.array([big]))
    assert same(state.result(np.array([20_000])), fresh.result(np.array([0])))


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_inputs_not_mutated_and_empty_calls(spec: Aggregation) -> None:
    state = spec.new_state()
    slots, values = np.array([2, 0, 2]), np.array([3.0, np.nan, 1.0])
    feed(state, spec, slots, values)
    assert slots.tolist() == [2, 0, 2] and values.tolist()[0::2] == [3.0, 1.0]
    feed(state, spec, [], np.array([], dtype=np.float64))
    state.merge(np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    state.reset(np.array([], dtype=np.int64))
    assert len(state.result(np.array([], dtype=np.int64))) == 0


def test_restore_rejects_another_kind() -> None:
    snap = agg.sum("x").new_state().snapshot()
    with pytest.raises(StateError, match="mean"):
        agg.mean("x").new_state().restore(snap)
    with pytest.raises(StateError, match="relative_accuracy"):
        q = agg.quantile("x", 0.5, relative_accuracy=0.05).new_state().snapshot()
        agg.quantile("x", 0.5).new_state().restore(q)


def test_bad_inputs() -> None:
    with pytest.raises(PipelineError, match="needs an input column"):
        agg.mean("x").new_state().update(np.array([0]), None)
    with pytest.raises(PipelineError, match="one value per slot"):
        agg.mean("x").new_state().update(np.array([0, 1]), np.array([1.0]))
    with pytest.raises(PipelineError, match="non-negative"):
        agg.count().new_state().update(np.array([-1]), None)
    with pytest.raises(PipelineError, match="numbers"):
        agg.mean("x").new_state().update(np.array([0]), np.array(["a"], dtype=object))


@pytest.mark.parametrize(
    "make",
    [
        lambda: agg.mean(""),
        lambda: agg.var("x", ddof=-1),
        lambda: agg.quantile("x", 1.5),
        lambda: agg.quantile("x", 0.5, relative_accuracy=1.0),
        lambda: agg.top_k("x", 0),
        lambda: agg.distinct("x", precision=3),
    ],
)
def test_bad_specs(make: Any) -> None:
    with pytest.raises(ConfigError):
        make()


def test_specs_describe_and_are_frozen() -> None:
    assert [a.describe() for a in (agg.count(), agg.quantile("v", 0.9), agg.top_k("w", 3))] == [
        "count()",
        "quantile(v, q=0.9)",
        "top_k(w, k=3)",
    ]
    assert agg.mean("x") == agg.mean("x") and hash(agg.mean("x")) == hash(agg.mean("x"))
    with pytest.raises(AttributeError):
        agg.mean("x").column = "y"  # type: ignore[misc]
