"""Metrics overhead: W1 and the latency benchmark with metrics off and on, in one run.

"On" is what ``tidal run --metrics-port`` / ``--ui`` does: a
:class:`~tidal.observe.live.LiveRun` observer on the executor (per-step timing and counts,
latency buckets, once per batch) plus a thread that renders ``/metrics`` from the
pipeline's own Prometheus registry once a second, as a scraper would. The runs alternate
(off, on, off, on, ...) so a noisy spell on a shared machine hits both alike.

* W1 (bench/w1.py): 2M events, keyed 1 s tumbling windows, from memory, at full speed;
  best of ``runs`` per setting, for two ``max_batch`` sizes (the smaller one has 8x the
  batches, so 8x the per-batch observer work).
* Latency (bench/latency.py): a generator at a fixed rate, ``max_wait=1ms``; the p50/p99
  of each run, and the median run of each setting.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

from prometheus_client import generate_latest

from bench import latency, w1
from bench.common import rate, table
from tidal.observe.live import LiveRun
from tidal.observe.prometheus import registry_for


class Scraper:
    """Renders ``/metrics`` every ``every`` seconds in a thread, as Prometheus would."""

    def __init__(self, live: LiveRun, every: float = 1.0) -> None:
        self.registry = registry_for(live)
        self.every = every
        self.stop = threading.Event()
        self.scrapes = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(self.every):
            generate_latest(self.registry)
            self.scrapes += 1

    def __enter__(self) -> Scraper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        generate_latest(self.registry)  # and once at the end
        self.scrapes += 1


def hook_cost(batch_rows: int = 65_536, calls: int = 2_000) -> list[list[Any]]:
    """CPU time of the observer's work for one W1 batch, the hook alone (less noisy).

    What the executor does per source batch with an observer: a tally entry per step (the
    window, the sink) and one ``on_batch`` with the batch's latencies.
    """
    import numpy as np

    from tidal.core.batch import Batch

    data = w1.generate(batch_rows, 1_000)
    live = LiveRun()
    ex, _ = w1.tidal_pipeline(data, max_batch=batch_rows, observer=live)
    ex.open()
    tally = ex.tally
    assert tally is not None
    lat = np.random.default_rng(1).integers(100_000, 50_000_000, batch_rows)
    out = Batch({"key": np.arange(1_000), "count": np.ones(1_000)})
    t0 = time.process_time()
    for _ in range(calls):
        ex.hist.record(lat)  # the executor does this with or without an observer
    base = time.process_time() - t0
    t0 = time.process_time()
    for _ in range(calls):  # the same work whatever the histogram's counts are
        tally.add("per_second", batch_rows, [(0, out)], 0.001)
        tally.sink("out", out, 0.0001)
        live.on_batch("events", lat, tally)
    cost = (time.process_time() - t0) / calls
    ex.finish(drain=False)
    return [[f"observer work per batch of {batch_rows:,} rows", f"{cost * 1e6:.1f} µs",
             f"{base / calls * 1e6:.1f} µs"]]  # fmt: skip


def _w1_once(data: Any, max_batch: int, observer: LiveRun | None) -> tuple[float, float]:
    """CPU seconds of the process (every thread: the scraper's too) and wall seconds."""
    ex, sink = w1.tidal_pipeline(data, max_batch=max_batch, observer=observer)
    c0, w0 = time.process_time(), time.perf_counter()
    summary = ex.run()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    assert summary.events == len(data) and sink.rows > 0
    return cpu, wall


def w1_overhead(events: int, runs: int, batches: tuple[int, ...]) -> list[list[Any]]:
    data = w1.generate(events, 1_000)
    rows = []
    for mb in batches:
        cpu = {"off": float("inf"), "on": float("inf")}
        wall = dict(cpu)
        for _ in range(runs):
            c, w = _w1_once(data, mb, None)
            cpu["off"], wall["off"] = min(cpu["off"], c), min(wall["off"], w)
            live = LiveRun()
            with Scraper(live):
                c, w = _w1_once(data, mb, live)
            cpu["on"], wall["on"] = min(cpu["on"], c), min(wall["on"], w)
            assert live.events == events
        rows.append([
            f"W1, max_batch={mb:,} ({-(-events // mb):,} batches)",
            rate(events / cpu["off"]), rate(events / cpu["on"]),
            f"{cpu['on'] / cpu['off'] - 1:+.1%}",
            rate(events / wall["off"]), rate(events / wall["on"]),
            f"{wall['on'] / wall['off'] - 1:+.1%}",
        ])  # fmt: skip
    return rows


def latency_overhead(events_per_s: int, seconds: float, repeat: int) -> list[list[Any]]:
    latency.run_once(events_per_s, 0.2, "1ms", 8_192)  # warm up
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for _ in range(repeat):
        runs["off"].append(latency.run_once(events_per_s, seconds, "1ms", 8_192))
        live = LiveRun()
        with Scraper(live):
            runs["on"].append(latency.run_once(events_per_s, seconds, "1ms", 8_192, live))
    rows = []
    for name, rs in runs.items():
        p99s = sorted(r["summary"].latency_ms["p99"] for r in rs)
        p50 = statistics.median(r["summary"].latency_ms["p50"] for r in rs)
        achieved = statistics.median(r["summary"].events_per_s for r in rs)
        batches = statistics.median(r["batches"] for r in rs)
        rows.append([
            f"latency, metrics {name}", rate(achieved), f"{batches:,.0f}", f"{p50:.3f}",
            f"{statistics.median(p99s):.3f}", " / ".join(f"{x:.2f}" for x in p99s),
        ])  # fmt: skip
    return rows


def main(
    events: int = 2_000_000,
    runs: int = 5,
    batches: tuple[int, ...] = (65_536, 8_192),
    events_per_s: int = 100_000,
    seconds: float = 5.0,
    repeat: int = 3,
) -> dict[str, list[list[Any]]]:
    hook = hook_cost()
    table(
        "Metrics overhead, the hook alone: CPU time per W1 batch (2,000 calls), beside what "
        "the executor's own latency histogram costs for the same batch",
        ["what", "observer", "executor's histogram"],
        hook,
    )
    w = w1_overhead(events, runs, batches)
    table(
        f"Metrics overhead, throughput: W1 ({events:,} events, 1,000 keys), best of {runs}, "
        "metrics off vs on (LiveRun observer + /metrics rendered every second); "
        "events per CPU second of the process (every thread) and per wall second",
        [
            "workload",
            "off (CPU)",
            "on (CPU)",
            "cost (CPU)",
            "off (wall)",
            "on (wall)",
            "cost (wall)",
        ],
        w,
    )
    lat = latency_overhead(events_per_s, seconds, repeat)
    table(
        f"Metrics overhead, latency: generator at {events_per_s:,} events/s for {seconds:g} s, "
        f"max_wait=1ms, {repeat} runs each (alternating)",
        ["setting", "achieved", "batches", "p50 ms (median)", "p99 ms (median)",
         "p99 of each run"],
        lat,
    )  # fmt: skip
    return {"hook": hook, "w1": w, "latency": lat}


def cli(argv: list[str] | None = None) -> None:
    """``python bench/run.py metrics [--events N] [--runs N] [--rate N] [--seconds S]``."""
    ap = argparse.ArgumentParser(prog="bench metrics", description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rate", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    main(args.events, args.runs, events_per_s=args.rate, seconds=args.seconds,
         repeat=args.repeat)  # fmt: skip
