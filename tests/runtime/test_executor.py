"""The executor: bounded runs, latency budget, backpressure, watermarks, bad input, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tidal import Batch, ConfigError, Executor, Pipeline, PipelineError, bounded, processing_time
from tidal import aggregations as agg
from tidal.io.base import BaseSink, BaseSource
from tidal.io.generator import GeneratorSource
from tidal.testing import MemorySink, MemorySource, collect, run
from tidal.windows import tumbling


def test_max_events_bounds_an_unbounded_source_and_fires_windows() -> None:
    p = Pipeline("bounded")
    gen = GeneratorSource(lambda seq: {"k": seq % 3, "ts": seq * 10})
    s = p.source("gen", gen, time="ts")
    out = collect(s.key_by("k").window("w", tumbling("1s"), {"n": agg.count()}))
    summary = run(p, max_events=1_000, max_batch=64)
    assert summary.events == 1_000
    assert sum(r["n"] for r in out.records()) == 1_000  # the last windows fired on drain


def test_batches_respect_max_batch() -> None:
    p = Pipeline("sizes")
    s = p.source("in", MemorySource({"x": np.arange(1000)}))
    out = collect(s)
    run(p, max_batch=100)
    assert max(len(b) for b in out.batches) <= 100
    assert len(out) == 1000


class _Trickle(BaseSource):
    """Hands out one record per poll, to see the latency budget merge polls."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.i = n, 0

    def poll(self, max_records: int, timeout: float) -> Batch | None:
        if self.i >= self.n:
            return None
        self.i += 1
        return Batch({"x": [self.i]})


def test_latency_budget_merges_polls_into_one_batch() -> None:
    p = Pipeline("budget")
    out = collect(p.source("in", _Trickle(50)))
    Executor(p, max_batch=10, max_wait="10s", handle_signals=False).run()
    assert [len(b) for b in out.batches] == [10] * 5
    p2 = Pipeline("nobudget")
    out2 = collect(p2.source("in", _Trickle(5)))
    Executor(p2, max_batch=10, max_wait="0ms", handle_signals=False).run()
    assert [len(b) for b in out2.batches] == [1] * 5


class _SlowSink(BaseSink):
    def __init__(self, gen: GeneratorSource) -> None:
        self.gen = gen
        self.lag: list[int] = []
        self.rows = 0

    def write(self, batch: Batch) -> None:
        self.rows += len(batch)
        # the source can be at most one batch ahead of what the sink has taken
        self.lag.append(self.gen.seq - self.rows)
        time.sleep(0.002)


def test_a_slow_sink_slows_the_source_and_memory_stays_bounded() -> None:
    p = Pipeline("backpressure")
    gen = GeneratorSource(lambda seq: {"x": seq})
    sink = _SlowSink(gen)
    p.source("gen", gen).sink("slow", sink)
    Executor(p, max_batch=100, max_events=2_000, handle_signals=False).run()
    assert sink.rows == 2_000
    assert max(sink.lag) == 0  # nothing is read ahead of the sink: no unbounded buffer


def test_rows_without_event_time_go_to_dead_letters_with_position() -> None:
    p = Pipeline("dlq")
    dlq = MemorySink()
    p.dead_letters = dlq
    data = {"ts": np.array([100.0, np.nan, 300.0]), "v": [1, 2, 3]}
    out = collect(p.source("in", MemorySource(data), time="ts"))
    ex = Executor(p, max_wait="0ms", handle_signals=False)
    summary = ex.run()
    assert [r["v"] for r in out.records()] == [1, 3]
    assert summary.dead_letters == 1
    letter = ex.dead_letters[0]
    assert letter.step == "in" and "event time" in letter.reason
    assert letter.position == {"offset": 1}
    assert dlq.records()[0]["reason"] == letter.reason


def test_missing_time_column_dead_letters_every_row_and_keeps_running() -> None:
    p = Pipeline("notime")
    out = collect(p.source("in", MemorySource({"v": [1, 2]}), time="ts"))
    summary = run(p)
    assert summary.dead_letters == 2 and len(out) == 0


def test_validate_and_map_records_dead_letter_bad_rows() -> None:
    p = Pipeline("validate")
    s = p.source("in", MemorySource({"v": [1.0, -1.0, np.inf, 4.0]}))
    checked = s.validate(
        "check",
        {
            "v must be finite": lambda b: np.isfinite(b["v"]),
            "v must be >= 0": lambda b: b["v"] >= 0,
        },
    )

    def invert(rec: dict[str, float]) -> dict[str, float]:
        if rec["v"] == 4.0:
            raise ValueError("no fours")
        return {"inv": 1 / rec["v"]}

    out = collect(checked.map_records("invert", invert))
    ex = Executor(p, max_wait="0ms", handle_signals=False)
    summary = ex.run()
    assert out.records() == [{"inv": 1.0}]
    reasons = sorted(d.reason for d in ex.dead_letters)
    assert summary.dead_letters == 3
    assert reasons[0].startswith(
        "test_validate_and_map_records_dead_letter_bad_rows.<locals>.invert"
    )
    assert "ValueError: no fours" in reasons[0]
    assert reasons[1:] == ["v must be >= 0", "v must be finite"]


def test_user_function_errors_name_the_step_and_function() -> None:
    p = Pipeline("err")
    s = p.source("in", MemorySource({"v": [1]}))

    def broken(batch: Batch) -> Batch:
        raise KeyError("nope")

    collect(s.map("enrich", broken))
    with pytest.raises(
        PipelineError,
        match=r"step 'enrich': the function .*broken \(.*test_executor.py:\d+\) raised KeyError",
    ):
        run(p)


def test_map_must_keep_row_count() -> None:
    p = Pipeline("len")
    collect(p.source("in", MemorySource({"v": [1, 2]})).map("half", lambda b: b.slice(0, 1)))
    with pytest.raises(PipelineError, match="use filter to drop rows"):
        run(p)


def test_duplicate_step_names_and_bad_options_are_refused() -> None:
    p = Pipeline("dup")
    s = p.source("in", MemorySource({"v": [1]}))
    s.map("m", lambda b: b)
    with pytest.raises(PipelineError, match="already exists"):
        s.map("m", lambda b: b)
    with pytest.raises(ConfigError):
        Executor(p, max_batch=0)
    with pytest.raises(ConfigError, match="expected a duration"):
        Executor(p, max_wait="fast")


def test_union_takes_the_minimum_watermark_and_branch_routes_rows() -> None:
    p = Pipeline("union")
    a = p.source("a", MemorySource({"k": ["x"] * 3, "ts": [0, 1500, 2500]}), time="ts")
    b = p.source("b", MemorySource({"k": ["x"] * 2, "ts": [100, 200]}), time="ts")
    both = a.union("both", b)
    routes = both.branch("route", {"early": lambda batch: batch["ts"] < 1000})
    early, rest = collect(routes["early"]), collect(routes["rest"])
    out = collect(both.key_by("k").window("w", tumbling("1s"), {"n": agg.count()}))
    summary = run(p)
    assert summary.late == 0  # b's rows are not late although a ran ahead: min watermark
    assert sorted(r["ts"] for r in early.records()) == [0, 100, 200]
    assert sorted(r["ts"] for r in rest.records()) == [1500, 2500]
    assert sorted((r["window_start"], r["n"]) for r in out.records()) == [
        (0, 3),
        (1000, 1),
        (2000, 1),
    ]


class _TwoPartitions(BaseSource):
    """Partition 0 has data; partition 1 is silent (idle)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def partitions(self) -> tuple[int, ...]:
        return (0, 1)

    def poll(self, max_records: int, timeout: float) -> Batch | None:
        if self.sent >= 3:
            time.sleep(0.02)
            return Batch()
        self.sent += 1
        t = self.sent * 1000
        return Batch({"k": ["a"], "ts": [t]}, partition=[0])


def test_an_idle_partition_stops_holding_the_watermark_back() -> None:
    def fired(idle: str | None) -> int:
        p = Pipeline("idle")
        s = p.source("in", _TwoPartitions(), time="ts", watermark=bounded("0s", idle_timeout=idle))
        out = collect(s.key_by("k").window("w", tumbling("1s"), {"n": agg.count()}))
        ex = Executor(p, max_wait="0ms", idle_poll="10ms", handle_signals=False)
        ex.open()
        for _ in range(12):
            ex.step()
        return len(out)

    assert fired(None) == 0  # partition 1 never spoke: the watermark waits for it
    assert fired("50ms") == 2  # idle after 50 ms: windows [1s,2s) and [2s,3s) fire


def test_processing_time_windows_fire_on_the_wall_clock() -> None:
    p = Pipeline("proc")
    gen = GeneratorSource(lambda seq: {"k": seq % 2}, rate=2_000)
    s = p.source("gen", gen, watermark=processing_time())
    out = collect(s.key_by("k").window("w", tumbling("100ms"), {"n": agg.count()}))
    ex = Executor(p, max_wait="1ms", handle_signals=False)
    ex.open()
    deadline = time.monotonic() + 5
    while not len(out) and time.monotonic() < deadline:
        ex.step()
    assert len(out) > 0  # fired before the end of input: driven by wall-clock time
    assert all(r["window_end"] - r["window_start"] == 100 for r in out.records())


def test_latency_is_measured_per_event() -> None:
    p = Pipeline("lat")
    p.source("gen", GeneratorSource(lambda seq: {"x": seq}, rate=20_000)).sink("s", MemorySink())
    summary = Executor(p, max_events=2_000, max_wait="1ms", handle_signals=False).run()
    lat = summary.latency_ms
    assert summary.events == 2_000
    assert 0 < lat["p50"] <= lat["p99"] <= lat["p999"]


def test_sigterm_stops_gracefully_and_flushes(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    out = tmp_path / "out.txt"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        from tidal import Pipeline
        from tidal.io.base import BaseSink
        from tidal.io.generator import GeneratorSource

        class Lines(BaseSink):
            def open(self):
                self.f = open({str(out)!r}, "w")
            def write(self, batch):
                self.f.write("".join(f"{{x}}\\n" for x in batch["x"].tolist()))
            def flush(self):
                self.f.flush()
            def close(self):
                self.f.write("closed\\n")
                self.f.close()

        p = Pipeline("sig")
        p.source("gen", GeneratorSource(lambda s: {{"x": s}}, rate=5_000)).sink("lines", Lines())
        print("started", flush=True)
        summary = p.run(max_wait="1ms")
        print("events", summary.events, flush=True)
    """)
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    # "started" comes before run() installs its handlers: signal only once the sink has
    # rows, which run() writes after that (a SIGTERM any earlier would kill the process)
    deadline = time.monotonic() + 60
    while not out.exists() or out.stat().st_size < 100:
        assert proc.poll() is None and time.monotonic() < deadline, "the job wrote nothing"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    events = int(rest.split()[-1])
    lines = out.read_text().splitlines()
    assert lines[-1] == "closed"
    assert [int(x) for x in lines[:-1]] == list(range(events))  # all flushed, none lost


def test_weighted_top_k_in_a_window() -> None:
    p = Pipeline("topsellers")
    s = p.source(
        "orders",
        MemorySource(
            {"item": ["x", "y", "x", "z", "y"], "qty": [1, 5, 2, 1, 1], "ts": [1, 2, 3, 4, 5]}
        ),
        time="ts",
    )
    out = collect(s.window("top", tumbling("1s"), {"best": agg.top_k("item", 2, weight="qty")}))
    run(p)
    assert [tuple(x) for x in out.records()[0]["best"]] == [("y", 6.0), ("x", 3.0)]


def test_freeze_heap_freezes_the_start_up_heap_for_the_run_only() -> None:
    import gc

    seen: list[int] = []

    def look(b: Batch) -> Batch:
        seen.append(gc.get_freeze_count())
        return b

    for freeze in (False, True):
        seen.clear()
        p = Pipeline("frozen")
        p.source("in", MemorySource([{"t": i, "v": i} for i in range(10)]), time="t").map(
            "look", look
        ).sink("out", MemorySink())
        before = gc.get_freeze_count()
        Executor(p, handle_signals=False, freeze_heap=freeze).run()
        assert seen, "the map saw no batch"
        assert all(n > before for n in seen) if freeze else all(n == before for n in seen)
        assert gc.get_freeze_count() == before  # given back when the run ends


def test_a_failed_run_gives_its_frozen_heap_back() -> None:
    import gc

    def boom(b: Batch) -> Batch:
        raise RuntimeError("boom")

    p = Pipeline("frozen-fail")
    p.source("in", MemorySource([{"t": 1, "v": 1}]), time="t").map("boom", boom).sink(
        "out", MemorySink()
    )
    before = gc.get_freeze_count()
    with pytest.raises(Exception, match="boom"):
        Executor(p, handle_signals=False, freeze_heap=True).run()
    assert gc.get_freeze_count() == before
