"""Delayed-label join: real pipelines against a naive reference, expiry, restarts.

The reference judges every record against the watermark of its own source when it arrived
(``max time seen so far - out_of_orderness``); on-time labels, in the labels stream's order,
join the feature row with their id when ``|t_label - t_feature| <= ttl`` (the first one wins,
later matching ones are duplicates); everything else is unlabeled (features) or an orphan
(labels)::

    features  f@t ───────────────────────────── evicted once wm > t + ttl ─▶ "unlabeled"
    labels          l@t'  (|t' - t| <= ttl) ─▶ joined, label_delay_ms = t' - t
    labels    l@t'' arriving first ─ buffered ── evicted once wm > t'' + ttl ─▶ "orphans"

Random batch boundaries on both sides (and so random interleavings of the two sources)
must not change the result.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from two_stream_helpers import arrival_wm, split

from tidal import Batch, ConfigError, Pipeline, PipelineError, bounded
from tidal.core.labels import LabelJoin
from tidal.errors import StateError
from tidal.runtime.executor import Executor
from tidal.runtime.snapshot import decode, encode
from tidal.testing import MemorySink, MemorySource, collect, run

FAST = settings(max_examples=60, deadline=None)


Sinks = tuple[MemorySink, MemorySink, MemorySink, MemorySink]


def build(
    feats: list[Batch], labels: list[Batch], *, ttl: str, delay: int = 0
) -> tuple[Pipeline, Sinks]:
    p = Pipeline("labels")
    wm = bounded(f"{delay}ms")
    fs = p.source("features", MemorySource(feats), time="ts", watermark=wm)
    ls = p.source("labels", MemorySource(labels), time="lt", watermark=wm)
    j = fs.join_labels("j", ls, on="id", ttl=ttl)
    return p, (
        collect(j),
        collect(j.side("unlabeled")),
        collect(j.side("orphans")),
        collect(j.late),
    )


def reference(f: dict[str, Any], lab: dict[str, Any], ttl: int, delay: int) -> dict[str, Any]:
    fw, lw = arrival_wm(f["ts"], delay), arrival_wm(lab["lt"], delay)
    f_ok = [t >= w for t, w in zip(f["ts"], fw, strict=True)]
    l_ok = [t >= w for t, w in zip(lab["lt"], lw, strict=True)]
    feats = {f["id"][i]: f["ts"][i] for i in range(len(f_ok)) if f_ok[i]}
    joined, dup, orphans, labelled = [], 0, [], set()
    for j in range(len(l_ok)):
        if not l_ok[j]:
            continue
        e, t = lab["id"][j], lab["lt"][j]
        if e in feats and abs(t - feats[e]) <= ttl:
            if e in labelled:
                dup += 1
            else:
                labelled.add(e)
                joined.append((e, lab["lid"][j], t - feats[e]))
        else:
            orphans.append(lab["lid"][j])
    return {
        "joined": sorted(joined),
        "duplicates": dup,
        "unlabeled": sorted(e for e in feats if e not in labelled),
        "orphans": sorted(orphans),
        "late": sum(not ok for ok in f_ok) + sum(not ok for ok in l_ok),
    }


def joined_of(out: MemorySink) -> list[tuple[str, str, int]]:
    return sorted((r["id"], r["lid"], int(r["label_delay_ms"])) for r in out.records())


# -- exact small cases -------------------------------------------------------------------
def test_module_timeline() -> None:
    feats = [
        Batch({"id": ["e1", "e2"], "ts": [0, 1_000]}),
        Batch({"id": ["e3"], "ts": [4_000]}),
    ]
    labels = [
        Batch(
            {
                "id": ["e1", "e9", "e1", "e3"],
                "lid": ["a", "b", "c", "d"],
                "lt": [2_000, 3_000, 5_000, 2_000],
            }
        ),
    ]
    p, (out, unlabeled, orphans, late) = build(feats, labels, ttl="10s", delay=5_000)
    summary = run(p)
    assert joined_of(out) == [("e1", "a", 2_000), ("e3", "d", -2_000)]
    assert [r["id"] for r in unlabeled.records()] == ["e2"]
    assert [r["lid"] for r in orphans.records()] == ["b"]
    assert summary.counts["j.duplicate_labels"] == 1
    assert summary.counts["j.unlabeled"] == 1 and summary.counts["j.orphan_labels"] == 1
    assert late.records() == []


def test_labels_before_features_and_out_of_order() -> None:
    op = LabelJoin("j", on="id", ttl_ms=1_000)
    assert op.process(Batch({"id": [7, 8], "y": [1, 0]}, time=[500, 400], wm=[0, 0]), 1) == []
    assert op.held() == (0, 2)
    _, out = op.process(Batch({"id": [8, 7], "x": [0.1, 0.2]}, time=[300, 100], wm=[0, 0]), 0)[0]
    assert out.to_records() == [
        {"id": 8, "x": 0.1, "y": 0, "label_delay_ms": 100},
        {"id": 7, "x": 0.2, "y": 1, "label_delay_ms": 400},
    ]
    assert out.time is not None and out.time.tolist() == [400, 500]
    assert op.held() == (2, 0)  # joined rows stay to catch duplicate labels
    op.on_watermark(1_200)
    assert op.held() == (1, 0)  # 7 (100 + 1000 < 1200) left, 8 (300) stays
    op.on_watermark(2_000)
    assert op.held() == (0, 0) and len(op.keys) == 0


def test_ttl_expiry_is_counted_and_emitted_with_the_expiry_time() -> None:
    op = LabelJoin("j", on="id", ttl_ms=1_000)
    op.process(Batch({"id": ["a", "b"], "x": [1, 2]}, time=[0, 500], wm=[0, 0]), 0)
    assert op.on_watermark(1_000) == []  # a expires only once wm > 0 + 1000
    [(port, gone)] = op.on_watermark(1_001)
    assert port == 1 and gone.to_records() == [{"id": "a", "x": 1}]
    assert gone.time is not None and gone.wm is not None
    assert gone.time.tolist() == [1_000] and gone.wm.tolist() == [1_000]
    assert op.ctx.counters == {"j.unlabeled": 1}


def test_a_label_outside_the_ttl_does_not_join() -> None:
    op = LabelJoin("j", on="id", ttl_ms=1_000)
    op.process(Batch({"id": ["a"], "x": [1]}, time=[0], wm=[0]), 0)
    assert op.process(Batch({"id": ["a"], "y": [1]}, time=[1_001], wm=[0]), 1) == []
    _, out = op.process(Batch({"id": ["a"], "y": [2]}, time=[1_000], wm=[0]), 1)[0]
    assert out.to_records() == [{"id": "a", "x": 1, "y": 2, "label_delay_ms": 1_000}]
    [(port, orphans)] = op.on_watermark(10_000)
    assert port == 2 and orphans.to_records() == [{"id": "a", "y": 1}]


def test_duplicates_first_wins() -> None:
    op = LabelJoin("j", on="id", ttl_ms=1_000)
    op.process(Batch({"id": ["a", "a"], "y": [1, 2]}, time=[10, 20], wm=[0, 0]), 1)
    _, out = op.process(Batch({"id": ["a", "a"], "x": [5, 6]}, time=[0, 1], wm=[0, 0]), 0)[0]
    assert out.to_records() == [{"id": "a", "x": 5, "y": 1, "label_delay_ms": 10}]
    assert op.ctx.counters == {"j.duplicate_labels": 1, "j.duplicate_features": 1}
    assert op.process(Batch({"id": ["a"], "y": [9]}, time=[30], wm=[0]), 1) == []
    assert op.ctx.counters["j.duplicate_labels"] == 2
    # two labels for one id in one batch: the first joins, the second is a duplicate
    op.process(Batch({"id": ["b"], "x": [7]}, time=[0], wm=[0]), 0)
    _, out = op.process(Batch({"id": ["b", "b"], "y": [3, 4]}, time=[5, 6], wm=[0, 0]), 1)[0]
    assert out["y"].tolist() == [3] and op.ctx.counters["j.duplicate_labels"] == 3


def test_label_columns_clash_and_errors() -> None:
    op = LabelJoin("j", on="id", ttl_ms=1_000, label_on="event")
    op.process(Batch({"id": [1], "v": [1.0]}, time=[0], wm=[0]), 0)
    _, out = op.process(Batch({"event": [1], "v": [2.0], "id": ["x"]}, time=[5], wm=[0]), 1)[0]
    assert out.names == ["id", "v", "v_label", "id_label", "label_delay_ms"]
    with pytest.raises(PipelineError, match="stable columns"):
        op.process(Batch({"id": [2], "w": [1.0]}, time=[0], wm=[0]), 0)
    with pytest.raises(PipelineError, match="no id column 'event'"):
        op.process(Batch({"id": [2]}, time=[0], wm=[0]), 1)
    with pytest.raises(PipelineError, match="event time"):
        op.process(Batch({"id": [2], "v": [1.0]}), 0)
    with pytest.raises(ConfigError, match="TTL"):
        LabelJoin("j", on="id", ttl_ms=-1)
    with pytest.raises(StateError, match="rename the step"):
        LabelJoin("j", on="id", ttl_ms=5).restore(op.snapshot())


def test_state_stays_bounded_on_a_long_stream() -> None:
    n = 3_000
    ids = np.array([f"e{i}" for i in range(n)], dtype=object)
    ts = np.arange(n, dtype=np.int64) * 10
    feats = split({"id": ids, "ts": ts, "x": np.arange(n)}, list(range(100, n, 100)))
    labs = split(
        {"id": ids[::2], "lt": ts[::2] + 200, "lid": ids[::2]}, list(range(50, n // 2, 50))
    )
    p, (out, unlabeled, _, _) = build(feats, labs, ttl="500ms")
    op = p.nodes["j"].op
    assert isinstance(op, LabelJoin)
    ex = Executor(p, max_wait="0ms", handle_signals=False)
    ex.open()
    peak = 0
    while ex.step():
        peak = max(peak, sum(op.held()), len(op.keys))
    ex.finish(drain=True)
    assert len(out) == n // 2 and len(unlabeled) == n // 2
    assert peak < 600  # a TTL's worth and a few batches, not the whole stream
    assert op.held() == (0, 0) and len(op.keys) == 0


# -- properties --------------------------------------------------------------------------
@st.composite
def streams(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(0, 30))
    offs = draw(st.lists(st.integers(-20, 20), min_size=n, max_size=n))
    ts = [1_000 + 50 * i + 10 * o for i, o in enumerate(offs)]
    m = draw(st.integers(0, 40))
    ids = draw(st.lists(st.integers(0, n + 5), min_size=m, max_size=m))  # some never sent
    lag = draw(st.lists(st.integers(-100, 900), min_size=m, max_size=m))
    lt = [(ts[e] if e < n else 1_000 + 50 * e) + 10 * g for e, g in zip(ids, lag, strict=True)]
    f_cuts = draw(st.lists(st.integers(1, max(1, n)), max_size=6))
    l_cuts = draw(st.lists(st.integers(1, max(1, m)), max_size=6))
    return {
        "f": {"id": [f"e{i}" for i in range(n)], "ts": ts},
        "l": {"id": [f"e{e}" for e in ids], "lt": lt, "lid": [f"l{j}" for j in range(m)]},
        "f_cuts": sorted(f_cuts),
        "l_cuts": sorted(l_cuts),
    }


@FAST
@given(
    s=streams(),
    ttl=st.sampled_from([0, 500, 2_000, 20_000]),
    delay=st.sampled_from([0, 300, 5_000]),
)
def test_join_matches_the_naive_reference(s: dict[str, Any], ttl: int, delay: int) -> None:
    p, (out, unlabeled, orphans, late) = build(
        split(s["f"], s["f_cuts"]), split(s["l"], s["l_cuts"]), ttl=f"{ttl}ms", delay=delay
    )
    summary = run(p)
    want = reference(s["f"], s["l"], ttl, delay)
    assert joined_of(out) == want["joined"]
    assert sorted(r["id"] for r in unlabeled.records()) == want["unlabeled"]
    assert sorted(r["lid"] for r in orphans.records()) == want["orphans"]
    assert summary.counts.get("j.duplicate_labels", 0) == want["duplicates"]
    assert len(late) == summary.late == want["late"]
    for b in out.batches:  # joined rows are never late downstream
        assert b.time is not None and b.wm is not None and (b.time >= b.wm).all()
    op = p.nodes["j"].op
    assert isinstance(op, LabelJoin) and op.held() == (0, 0) and len(op.keys) == 0


@FAST
@given(s=streams(), steps=st.integers(0, 10), delay=st.sampled_from([0, 400]))
def test_restart_from_a_checkpoint_matches_an_uninterrupted_run(
    s: dict[str, Any], steps: int, delay: int
) -> None:
    def fresh() -> tuple[Pipeline, Sinks]:
        return build(split(s["f"], s["f_cuts"]), split(s["l"], s["l_cuts"]), ttl="1s", delay=delay)

    p0, sinks0 = fresh()
    run(p0)
    p1, sinks1 = fresh()
    ex = Executor(p1, max_wait="0ms", handle_signals=False)
    ex.open()
    for _ in range(steps):
        ex.step()
    snap = decode(encode(ex.snapshot()))
    p2, sinks2 = fresh()
    Executor(p2, max_wait="0ms", handle_signals=False).run(snapshot=snap)
    assert sorted(joined_of(sinks1[0]) + joined_of(sinks2[0])) == joined_of(sinks0[0])
    for i, col in ((1, "id"), (2, "lid")):
        got = sorted(r[col] for r in sinks1[i].records() + sinks2[i].records())
        assert got == sorted(r[col] for r in sinks0[i].records())
