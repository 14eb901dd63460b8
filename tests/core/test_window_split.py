"""Re-splitting window state by key (decision 0052) against one uninterrupted operator.

A seeded random keyed stream, in event-time order, is aggregated by one operator (the
reference) and, separately, by ``n_old`` operators that each own a share of the keys and
stop at a different point of their share (so their watermarks differ: one may have fired
a window another still holds open). Their snapshots are re-split into ``n_new`` operators,
which take the rest of the stream, routed by key. Every window row emitted, before and
after the re-split, counted as a multiset, must equal the reference's: none lost, none
twice, equal aggregates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from tidal.core import aggregations as agg
from tidal.core.aggregations import Aggregation
from tidal.core.batch import Batch
from tidal.core.operator import SplitsByKey
from tidal.core.watermark import MAX_TIME, MIN_TIME
from tidal.core.window_op import SessionAggregate, WindowAggregate
from tidal.core.windows import session, sliding, tumbling
from tidal.errors import StateError

AGGS: Mapping[str, Aggregation] = {
    "n": agg.count(),
    "s": agg.sum("v"),
    "lo": agg.min("v"),
    "hi": agg.max("v"),
    "avg": agg.mean("v"),
    "med": agg.quantile("v", q=0.5),
    "top": agg.top_k("c", k=2),
    "uniq": agg.distinct("c"),
}
DELAY = 50


def _stream(seed: int, n: int = 1_500, keys: int = 30) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 20_000, n))
    k = rng.integers(0, keys, n)
    return {
        "k": k,
        "v": rng.integers(0, 100, n),
        "c": np.array([f"c{x}" for x in rng.integers(0, 5, n)], dtype=object),
        "t": t,
    }


def _rows(emitted: list[tuple[int, Batch]]) -> list[tuple[Any, ...]]:
    out = []
    for port, batch in emitted:
        assert port == 0, "no record of this stream is late"
        for rec in batch.to_records():
            rec["top"] = tuple(tuple(p) for p in rec["top"])
            out.append(tuple(sorted(rec.items())))
    return out


def _feed(op: Any, cols: dict[str, np.ndarray], wm: int, size: int = 61) -> tuple[list[Any], int]:
    """Feed rows in batches; the watermark follows the highest time seen minus DELAY."""
    out: list[Any] = []
    for a in range(0, len(cols["t"]), size):
        part = {c: v[a : a + size] for c, v in cols.items()}
        n = len(part["t"])
        batch = Batch(
            {c: part[c] for c in ("k", "v", "c")}, time=part["t"], wm=np.full(n, wm, np.int64)
        )
        out += _rows(op.process(batch, 0))
        wm = max(wm, int(part["t"].max()) - DELAY)
        out += _rows(op.on_watermark(wm))
    return out, wm


def _take(cols: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {c: v[mask] for c, v in cols.items()}


def _make(kind: str, lateness: int) -> WindowAggregate | SessionAggregate:
    if kind == "tumbling":
        return WindowAggregate("w", "k", tumbling("1s"), AGGS, lateness)
    if kind == "sliding":
        return WindowAggregate("w", "k", sliding("1s", "250ms"), AGGS, lateness)
    return SessionAggregate("w", "k", session("300ms"), AGGS, lateness)


@pytest.mark.parametrize("kind", ["tumbling", "sliding", "session"])
@pytest.mark.parametrize(("n_old", "n_new"), [(2, 1), (2, 3), (1, 2), (3, 2)])
@pytest.mark.parametrize("seed", range(3))
def test_resplit_windows_emit_what_one_operator_emits(
    kind: str, n_old: int, n_new: int, seed: int
) -> None:
    cols = _stream(seed)
    lateness = 700 if seed else 0  # with lateness, fired windows stay open a while
    single = _make(kind, lateness)
    ref, _ = _feed(single, cols, MIN_TIME)
    ref += _rows(single.on_watermark(MAX_TIME))

    rng = np.random.default_rng(seed + 100)
    owner_old = cols["k"] % n_old
    emitted: list[Any] = []
    snaps, wms, rests = [], [], []
    edge = 1_000 * int(rng.integers(3, 17))  # a window end
    for i in range(n_old):
        mine = _take(cols, owner_old == i)
        # the old workers stop at other times: at random (seed 0), or 300 ms apart across a
        # window end, in one order or the other, so that one has fired (and, with lateness,
        # still holds) a window that another has not fired yet
        step = 300 * (i if seed == 1 else n_old - 1 - i)
        stop = int(rng.integers(0, 20_000)) if seed == 0 else edge - 150 + step
        cut = int(np.searchsorted(mine["t"], stop))
        op = _make(kind, lateness)
        out, wm_i = _feed(op, _take(mine, np.arange(len(mine["t"])) < cut), MIN_TIME)
        emitted += out
        snaps.append(op.snapshot())
        wms.append(wm_i)
        rests.append(_take(mine, np.arange(len(mine["t"])) >= cut))
    template = _make(kind, lateness)
    assert isinstance(template, SplitsByKey)
    routed: list[int] = []

    def route(i: int, keys: np.ndarray) -> np.ndarray:
        assert (keys % n_old == i).all(), "an old snapshot holds only its own keys"
        routed.extend(keys.tolist())
        return np.asarray(keys // n_old % n_new, dtype=np.int64)

    parts = template.split_state(snaps, route, n_new)
    assert len(parts) == n_new and len(routed) == len(set(routed))
    rest = {c: np.concatenate([r[c] for r in rests]) for c in cols}
    order = np.argsort(rest["t"], kind="stable")
    rest = _take(rest, order)
    for j, part in enumerate(parts):
        op = _make(kind, lateness)
        op.restore(part)
        out, _ = _feed(op, _take(rest, rest["k"] // n_old % n_new == j), min(wms))
        emitted += out + _rows(op.on_watermark(MAX_TIME))
    assert Counter(emitted) == Counter(ref)
    assert len(ref) > 50


def test_a_key_in_two_old_snapshots_is_refused() -> None:
    a, b = _make("tumbling", 0), _make("tumbling", 0)
    cols = _stream(7, n=200, keys=5)
    _feed(a, cols, MIN_TIME)
    _feed(b, cols, MIN_TIME)
    with pytest.raises(StateError, match="a key is in the state of two old workers"):
        a.split_state([a.snapshot(), b.snapshot()], lambda i, keys: keys * 0, 1)


def test_a_route_outside_the_new_workers_is_refused() -> None:
    a = _make("session", 0)
    _feed(a, _stream(8, n=200, keys=5), MIN_TIME)
    with pytest.raises(StateError, match="routing keys to 2 workers"):
        a.split_state([a.snapshot()], lambda i, keys: keys * 0 + 5, 2)


@pytest.mark.parametrize(
    "spec",
    [
        agg.count(),
        agg.sum("v"),
        agg.mean("v"),
        agg.min("v"),
        agg.max("v"),
        agg.var("v"),
        agg.std("v"),
        agg.quantile("v", q=0.9),
        agg.top_k("v", k=3),
        agg.distinct("v"),
    ],
    ids=repr,
)
def test_copy_from_moves_every_aggregation_exactly(spec: Aggregation) -> None:
    rng = np.random.default_rng(3)
    slots = rng.integers(0, 20, 500)
    values = rng.integers(0, 50, 500)
    old, new = spec.new_state(), spec.new_state()
    old.update(slots, values)
    src = np.array([3, 0, 17, 19], dtype=np.int64)
    dst = np.array([40, 2, 5, 0], dtype=np.int64)
    new.copy_from(old, src, dst)
    got, want = new.result(dst), old.result(src)
    if want.dtype == object:
        assert got.tolist() == want.tolist()
    else:
        np.testing.assert_array_equal(got, want)


def test_copy_from_refuses_another_kind_of_state() -> None:
    with pytest.raises(StateError, match="cannot copy slots of a"):
        agg.count().new_state().copy_from(agg.sum("v").new_state(), np.array([0]), np.array([0]))
