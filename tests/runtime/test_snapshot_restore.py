"""Run half, snapshot, restore in a fresh pipeline, run the rest: output equals the
uninterrupted run, for every stateful operator and any cut point."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tidal import Batch, Executor, Pipeline, StateError, bounded
from tidal import aggregations as agg
from tidal.runtime.snapshot import decode, encode
from tidal.testing import MemorySink, MemorySource
from tidal.windows import session, sliding, tumbling


def _data(n: int = 3000, seed: int = 7) -> list[Batch]:
    rng = np.random.default_rng(seed)
    t = 1_000 + np.arange(n) * 20 + rng.integers(-400, 400, n)
    keys = rng.choice(np.array(["a", "b", "c", "d", "e"], dtype=object), n)
    vals = rng.normal(10, 3, n).round(3)
    cols = {"k": keys, "ts": t, "v": vals}
    cuts = np.sort(rng.choice(np.arange(1, n), 40, replace=False))
    bounds = [0, *cuts.tolist(), n]
    return [
        Batch({c: a[lo:hi] for c, a in cols.items()})
        for lo, hi in zip(bounds, bounds[1:], strict=False)
    ]


AGGS = {
    "n": agg.count(),
    "avg": agg.mean("v"),
    "hi": agg.max("v"),
    "sd": agg.std("v"),
    "p90": agg.quantile("v", 0.9),
    "uniq": agg.distinct("k"),
    "top": agg.top_k("k", 2),
}

Build = Callable[[Pipeline, Any], Any]

BUILDERS: dict[str, Build] = {
    "tumbling": lambda p, s: s.key_by("k").window("w", tumbling("1s"), AGGS),
    "sliding_late": lambda p, s: s.key_by("k").window(
        "w", sliding("2s", "500ms"), AGGS, allowed_lateness="300ms"
    ),
    "session": lambda p, s: s.key_by("k").window("w", session("150ms"), AGGS),
    "global": lambda p, s: s.window(
        "w", tumbling("2s"), {"n": agg.count(), "top": agg.top_k("k", 3)}
    ),
    "lag": lambda p, s: s.key_by("k").lag("w", ["v", "ts"], periods=[1, 3]),
    "lag_text_global": lambda p, s: s.lag("w", ["k", "v"], periods=2, fill=0),
}


def _pipeline(build: Build) -> tuple[Pipeline, MemorySink, MemorySink]:
    p = Pipeline("snap")
    s = p.source("in", MemorySource(_data()), time="ts", watermark=bounded("200ms"))
    w = build(p, s)
    out, late = MemorySink(), MemorySink()
    w.sink("out", out)
    if "late" in w.node.outputs:
        w.late.sink("late", late)
    return p, out, late


def _canon(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(repr(sorted(r.items())) for r in rows)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
@pytest.mark.parametrize("cut", [1, 7, 23, 39])
def test_restore_continues_exactly(kind: str, cut: int) -> None:
    p, out, late = _pipeline(BUILDERS[kind])
    Executor(p, max_wait="0ms", handle_signals=False).run()
    whole, whole_late = out.records(), late.records()
    assert whole

    p1, out1, late1 = _pipeline(BUILDERS[kind])
    ex = Executor(p1, max_wait="0ms", handle_signals=False)
    ex.open()
    for _ in range(cut):
        assert ex.step()
    snap = decode(encode(ex.snapshot()))  # through bytes: nothing pickled
    first, first_late = out1.records(), late1.records()

    p2, out2, late2 = _pipeline(BUILDERS[kind])
    Executor(p2, max_wait="0ms", handle_signals=False).run(snapshot=snap)
    assert _canon(first + out2.records()) == _canon(whole)
    assert _canon(first_late + late2.records()) == _canon(whole_late)


def test_restore_refuses_a_changed_topology() -> None:
    p, _, _ = _pipeline(BUILDERS["tumbling"])
    ex = Executor(p, max_wait="0ms", handle_signals=False)
    ex.open()
    ex.step()
    snap = ex.snapshot()
    p2, _, _ = _pipeline(BUILDERS["session"])  # same step name, other operator type
    with pytest.raises(StateError, match="step 'w' was a WindowAggregate"):
        Executor(p2, handle_signals=False).open(snap)
    p3 = Pipeline("snap")
    s = p3.source("in", MemorySource(_data()), time="ts")
    s.key_by("k").window("renamed", tumbling("1s"), AGGS).sink("out", MemorySink())
    with pytest.raises(StateError, match="no state for step 'renamed'"):
        Executor(p3, handle_signals=False).open(snap)


def test_snapshot_holds_no_object_arrays() -> None:
    p, _, _ = _pipeline(BUILDERS["sliding_late"])
    ex = Executor(p, max_wait="0ms", handle_signals=False)
    ex.open()
    for _ in range(5):
        ex.step()
    data = encode(ex.snapshot())
    with np.load(__import__("io").BytesIO(data), allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
