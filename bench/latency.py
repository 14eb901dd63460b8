"""Latency: a generator at a fixed rate -> key_by -> 1 s tumbling window -> sink.

A :class:`~tidal.io.generator.GeneratorSource` makes ``rate`` events per second of wall
clock for ``seconds`` seconds (1,000 int keys, event time = the event's due time on a
simulated clock with ±50 ms jitter, ``bounded("100ms")`` watermark), run by
:class:`~tidal.runtime.executor.Executor` with a few ``max_wait`` budgets.

What "latency" means here (``RunSummary.latency_ms``): for each event, from its *ingest*
time — the wall-clock instant the generator made it due, so time spent waiting to be
picked up counts — to the end of processing of the micro-batch that contained it (the
batch went through the window operator, the watermark advanced, and whatever windows that
fired were written to the sink). It is not the time until the event's own window result
comes out: a 1 s window emits after the window closes, by design.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from bench.common import rate, table
from bench.w1 import EPOCH_MS, CountingSink
from tidal import Executor, Pipeline, bounded, tumbling
from tidal import aggregations as agg
from tidal.io.generator import GeneratorSource

KEYS = 1_000


def make_columns(events_per_s: int) -> Any:
    """Columns for sequence numbers: deterministic keys, values, jittered event time."""

    def make(seq: np.ndarray) -> dict[str, np.ndarray]:
        jitter = (seq * 2_654_435_761) % 101 - 50
        return {
            "key": (seq * 7_919) % KEYS,
            "value": (seq % 997).astype(np.float64) * 0.5,
            "ts": EPOCH_MS + (seq * 1_000) // events_per_s + jitter,
        }

    return make


def run_once(
    events_per_s: int, seconds: float, max_wait: str, max_batch: int, observer: Any = None
) -> dict[str, Any]:
    """One run; returns the summary figures and the number of micro-batches."""
    total = int(events_per_s * seconds)
    p = Pipeline("latency")
    sink = CountingSink()
    (
        p.source(
            "gen",
            GeneratorSource(make_columns(events_per_s), rate=events_per_s, total=total),
            time="ts",
            watermark=bounded("100ms"),
        )
        .key_by("key")
        .window(
            "per_second",
            tumbling("1s"),
            {"count": agg.count(), "mean": agg.mean("value"), "max": agg.max("value")},
        )
        .sink("out", sink)
    )
    ex = Executor(
        p, max_batch=max_batch, max_wait=max_wait, handle_signals=False, observer=observer
    )
    # Executor.run() is this loop (plus signal handling); stepping lets us count batches
    ex.open()
    batches = 0
    more = True
    while more:
        before = ex.events
        more = ex.step()
        batches += ex.events > before
    ex.finish(drain=True)
    summary = ex.summary()
    assert summary.events == total, summary
    assert summary.late == 0, summary
    assert sum(int(b["count"].sum()) for b in sink.batches) == total
    return {
        "summary": summary,
        "batches": batches,
        "max_ms": ex.hist.max_ns / 1e6,
    }


def main(
    events_per_s: int = 100_000,
    seconds: float = 5.0,
    waits: tuple[str, ...] = ("0ms", "1ms", "2ms", "5ms"),
    max_batch: int = 8_192,
    repeat: int = 3,
) -> list[dict[str, Any]]:
    """Run each ``max_wait`` setting ``repeat`` times (one run at a time); print the table.

    A row is the run with the median p99 of its setting (the machine may be shared, and
    one noisy run should not make the number); the last column lists every run's p99, in
    sorted order.
    """
    run_once(events_per_s, 0.2, waits[0], max_batch)  # warm up imports and caches
    # round-robin over the settings, so that a noisy spell hits them alike
    all_runs: dict[str, list[dict[str, Any]]] = {w: [] for w in waits}
    for _ in range(repeat):
        for wait in waits:
            all_runs[wait].append(run_once(events_per_s, seconds, wait, max_batch))
            time.sleep(0.2)
    rows, chosen = [], []
    for wait in waits:
        runs = sorted(all_runs[wait], key=lambda r: r["summary"].latency_ms["p99"])
        r = runs[len(runs) // 2]
        chosen.append(r)
        s = r["summary"]
        lat = s.latency_ms
        rows.append(
            [
                wait,
                f"{s.events:,}",
                f"{s.seconds:.2f}",
                rate(s.events_per_s),
                f"{r['batches']:,}",
                f"{s.events / max(r['batches'], 1):.0f}",
                f"{lat['p50']:.3f}",
                f"{lat['p99']:.3f}",
                f"{lat['p999']:.3f}",
                f"{r['max_ms']:.2f}",
                " / ".join(f"{x['summary'].latency_ms['p99']:.2f}" for x in runs),
            ]
        )
    table(
        f"Latency: GeneratorSource at {events_per_s:,} events/s for {seconds:g} s -> key_by -> "
        f"1 s tumbling window (count/mean/max, {KEYS:,} keys) -> sink; max_batch={max_batch:,}; "
        f"median run (by p99) of {repeat}",
        [
            "max_wait",
            "events",
            "wall s",
            "achieved",
            "batches",
            "events/batch",
            "p50 ms",
            "p99 ms",
            "p999 ms",
            "max ms",
            "p99 of each run",
        ],
        rows,
    )
    print()
    print(
        "latency = from each event's ingest (the generator's due time for it) to the end of "
        "processing of the micro-batch containing it; percentiles from a log-linear "
        "histogram (within ~2%)."
    )
    return chosen


def cli(argv: list[str] | None = None) -> None:
    """``python bench/run.py latency [--rate N] [--seconds S] [--waits 1ms,2ms] [--repeat N]``."""
    ap = argparse.ArgumentParser(prog="bench latency", description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--waits", default="0ms,1ms,2ms,5ms")
    ap.add_argument("--max-batch", type=int, default=8_192)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    main(args.rate, args.seconds, tuple(args.waits.split(",")), args.max_batch, args.repeat)
