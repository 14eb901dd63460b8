"""Apache Kafka as a pipeline sink: :class:`KafkaSink` and :class:`KafkaTransactionalSink`.

:class:`KafkaSink` writes at least once, :class:`KafkaTransactionalSink` exactly once.

Each row becomes one record: the user columns as a JSON object (the whole batch encoded in
one orjson call), or the ``value`` column as it is (``value_format="raw"``); the ``key``
column's value as the record key (text as UTF-8, numbers as their text), the ``headers``
column (a dict or a list of ``(key, value)`` pairs per row) as headers, and the row's event
time (``Batch.time``, or a ``timestamp`` column of Unix ms) as the record timestamp.
Rows with a key go to the partition Java clients would pick (librdkafka's
``murmur2_random`` partitioner), so a key's records stay in order in one partition.

**At-least-once** (:class:`KafkaSink`): an idempotent producer (no duplicates from its own
retries, order kept per partition), ``acks=all``, flushed at every checkpoint; after a
crash the records written since the last checkpoint are written again.

**Exactly-once** (:class:`KafkaTransactionalSink`, decision 0017): the output between two
checkpoints is one Kafka transaction. At checkpoint ``N`` the runtime calls ``prepare``
(the transaction's records are all acknowledged, still invisible to ``read_committed``
readers), writes checkpoint ``N`` locally, then ``commit``: the sink adds to the
transaction the offset ``N`` of its *checkpoint group* (``<transactional_id>.checkpoints``,
on partition 0 of its topic) and, with ``source=`` a :class:`KafkaSource` in a group, that
source's positions, and commits. On restart the runtime asks :meth:`committed_checkpoint`
(which first fences and aborts whatever the crashed producer left open) and restores
exactly that checkpoint, so operator state, source positions and the visible output agree.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import orjson

from tidal.core.batch import Batch
from tidal.errors import ConfigError, ConnectorError
from tidal.io.base import BaseSink, TransactionAborted
from tidal.io.formats import ValueFormat
from tidal.io.kafka._confluent import Health, confluent, kafka_error, transient
from tidal.io.kafka.config import KafkaConfig
from tidal.io.kafka.source import KafkaSource, _format
from tidal.io.log.sink import key_bytes

__all__ = ["CRASH_ENV", "KafkaSink", "KafkaTransactionalSink"]

log = logging.getLogger("tidal.kafka")

CRASH_ENV = "TIDAL_TEST_KAFKA_CRASH"
"""Tests only: ``in_commit[:n]`` SIGKILLs the process the n-th time a transaction's offsets
were sent and its commit was not (the middle of :meth:`KafkaTransactionalSink.commit`);
``after_write[:n]`` the n-th time :meth:`KafkaSink.write` wrote records, once the broker
has them (output no checkpoint covers yet)."""

_CALL_TIMEOUT = 20.0
_EVENT_SLACK = 2  # client events (errors, logs) a queue length may count besides records


class KafkaSink(BaseSink):
    """Write batches to a Kafka topic, at least once (see the module docs).

    Args:
        topic: the topic (it must exist).
        config: the cluster (default :class:`KafkaConfig` ``()``: ``$TIDAL_KAFKA``).
        key: the column whose values are the record keys (and pick the partitions).
        headers: the column of per-row headers (dict or ``(key, value)`` pairs, or ``None``).
        timestamp: the column of record timestamps (Unix ms); default ``Batch.time``, else
            the time of writing.
        value_format: ``"json"`` (the user columns but ``headers``, as a JSON object),
            ``"raw"`` (the ``value`` column, bytes or text), or any
            :class:`~tidal.io.formats.ValueFormat`. A batched format (Arrow IPC) writes one
            record per key (per batch without ``key``).
        producer_options: extra librdkafka producer settings (``linger.ms``,
            ``compression.type``, ...).
        name: the label in messages and logs (default ``kafka:<topic>``).

    Raises:
        ConfigError: for a bad format.
    """

    def __init__(
        self,
        topic: str,
        *,
        config: KafkaConfig | None = None,
        key: str | None = None,
        headers: str | None = None,
        timestamp: str | None = None,
        value_format: Literal["json", "raw"] | ValueFormat = "json",
        producer_options: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.format = _format(value_format, None, "KafkaSink")
        for_topic = getattr(self.format, "for_topic", None)
        if callable(for_topic):  # AvroFormat with a registry: subject <topic>-value
            self.format = for_topic(topic)
        self.topic = topic
        self.config = config or KafkaConfig()
        self.key = key
        self.headers = headers
        self.timestamp = timestamp
        self.producer_options = dict(producer_options or {})
        self.label = name or f"kafka:{topic}"
        self.health = Health(self.label)
        self.written = 0
        self.queue_full_waits = 0  # records that waited for room in the producer's queue
        self._producer: Any = None
        self._generation = 0  # bumped when the producer is replaced or closed
        self._failed: list[str] = []
        self._crash = _CrashHook(os.environ.get(CRASH_ENV, ""))
        self._mark: tuple[int, int] | None = None  # (queue length, written) during an outage

    def _settings(self) -> dict[str, Any]:
        return self.config.client(
            **{
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 1,
                "partitioner": "murmur2_random",
                "message.timeout.ms": 300_000,
                # no delivery report per record (decision 0057): failures only, to
                # _delivered; the outage's end is seen from the queue draining (_drained)
                "delivery.report.only.error": True,
                "on_delivery": self._delivered,
                **self.health.settings(self._current(self._generation)),
                **self.producer_options,
            }
        )

    def _current(self, generation: int) -> Any:
        """Whether a client made in ``generation`` is still the sink's (for its errors)."""
        return lambda: generation == self._generation

    def open(self) -> None:
        """Create the producer."""
        if self._producer is not None:
            return
        ck = confluent()
        try:
            self._producer = ck.Producer(self._settings())
        except ck.KafkaException as exc:
            raise kafka_error(self.label, "creating the producer", exc) from exc

    def write(self, batch: Batch) -> None:
        """Produce one record per row; blocks while the producer's queue is full."""
        n = len(batch)
        if n == 0:
            return
        self.open()
        if self.format.batched:
            batch = self._chunks(batch)
            n = len(batch)
        values = self._values(batch)
        keys = (
            [key_bytes(k) for k in batch[self.key].tolist()] if self.key is not None else [None] * n
        )
        stamps: list[int]
        if self.timestamp is not None:
            stamps = np.asarray(batch[self.timestamp], dtype=np.int64).tolist()
        elif batch.time is not None:
            stamps = batch.time.tolist()
        else:
            stamps = [0] * n  # 0: librdkafka stamps the time of producing
        produce, topic = self._producer.produce, self.topic
        if self.headers is None:  # the hot path: only the arguments needed
            for v, k, t in zip(values, keys, stamps, strict=True):
                try:
                    produce(topic, v, k, timestamp=t)
                except BufferError:
                    self._produce_when_room(v, k, t, None)
        else:
            heads = [_headers(h) for h in batch[self.headers].tolist()]
            for v, k, t, h in zip(values, keys, stamps, heads, strict=True):
                try:
                    produce(topic, v, k, timestamp=t, headers=h)
                except BufferError:
                    self._produce_when_room(v, k, t, h)
        self._producer.poll(0)
        self.written += n
        self._raise_failed()
        self._drained()
        if self._crash.armed("after_write"):
            self.flush()
            self._crash.hit("after_write")

    def _produce_when_room(self, value: bytes, key: bytes | None, stamp: int, heads: Any) -> None:
        """Produce one record once the producer's queue has room (waits for the broker)."""
        self.queue_full_waits += 1
        while True:
            # no delivery events to wake poll() (failures only): wait briefly, then retry
            self._producer.poll(0.005)
            self._drained()
            try:
                self._producer.produce(self.topic, value, key, timestamp=stamp, headers=heads)
                return
            except BufferError:
                continue

    def _drained(self) -> None:
        """During an outage: end it once records left the producer's queue (decision 0057).

        Successful deliveries are not reported one by one, so the sink compares the queue
        length with the last look: records written since then plus those queued then,
        minus those queued now, were acknowledged (a failed one is raised instead). A
        little slack absorbs the client's own events counted in the queue length.
        """
        if not self.health.down:
            self._mark = None
            return
        queued = len(self._producer)
        if self._mark is not None:
            before, written = self._mark
            outstanding = before + self.written - written
            if outstanding - queued > _EVENT_SLACK or (queued == 0 and outstanding > 0):
                self._mark = None
                self.health.ok()
                return
        self._mark = (queued, self.written)

    def _values(self, batch: Batch) -> list[bytes]:
        if self.format.batched:
            return list(batch["__value__"].tolist())
        body = (
            batch
            if self.headers is None or self.headers not in batch
            else batch.drop([self.headers])
        )
        try:
            return self.format.encode(body)
        except ConnectorError as exc:
            msg = f"{self.label}: {exc}"
            raise ConnectorError(msg) from exc

    def _chunks(self, batch: Batch) -> Batch:
        """For a batched format: one row per key (or one row), holding the encoded chunk."""
        body = batch.drop([c for c in (self.headers,) if c is not None and c in batch])
        if self.key is None:
            groups = [np.arange(len(batch))]
        else:
            _, inverse = np.unique(np.asarray(batch[self.key]).astype(str), return_inverse=True)
            order = np.argsort(inverse, kind="stable")
            cuts = np.flatnonzero(np.diff(inverse[order])) + 1
            groups = np.split(order, cuts)
        first = np.asarray([g[0] for g in groups], dtype=np.int64)
        chunks = np.empty(len(groups), dtype=object)
        chunks[:] = [self.format.encode(body.take(g))[0] for g in groups]
        out = batch.take(first).with_columns(__value__=chunks)
        if batch.time is not None:
            out.time = np.asarray([batch.time[g].max() for g in groups], dtype=np.int64)
        return out

    def _delivered(self, err: Any, msg: Any) -> None:
        """The producer's delivery callback: with ``delivery.report.only.error``, failures."""
        if err is None:
            return
        if len(self._failed) < 10:
            self._failed.append(f"{err.str() if hasattr(err, 'str') else err}")

    def _raise_failed(self) -> None:
        if self._failed:
            reasons, self._failed = self._failed, []
            msg = (
                f"{self.label}: the broker did not take records for topic {self.topic!r}: "
                f"{'; '.join(reasons)}"
            )
            raise ConnectorError(msg)

    def assign_worker(self, index: int, count: int) -> None:
        """Nothing to change: several producers may write one topic (at least once)."""

    def flush(self) -> None:
        """Wait until the broker acknowledged every record written (waits out outages).

        Raises:
            ConnectorError: if a record could not be delivered.
        """
        if self._producer is None:
            return
        pending = len(self._producer)
        while self._producer.flush(1.0) > 0:
            self._drained()  # Health logged the outage; librdkafka retries until message.timeout.ms
        self._raise_failed()
        if pending:
            self.health.ok()  # the records queued were all acknowledged: the brokers answer

    def close(self) -> None:
        """Flush and drop the producer."""
        if self._producer is not None:
            self.flush()
            self._producer = None
            self._generation += 1


class KafkaTransactionalSink(KafkaSink):
    """Write batches to a Kafka topic exactly once, in one transaction per checkpoint.

    Implements the runtime's two-phase protocol (``prepare``/``commit``/``recover``) and
    ``committed_checkpoint`` (see the module docs and decision 0017). Readers must read
    with ``isolation.level=read_committed`` (``KafkaSource`` does).

    Args:
        topic: the topic (it must exist).
        transactional_id: stable across restarts of one pipeline and unique to it (e.g.
            the pipeline's name): a new producer with it fences the crashed one.
        source: a :class:`KafkaSource` with a ``group``: its positions are committed to
            that group inside each transaction (what monitoring tools show as lag).
        **options: as :class:`KafkaSink`.

    Raises:
        ConfigError: for an empty ``transactional_id`` or a source without a group.
    """

    def __init__(
        self,
        topic: str,
        *,
        transactional_id: str,
        source: KafkaSource | None = None,
        **options: Any,
    ) -> None:
        super().__init__(topic, **options)
        if not transactional_id:
            msg = f"{self.label}: give a transactional_id, stable per pipeline (e.g. its name)"
            raise ConfigError(msg)
        if source is not None and not source.group:
            msg = (
                f"{self.label}: source {source.name!r} has no group; pass group= to it to "
                "commit its offsets inside the transactions, or leave source= out"
            )
            raise ConfigError(msg)
        self.transactional_id = transactional_id
        self.source = source
        self.checkpoint_group = f"{transactional_id}.checkpoints"
        self._ready = False
        self._in_txn = False
        self._marker: Any = None
        self._source_offsets: dict[tuple[str, int], int] = {}
        # the source offsets of the last transaction that committed, by (topic, partition)
        self.committed_offsets: dict[tuple[str, int], int] = {}

    def use_transactional_id(self, transactional_id: str) -> None:
        """Use another transactional id (before ``open``): one per task under ``--group``."""
        self.transactional_id = transactional_id
        self.checkpoint_group = f"{transactional_id}.checkpoints"

    def produce_in_transaction(
        self,
        topic: str,
        key: str | None,
        value: bytes,
        *,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Produce one record to ``topic`` inside the open transaction (state records).

        It commits or aborts with the output (``tidal run --group`` keeps a task's
        checkpoint this way, and marks the end of a repartitioned input with it).
        ``partition``: this partition (default: by key).
        """
        self._begin()
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        if headers is not None:
            extra["headers"] = headers
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=None if key is None else key.encode(),
                    on_delivery=_ignore,  # not the sink's records: no failure callback, as ever
                    **extra,
                )
                return
            except BufferError:
                self._producer.poll(0.05)

    def assign_worker(self, index: int, count: int) -> None:
        """Be worker ``index``'s copy: its own transactional id, ``<id>-w<index>``.

        Under ``tidal run --workers N`` every worker commits its own transactions (its
        partitions' output and offsets, and its checkpoint marker); a restarted worker
        fences its predecessor by the same id. A job with this sink keeps its N (a run
        with another N is refused, decision 0052), so the ids are stable. With one worker
        nothing changes.

        Example:
            >>> sink = KafkaTransactionalSink("out", transactional_id="job")
            >>> sink.assign_worker(1, 2)
            >>> sink.transactional_id, sink.checkpoint_group
            ('job-w1', 'job-w1.checkpoints')
        """
        if count > 1:
            self.transactional_id = f"{self.transactional_id}-w{index}"
            self.checkpoint_group = f"{self.transactional_id}.checkpoints"

    def _settings(self) -> dict[str, Any]:
        return {
            **super()._settings(),
            "transactional.id": self.transactional_id,
            "transaction.timeout.ms": 120_000,
            "message.timeout.ms": 120_000,
            **self.producer_options,
        }

    def open(self) -> None:
        """Create the producer and fence any earlier one (its open transaction is aborted)."""
        super().open()
        if self._ready:
            return
        self._retry("init_transactions", lambda: self._producer.init_transactions(_CALL_TIMEOUT))
        self._ready = True

    def _marker_consumer(self) -> Any:
        if self._marker is None:
            ck = confluent()
            self._marker = ck.Consumer(
                self.config.client(
                    **{
                        "group.id": self.checkpoint_group,
                        "enable.auto.commit": False,
                        "isolation.level": "read_committed",
                        **self.health.settings(self._current(self._generation)),
                    }
                )
            )
        return self._marker

    def committed_checkpoint(self) -> int | None:
        """The id of the last checkpoint whose transaction committed (``None``: none yet).

        Fences and aborts the transaction a crashed producer left open first, so the
        answer is final.
        """
        self.open()
        ck = confluent()
        tp = ck.TopicPartition(self.topic, 0)
        got = self._retry(
            "reading the committed checkpoint",
            lambda: self._marker_consumer().committed([tp], timeout=_CALL_TIMEOUT),
        )
        offset = int(got[0].offset)
        return offset if offset >= 0 else None

    def _begin(self) -> None:
        if not self._in_txn:
            self.open()
            self._retry("begin_transaction", self._producer.begin_transaction)
            self._in_txn = True

    def write(self, batch: Batch) -> None:
        """Produce the rows inside the open transaction (invisible until its commit)."""
        if len(batch):
            self._begin()
        super().write(batch)

    def prepare(self, checkpoint_id: int) -> dict[str, Any]:
        """Wait until the broker acknowledged every record of the transaction."""
        self._begin()
        self.flush()
        if self.source is not None:
            self._source_offsets = self.source.offsets()
        return {"checkpoint": checkpoint_id, "transactional_id": self.transactional_id}

    def commit(self, checkpoint_id: int, pending: dict[str, Any]) -> None:
        """Send checkpoint ``N``'s marker (and the source's offsets) and commit.

        A repeated call (the transaction already committed) changes nothing.

        Raises:
            TransactionAborted: if the broker aborted the transaction (e.g. its coordinator
                moved while the broker was away); the runtime rewinds to the previous
                checkpoint and writes that output again.
        """
        if not self._in_txn:
            return
        ck = confluent()
        meta = orjson.dumps({"checkpoint": checkpoint_id}).decode()
        marker = [ck.TopicPartition(self.topic, 0, int(checkpoint_id), metadata=meta)]
        group = self._marker_consumer().consumer_group_metadata()
        self._wait_for_broker()
        try:
            self._retry(
                "sending the checkpoint marker",
                lambda: _watched(
                    lambda: self._producer.send_offsets_to_transaction(
                        marker, group, _CALL_TIMEOUT
                    ),
                    self._serve,
                    "send_offsets_to_transaction",
                    self.health,
                ),
            )
            if self.source is not None and self._source_offsets:
                offsets = [
                    ck.TopicPartition(t, p, off) for (t, p), off in self._source_offsets.items()
                ]
                source_group = self.source.group_metadata()
                self._retry(
                    "sending the source offsets",
                    lambda: _watched(
                        lambda: self._producer.send_offsets_to_transaction(
                            offsets, source_group, _CALL_TIMEOUT
                        ),
                        self._serve,
                        "send_offsets_to_transaction",
                        self.health,
                    ),
                )
            self._crash.hit()
            self._retry(
                "commit_transaction",
                lambda: _watched(
                    lambda: self._producer.commit_transaction(_CALL_TIMEOUT),
                    self._serve,
                    "commit_transaction",
                    self.health,
                ),
            )
        except _Hung as exc:
            log.warning(
                "%s: %s did not return in %.0f s (a librdkafka hang after a coordinator "
                "outage); replacing the producer, which fences the old one and aborts its "
                "transaction",
                self.label,
                exc,
                _HUNG_AFTER,
            )
            self._producer, self._ready, self._in_txn = None, False, False
            self._generation += 1  # the hung producer's late errors are not the new one's
            self._drop_marker()
            self.open()
            msg = (
                f"{self.label}: the transaction of checkpoint {checkpoint_id} was abandoned "
                "(its producer hung); its output is discarded and will be written again from "
                "the previous checkpoint"
            )
            raise TransactionAborted(msg) from None
        except _Abortable as exc:
            self._abort()
            msg = (
                f"{self.label}: the broker aborted the transaction of checkpoint "
                f"{checkpoint_id} ({exc}); its output is discarded and will be written again "
                "from the previous checkpoint"
            )
            raise TransactionAborted(msg) from exc.__cause__
        self._in_txn = False
        if self.source is not None and self._source_offsets:
            self.committed_offsets = dict(self._source_offsets)

    def _serve(self) -> None:
        """Serve the clients' callbacks (errors, deliveries) while a call blocks."""
        self._producer.poll(0)
        if self.source is not None:
            self.source.serve()

    def _wait_for_broker(self) -> None:
        """Return once a broker answers a metadata request.

        librdkafka's ``send_offsets_to_transaction`` can block for good, past its timeout,
        when it is called while the group coordinator is down (librdkafka issues 5456 and
        5511); so the sink calls it only after the cluster answered. A transaction with
        records has just been flushed, so this costs one round trip.
        """
        ck = confluent()
        while True:
            try:
                self._producer.list_topics(self.topic, timeout=5.0)
                return
            except ck.KafkaException as exc:
                err = exc.args[0] if exc.args else exc
                self.health.on_error(err)

    def recover(self, pending: Sequence[dict[str, Any]]) -> None:
        """Fence the crashed producer (its open transaction is aborted); nothing else is staged.

        The restored checkpoint's transaction committed already (the runtime picked it with
        :meth:`committed_checkpoint`).
        """
        self.open()
        self._in_txn = False

    def _abort(self) -> None:
        if self._in_txn and self._producer is not None:
            try:
                self._producer.abort_transaction(_CALL_TIMEOUT)
            except confluent().KafkaException as exc:
                log.warning("%s: aborting the transaction failed: %s", self.label, exc)
        self._in_txn = False

    def close(self) -> None:
        """Abort what was written since the last checkpoint, and drop the producer."""
        self._abort()
        self._producer = None
        self._ready = False
        self._generation += 1  # errors served while closing are not an outage
        self._drop_marker()

    def _drop_marker(self) -> None:
        if self._marker is not None:
            self._marker.close()
            self._marker = None

    def _retry(self, what: str, call: Any) -> Any:
        """Run a transactional call, retrying while librdkafka says it may."""
        ck = confluent()
        tries = 0
        while True:
            try:
                return call()
            except ck.KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if err is not None and transient(exc) and not _requires_abort(err):
                    self.health.on_error(err)
                    if tries % 10 == 0:
                        log.warning(
                            "%s: %s: %s %s; retrying", self.label, what, err.name(), err.str()
                        )
                    tries += 1
                    time.sleep(0.1)
                    continue
                if (
                    err is not None
                    and hasattr(err, "txn_requires_abort")
                    and err.txn_requires_abort()
                ):
                    raise _Abortable(str(err)) from exc
                raise kafka_error(self.label, what, exc) from exc


_HUNG_AFTER = 2 * _CALL_TIMEOUT
_SLOW_AFTER = 3.0


def _watched(call: Any, serve: Any = None, what: str = "", health: Health | None = None) -> Any:
    """Run a blocking librdkafka call in a thread; raise :class:`_Hung` past its time.

    ``send_offsets_to_transaction`` may ignore its timeout and block for good when the
    coordinator goes down during the call (librdkafka issues 5456, 5511). The thread of a
    hung call is left behind (a daemon); its producer is replaced. ``serve`` is called
    every half second while the call waits.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["ok"] = call()
        except BaseException as exc:  # handed to the caller's thread
            box["err"] = exc

    thread = threading.Thread(target=run, name="tidal-kafka-txn", daemon=True)
    thread.start()
    started = time.monotonic()
    while thread.is_alive() and time.monotonic() < started + _HUNG_AFTER:
        thread.join(0.5)
        if thread.is_alive():
            if serve is not None:
                serve()  # error callbacks (e.g. "broker unreachable") while the call waits
            waited = time.monotonic() - started
            if health is not None and waited >= _SLOW_AFTER:
                health.waiting(what, waited)
    if thread.is_alive():
        raise _Hung(getattr(call, "__name__", "a transactional call"))
    if "err" in box:
        raise box["err"]
    if health is not None:
        health.ok()
    return box.get("ok")


def _ignore(err: Any, msg: Any) -> None:
    """A delivery callback that does nothing (state records' outcome is the transaction's)."""


def _requires_abort(err: Any) -> bool:
    return bool(hasattr(err, "txn_requires_abort") and err.txn_requires_abort())


class _Hung(Exception):
    """A transactional call that did not return in time."""


class _Abortable(Exception):
    """The current transaction cannot commit and must be aborted."""


class _CrashHook:
    """``TIDAL_TEST_KAFKA_CRASH=in_commit[:n]`` (tests only; see :data:`CRASH_ENV`)."""

    def __init__(self, raw: str) -> None:
        point, _, nth = raw.partition(":")
        if raw and point not in ("in_commit", "after_write"):
            msg = f"{CRASH_ENV}={raw!r}: the points are in_commit[:n] and after_write[:n]"
            raise ConfigError(msg)
        self.point = point
        self.n = int(nth) if raw and nth else (1 if raw else 0)
        self._seen = 0

    def armed(self, point: str) -> bool:
        return bool(self.n) and point == self.point

    def hit(self, point: str = "in_commit") -> None:
        if not self.armed(point):
            return
        self._seen += 1
        if self._seen == self.n:
            os.kill(os.getpid(), signal.SIGKILL)


def _headers(value: Any) -> list[tuple[str, bytes | None]] | None:
    if value is None:
        return None
    items = value.items() if isinstance(value, Mapping) else value
    out = []
    for k, v in items:
        out.append((str(k), v if v is None or isinstance(v, bytes) else str(v).encode()))
    return out
