"""Window results against a naive per-record reference, for random out-of-order streams
and random batch boundaries: results must not depend on how the input was batched.

The reference processes one record at a time with the watermark advancing after every
record (``max event time seen - out_of_orderness``), the textbook semantics::

    record ─▶ late? (window end + lateness <= watermark) ─▶ add to windows ─▶ advance wm
                                                                          └▶ fire windows end <= wm
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tidal import Batch, Pipeline, bounded
from tidal import aggregations as agg
from tidal.core.watermark import MIN_TIME
from tidal.testing import MemorySource, collect, run
from tidal.windows import session, sliding, tumbling

AGGS = {
    "n": agg.count(),
    "total": agg.sum("v"),
    "avg": agg.mean("v"),
    "lo": agg.min("v"),
    "hi": agg.max("v"),
    "var": agg.var("v"),
    "sd": agg.std("v"),
    "p50": agg.quantile("v", 0.5),
    "uniq": agg.distinct("v"),
    "top": agg.top_k("v", 2),
}


@st.composite
def streams(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(0, 120))
    step = draw(st.sampled_from([10, 50, 200]))
    jitter = draw(st.sampled_from([0, 100, 700, 3000]))
    keys = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=n, max_size=n))
    offs = draw(st.lists(st.integers(-jitter, jitter), min_size=n, max_size=n))
    vals = draw(st.lists(st.integers(-50, 50), min_size=n, max_size=n))
    times = [max(0, 1_000 + i * step + o) for i, o in enumerate(offs)]
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, n - 1)), max_size=8)))) if n > 1 else []
    cuts2 = sorted(set(draw(st.lists(st.integers(1, max(1, n - 1)), max_size=8)))) if n > 1 else []
    return {"k": keys, "t": times, "v": [float(v) for v in vals], "cuts": cuts, "cuts2": cuts2}


def _batches(data: dict[str, Any], cuts: list[int]) -> list[Batch]:
    cols = {
        "k": np.array(data["k"], dtype=object),
        "ts": np.array(data["t"], dtype=np.int64),
        "v": np.array(data["v"]),
    }
    n = len(data["t"])
    bounds = [0, *cuts, n]
    return [
        Batch({c: a[lo:hi] for c, a in cols.items()})
        for lo, hi in zip(bounds, bounds[1:], strict=False)
        if hi > lo
    ] or [Batch({c: a for c, a in cols.items()})]


def _run_tidal(
    data: dict[str, Any],
    cuts: list[int],
    windower: Any,
    delay: int,
    lateness: int,
    aggs: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    p = Pipeline("prop")
    s = p.source(
        "in", MemorySource(_batches(data, cuts)), time="ts", watermark=bounded(f"{delay}ms")
    )
    w = s.key_by("k").window("w", windower, aggs or AGGS, allowed_lateness=f"{lateness}ms")
    out, late = collect(w), collect(w.late)
    run(p)
    return out.records(), late.records()


def _final(rows: list[dict[str, Any]]) -> dict[tuple[Any, int], dict[str, Any]]:
    """The last pane per (key, window start)."""
    final: dict[tuple[Any, int], dict[str, Any]] = {}
    for r in rows:
        final[(r["k"], r["window_start"])] = r
    return final


def _stats(values: list[float]) -> dict[str, Any]:
    n = len(values)
    mean = sum(values) / n
    var = sum((x - mean) ** 2 for x in values) / (n - 1) if n > 1 else math.nan
    top = sorted(((v, values.count(v)) for v in set(values)), key=lambda vc: (-vc[1], vc[0]))[:2]
    return {
        "n": n,
        "total": sum(values),
        "avg": mean,
        "lo": min(values),
        "hi": max(values),
        "var": var,
        "sd": math.sqrt(var) if n > 1 else math.nan,
        "top": top,
        "uniq": len(set(values)),
    }


def _reference_fixed(
    data: dict[str, Any], windower: Any, delay: int, lateness: int
) -> tuple[dict[tuple[Any, int], list[float]], list[tuple[Any, int]]]:
    """Window contents, and the (key, time) of every record dropped from a window."""
    size, slide = windower.size_ms, windower.slide_ms
    wm, high = MIN_TIME, MIN_TIME
    content: dict[tuple[Any, int], list[float]] = defaultdict(list)
    purged: set[tuple[Any, int]] = set()
    late: list[tuple[Any, int]] = []
    for k, t, v in zip(data["k"], data["t"], data["v"], strict=True):
        last = t - (t % slide)
        starts = [last - j * slide for j in range(size // slide + 2) if last - j * slide + size > t]
        kept = [s for s in starts if s + size + lateness > wm]
        if len(kept) < len(starts):  # dropped from one of its windows: late (and counted)
            late.append((k, t))
        for s in kept:
            assert (k, s) not in purged
            content[(k, s)].append(v)
        high = max(high, t)
        wm = max(wm, high - delay)
        for key in list(content):
            if key[1] + size + lateness <= wm:
                purged.add(key)
    return dict(content), late


def _check_values(got: dict[str, Any], values: list[float]) -> None:
    want = _stats(values)
    assert got["n"] == want["n"]
    for name in ("total", "avg", "lo", "hi"):
        assert math.isclose(got[name], want[name], rel_tol=1e-12, abs_tol=1e-12), name
    for name in ("var", "sd"):
        if math.isnan(want[name]):
            assert math.isnan(got[name])
        else:
            assert math.isclose(got[name], want[name], rel_tol=1e-9, abs_tol=1e-9), name
    assert [tuple(x) for x in got["top"]] == want["top"]
    # HyperLogLog (4096 registers) at small counts: linear counting, a collision or two
    assert abs(got["uniq"] - want["uniq"]) <= 2 + 0.05 * want["uniq"]
    srt = sorted(values)
    true_median = srt[max(0, math.ceil(0.5 * len(srt)) - 1)]
    assert math.isclose(got["p50"], true_median, rel_tol=0.011, abs_tol=1e-9)


WINDOWERS = [tumbling("1s"), tumbling("300ms"), sliding("1s", "250ms"), sliding("600ms", "400ms")]


@settings(max_examples=60, deadline=None)
@given(
    data=streams(),
    w=st.sampled_from(WINDOWERS),
    delay=st.sampled_from([0, 150, 1000]),
    lateness=st.sampled_from([0, 0, 400]),
)
def test_tumbling_and_sliding_match_reference(
    data: dict[str, Any], w: Any, delay: int, lateness: int
) -> None:
    rows, late_rows = _run_tidal(data, data["cuts"], w, delay, lateness)
    want, want_late = _reference_fixed(data, w, delay, lateness)
    final = _final(rows)
    assert set(final) == set(want)
    for key, values in want.items():
        _check_values(final[key], values)
        assert final[key]["window_end"] == key[1] + w.size_ms
    assert sorted((r["k"], r["ts"]) for r in late_rows) == sorted(want_late)
    if lateness == 0:  # every window fires exactly once
        assert len(rows) == len(final)


@settings(max_examples=60, deadline=None)
@given(
    data=streams(),
    w=st.sampled_from(WINDOWERS + [session("300ms"), session("1s")]),
    delay=st.sampled_from([0, 150, 1000]),
)
def test_output_does_not_depend_on_batching(data: dict[str, Any], w: Any, delay: int) -> None:
    rows1, late1 = _run_tidal(data, data["cuts"], w, delay, 0)
    rows2, late2 = _run_tidal(data, data["cuts2"], w, delay, 0)

    def canon(rows: list[dict[str, Any]]) -> list[Any]:
        return sorted(
            (
                r["k"],
                r["window_start"],
                r["window_end"],
                r["n"],
                r["total"],
                r["lo"],
                r["hi"],
                r["p50"],
                r["uniq"],
                tuple(map(tuple, r["top"])),
            )
            for r in rows
        )

    assert canon(rows1) == canon(rows2)
    assert sorted(r["ts"] for r in late1) == sorted(r["ts"] for r in late2)


def _reference_sessions(
    data: dict[str, Any], gap: int, delay: int
) -> tuple[dict[tuple[Any, int], tuple[int, list[float]]], int]:
    wm, high = MIN_TIME, MIN_TIME
    open_: dict[Any, list[list[Any]]] = defaultdict(list)  # key -> [start, end, values]
    done: dict[tuple[Any, int], tuple[int, list[float]]] = {}
    late = 0
    for k, t, v in zip(data["k"], data["t"], data["v"], strict=True):
        if t < wm:
            late += 1
        else:
            s, e, vals = t, t + gap, [v]
            rest = []
            for sess in open_[k]:
                if sess[0] < e and s < sess[1]:
                    s, e, vals = min(s, sess[0]), max(e, sess[1]), vals + sess[2]
                else:
                    rest.append(sess)
            open_[k] = [*rest, [s, e, vals]]
        high = max(high, t)
        wm = max(wm, high - delay)
        for key, sessions in open_.items():
            keep = []
            for sess in sessions:
                if sess[1] <= wm:
                    done[(key, sess[0])] = (sess[1], sess[2])
                else:
                    keep.append(sess)
            open_[key] = keep
    for key, sessions in open_.items():
        for sess in sessions:
            done[(key, sess[0])] = (sess[1], sess[2])
    return done, late


@settings(max_examples=80, deadline=None)
@given(data=streams(), gap=st.sampled_from([100, 300, 1000]), delay=st.sampled_from([0, 150, 1000]))
def test_sessions_match_reference(data: dict[str, Any], gap: int, delay: int) -> None:
    rows, late_rows = _run_tidal(data, data["cuts"], session(f"{gap}ms"), delay, 0)
    want, want_late = _reference_sessions(data, gap, delay)
    got = {(r["k"], r["window_start"]): r for r in rows}
    assert len(rows) == len(got)
    assert set(got) == set(want)
    for key, (end, values) in want.items():
        assert got[key]["window_end"] == end
        _check_values(got[key], values)
    assert len(late_rows) == want_late


def test_a_record_late_for_its_older_sliding_windows_only_is_counted_late() -> None:
    """Timeline, sliding 2 s every 1 s, bounded 0 ms (times in ms)::

    t=2500 -> wm 2500; t=1500 belongs to [0,2000) (closed: 2000 <= 2500)
                                and to [1000,3000) (open): counted there, and late
    """
    data = {"k": [1, 1], "t": [2500, 1500], "v": [1.0, 2.0], "cuts": []}
    rows, late_rows = _run_tidal(data, [], sliding("2s", "1s"), 0, 0)
    assert [(r["k"], r["ts"]) for r in late_rows] == [(1, 1500)]
    final = _final(rows)
    assert final[(1, 1000)]["n"] == 2 and (1, 0) not in final
