"""W1: keyed 1 s tumbling windows (count/mean/max) — Tidal vs. a numpy kernel vs. a dict loop.

The workload: ``events`` events over ``keys`` int keys; event time advances steadily
(``rate`` events per simulated second) with uniform ±``jitter_ms`` jitter, so the stream is
out of order by up to 2 x jitter, which ``bounded("100ms")`` covers (no event is late).
Every implementation computes count, mean and max of ``value`` per (key, 1 s window) from
the same pre-generated numpy columns (generation is not timed), and the results are
checked against each other before any number is printed.

1. **tidal**: the full Pipeline API — ``MemorySource`` -> ``key_by`` ->
   ``window(tumbling("1s"), ...)`` -> a sink that counts rows (and keeps the result
   batches, for the check); ``max_batch=65_536``, ``max_wait="0ms"``.
2. **numpy**: the whole data set at once; group code = window * K + key, ``np.bincount``
   for count and sum, and max either by ``argsort`` + ``np.maximum.reduceat``
   (``numpy-sort``) or by ``np.maximum.at`` (``numpy-at``; ``ufunc.at`` is fast since numpy
   1.25). Both are shown; the faster one is the bar.
3. **python**: one event at a time into ``dict[(key, window)] -> [count, sum, max]``, over
   Python lists (the list conversion is not timed, as a per-record engine receives
   Python objects).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.common import best_of, rate, table
from tidal import Executor, Pipeline, bounded, tumbling
from tidal import aggregations as agg
from tidal.core.batch import Batch
from tidal.io.base import BaseSink
from tidal.testing import MemorySource

EPOCH_MS = 1_700_000_000_000
WINDOW_MS = 1_000
Result = dict[str, np.ndarray]
"""Columns ``window_start``, ``key``, ``count``, ``mean``, ``max``, sorted by window, key."""


@dataclass(frozen=True)
class Data:
    """Pre-generated event columns."""

    ts: np.ndarray  # int64 ms
    key: np.ndarray  # int64 in [0, keys)
    value: np.ndarray  # float64
    keys: int

    def __len__(self) -> int:
        return len(self.ts)


def generate(
    events: int, keys: int = 1_000, *, rate: int = 100_000, jitter_ms: int = 50, seed: int = 7
) -> Data:
    """Event time = a steady clock (``rate`` events per second) plus uniform jitter."""
    rng = np.random.default_rng(seed)
    clock = EPOCH_MS + (np.arange(events, dtype=np.int64) * 1_000) // rate
    ts = clock + rng.integers(-jitter_ms, jitter_ms + 1, events)
    key = rng.integers(0, keys, events)
    value = rng.normal(100.0, 15.0, events)
    return Data(ts, key, value, keys)


def _sorted(window_start: Any, key: Any, count: Any, mean: Any, mx: Any) -> Result:
    ws, k = np.asarray(window_start, np.int64), np.asarray(key, np.int64)
    order = np.lexsort((k, ws))
    return {
        "window_start": ws[order],
        "key": k[order],
        "count": np.asarray(count, np.int64)[order],
        "mean": np.asarray(mean, np.float64)[order],
        "max": np.asarray(mx, np.float64)[order],
    }


# -- 1. Tidal -------------------------------------------------------------------------


class CountingSink(BaseSink):
    """Counts rows; keeps the batches (a list append) so the bench can check them."""

    def __init__(self) -> None:
        self.rows = 0
        self.batches: list[Batch] = []

    def write(self, batch: Batch) -> None:
        self.rows += len(batch)
        self.batches.append(batch)


def tidal_pipeline(
    data: Data, *, max_batch: int = 65_536, observer: Any = None
) -> tuple[Executor, CountingSink]:
    """The W1 pipeline, built (not run); ``observer`` watches it (bench/metrics_overhead)."""
    p = Pipeline("w1")
    source = MemorySource({"key": data.key, "value": data.value, "ts": data.ts})
    sink = CountingSink()
    (
        p.source("events", source, time="ts", watermark=bounded("100ms"))
        .key_by("key")
        .window(
            "per_second",
            tumbling("1s"),
            {"count": agg.count(), "mean": agg.mean("value"), "max": agg.max("value")},
        )
        .sink("out", sink)
    )
    ex = Executor(p, max_batch=max_batch, max_wait="0ms", handle_signals=False, observer=observer)
    return ex, sink


def run_tidal(
    data: Data, *, max_batch: int = 65_536, observer: Any = None
) -> tuple[float, Result]:
    """Seconds for ``Executor.run()`` (pipeline construction excluded), and the result."""
    ex, sink = tidal_pipeline(data, max_batch=max_batch, observer=observer)
    t0 = time.perf_counter()
    summary = ex.run()
    seconds = time.perf_counter() - t0
    assert summary.events == len(data), summary
    assert summary.late == 0 and summary.dead_letters == 0, summary
    out = Batch.concat(sink.batches)
    assert sink.rows == len(out)
    res = _sorted(out["window_start"], out["key"], out["count"], out["mean"], out["max"])
    return seconds, res


# -- 2. numpy -------------------------------------------------------------------------


def _codes(data: Data) -> tuple[np.ndarray, int, int]:
    window = data.ts // WINDOW_MS
    w0 = int(window.min())
    code = (window - w0) * data.keys + data.key
    return code, w0, int(window.max() - w0 + 1) * data.keys


def _numpy_result(
    code_present: np.ndarray, w0: int, keys: int, n: np.ndarray, s: np.ndarray, mx: np.ndarray
) -> Result:
    # codes ascend by (window, key), so the result is already in the canonical order
    return {
        "window_start": (code_present // keys + w0) * WINDOW_MS,
        "key": code_present % keys,
        "count": n,
        "mean": s / n,
        "max": mx,
    }


def run_numpy_sort(data: Data) -> Result:
    """bincount for count/sum; argsort + maximum.reduceat for max."""
    code, w0, groups = _codes(data)
    n = np.bincount(code, minlength=groups)
    s = np.bincount(code, weights=data.value, minlength=groups)
    order = np.argsort(code)
    sc = code[order]
    first = np.ones(len(sc), dtype=bool)
    first[1:] = sc[1:] != sc[:-1]
    starts = np.flatnonzero(first)
    mx = np.maximum.reduceat(data.value[order], starts)
    present = sc[starts]
    return _numpy_result(present, w0, data.keys, n[present], s[present], mx)


def run_numpy_at(data: Data) -> Result:
    """bincount for count/sum; maximum.at for max."""
    code, w0, groups = _codes(data)
    n = np.bincount(code, minlength=groups)
    s = np.bincount(code, weights=data.value, minlength=groups)
    mx = np.full(groups, -np.inf)
    np.maximum.at(mx, code, data.value)
    present = np.flatnonzero(n)
    return _numpy_result(present, w0, data.keys, n[present], s[present], mx[present])


# -- 3. plain Python ------------------------------------------------------------------


def python_lists(data: Data) -> tuple[list[int], list[int], list[float]]:
    """The columns as Python lists (not timed)."""
    return data.ts.tolist(), data.key.tolist(), data.value.tolist()


def run_python(lists: tuple[list[int], list[int], list[float]]) -> Result:
    """One event at a time into a dict keyed by (key, window start)."""
    state: dict[tuple[int, int], list[float]] = {}
    get = state.get
    for t, k, v in zip(*lists, strict=True):
        w = t - t % WINDOW_MS
        acc = get((k, w))
        if acc is None:
            state[(k, w)] = [1, v, v]
        else:
            acc[0] += 1
            acc[1] += v
            if v > acc[2]:
                acc[2] = v
    ks = [k for k, _ in state]
    ws = [w for _, w in state]
    accs = list(state.values())
    return _sorted(ws, ks, [a[0] for a in accs], [a[1] / a[0] for a in accs], [a[2] for a in accs])


# -- checking -------------------------------------------------------------------------


def check_same(a: Result, b: Result, what: str) -> None:
    """Same windows, keys and counts exactly; mean and max to 1e-9 (relative)."""
    for col in ("window_start", "key", "count"):
        if not np.array_equal(a[col], b[col]):
            raise AssertionError(f"{what}: column {col!r} differs")
    for col in ("mean", "max"):
        if not np.allclose(a[col], b[col], rtol=1e-9, atol=0.0):
            worst = float(np.max(np.abs(a[col] - b[col])))
            raise AssertionError(f"{what}: column {col!r} differs (max abs diff {worst})")


def compute_all(data: Data, *, max_batch: int = 65_536) -> dict[str, Result]:
    """Every implementation once (untimed), checked against the Python reference."""
    ref = run_python(python_lists(data))
    results = {
        "tidal": run_tidal(data, max_batch=max_batch)[1],
        "numpy-sort": run_numpy_sort(data),
        "numpy-at": run_numpy_at(data),
        "python": ref,
    }
    for name, res in results.items():
        check_same(res, ref, f"{name} vs python")
    return results


# -- the bench ------------------------------------------------------------------------


def main(
    events: int = 2_000_000,
    runs: int = 3,
    keys: int = 1_000,
    *,
    max_batch: int = 65_536,
    batch_sizes: tuple[int, ...] = (8_192, 65_536, 262_144),
) -> dict[str, float]:
    """Time each implementation (best of ``runs``), check every result, print the tables.

    Returns the best seconds per implementation (``tidal@N`` for the ``max_batch`` sweep).
    """
    data = generate(events, keys)
    lists = python_lists(data)
    ref = run_python(lists)
    times: dict[str, float] = {}
    for name, fn in (
        ("numpy-sort", lambda: run_numpy_sort(data)),
        ("numpy-at", lambda: run_numpy_at(data)),
        ("python", lambda: run_python(lists)),
    ):
        times[name], res = best_of(runs, fn)
        check_same(res, ref, f"{name} vs python")
    for mb in dict.fromkeys((max_batch, *batch_sizes)):
        best = float("inf")
        for _ in range(runs):
            seconds, res = run_tidal(data, max_batch=mb)
            check_same(res, ref, f"tidal (max_batch={mb}) vs python")
            best = min(best, seconds)
        times[f"tidal@{mb}"] = best
    times["tidal"] = tidal = times[f"tidal@{max_batch}"]
    labels = {
        "tidal": f"Tidal: Pipeline, MemorySource, max_batch={max_batch:,}",
        "numpy-sort": "numpy, whole data set: bincount + argsort/maximum.reduceat",
        "numpy-at": "numpy, whole data set: bincount + maximum.at",
        "python": "plain Python dict loop, one event at a time",
    }
    rows = [
        [
            labels[name],
            f"{times[name] * 1e3:.1f}",
            rate(events / times[name]),
            f"{times[name] / tidal:.2f}x",
        ]
        for name in ("tidal", "numpy-sort", "numpy-at", "python")
    ]
    windows = len(np.unique(ref["window_start"]))
    table(
        f"W1: {events:,} events, {keys:,} int keys, 1 s tumbling windows ({windows} windows, "
        f"{len(ref['key']):,} result rows), count/mean/max; best of {runs}",
        ["implementation", "best ms", "events/s", "Tidal events/s ÷ this"],
        rows,
    )
    print()
    print(
        f"Tidal/numpy-sort = {times['numpy-sort'] / tidal:.2f}x, "
        f"Tidal/numpy-at = {times['numpy-at'] / tidal:.2f}x, "
        f"Tidal/python = {times['python'] / tidal:.1f}x (events/s ratios). All results "
        "checked equal to the Python loop's: counts exactly, mean and max to 1e-9."
    )
    sweep = [
        [
            f"{mb:,}",
            f"{-(-events // mb):,}",
            f"{times[f'tidal@{mb}'] * 1e3:.1f}",
            rate(events / times[f"tidal@{mb}"]),
        ]
        for mb in batch_sizes
    ]
    table(
        f"W1, Tidal by max_batch (same data and pipeline; best of {runs})",
        ["max_batch", "batches", "best ms", "events/s"],
        sweep,
    )
    return times


def cli(argv: list[str] | None = None) -> None:
    """``python bench/run.py w1 [--events N] [--runs N] [--keys N]``."""
    ap = argparse.ArgumentParser(prog="bench w1", description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keys", type=int, default=1_000)
    ap.add_argument("--max-batch", type=int, default=65_536)
    args = ap.parse_args(argv)
    main(args.events, args.runs, args.keys, max_batch=args.max_batch)
