"""Apache Kafka as a pipeline source: :class:`KafkaSource`.

It reads one topic, several, or every topic matching a pattern (a name starting with
``^``, as in librdkafka), and turns each poll into one columnar
:class:`~tidal.core.batch.Batch`: one batched ``Consumer.consume`` call, the values decoded
together (JSON objects into columns, or raw bytes), with ``Batch.partition``,
``Batch.offset`` and ``Batch.ingest`` (the record timestamps) set. Keys, headers, record
timestamps and the topic can be added as columns; use the timestamp column as the
pipeline's event time (``p.source(..., time="ts")``) to get Kafka's record time.

**Partitions and positions.** The source assigns itself every partition of its topics
(no group rebalancing: the runtime owns the positions and restores them from checkpoints).
A partition's id is its number for a single topic; for several topics, the index of
``(topic, partition)`` in sorted order. A position is ``{"topic", "partition", "offset"}``
with the *next* offset to read, so it names its partition by itself and stays valid when
other topics or partitions appear. ``open`` also accepts a plain int offset (what
``tidal run --from-offset N`` passes). Where no position is given, a partition starts at
the group's committed offset (``group=...``), else at ``start_offsets``, ``start_time``
(the first record at or after it, via ``offsets_for_times``) or ``start``
(``"earliest"``/``"latest"``). Topics matching a pattern are resolved when the source opens.

**Bad records.** A value that fails to decode (not JSON, not an object, a schema
violation, a null value) becomes a dead letter with ``{"topic", "partition", "offset"}``
and the run goes on. With ``dead_letter_topic=...`` it is also produced there: the original
key, value and headers, plus ``tidal.reason``, ``tidal.topic``, ``tidal.partition``,
``tidal.offset`` and ``tidal.step`` headers (flushed whenever :meth:`KafkaSource.position`
is read, i.e. at every checkpoint, so a restored run never misses one).

**Outages.** librdkafka retries on its own; the source logs ``broker unreachable`` once on
the ``tidal.kafka`` logger, counts it in :attr:`KafkaSource.health`, returns empty batches
while it waits, and logs ``broker back`` when records flow again.

Security (TLS, SASL) and any librdkafka setting come from :class:`KafkaConfig`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.errors import ConfigError, ConnectorError
from tidal.io.base import BaseSource, DeadLetter
from tidal.io.files import SchemaLike
from tidal.io.formats import JsonFormat, RawFormat, ValueFormat
from tidal.io.kafka._confluent import Health, confluent, kafka_error, transient
from tidal.io.kafka.config import KafkaConfig

__all__ = ["KafkaSource", "TopicPartition"]

TopicPartition = tuple[str, int]
"""A Kafka partition: ``(topic, partition)``."""

Start = Literal["earliest", "latest"]

_METADATA_TIMEOUT = 30.0
_PARTITION_EOF = -191  # librdkafka's RD_KAFKA_RESP_ERR__PARTITION_EOF


class KafkaSource(BaseSource):
    """Read Kafka topics as a stream of columnar batches.

    Args:
        topics: a topic, several topics, or a regular expression starting with ``^``
            (every matching topic, resolved at ``open``).
        config: the cluster (default :class:`KafkaConfig` ``()``: ``$TIDAL_KAFKA``).
        group: a consumer group: where no position is given a partition starts at the
            group's committed offset, and :meth:`commit` writes positions there. The
            exactly-once Kafka sink commits them inside its transactions.
        value_format: ``"json"`` (objects, fields become columns), ``"raw"`` (a ``value``
            column of bytes), or any :class:`~tidal.io.formats.ValueFormat` (Avro,
            Protobuf, Arrow IPC, ...).
        schema: for ``"json"``, column -> ``"int"``/``"float"``/``"str"``/``"bool"``,
            checked per record; a record that breaks it is a dead letter.
        start: where a partition without any other start begins.
        start_offsets: next offset per partition id, or per ``(topic, partition)``.
        start_time: start at the first record stamped at or after this time (Unix ms or
            an aware ``datetime``).
        bounded: stop (``poll`` returns ``None``) at the end offsets seen at ``open``. A
            topic written in transactions ends in a commit marker, which no consumer
            receives: the end of a partition is also where librdkafka reports it
            (``enable.partition.eof`` is on for a bounded source).
        partitions: read only these partition ids.
        key_column: add each record's key (UTF-8 text, ``None`` for none) as this column.
        timestamp_column: add each record's timestamp (int ms) as this column.
        headers_column: add each record's headers (a list of ``(key, bytes)`` pairs, or
            ``None``) as this column.
        topic_column: add each record's topic as this column.
        dead_letter_topic: also produce undecodable records here (see the module docs).
        consumer_options: extra librdkafka consumer settings (e.g.
            ``{"fetch.min.bytes": "1"}``).
        name: the step name in dead letters and logs (default ``kafka:<topics>``).

    Raises:
        ConfigError: for bad options.
    """

    def __init__(
        self,
        topics: str | Sequence[str],
        *,
        config: KafkaConfig | None = None,
        group: str | None = None,
        value_format: Literal["json", "raw"] | ValueFormat = "json",
        schema: SchemaLike | None = None,
        start: Start = "earliest",
        start_offsets: Mapping[Any, int] | None = None,
        start_time: int | datetime | None = None,
        bounded: bool = False,
        partitions: Sequence[int] | None = None,
        key_column: str | None = None,
        timestamp_column: str | None = None,
        headers_column: str | None = None,
        topic_column: str | None = None,
        dead_letter_topic: str | None = None,
        consumer_options: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        if not self.topics or not all(isinstance(t, str) and t for t in self.topics):
            msg = f"KafkaSource: give a topic name, several, or a '^pattern'; got {topics!r}"
            raise ConfigError(msg)
        self.format = _format(value_format, schema, "KafkaSource")
        if start not in ("earliest", "latest"):
            msg = f"KafkaSource: start must be 'earliest' or 'latest', got {start!r}"
            raise ConfigError(msg)
        self.config = config or KafkaConfig()
        self.name = name or f"kafka:{','.join(self.topics)}"
        self.group = group
        self.start: Start = start
        self.start_offsets = dict(start_offsets or {})
        self.start_time = _ms(start_time) if start_time is not None else None
        self.bounded = bounded
        self.key_column = key_column
        self.timestamp_column = timestamp_column
        self.headers_column = headers_column
        self.topic_column = topic_column
        self.dead_letter_topic = dead_letter_topic
        self.consumer_options = dict(consumer_options or {})
        self.health = Health(self.name)
        self.dead_letters_produced = 0
        self._only = None if partitions is None else [int(p) for p in partitions]
        self._consumer: Any = None
        self._last_lag: dict[int, int] = {}
        self._dlq: Any = None
        self._dlq_pending = 0
        self._tps: list[TopicPartition] = []
        self._ids: dict[TopicPartition, int] = {}
        self._next: dict[int, int] = {}
        self._ends: dict[int, int] = {}
        self._one_topic = False

    # -- set-up ---------------------------------------------------------------------------
    def _client(self) -> Any:
        if self._consumer is None:
            ck = confluent()
            settings = self.config.client(
                **{
                    "group.id": self.group or f"tidal-{uuid.uuid4().hex[:12]}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": self.bounded,
                    **self.health.settings(),
                    **self.consumer_options,
                }
            )
            try:
                self._consumer = ck.Consumer(settings)
            except ck.KafkaException as exc:
                raise kafka_error(self.name, "creating the consumer", exc) from exc
        return self._consumer

    def _discover(self) -> None:
        if self._tps:
            return
        consumer = self._client()
        try:
            meta = consumer.list_topics(timeout=_METADATA_TIMEOUT)
        except Exception as exc:
            raise kafka_error(self.name, "reading the cluster's topics", exc) from exc
        import re

        names: list[str] = []
        for t in self.topics:
            if t.startswith("^"):
                rx = re.compile(t)
                names += sorted(n for n in meta.topics if rx.match(n) and n not in names)
            elif t not in meta.topics or meta.topics[t].error is not None:
                msg = (
                    f"{self.name}: topic {t!r} does not exist on {self.config.bootstrap_servers}; "
                    "create it first (tidal kafka create, or your cluster's tools)"
                )
                raise ConnectorError(msg)
            elif t not in names:
                names.append(t)
        if not names:
            msg = f"{self.name}: no topic on {self.config.bootstrap_servers} matches {self.topics}"
            raise ConnectorError(msg)
        self._one_topic = len(names) == 1
        tps = sorted((n, p) for n in names for p in meta.topics[n].partitions)
        if self._one_topic:
            ids = {tp: tp[1] for tp in tps}
        else:
            ids = {tp: i for i, tp in enumerate(tps)}
        if self._only is not None:
            missing = set(self._only) - set(ids.values())
            if missing:
                msg = (
                    f"{self.name}: no partition ids {sorted(missing)}; "
                    f"it has {sorted(ids.values())}"
                )
                raise ConfigError(msg)
            tps = [tp for tp in tps if ids[tp] in self._only]
        self._tps = tps
        self._ids = {tp: ids[tp] for tp in tps}

    def partitions(self) -> Sequence[int]:
        """The partition ids this source reads (asks the cluster on first use)."""
        self._discover()
        return tuple(self._ids[tp] for tp in self._tps)

    def restrict(self, partitions: Sequence[int]) -> None:
        """Read only these partition ids from now on (the next ``open`` assigns them)."""
        self._discover()
        keep = {int(p) for p in partitions}
        self._tps = [tp for tp in self._tps if self._ids[tp] in keep]
        self._ids = {tp: self._ids[tp] for tp in self._tps}

    def assign_worker(self, index: int, count: int) -> None:
        """Read only worker ``index``'s share: every ``count``-th of the partitions.

        A static assignment for ``tidal run --workers N`` on one machine (see
        :mod:`tidal.runtime.workers`): no group rebalancing, so a restarted worker owns
        what it owned. Asks the cluster for the partitions first.

        Raises:
            ConfigError: for an index outside ``0..count-1``.
        """
        if not 0 <= index < count:
            msg = f"{self.name}: worker index {index} is not in 0..{count - 1}"
            raise ConfigError(msg)
        self._discover()
        self._tps = self._tps[index::count]
        self._ids = {tp: self._ids[tp] for tp in self._tps}

    def replaying(self) -> None:
        """Read history without side effects from now on: no group, no dead-letter topic.

        For a replay of offsets already processed (the retrain job's, see
        :mod:`tidal.runtime.history`): the group's committed offsets are neither read nor
        written, and undecodable records stay dead letters of the replay only.
        """
        self.group = None
        self.dead_letter_topic = None

    def topic_partition(self, partition: int) -> TopicPartition:
        """The ``(topic, partition)`` of a partition id."""
        self._discover()
        for tp, i in self._ids.items():
            if i == partition:
                return tp
        msg = f"{self.name}: no partition id {partition}"
        raise ConfigError(msg)

    def open(self, positions: Mapping[int, Any]) -> None:
        """Assign every partition at its start (see the module docs).

        Raises:
            ConnectorError: for a position that is not an offset, or a broker that does
                not answer.
        """
        self._discover()
        consumer = self._client()
        ck = confluent()
        given = self._given(positions)
        starts: dict[int, int] = {}
        for key, off in self.start_offsets.items():
            tp = (
                (str(key[0]), int(key[1]))
                if isinstance(key, tuple)
                else self.topic_partition(int(key))
            )
            if tp in self._ids:
                starts[self._ids[tp]] = int(off)
        if self.group:
            starts.update(self._committed())
        marks = self._watermarks()
        for tp in self._tps:
            i = self._ids[tp]
            lo, hi = marks[i]
            if i in given:
                at = given[i]
            elif i in starts:
                at = starts[i]
            elif self.start_time is not None:
                at = self.positions_for_time(self.start_time)[i]["offset"]
            else:
                at = lo if self.start == "earliest" else hi
            self._next[i] = max(int(at), lo)
            self._ends[i] = hi
        assignment = [ck.TopicPartition(t, p, self._next[self._ids[(t, p)]]) for t, p in self._tps]
        try:
            consumer.assign(assignment)
        except ck.KafkaException as exc:
            raise kafka_error(self.name, "assigning partitions", exc) from exc

    def _given(self, positions: Mapping[Any, Any]) -> dict[int, int]:
        out: dict[int, int] = {}
        for key, value in positions.items():
            if isinstance(value, Mapping):
                tp = (str(value.get("topic")), int(value.get("partition", -1)))
                if tp not in self._ids:
                    continue  # a partition this run does not read (another topic set)
                at, i = value.get("offset"), self._ids[tp]
            else:
                at, i = value, int(key)
                if i not in self._ids.values():
                    msg = f"{self.name}: a position for partition id {i}, which it does not have"
                    raise ConnectorError(msg)
            if isinstance(at, bool) or not isinstance(at, int | np.integer) or at < 0:
                msg = (
                    f"{self.name}: the position of partition {key} must be an offset >= 0, "
                    f"got {value!r}"
                )
                raise ConnectorError(msg)
            out[i] = int(at)
        return out

    def _watermarks(self) -> dict[int, tuple[int, int]]:
        consumer = self._client()
        ck = confluent()
        out = {}
        for t, p in self._tps:
            try:
                lo, hi = consumer.get_watermark_offsets(
                    ck.TopicPartition(t, p), timeout=_METADATA_TIMEOUT
                )
            except ck.KafkaException as exc:
                raise kafka_error(self.name, f"reading the offsets of {t}[{p}]", exc) from exc
            out[self._ids[(t, p)]] = (int(lo), int(hi))
        return out

    def _committed(self) -> dict[int, int]:
        ck = confluent()
        query = [ck.TopicPartition(t, p) for t, p in self._tps]
        deadline = time.monotonic() + _METADATA_TIMEOUT
        while True:
            try:
                got = self._client().committed(query, timeout=_METADATA_TIMEOUT)
                break
            except ck.KafkaException as exc:
                if transient(exc) and time.monotonic() < deadline:
                    time.sleep(0.1)  # the group coordinator is still loading
                    continue
                what = f"reading group {self.group!r}'s offsets"
                raise kafka_error(self.name, what, exc) from exc
        return {self._ids[(tp.topic, tp.partition)]: tp.offset for tp in got if tp.offset >= 0}

    def positions_for_time(self, time_ms: int) -> dict[int, Any]:
        """Per partition, the position of the first record stamped ``>= time_ms``.

        A partition with no such record gets its end offset. For replays from a point in
        time (``tidal run --from-time``): pass the result to :meth:`open`.
        """
        self._discover()
        ck = confluent()
        query = [ck.TopicPartition(t, p, int(time_ms)) for t, p in self._tps]
        try:
            found = self._client().offsets_for_times(query, timeout=_METADATA_TIMEOUT)
        except ck.KafkaException as exc:
            raise kafka_error(self.name, "finding offsets for a time", exc) from exc
        marks = None
        out: dict[int, Any] = {}
        for tp in found:
            off = tp.offset
            if off < 0:
                marks = marks or self._watermarks()
                off = marks[self._ids[(tp.topic, tp.partition)]][1]
            out[self._ids[(tp.topic, tp.partition)]] = _pos(tp.topic, tp.partition, off)
        return out

    # -- reading --------------------------------------------------------------------------
    def position(self) -> dict[int, Any]:
        """``{id: {"topic", "partition", "offset"}}`` with the next offset of each partition.

        Dead letters produced to ``dead_letter_topic`` before this position are flushed.
        """
        self._flush_dead_letters()
        ids = {i: tp for tp, i in self._ids.items()}
        return {i: _pos(*ids[i], off) for i, off in list(self._next.items())}

    def offsets(self) -> dict[TopicPartition, int]:
        """The next offset of every partition, by ``(topic, partition)``."""
        ids = {i: tp for tp, i in self._ids.items()}
        return {ids[i]: off for i, off in self._next.items()}

    def end_offsets(self) -> dict[int, int]:
        """The end offsets seen at ``open`` (where a bounded source stops)."""
        return dict(self._ends)

    def group_metadata(self) -> Any:
        """The consumer group's metadata, for ``send_offsets_to_transaction``.

        Raises:
            ConfigError: without a group.
        """
        if not self.group:
            msg = f"{self.name}: offsets in a transaction need a consumer group; pass group="
            raise ConfigError(msg)
        return self._client().consumer_group_metadata()

    def commit(self) -> None:
        """Commit the current positions to the group (at-least-once bookkeeping).

        Raises:
            ConfigError: without a group.
            ConnectorError: if the broker refuses.
        """
        if not self.group:
            msg = f"{self.name}: commit() needs a group; pass group= to KafkaSource"
            raise ConfigError(msg)
        ck = confluent()
        offsets = [ck.TopicPartition(t, p, off) for (t, p), off in self.offsets().items()]
        try:
            self._client().commit(offsets=offsets, asynchronous=False)
        except ck.KafkaException as exc:
            raise kafka_error(self.name, f"committing group {self.group!r}'s offsets", exc) from exc

    def lag(self) -> dict[int, int]:
        """Consumer lag per partition id: the last fetched high watermark minus the position.

        It is librdkafka's cached figure (no request to the broker), for metrics; after
        :meth:`close`, the figure at closing.
        """
        if self._consumer is None:
            return dict(self._last_lag)
        ck = confluent()
        out = {}
        for (t, p), i in list(self._ids.items()):
            try:
                _lo, hi = self._consumer.get_watermark_offsets(ck.TopicPartition(t, p), cached=True)
            except ck.KafkaException:
                continue
            if hi >= 0 and i in self._next:
                out[i] = max(0, int(hi) - self._next[i])
        self._last_lag = out
        return out

    def serve(self) -> None:
        """Serve the error callbacks of the clients without taking records (thread-safe)."""
        if self._dlq is not None:
            self._dlq.poll(0)

    def poll(self, max_records: int, timeout: float) -> Batch | None:
        """Up to ``max_records`` records from one batched ``consume`` call.

        It never waits longer than for the first record: what librdkafka has fetched
        already comes at once. Returns an empty batch when nothing came within ``timeout``
        seconds (also while the broker is unreachable), and ``None`` once a bounded source
        reached its ends.
        """
        if max_records < 1:
            msg = f"{self.name}: max_records must be >= 1, got {max_records}"
            raise ConfigError(msg)
        if self._consumer is None or not self._next:
            self.open(self.position() if self._next else {})
        if self.bounded and self._done():
            return None
        ck = confluent()
        consumer = self._consumer
        try:
            # consume(n, t) waits for all n or the whole timeout: take what is fetched
            # already, else wait for one record only, then take what came with it
            msgs = consumer.consume(num_messages=max_records, timeout=0)
            if not msgs and timeout > 0:
                first = consumer.poll(timeout)
                if first is not None:
                    msgs = [first]
                    if max_records > 1:
                        msgs += consumer.consume(num_messages=max_records - 1, timeout=0)
        except ck.KafkaException as exc:
            raise kafka_error(self.name, "consume", exc) from exc
        if self._dlq is not None:
            self._dlq.poll(0)
        if not msgs:
            return Batch()
        self.health.ok()
        if any(m.error() is not None for m in msgs):
            msgs = self._drop_errors(msgs)
            if not msgs:
                return Batch()
        return self._batch(msgs)

    def _drop_errors(self, msgs: list[Any]) -> list[Any]:
        ck = confluent()
        good = []
        for m in msgs:
            err = m.error()
            if err is None:
                good.append(m)
            elif err.code() == _PARTITION_EOF:  # bounded only: the end, markers included
                i = self._ids.get((m.topic(), m.partition()))
                if i is not None and m.offset() >= 0:
                    self._next[i] = max(self._next.get(i, 0), int(m.offset()))
            elif err.fatal() or err.code() in (
                ck.KafkaError.UNKNOWN_TOPIC_OR_PART,
                ck.KafkaError.TOPIC_AUTHORIZATION_FAILED,
                ck.KafkaError.OFFSET_OUT_OF_RANGE,
            ):
                msg = f"{self.name}: reading {m.topic()}[{m.partition()}] failed: {err.str()}"
                raise ConnectorError(msg)
            else:
                self.health.on_error(err)
        return good

    def _done(self) -> bool:
        return all(self._next[i] >= end for i, end in self._ends.items())

    def _batch(self, msgs: list[Any]) -> Batch:
        # one list per field (list comprehensions over the C methods: the cheapest at the
        # small batches of a tight latency budget), one numpy array each
        offs = [m.offset() for m in msgs]
        if self._one_topic:
            parts = [m.partition() for m in msgs]
        else:
            ids = self._ids
            parts = [ids[(m.topic(), m.partition())] for m in msgs]
        times = [m.timestamp()[1] for m in msgs]
        if min(times) < 0:  # no timestamp: the time of reading
            now = time.time_ns() // 1_000_000
            times = [t if t >= 0 else now for t in times]
        self._advance(parts, offs)
        decoded = self.format.decode([m.value() for m in msgs])
        for f in decoded.failures:
            self._reject(msgs[f.index], f.reason)
        offsets = np.array(offs, dtype=np.int64)
        stamps = np.array(times, dtype=np.int64)
        part = np.array(parts, dtype=np.int32)
        cols = decoded.columns
        rows = decoded.rows
        if len(rows) != len(msgs) or decoded.failures:
            offsets, stamps, part = offsets[rows], stamps[rows], part[rows]
            msgs = [msgs[i] for i in rows.tolist()]
        if self.key_column is not None:
            cols[self.key_column] = _objects(
                [
                    None if k is None else k.decode("utf-8", "replace")
                    for k in (m.key() for m in msgs)
                ]
            )
        if self.timestamp_column is not None:
            cols[self.timestamp_column] = stamps
        if self.headers_column is not None:
            cols[self.headers_column] = _objects([m.headers() for m in msgs])
        if self.topic_column is not None:
            cols[self.topic_column] = _objects([m.topic() for m in msgs])
        return Batch(
            cols, ingest=stamps * 1_000_000, partition=part, offset=offsets, length=len(offsets)
        )

    def _advance(self, parts: list[int], offsets: list[int]) -> None:
        """Move each partition's next offset past the highest one read."""
        nxt = self._next
        first = parts[0]
        if parts.count(first) == len(parts):  # one partition: the usual case
            nxt[first] = max(nxt.get(first, 0), max(offsets) + 1)
            return
        top: dict[int, int] = {}
        for p, off in zip(parts, offsets, strict=True):
            if off >= top.get(p, -1):
                top[p] = off
        for p, off in top.items():
            nxt[p] = max(nxt.get(p, 0), off + 1)

    # -- dead letters ---------------------------------------------------------------------
    def _reject(self, m: Any, reason: str) -> None:
        where = {"topic": m.topic(), "partition": m.partition(), "offset": m.offset()}
        value = m.value()
        raw = None if value is None else value.decode("utf-8", "replace")
        at = f"{where['topic']}[{where['partition']}] offset {where['offset']}"
        self.reject(DeadLetter(self.name, f"{at}: {reason}", where, raw))
        if self.dead_letter_topic is not None:
            self._produce_dead_letter(m, reason)

    def _produce_dead_letter(self, m: Any, reason: str) -> None:
        ck = confluent()
        if self._dlq is None:
            settings = self.config.client(
                **{"enable.idempotence": True, "linger.ms": 5, **self.health.settings()}
            )
            self._dlq = ck.Producer(settings)
        headers = list(m.headers() or []) + [
            ("tidal.reason", reason.encode()),
            ("tidal.topic", m.topic().encode()),
            ("tidal.partition", str(m.partition()).encode()),
            ("tidal.offset", str(m.offset()).encode()),
            ("tidal.step", self.name.encode()),
        ]
        while True:
            try:
                self._dlq.produce(
                    self.dead_letter_topic,
                    value=m.value(),
                    key=m.key(),
                    headers=headers,
                    timestamp=max(m.timestamp()[1], 0),
                    on_delivery=self._dead_letter_delivered,
                )
                break
            except BufferError:
                self._dlq.poll(0.1)
        self._dlq_pending += 1
        self.dead_letters_produced += 1

    def _dead_letter_delivered(self, err: Any, msg: Any) -> None:
        self._dlq_pending -= 1
        if err is not None:
            self._dlq_error = err

    def _flush_dead_letters(self) -> None:
        if self._dlq is None:
            return
        while self._dlq.flush(1.0) > 0:
            pass  # the broker is away: Health has warned; wait (at-least-once)
        err = getattr(self, "_dlq_error", None)
        if err is not None:
            self._dlq_error = None
            msg = (
                f"{self.name}: producing to the dead-letter topic "
                f"{self.dead_letter_topic!r} failed: {err}"
            )
            raise ConnectorError(msg)

    def close(self) -> None:
        """Flush the dead-letter producer and close the consumer; ``position()`` stays valid."""
        if self._dlq is not None:
            self._flush_dead_letters()
            self._dlq = None
        if self._consumer is not None:
            self.lag()  # kept for metrics read after the run
            self._consumer.close()
            self._consumer = None
            self._tps = []


def _format(value_format: Any, schema: SchemaLike | None, who: str) -> ValueFormat:
    if value_format == "json":
        return JsonFormat(schema)
    if schema is not None:
        msg = f"{who}: schema= applies to value_format='json'; give the schema to the format"
        raise ConfigError(msg)
    if value_format == "raw":
        return RawFormat()
    if isinstance(value_format, ValueFormat):
        return value_format
    msg = (
        f"{who}: value_format must be 'json', 'raw' or a tidal.io.formats format "
        f"(JsonFormat, AvroFormat, ...), got {value_format!r}"
    )
    raise ConfigError(msg)


def _pos(topic: str, partition: int, offset: int) -> dict[str, Any]:
    return {"topic": topic, "partition": int(partition), "offset": int(offset)}


def _objects(items: list[Any]) -> Array:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _ms(when: int | datetime) -> int:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            msg = f"start_time must be an aware datetime (with a zone), got {when!r}"
            raise ConfigError(msg)
        return round(when.timestamp() * 1000)
    return int(when)
