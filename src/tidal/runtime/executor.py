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
``MAX_TIME``); ``max_events`` does the same after that many events (or, with
``at_limit="stop"``, stops like a signal); SIGINT/SIGTERM stop after the current batch and
flush the sinks, leaving windows open.

Checkpoints (with ``checkpoint=CheckpointConfig(...)``, see :mod:`tidal.runtime.checkpoint`):
at a batch boundary, once the interval has passed or ``every_events`` events have come in,

1. every :class:`~tidal.io.base.TransactionalSink` *prepares* (its output since the last
   checkpoint becomes durable, still invisible); other sinks flush (at-least-once);
2. the snapshot and the prepared transactions are written as checkpoint ``N``, atomically;
3. every transactional sink *commits* ``N`` (its output becomes visible).

On start the newest valid checkpoint is restored and its transactions are handed to the
sinks' ``recover`` (committed if the crash came between 2 and 3; everything else they staged
is discarded). A graceful stop (end of input, ``max_events``, SIGINT/SIGTERM) takes a last
checkpoint, so that a restart resumes exactly there. A drained run's last checkpoint is
*final*: every window has fired. Restarting after the end of the input adds nothing;
restarting after ``max_events`` with a higher limit (or none) raises
:class:`~tidal.errors.StateError`, since every further event would be late; replay instead.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from types import FrameType
from typing import Any, Literal

import numpy as np

from tidal.core.batch import Batch
from tidal.core.deadletter import DeadLetter
from tidal.core.duration import Duration, to_seconds
from tidal.core.operator import Context
from tidal.core.watermark import MAX_TIME, MIN_TIME
from tidal.errors import ConfigError, PipelineError, StateError
from tidal.io.base import Sink, TransactionAborted, TransactionalSink
from tidal.observe.hook import RunObserver, StepTally
from tidal.observe.metrics import LatencyHistogram
from tidal.observe.summary import RunSummary
from tidal.runtime.checkpoint import CheckpointConfig, CheckpointStore, CommitsOutside, CrashHook
from tidal.runtime.graph import Graph, Node
from tidal.runtime.replay import StartFrom
from tidal.runtime.snapshot import decode, encode
from tidal.runtime.sources import SourceRun

__all__ = ["DEAD_LETTERS", "SNAPSHOT_VERSION", "Executor", "RunSummary"]


SNAPSHOT_VERSION = 1
DEAD_LETTERS = "<dead letters>"
"""The name under which a transactional dead-letter sink's transactions are checkpointed."""

log = logging.getLogger("tidal.executor")


class Executor:
    """Runs a :class:`~tidal.pipeline.Pipeline` in this process.

    Args:
        pipeline: what to run: a :class:`~tidal.pipeline.Pipeline`, or any
            :class:`~tidal.runtime.graph.Graph`.
        max_batch: most events in one micro-batch.
        max_wait: the latency budget: how long to wait for more events after the first
            one of a batch arrived (e.g. ``"2ms"``).
        max_events: stop after this many events (a bounded run; see ``at_limit``).
        idle_poll: how long one poll waits when nothing arrives.
        progress: called with the running :class:`RunSummary` every ``progress_every``.
        progress_every: interval of ``progress`` calls.
        handle_signals: stop gracefully on SIGINT/SIGTERM (main thread only).
        checkpoint: take checkpoints and restore the newest on start (see the module docs);
            required when a sink is transactional.
        start_from: replay from an offset or time instead of restoring a checkpoint (see
            :mod:`tidal.runtime.replay`).
        at_limit: what reaching ``max_events`` does: ``"drain"`` fires every window, like
            the end of a bounded input (with checkpoints, the last one is final); ``"stop"``
            stops as SIGINT does (windows stay open, a restart resumes), which suits an
            unbounded source such as a log topic.
        checkpoint_store: where checkpoints go instead of ``checkpoint.data_dir`` (with
            ``checkpoint``): e.g. a Kafka topic (:mod:`tidal.runtime.workers.kafka_state`).
        observer: told what each batch did (see :mod:`tidal.observe.hook`): the Prometheus
            metrics, the dashboard and ``tidal top`` read a run through it.
        freeze_heap: once open, collect garbage and freeze what is alive (``gc.freeze()``)
            until the run ends, so the collector's full passes skip the start-up heap
            (modules, models, state): one took 19-33 ms mid-run, holding every event in
            flight (decision 0058). Process-wide, hence off by default for a library
            call; ``tidal run`` and its workers turn it on.

    Raises:
        ConfigError: for bad options, or a transactional sink without ``checkpoint``.
    """

    def __init__(
        self,
        pipeline: Graph,
        *,
        max_batch: int = 8192,
        max_wait: Duration = "5ms",
        max_events: int | None = None,
        idle_poll: Duration = "50ms",
        progress: Callable[[RunSummary], None] | None = None,
        progress_every: Duration = "500ms",
        handle_signals: bool = True,
        checkpoint: CheckpointConfig | None = None,
        start_from: StartFrom | None = None,
        at_limit: Literal["drain", "stop"] = "drain",
        checkpoint_store: CheckpointStore | None = None,
        observer: RunObserver | None = None,
        freeze_heap: bool = False,
    ) -> None:
        if max_batch <= 0:
            msg = f"max_batch must be > 0, got {max_batch}"
            raise ConfigError(msg)
        if max_events is not None and max_events < 0:
            msg = f"max_events must be >= 0, got {max_events}"
            raise ConfigError(msg)
        if at_limit not in ("drain", "stop"):
            msg = f"at_limit must be 'drain' or 'stop', got {at_limit!r}"
            raise ConfigError(msg)
        self.at_limit = at_limit
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
        self.gauges: dict[str, float] = {}
        self.ctx = Context(dead=self._dead, counters=self.counters, gauges=self.gauges)
        self.sources = [SourceRun(n, self._dead) for n in self.nodes if n.source is not None]
        self.hist = LatencyHistogram()
        self.events = 0
        self.restored_events = 0
        self.seconds = 0.0
        # a plain flag, not a threading.Event: stop() runs in signal handlers, and a second
        # signal landing inside Event.set() (its lock held) deadlocked the process
        self._stop = False
        self._opened = False
        self._started = 0.0
        self.observer = observer
        self.freeze_heap = freeze_heap
        self._frozen = False
        self.tally: StepTally | None = None if observer is None else StepTally()
        self._init_checkpoints(checkpoint, start_from, checkpoint_store)

    def _init_checkpoints(
        self,
        config: CheckpointConfig | None,
        start_from: StartFrom | None,
        store: CheckpointStore | None = None,
    ) -> None:
        self.checkpoint_config = config
        self.start_from = start_from
        self.transactional: dict[str, TransactionalSink] = {
            n.name: n.sink for n in self.nodes if isinstance(n.sink, TransactionalSink)
        }
        self.plain_sinks: list[Sink] = [
            n.sink
            for n in self.nodes
            if n.sink is not None and not isinstance(n.sink, TransactionalSink)
        ]
        dead = self.pipeline.dead_letters
        if isinstance(dead, TransactionalSink):
            self.transactional[DEAD_LETTERS] = dead
        elif dead is not None:
            self.plain_sinks.append(dead)
        outside = [k for k, v in self.transactional.items() if isinstance(v, CommitsOutside)]
        if len(outside) > 1:
            msg = (
                f"sinks {outside} of pipeline {self.pipeline.name!r} each commit in their own "
                "transaction, which cannot be made atomic together; keep one of them "
                "exactly-once and make the others at-least-once"
            )
            raise ConfigError(msg)
        # the sink whose commit decides which checkpoint is restored commits first: if the
        # process dies before the others commit, they commit in recover (see 0017)
        self.transactional = {
            **{k: self.transactional[k] for k in outside},
            **{k: v for k, v in self.transactional.items() if k not in outside},
        }
        self._decider: CommitsOutside | None = (
            self.transactional[outside[0]] if outside else None  # type: ignore[assignment]
        )
        if self.transactional and config is None:
            names = ", ".join(f"{k!r} ({type(v).__name__})" for k, v in self.transactional.items())
            msg = (
                f"sinks {names} of pipeline {self.pipeline.name!r} are transactional: their "
                "output becomes visible when a checkpoint commits it; give the executor "
                "checkpoint=CheckpointConfig(...) (tidal run --checkpoint-interval 1s), or "
                "write to a plain file sink"
            )
            raise ConfigError(msg)
        self.store: CheckpointStore | None = store
        if config is not None and store is None:
            self.store = CheckpointStore(config, self.pipeline.name, crash=CrashHook())
        self.restored_from: int | None = None
        self.rewinds = 0
        self.checkpoints = 0
        self.checkpoint_ms: list[float] = []
        self._next_id = 1
        self._last_at = 0.0
        self._last_events = 0
        self._ended: str | None = None  # why the run drained: "input" or "limit"
        self._restored_ended: str | None = None

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
        """Open operators, sinks and sources, restoring ``snapshot`` if given.

        With checkpoints and no ``snapshot``, the newest valid checkpoint is restored (unless
        this is a replay), and the transactional sinks recover.

        Raises:
            StateError: for a snapshot this pipeline cannot take (e.g. a changed step).
        """
        if snapshot is not None and self.start_from is not None:
            msg = "a replay (start_from) starts with empty state; do not pass a snapshot too"
            raise ConfigError(msg)
        try:
            self._open(snapshot)
        except BaseException:
            if self.store is not None:
                self.store.unlock()
            raise

    def _open(self, snapshot: Mapping[str, Any] | None) -> None:
        pending: Mapping[str, Any] = {}
        if self.store is not None:
            self.store.lock()
            ids = self.store.ids()
            self._next_id = ids[-1] + 1 if ids else 1
            if snapshot is None and self.start_from is None:
                snapshot, pending = self._load_checkpoint(self.store)
        positions: dict[str, dict[int, Any]] = {}
        if snapshot is not None:
            drop = () if self.checkpoint_config is None else self.checkpoint_config.drop_state
            positions = self._restore(snapshot, drop)
            self._refuse_to_extend_a_final_checkpoint()
        for name, sink in self.transactional.items():
            info = pending.get(name)
            sink.recover([info] if info is not None else [])
        for name in set(pending) - set(self.transactional):
            log.warning(
                "the checkpoint holds a transaction of sink %r, which pipeline %r no longer "
                "has; its staged output is left as it is",
                name,
                self.pipeline.name,
            )
        sinks: list[Sink] = [n.sink for n in self.nodes if n.sink is not None]
        if self.pipeline.dead_letters is not None:
            sinks.append(self.pipeline.dead_letters)
        for out in sinks if snapshot is not None else ():
            resume = getattr(out, "resume", None)
            if resume is not None:  # keep what the earlier runs wrote (at least once)
                resume()
        for n in self.nodes:
            if n.op is not None:
                n.op.open(self.ctx)
            if n.sink is not None:
                n.sink.open()
        if self.pipeline.dead_letters is not None:
            self.pipeline.dead_letters.open()
        for s in self.sources:
            parts = tuple(s.source.partitions())
            s.tracker.set_partitions(parts)
            if self.start_from is not None:
                s.source.open(self.start_from.positions(s.node.name, parts, s.source))
            else:
                s.source.open(positions.get(s.node.name, {}))
        self._opened = True
        if self.freeze_heap and not self._frozen:
            gc.collect()  # what start-up left as garbage goes now, not mid-run
            gc.freeze()
            self._frozen = True
        self._started = time.perf_counter()
        self._last_at, self._last_events = time.monotonic(), self.events
        if self.observer is not None:
            self.observer.on_open(self)
        if self.store is not None and self.start_from is not None:
            self.checkpoint()  # from now on a restart resumes the replay

    def _refuse_to_extend_a_final_checkpoint(self) -> None:
        """A run drained at its event limit fired every window: more input would be late."""
        more = self.max_events is None or self.max_events > self.events
        if self._restored_ended == "limit" and more:
            assert self.store is not None
            limit = "no event limit" if self.max_events is None else f"--events {self.max_events}"
            msg = (
                f"checkpoint {self.restored_from} of pipeline {self.pipeline.name!r} is final: "
                f"that run stopped after {self.events} events and fired every window, so more "
                f"input would all be late; this run asks for more ({limit}). Replay instead "
                "(--from-offset / --from-time), or delete the checkpoints in "
                f"'{self.store.path}' to start over"
            )
            raise StateError(msg)

    def _load_checkpoint(
        self, store: CheckpointStore
    ) -> tuple[Mapping[str, Any] | None, Mapping[str, Any]]:
        found: tuple[Any, bytes] | None
        if self._decider is not None:
            cid = self._decider.committed_checkpoint()
            gone = store.discard_after(cid or 0)
            if gone:
                log.warning(
                    "pipeline %r: checkpoints %s were written but their output never committed "
                    "(the process stopped first); resuming from %s",
                    self.pipeline.name,
                    gone,
                    f"checkpoint {cid}" if cid else "the start",
                )
            found = None if cid is None else store.load(cid)
        else:
            found = store.load_latest()
        if found is None:
            return None, {}
        chk, data = found
        state = decode(data)
        if not isinstance(state, dict) or "snapshot" not in state:
            msg = f"checkpoint {chk.path} holds no pipeline snapshot; was it written by Tidal?"
            raise StateError(msg)
        self.restored_from = chk.id
        self._restored_ended = state.get("ended")
        sinks: Mapping[str, Any] = state.get("sinks") or {}
        snap: Mapping[str, Any] = state["snapshot"]
        return snap, sinks

    def stop(self) -> None:
        """Ask the run to stop after the current batch (thread- and signal-safe).

        Only an attribute is set (atomic, takes no lock), so a handler may call it while
        another handler's call is under way (Ctrl-C, then the supervisor's SIGTERM).
        """
        self._stop = True

    def step(self) -> bool:
        """Process one micro-batch from each source; ``False`` when there is no more input.

        With checkpoints, a checkpoint is taken after the batch when one is due.
        """
        more = self._step()
        if more and self.store is not None and self._checkpoint_due():
            self.checkpoint()
        return more

    def _step(self) -> bool:
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
            latency = None
            if batch is not None and len(batch):
                assert batch.ingest is not None
                latency = time.time_ns() - batch.ingest
                self.hist.record(latency)
            if self.observer is not None and batch is not None:
                assert self.tally is not None
                self.observer.on_batch(s.node.name, latency, self.tally)
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
            while not self._stop:
                if not self.step():
                    at_limit = self.max_events is not None and self.events >= self.max_events
                    drain = not (at_limit and self.at_limit == "stop") or self._all_finished()
                    break
                if self.progress is not None and time.monotonic() >= next_progress:
                    next_progress = time.monotonic() + self.progress_every
                    self.progress(self.summary())
        except BaseException:
            if self.store is not None:
                self.store.unlock()
            self._thaw()
            raise
        finally:
            restore()
        self.finish(drain=drain)
        return self.summary()

    def _all_finished(self) -> bool:
        return all(s.finished for s in self.sources)

    def finish(self, *, drain: bool) -> None:
        """End the run: with ``drain`` fire every window, then flush and close everything.

        With checkpoints, a last checkpoint is taken before the sinks close.
        """
        if drain:
            self._ended = "input" if all(s.finished for s in self.sources) else "limit"
            for s in self.sources:
                s.finished = True
                self._advance(s.node, MAX_TIME)
        if self.store is not None:
            try:
                self.checkpoint()
            finally:
                self.store.unlock()
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
        self._thaw()
        if self.observer is not None:
            self.observer.on_close(self.summary())

    def _thaw(self) -> None:
        """Give the heap frozen at open back to the collector (see ``freeze_heap``)."""
        if self._frozen:
            gc.unfreeze()
            self._frozen = False

    def summary(self) -> RunSummary:
        """The run's figures so far.

        With checkpoints, ``counts["checkpoints"]`` is how many this run took, and
        ``extra`` has ``checkpoint_ms`` (p50 and max duration of one, prepare to commit)
        ``restored_from`` (the checkpoint id the run started from, or ``None``) and
        ``restored_events`` (the events that checkpoint had counted; ``events`` and every
        other figure are this run's, ``events_total`` the job's).
        """
        counts = {k: v for k, v in self.counters.items() if k != "late"}
        extra: dict[str, Any] = {}
        if self.gauges:
            extra["metrics"] = {k: round(v, 6) for k, v in sorted(self.gauges.items())}
        if self.store is not None:
            counts["checkpoints"] = self.checkpoints
            ms = self.checkpoint_ms
            extra["checkpoint_ms"] = {
                "p50": round(float(np.median(ms)), 2) if ms else None,
                "max": round(max(ms), 2) if ms else None,
            }
            extra["restored_from"] = self.restored_from
            extra["restored_events"] = self.restored_events
        return RunSummary(
            events=self.events - self.restored_events,
            seconds=(time.perf_counter() - self._started) if not self.seconds else self.seconds,
            latency_ms=self.hist.summary_ms(),
            late=self.counters.get("late", 0),
            dead_letters=self.dead_count,
            counts=counts,
            outputs=dict(self.outputs),
            extra=extra,
            restored_events=self.restored_events,
        )

    # -- checkpoints --------------------------------------------------------------------
    def _checkpoint_due(self) -> bool:
        config = self.checkpoint_config
        assert config is not None
        if config.every_events is not None and (
            self.events - self._last_events >= config.every_events
        ):
            return True
        interval = config.interval_s
        return interval is not None and time.monotonic() - self._last_at >= interval

    def checkpoint(self) -> int:
        """Take a checkpoint now; call it between batches. Returns its id.

        Prepare every transactional sink (flush the others), write the snapshot and the
        prepared transactions atomically, then commit the sinks.

        Raises:
            ConfigError: if the executor has no checkpoint configuration.
        """
        store = self.store
        if store is None:
            msg = "this executor takes no checkpoints; give it checkpoint=CheckpointConfig(...)"
            raise ConfigError(msg)
        t0, cid, size = time.perf_counter(), self._next_id, -1
        try:
            cid, size = self._checkpoint(store, t0)
        finally:  # a size of -1: it failed, or was rewound
            if self.observer is not None:
                self.observer.on_checkpoint(cid, time.perf_counter() - t0, size)
        return cid

    def _checkpoint(self, store: CheckpointStore, t0: float) -> tuple[int, int]:
        """Take checkpoint; its id and size (-1: rewound, see :meth:`_rewind`)."""
        cid = self._next_id
        pending = {name: sink.prepare(cid) for name, sink in self.transactional.items()}
        for sink in self.plain_sinks:
            sink.flush()
        store.crash.hit("after_prepare")
        state = encode({"snapshot": self.snapshot(), "sinks": pending, "ended": self._ended})
        written = store.write(cid, state, final=self._ended is not None)
        self._next_id = cid + 1
        store.crash.hit("after_manifest")
        for i, (name, sink) in enumerate(self.transactional.items()):
            try:
                sink.commit(cid, pending[name])
            except TransactionAborted as exc:
                if i > 0 or self._decider is None:
                    raise
                self._rewind(cid, exc)
                return cid, -1
            if i == 0:
                store.crash.hit("mid_commit")
        store.crash.hit("after_commit")
        store.prune()
        self.checkpoints += 1
        self.checkpoint_ms.append((time.perf_counter() - t0) * 1000.0)
        self._last_at, self._last_events = time.monotonic(), self.events
        return cid, written.size

    def _rewind(self, cid: int, exc: TransactionAborted) -> None:
        """The deciding sink's commit of checkpoint ``cid`` was aborted: go back in process.

        Restore the checkpoint its last commit names (``cid`` is discarded), let the sinks
        recover, and reopen the sources there, so the lost output is produced again.

        Raises:
            TransactionAborted: when no checkpoint committed yet (the run stops; a restart
                begins from the start).
        """
        assert self.store is not None
        log.warning(
            "pipeline %r: %s; rewinding to the last committed checkpoint", self.pipeline.name, exc
        )
        snapshot, pending = self._load_checkpoint(self.store)
        if snapshot is None:
            raise exc
        drop = () if self.checkpoint_config is None else self.checkpoint_config.drop_state
        positions = self._restore(snapshot, drop)
        for name, sink in self.transactional.items():
            info = pending.get(name)
            sink.recover([info] if info is not None else [])
        for s in self.sources:
            s.source.open(positions.get(s.node.name, {}))
        self.rewinds += 1

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
        tally = self.tally
        for child, in_port in self.children[node.name][port]:
            if child.sink is not None:
                t0 = time.perf_counter() if tally is not None else 0.0
                child.sink.write(batch)
                self.outputs[child.name] += len(batch)
                if tally is not None:
                    tally.sink(child.name, batch, time.perf_counter() - t0)
                continue
            assert child.op is not None
            t0 = time.perf_counter() if tally is not None else 0.0
            outs = child.op.process(batch, in_port)
            if tally is not None:
                tally.add(child.name, len(batch), outs, time.perf_counter() - t0)
            for out_port, out in outs:
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
            t0 = time.perf_counter() if self.tally is not None else 0.0
            fired = child.op.on_watermark(new)
            if self.tally is not None:
                self.tally.add(child.name, 0, fired, time.perf_counter() - t0)
            for out_port, out in fired:
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

    def _restore(
        self, snap: Mapping[str, Any], drop: Collection[str] = ()
    ) -> dict[str, dict[int, Any]]:
        """Restore ``snap``; the steps named in ``drop`` keep their empty state."""
        if snap.get("version") != SNAPSHOT_VERSION:
            msg = f"snapshot version {snap.get('version')!r} is not {SNAPSHOT_VERSION}"
            raise StateError(msg)
        how = "drop its state with CheckpointConfig(drop_state=[{!r}])"
        ops = snap["operators"]
        for n in self.nodes:
            if n.op is None or n.name in drop:
                continue
            saved = ops.get(n.name)
            if saved is None:
                msg = (
                    f"the snapshot has no state for step {n.name!r}; was the step added or "
                    f"renamed? To start it empty, {how.format(n.name)}"
                )
                raise StateError(msg)
            if saved["type"] != type(n.op).__name__:
                msg = (
                    f"step {n.name!r} was a {saved['type']} in the snapshot and is a "
                    f"{type(n.op).__name__} now; rename the step or {how.format(n.name)}"
                )
                raise StateError(msg)
            n.op.restore(saved["state"])
        unknown = set(ops) - {n.name for n in self.nodes if n.op is not None} - set(drop)
        if unknown:
            msg = (
                f"the snapshot has state for steps {sorted(unknown)} that this pipeline lacks; "
                f"if they were removed on purpose, list them in CheckpointConfig(drop_state=...)"
            )
            raise StateError(msg)
        positions: dict[str, dict[int, Any]] = {}
        for s in self.sources:
            if s.node.name in drop:
                continue
            saved = snap["sources"].get(s.node.name)
            if saved is None:
                msg = (
                    f"the snapshot has no position for source {s.node.name!r}; to read it from "
                    f"its beginning, {how.format(s.node.name)}"
                )
                raise StateError(msg)
            positions[s.node.name] = {int(k): v for k, v in saved["positions"].items()}
            s.tracker.restore(saved["watermark"])
            s.finished = bool(saved["finished"])
        for k, v in snap["watermarks"]["node"].items():
            if k in self.node_wm and k not in drop:
                self.node_wm[k] = int(v)
        for k, v in snap["watermarks"]["inputs"].items():
            if k in self.in_wm and k not in drop and len(v) == len(self.in_wm[k]):
                self.in_wm[k] = [int(x) for x in v]
        self.events = int(snap["events"])
        self.restored_events = self.events
        return positions


def _flat(letter: DeadLetter) -> dict[str, Any]:
    import orjson

    rec = letter.to_record()
    rec["position"] = orjson.dumps(rec["position"]).decode()
    return rec
