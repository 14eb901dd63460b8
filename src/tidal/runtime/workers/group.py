"""``tidal run FILE.py --group NAME``: one worker of a Kafka consumer group, on any machine.

Kafka's group protocol decides which worker owns which input partition; Tidal moves the
keyed state with the partitions (decision 0029). The worker:

- joins group ``NAME`` with a *membership* consumer subscribed to the pipeline's input
  topic. It never reads records (its partitions are paused); its ``poll`` runs the group
  protocol, and its callbacks start and stop tasks;
- runs one **task per owned partition**: the pipeline built again from the file, its
  ``KafkaSource`` restricted to that partition, its ``KafkaTransactionalSink`` given the
  transactional id ``<id>-p<partition>`` (the new owner of a partition fences the old one:
  a worker that lost a partition can commit nothing more for it), and its checkpoints in
  the state topic ``<group>.<pipeline>.tidal-state`` inside the output transaction
  (:class:`~tidal.runtime.workers.kafka_state.KafkaStateStore`);
- on **assign**, builds and restores the new tasks (restore time is measured); on
  **revoke**, checkpoints the revoked tasks (their last transaction commits) and closes
  them, inside the callback, while the checkpoints fit in half of
  ``max.poll.interval.ms``, and drops the rest uncommitted (decision 0044); on **lost**
  (the session expired), drops them without committing (someone else owns them already);
- steps every task in turn, and polls the membership consumer between tasks, so that
  ``max.poll.interval.ms`` is never exceeded by more than one micro-batch per task;
- with bounded sources, ends once every partition of the input has drained, wherever
  (the final state of each is in the state topic); a worker with nothing to do stays in
  the group until then, since partitions may still come to it.

When the pipeline groups by a column that is not the input's message key, the tasks are
those of two stages joined by a repartition topic, and the group is subscribed to both
topics (:mod:`tidal.runtime.workers.repartition`, decision 0042).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tidal.core.duration import to_seconds
from tidal.errors import ConfigError, TidalError
from tidal.io.kafka._confluent import confluent
from tidal.io.kafka.sink import KafkaTransactionalSink
from tidal.io.kafka.source import KafkaSource
from tidal.runtime.checkpoint import CheckpointConfig, CrashHook
from tidal.runtime.executor import Executor
from tidal.runtime.graph import Graph
from tidal.runtime.workers.kafka_state import (
    KafkaStateStore,
    ensure_state_topic,
    finished_partitions,
    state_topic,
)
from tidal.runtime.workers.purge import PURGE_INTERVAL, Purger, PurgingStore
from tidal.runtime.workers.repartition import (
    ensure_repartition_topic,
    repartition_topic,
    split,
    stage_one,
    stage_two,
)

__all__ = ["REVOKE_PAUSE_ENV", "GroupStats", "GroupWorker"]

log = logging.getLogger("tidal.workers")

REVOKE_PAUSE_ENV = "TIDAL_TEST_REVOKE_PAUSE_MS"
"""Tests only: ``<ms>``: each revoked task's last checkpoint takes that much longer (stands
for a large state, e.g. longer than ``max.poll.interval.ms``)."""


@dataclass
class GroupStats:
    """What a group worker did.

    Attributes:
        events: events its tasks read in this run.
        assigned: partitions it was given, in order (with repeats).
        revoked: partitions taken from it, in order.
        restore_ms: per restored partition, how long reading its state took.
        finished: partitions whose input it drained.
        dropped: revoked partitions it handed over without a last checkpoint (the revoke
            had used up its time budget, or the checkpoint failed).
        purge: with a repartition, what purging its topic did (decision 0056):
            ``purged`` (per stage 2 partition, its first offset after the newest purge),
            ``purge_requests``, ``purge_errors`` (reported, never fatal).

    With a repartition, stage 2's partitions are written ``"r<partition>"``.
    """

    events: int = 0
    assigned: list[int | str] = field(default_factory=list)
    revoked: list[int | str] = field(default_factory=list)
    restore_ms: list[tuple[int | str, float]] = field(default_factory=list)
    finished: list[int | str] = field(default_factory=list)
    dropped: list[int | str] = field(default_factory=list)
    purge: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "events": self.events,
            "assigned": self.assigned,
            "revoked": self.revoked,
            "restore_ms": [[p, round(ms, 2)] for p, ms in self.restore_ms],
            "finished": self.finished,
            "dropped": self.dropped,
            **self.purge,
        }


def _parts(graph: Graph) -> tuple[KafkaSource, KafkaTransactionalSink]:
    sources = [n for n in graph.nodes.values() if n.source is not None]
    sinks = [n for n in graph.nodes.values() if n.sink is not None]
    if len(sources) != 1 or not isinstance(sources[0].source, KafkaSource):
        msg = (
            f"--group runs pipelines with one KafkaSource; pipeline {graph.name!r} has "
            f"{[type(n.source).__name__ for n in sources]}"
        )
        raise ConfigError(msg)
    source = sources[0].source
    if len(source.topics) != 1 or source.topics[0].startswith("^"):
        msg = f"--group: the KafkaSource of pipeline {graph.name!r} must read one topic"
        raise ConfigError(msg)
    txn = [n.sink for n in sinks if isinstance(n.sink, KafkaTransactionalSink)]
    if len(txn) != 1 or len(sinks) != 1 or graph.dead_letters is not None:
        msg = (
            f"--group: pipeline {graph.name!r} must write one KafkaTransactionalSink (its "
            "transactions carry the output, the offsets and the state) and no other sink; "
            f"it has {[type(n.sink).__name__ for n in sinks]}"
        )
        raise ConfigError(msg)
    return source, txn[0]


def _close(executor: Executor) -> None:
    """Close a task's sinks (aborting an open transaction) and sources, checkpointing nothing."""
    for n in executor.nodes:
        if n.sink is not None:
            n.sink.close()
    for s in executor.sources:
        s.source.close()


def _fenced(exc: BaseException) -> bool:
    """Whether ``exc`` comes from this producer being fenced (a newer owner took over)."""
    ck = confluent()
    codes = {
        getattr(ck.KafkaError, name, None)
        for name in ("_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH")
    }
    seen: BaseException | None = exc
    for _ in range(8):  # the cause chain: TidalError <- KafkaException(KafkaError)
        if seen is None:
            return False
        err = seen.args[0] if isinstance(seen, ck.KafkaException) and seen.args else None
        if err is not None and hasattr(err, "code") and err.code() in codes:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _Task:
    def __init__(
        self,
        partition: tuple[str, int],
        executor: Executor,
        store: KafkaStateStore,
        member: str | None,
    ) -> None:
        self.partition = partition
        self.executor = executor
        self.store = store
        self.member = member  # the group member id it was assigned under
        self.done = False


class GroupWorker:
    """One member of consumer group ``group`` running ``build()``'s pipeline.

    Args:
        build: makes a fresh pipeline (called once per task, and once to plan).
        group: the consumer group (every worker of the job gives the same name).
        interval: the checkpoint interval of every task.
        max_batch: most events per micro-batch.
        max_wait: the latency budget of a batch.
        session_timeout_ms: how long the group waits for a silent worker before moving its
            partitions (Kafka's ``session.timeout.ms``).
        repartition_partitions: partitions of the repartition topic, if the pipeline
            needs one (default: as many as the input topic).
        purge_interval: how often each repartition partition is purged at most of the
            records stage 2 committed past (``None``: never; decision 0056).
    """

    def __init__(
        self,
        build: Callable[[], Graph],
        group: str,
        *,
        interval: str = "1s",
        max_batch: int = 8192,
        max_wait: str = "5ms",
        session_timeout_ms: int = 6000,
        repartition_partitions: int | None = None,
        purge_interval: str | None = PURGE_INTERVAL,
    ) -> None:
        self.build = build
        self.group = group
        self.interval = interval
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.txn_timeout_ms = max(10_000, int(3000 * to_seconds(interval)))
        probe = build()
        source, sink = _parts(probe)
        self.name = probe.name
        self.topic = source.topics[0]
        self.kafka = source.config
        self.base_id = sink.transactional_id
        self.all_partitions = set(source.partitions())
        self.cut = split(probe, source)
        self.state_topic = state_topic(group, probe.name)
        self.topics = [self.topic]
        self.purger: Purger | None = None
        if self.cut is not None:  # two stages: state topics of their own (decision 0042)
            self.rtopic = repartition_topic(group, probe.name)
            want = repartition_partitions or len(self.all_partitions)
            self.rparts = ensure_repartition_topic(self.kafka, self.rtopic, want)
            self.topics.append(self.rtopic)
            self.state_topic = state_topic(group, f"{probe.name}.stage1")
            self.state_topic2 = state_topic(group, f"{probe.name}.stage2")
            ensure_state_topic(self.kafka, self.state_topic2)
            if purge_interval is not None:
                from tidal.io.kafka.admin import KafkaAdmin

                admin = KafkaAdmin(self.kafka, timeout=30.0)
                self.purger = Purger(admin, self.rtopic, every=to_seconds(purge_interval))
        ensure_state_topic(self.kafka, self.state_topic)
        ck = confluent()
        self.membership = ck.Consumer(
            self.kafka.client(
                **{
                    "group.id": group,
                    "enable.auto.commit": False,
                    "session.timeout.ms": session_timeout_ms,
                    "heartbeat.interval.ms": max(500, session_timeout_ms // 6),
                    "partition.assignment.strategy": "cooperative-sticky",
                }
            )
        )
        max_poll = int(self.kafka.client().get("max.poll.interval.ms", 300_000))
        self.revoke_budget_ms = max_poll / 2.0
        self.tasks: dict[tuple[str, int], _Task] = {}
        self.stats = GroupStats()
        self._stop = False  # not a threading.Event: set from signal handlers (see Executor.stop)
        self._joined = False
        self._polled = time.perf_counter()

    def stop(self) -> None:
        """Stop after the current batch (thread- and signal-safe: sets an attribute only)."""
        self._stop = True

    # -- tasks ---------------------------------------------------------------------------
    def _label(self, tp: tuple[str, int]) -> int | str:
        return tp[1] if tp[0] == self.topic else f"r{tp[1]}"

    def _task_graph(
        self, tp: tuple[str, int]
    ) -> tuple[Graph, KafkaTransactionalSink, type[KafkaStateStore], dict[str, Any], str]:
        """A task's graph, sink, state store (class, extra arguments) and state topic."""
        graph = self.build()
        source, sink = _parts(graph)
        topic, partition = tp
        if self.cut is None:
            source.restrict([partition])
            sink.use_transactional_id(f"{self.base_id}-p{partition}")
            return graph, sink, KafkaStateStore, {}, self.state_topic
        if topic == self.topic:
            stage, sink, store, extra = stage_one(
                graph,
                self.cut,
                partition,
                topic=self.rtopic,
                partitions=self.rparts,
                transactional_id=f"{self.base_id}-s1-p{partition}",
            )
            return stage, sink, store, extra, self.state_topic
        stage, _ = stage_two(
            graph,
            self.cut,
            partition,
            topic=self.rtopic,
            inputs=len(self.all_partitions),
            group=f"{self.rtopic}.in",
        )
        sink.use_transactional_id(f"{self.base_id}-s2-p{partition}")
        if self.purger is None:
            return stage, sink, KafkaStateStore, {}, self.state_topic2
        extra = {"purger": self.purger, "purge_topic": self.rtopic}
        return stage, sink, PurgingStore, extra, self.state_topic2

    def _start_task(self, tp: tuple[str, int]) -> None:
        partition = tp[1]
        graph, sink, store_class, extra, topic = self._task_graph(tp)
        # a dead owner's open transaction holds back read_committed readers of the state
        # topic until the new owner fences it, or the coordinator times it out: keep that
        # bounded (a task's transaction lasts one checkpoint interval)
        sink.producer_options.setdefault("transaction.timeout.ms", self.txn_timeout_ms)
        sink.producer_options.setdefault("message.timeout.ms", self.txn_timeout_ms)
        config = CheckpointConfig(interval=self.interval)
        store = store_class(
            config, graph.name, partition, kafka=self.kafka, sink=sink, topic=topic, **extra
        )
        store.crash = CrashHook()
        executor = Executor(
            graph,
            checkpoint=config,
            checkpoint_store=store,
            max_batch=self.max_batch,
            max_wait=self.max_wait,
            handle_signals=False,
            # a stage 2 task often waits for stage 1's next commit: an empty poll of 50 ms
            # would hold up every other task of this member (2.8x slower; decision 0042)
            idle_poll="50ms" if tp[0] == self.topic else "5ms",
        )
        executor.open()
        if tp[0] != self.topic:  # stage 2: the watermark is the minimum over input partitions
            for s in executor.sources:
                s.tracker.set_partitions(tuple(sorted(self.all_partitions)))
        task = _Task(tp, executor, store, self.membership.memberid())
        if store.restore_ms is not None:
            self.stats.restore_ms.append((self._label(tp), store.restore_ms))
        task.done = executor.restored_from is not None and all(s.finished for s in executor.sources)
        if self.purger is not None and executor.restored_from is not None and tp[0] != self.topic:
            # the restored position committed: purge below it (again, if the previous
            # owner was killed between its commit and its purge)
            for s in executor.sources:
                got = s.source.offsets() if isinstance(s.source, KafkaSource) else {}
                if tp in got:
                    self.purger.committed(partition, got[tp], final=task.done)
        if task.done:  # drained elsewhere: keep its final checkpoint as it is
            _close(executor)
        self.tasks[tp] = task
        log.info(
            "group %r: partition %s[%d] assigned (restored %s)",
            self.group,
            tp[0],
            partition,
            executor.restored_from,
        )

    def _stop_task(self, partition: tuple[str, int], *, commit: bool) -> None:
        task = self.tasks.pop(partition, None)
        if task is None or task.done:
            return
        ex = task.executor
        if commit:
            try:  # a last checkpoint: output, offsets and state commit
                ex.finish(drain=False)
            except Exception as exc:
                if not isinstance(exc, TidalError) and not _fenced(exc):
                    raise
                # e.g. fenced: the partition's new owner already took over (we overran a
                # timeout); nothing of ours committed, and it restores the last checkpoint
                log.warning(
                    "group %r: partition %s: its last checkpoint failed (%s); dropped",
                    self.group,
                    partition,
                    exc,
                )
                self.stats.dropped.append(self._label(partition))
                _close(ex)
        else:  # lost: someone else owns it; abort what is open, commit nothing
            _close(ex)
        self._count(task)

    def _count(self, task: _Task) -> None:
        """Add a task's input events (stage 2 reads them again from the repartition topic)."""
        if task.partition[0] == self.topic:
            self.stats.events += task.executor.events - task.executor.restored_events

    def _fenced_out(self, task: _Task, exc: BaseException) -> None:
        """Drop a task whose commit was fenced: its partition has a new owner already.

        The group gave it away (we overran ``max.poll.interval.ms``, e.g. in a revoke)
        before telling us; nothing of it committed, its new owner restored its last
        checkpoint.
        """
        log.warning(
            "group %r: partition %s was fenced by a new owner, or the member left the "
            "group since it was assigned (%s); dropped",
            self.group,
            task.partition,
            exc,
        )
        self.tasks.pop(task.partition, None)
        self.stats.dropped.append(self._label(task.partition))
        _close(task.executor)

    # -- group callbacks (run inside membership.poll) -------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._joined = True
        mine = [(tp.topic, tp.partition) for tp in partitions if tp.topic in self.topics]
        consumer.incremental_assign(partitions)
        consumer.pause(partitions)
        for tp in mine:
            self.stats.assigned.append(self._label(tp))
            self._start_task(tp)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        # the callback runs inside poll(): past max.poll.interval.ms librdkafka leaves the
        # group, all our partitions move, we rejoin and the next rebalance revokes again
        # (the Quix livelock). So a revoke checkpoints its tasks only while one more, as
        # slow as the slowest checkpoint seen, fits in half the interval; it drops the rest
        # uncommitted (the new owner replays them from their last checkpoint).
        t0 = min(time.perf_counter(), self._polled)  # librdkafka counts from the last poll
        slowest = 0.0
        for t in partitions:
            tp = (t.topic, t.partition)
            if tp not in self.tasks:
                continue
            self.stats.revoked.append(self._label(tp))
            task = self.tasks[tp]
            if task.done:  # drained: nothing left to checkpoint
                self._stop_task(tp, commit=True)
                continue
            spent = (time.perf_counter() - t0) * 1000.0
            slowest = max([slowest, *task.executor.checkpoint_ms[-8:]])
            if spent + slowest > self.revoke_budget_ms:
                log.warning(
                    "group %r: partition %s revoked after %.0f ms of revoke checkpoints; "
                    "dropping it uncommitted to stay within max.poll.interval.ms (its new "
                    "owner replays it from its last checkpoint)",
                    self.group,
                    tp,
                    spent,
                )
                self.stats.dropped.append(self._label(tp))
                self._stop_task(tp, commit=False)
                continue
            t1 = time.perf_counter()
            pause = os.environ.get(REVOKE_PAUSE_ENV)
            if pause:
                time.sleep(float(pause) / 1000.0)
            self._stop_task(tp, commit=True)
            slowest = max(slowest, (time.perf_counter() - t1) * 1000.0)
        consumer.incremental_unassign(partitions)

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        for t in partitions:
            tp = (t.topic, t.partition)
            if t.topic in self.topics:
                self.stats.revoked.append(self._label(tp))
                self._stop_task(tp, commit=False)
        consumer.incremental_unassign(partitions)

    def _all_finished(self) -> bool:
        """Whether every partition of the job drained (its final state committed)."""
        done = finished_partitions(self.kafka, self.state_topic, timeout=1.0)
        if not self.all_partitions <= done:
            return False
        if self.cut is None:
            return True
        done = finished_partitions(self.kafka, self.state_topic2, timeout=1.0)
        return set(range(self.rparts)) <= done

    # -- the loop ------------------------------------------------------------------------
    def _poll(self, timeout: float) -> None:
        self.membership.poll(timeout)
        self._polled = time.perf_counter()  # when librdkafka's poll interval restarts

    def run(self) -> GroupStats:
        """Run until stopped, or until every owned task drained its bounded input."""
        self.membership.subscribe(
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        gc.collect()  # the start-up heap out of the collector's full passes (decision 0058);
        gc.freeze()  # once per member, not per task: tasks come and go with partitions
        try:
            while not self._stop:
                self._poll(0 if self.tasks else 0.1)
                active = [t for t in self.tasks.values() if not t.done]
                for task in active:
                    if self.tasks.get(task.partition) is not task:
                        continue  # revoked by the poll after the previous task: never again
                    try:
                        more = task.executor.step()
                        if not more:
                            task.executor.finish(drain=True)
                    except Exception as exc:
                        # fenced, or failing after this member left the group (it overran
                        # max.poll.interval.ms): the partition is someone else's now
                        if not _fenced(exc) and self.membership.memberid() == task.member:
                            raise
                        self._fenced_out(task, exc)
                        continue
                    if not more:
                        task.done = True
                        self.stats.finished.append(self._label(task.partition))
                        self._count(task)
                    self._poll(0)
                if self.purger is not None:
                    self.purger.poll()
                if self._joined and all(t.done for t in self.tasks.values()):
                    # the job ends when every partition drained, wherever that happened;
                    # until then stay in the group (partitions may still come here)
                    if self._all_finished():
                        break
                    self._poll(0.2)
        finally:
            for p in list(self.tasks):
                self._stop_task(p, commit=True)
            self.membership.close()
            if self.purger is not None:
                self.purger.close()
                self.stats.purge = self.purger.to_json()
            gc.unfreeze()
        return self.stats
