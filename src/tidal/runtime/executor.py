"""The single-process executor: micro-batches bounded by size and a latency budget.

The loop, for each source in turn:

1. poll until ``max_batch`` records or ``max_wait`` after the first record arrived
   (the latency budget), so that batches are small at low rates and large at high rates;
2. read event time, send rows without a readable time to the dead letters, and assign each
   row the watermark in force when it arrived;
3. push the batch depth-first through the graph, synchronously, down to the sinks;
4. advance the watermark and push what the windows fire;
5. record every event's latency (now minus its ingest time).

Because step 3 is synchronous, a slow sink slows the source (backpressure) and at most one
micro-batch per source is in flight, so memory stays bounded. Between two batches every
operator's state matches the source positions: :meth:`Executor.snapshot` can be called there.

Stopping: bounded sources end the run and fire every window (the watermark goes to
``MAX_TIME``); ``max_events`` does the same after that many events; SIGINT/SIGTERM stop after
the current batch and flush the sinks.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import numpy as np

from tidal.core.batch import Batch
from tidal.core.deadletter import DeadLetter
from tidal.core.duration import Duration, to_seconds
from tidal.core.operator import Context
from tidal.core.operators import position_of, raw_of
from tidal.core.watermark import MAX_TIME, MIN_TIME, WatermarkTracker
from tidal.errors import ConfigError, PipelineError, StateError
from tidal.observe.metrics import LatencyHistogram
from tidal.pipeline import Node, Pipeline
from tidal.runtime.eventtime import event_time_ms

SNAPSHOT_VERSION = 1


@dataclass
class RunSummary:
    """What a run did: the JSON summary of ``tidal run --json``."""

    events: int
    seconds: float
    latency_ms: dict[str, Any]
    late: int
    dead_letters: int
    counts: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        """Throughput over the whole run."""
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict."""
        return {
            "events": self.events,
            "seconds": round(self.seconds, 4),
            "events_per_s": round(self.events_per_s, 1),
            "latency_ms": self.latency_ms,
            "late": self.late,
            "dead_letters": self.dead_letters,
            "counts": self.counts,
            "outputs": self.outputs,
            **self.extra,
        }


class _SourceRun:
    """A source step at run time: polling, event time, watermarks."""

    def __init__(self, node: Node, dead: Callable[[DeadLetter], None]) -> None:
        assert node.source is not None and node.watermark is not None
        self.node = node
        self.source = node.source
        self.tracker: WatermarkTracker = node.watermark.tracker()
        self.processing = node.watermark.kind == "processing"
        self.finished = False
        self.dead = dead

    def poll(self, max_batch: int, max_wait: float, idle: float) -> Batch | None:
        """Collect one micro-batch (``None`` once the source is exhausted)."""
        parts: list[Batch] = []
        n = 0
        deadline: float | None = None
        while n < max_batch:
            now = time.monotonic()
            remaining = idle if deadline is None else deadline - now
            if remaining < 0:
                break
            b = self.source.poll(max_batch - n, remaining)
            for d in self.source.dead_letters():
                self.dead(d)
            if b is None:
                self.finished = True
                break
            if len(b):
                if b.ingest is None:
                    b.ingest = np.full(len(b), time.time_ns(), dtype=np.int64)
                parts.append(b)
                n += len(b)
                if max_wait <= 0:
                    break  # no latency budget: every poll is a batch
                if deadline is None:
                    deadline = now + max_wait
            elif deadline is None:
                break
        if not parts:
            return None if self.finished else Batch()
        return self._stamp(Batch.concat(parts))

    def _stamp(self, batch: Batch) -> Batch:
        assert batch.ingest is not None
        if self.processing:
            times = batch.ingest // 1_000_000
        else:
            col = self.node.time
            assert col is not None
            if col not in batch:
                ok = np.zeros(len(batch), dtype=bool)
                times = np.zeros(len(batch), dtype=np.int64)
            else:
                times, ok = event_time_ms(batch[col], self.node.time_unit)
            if not ok.all():
                for i in np.flatnonzero(~ok).tolist():
                    reason = (
                        f"missing or unreadable event time in column {col!r} "
                        f"(unit {self.node.time_unit})"
                    )
                    self.dead(
                        DeadLetter(self.node.name, reason, position_of(batch, i), raw_of(batch, i))
                    )
                batch, times = batch.filter(ok), times[ok]
        batch.time = times
        batch.wm = self.tracker.assign(times, batch.partition, now=time.monotonic())
        return batch

    def watermark(self) -> int:
        """The source's watermark now."""
        if self.finished:
            return MAX_TIME
        return self.tracker.current(time.monotonic(), wall_ms=time.time_ns() // 1_000_000)


class Executor:
    """Runs a :class:`~tidal.pipeline.Pipeline` in this process.

    Args:
        pipeline: what to run.
        max_batch: most events in one micro-batch.
        max_wait: the latency budget: how long to wait for more events after the first
            one of a batch arrived (e.g. ``"2ms"``).
        max_events: stop after this many events, firing all windows (a bounded run).
        idle_poll: how long one poll waits when nothing arrives.
        progress: called with the running :class:`RunSummary` every ``progress_every``.
        progress_every: interval of ``progress`` calls.
        handle_signals: stop gracefully on SIGINT/SIGTERM (main thread only).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        max_batch: int = 8192,
        max_wait: Duration = "5ms",
        max_events: int | None = None,
        idle_poll: Duration = "50ms",
        progress: Callable[[RunSummary], None] | None = None,
        progress_every: Duration = "500ms",
        handle_signals: bool = True,
    ) -> None:
        if max_batch <= 0:
            msg = f"max_batch must be > 0, got {max_batch}"
            raise ConfigError(msg)
        if max_events is not None and max_events < 0:
            msg = f"max_events must be >= 0, got {max_events}"
            raise ConfigError(msg)
        self.pipeline = pipeline
        self.max_batch = max_batch
        self.max_wait = to_seconds(max_wait)
        self.max_events = max_events
        self.idle = to_seconds(idle_poll)
        self.progress = progress
        self.progress_every = to_seconds(progress_every)
        self.handle_signals = handle_signals
        self.nodes = list(pipeline.nodes.values())
        if not any(n.source is not None for n in self.nodes):
            msg = f"pipeline {pipeline.name!r} has no source; add one with pipeline.source(...)"
            raise PipelineError(msg)
        self.children: dict[str, list[list[tuple[Node, int]]]] = {
            n.name: [[] for _ in n.outputs] for n in self.nodes
        }
        for n in self.nodes:
            for in_port, (up, port) in enumerate(n.inputs):
                self.children[up.name][port].append((n, in_port))
        self.in_wm = {n.name: [MIN_TIME] * max(1, len(n.inputs)) for n in self.nodes}
        self.node_wm = {n.name: MIN_TIME for n in self.nodes}
        self.counters: dict[str, int] = {}
        self.outputs = {n.name: 0 for n in self.nodes if n.sink is not None}
        self.dead_count = 0
        self.dead_kept: deque[DeadLetter] = deque(maxlen=10_000)
        self.ctx = Context(dead=self._dead, counters=self.counters)
        self.sources = [_SourceRun(n, self._dead) for n in self.nodes if n.source is not None]
        self.hist = LatencyHistogram()
        self.events = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._opened = False
        self._started = 0.0

    # -- dead letters -----------------------------------------------------------------
    def _dead(self, letter: DeadLetter) -> None:
        self.dead_count += 1
        self.dead_kept.append(letter)
        sink = self.pipeline.dead_letters
        if sink is not None:
            sink.write(Batch.from_records([_flat(letter)]))

    @property
    def dead_letters(self) -> list[DeadLetter]:
        """The last 10,000 dead letters of this run."""
        return list(self.dead_kept)

    # -- life cycle ---------------------------------------------------------------------
    def open(self, snapshot: Mapping[str, Any] | None = None) -> None:
        """Open operators, sinks and sources, restoring ``snapshot`` if given."""
        positions: dict[str, dict[int, Any]] = {}
        if snapshot is not None:
            positions = self._restore(snapshot)
        for n in self.nodes:
            if n.op is not None:
                n.op.open(self.ctx)
            if n.sink is not None:
                n.sink.open()
        if self.pipeline.dead_letters is not None:
            self.pipeline.dead_letters.open()
        for s in self.sources:
            s.tracker.set_partitions(tuple(s.source.partitions()))
            s.source.open(positions.get(s.node.name, {}))
        self._opened = True
        self._started = time.perf_counter()

    def stop(self) -> None:
        """Ask the run to stop after the current batch (thread- and signal-safe)."""
        self._stop.set()

    def step(self) -> bool:
        """Process one micro-batch from each source; ``False`` when there is no more input."""
        for s in self.sources:
            if s.finished:
                continue
            budget = self.max_batch
            if self.max_events is not None:
                budget = min(budget, self.max_events - self.events)
                if budget <= 0:
                    return False
            batch = s.poll(budget, self.max_wait, self.idle)
            if batch is not None and len(batch):
                self.events += len(batch)
                self._emit(s.node, 0, batch)
            self._advance(s.node, s.watermark())
            if batch is not None and len(batch):
                assert batch.ingest is not None
                self.hist.record(time.time_ns() - batch.ingest)
        if self.max_events is not None and self.events >= self.max_events:
            return False
        return not all(s.finished for s in self.sources)

    def run(self, snapshot: Mapping[str, Any] | None = None) -> RunSummary:
        """Run until the input ends, ``max_events`` is reached, or :meth:`stop`."""
        if not self._opened:
            self.open(snapshot)
        restore = self._install_signals()
        drain = False
        next_progress = time.monotonic() + self.progress_every
        try:
            while not self._stop.is_set():
                if not self.step():
                    drain = True
                    break
                if self.progress is not None and time.monotonic() >= next_progress:
                    next_progress = time.monotonic() + self.progress_every
                    self.progress(self.summary())
        finally:
            restore()
        self.finish(drain=drain)
        return self.summary()

    def finish(self, *, drain: bool) -> None:
        """End the run: with ``drain`` fire every window, then flush and close everything."""
        if drain:
            for s in self.sources:
                s.finished = True
                self._advance(s.node, MAX_TIME)
        for n in self.nodes:
            if n.sink is not None:
                n.sink.close()
            if n.op is not None:
                n.op.close()
        if self.pipeline.dead_letters is not None:
            self.pipeline.dead_letters.close()
        for s in self.sources:
            s.source.close()
        self.seconds = time.perf_counter() - self._started

    def summary(self) -> RunSummary:
        """The run's figures so far."""
        counts = {k: v for k, v in self.counters.items() if k != "late"}
        return RunSummary(
            events=self.events,
            seconds=(time.perf_counter() - self._started) if not self.seconds else self.seconds,
            latency_ms=self.hist.summary_ms(),
            late=self.counters.get("late", 0),
            dead_letters=self.dead_count,
            counts=counts,
            outputs=dict(self.outputs),
        )

    def _install_signals(self) -> Callable[[], None]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop()

        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, h in old.items():
                signal.signal(sig, h)

        return restore

    # -- data flow ----------------------------------------------------------------------
    def _emit(self, node: Node, port: int, batch: Batch) -> None:
        if len(batch) == 0:
            return
        for child, in_port in self.children[node.name][port]:
            if child.sink is not None:
                child.sink.write(batch)
                self.outputs[child.name] += len(batch)
                continue
            assert child.op is not None
            for out_port, out in child.op.process(batch, in_port):
                self._emit(child, out_port, out)

    def _advance(self, node: Node, wm: int) -> None:
        if wm <= self.node_wm[node.name] and node.source is None:
            return
        self.node_wm[node.name] = max(self.node_wm[node.name], wm)
        touched: list[Node] = []
        for port_children in self.children[node.name]:
            for child, in_port in port_children:
                marks = self.in_wm[child.name]
                marks[in_port] = max(marks[in_port], wm)
                if child not in touched:
                    touched.append(child)
        for child in touched:
            new = min(self.in_wm[child.name])
            if new <= self.node_wm[child.name] or child.sink is not None:
                continue
            assert child.op is not None
            for out_port, out in child.op.on_watermark(new):
                self._emit(child, out_port, out)
            self._advance(child, new)

    # -- snapshots ----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """A consistent snapshot; call it between batches (not from inside an operator).

        Encode it with :func:`tidal.runtime.snapshot.encode` to store it.
        """
        return {
            "version": SNAPSHOT_VERSION,
            "pipeline": self.pipeline.name,
            "events": self.events,
            "operators": {
                n.name: {"type": type(n.op).__name__, "state": n.op.snapshot()}
                for n in self.nodes
                if n.op is not None
            },
            "sources": {
                s.node.name: {
                    "positions": {str(k): v for k, v in s.source.position().items()},
                    "watermark": s.tracker.snapshot(),
                    "finished": s.finished,
                }
                for s in self.sources
            },
            "watermarks": {"node": dict(self.node_wm), "inputs": dict(self.in_wm)},
        }

    def _restore(self, snap: Mapping[str, Any]) -> dict[str, dict[int, Any]]:
        if snap.get("version") != SNAPSHOT_VERSION:
            msg = f"snapshot version {snap.get('version')!r} is not {SNAPSHOT_VERSION}"
            raise StateError(msg)
        ops = snap["operators"]
        for n in self.nodes:
            if n.op is None:
                continue
            saved = ops.get(n.name)
            if saved is None:
                msg = (
                    f"the snapshot has no state for step {n.name!r}; was the step added or renamed?"
                )
                raise StateError(msg)
            if saved["type"] != type(n.op).__name__:
                msg = (
                    f"step {n.name!r} was a {saved['type']} in the snapshot and is a "
                    f"{type(n.op).__name__} now; rename the step or drop its state"
                )
                raise StateError(msg)
            n.op.restore(saved["state"])
        unknown = set(ops) - {n.name for n in self.nodes if n.op is not None}
        if unknown:
            msg = f"the snapshot has state for steps {sorted(unknown)} that this pipeline lacks"
            raise StateError(msg)
        positions: dict[str, dict[int, Any]] = {}
        for s in self.sources:
            saved = snap["sources"].get(s.node.name)
            if saved is None:
                msg = f"the snapshot has no position for source {s.node.name!r}"
                raise StateError(msg)
            positions[s.node.name] = {int(k): v for k, v in saved["positions"].items()}
            s.tracker.restore(saved["watermark"])
            s.finished = bool(saved["finished"])
        self.node_wm.update({k: int(v) for k, v in snap["watermarks"]["node"].items()})
        for k, v in snap["watermarks"]["inputs"].items():
            self.in_wm[k] = [int(x) for x in v]
        self.events = int(snap["events"])
        return positions


def _flat(letter: DeadLetter) -> dict[str, Any]:
    import orjson

    rec = letter.to_record()
    rec["position"] = orjson.dumps(rec["position"]).decode()
    return rec
