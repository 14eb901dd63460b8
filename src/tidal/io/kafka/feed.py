"""Feed a Kafka topic from a generator function, resumably: :class:`KafkaFeed`.

The Kafka twin of :class:`~tidal.io.log.feed.LogFeed` (read its docs for the resume rule):
every record carries its sequence number, so after a crash the feed reads the last record
of each partition and goes on from the smallest ``last + 1``, skipping per partition what
that partition already holds. Records go to the partition Tidal's own key routing picks
(:func:`~tidal.io.log.sink.route_keys`, the same as the embedded log), through an
idempotent producer, so within a partition they are in order and never doubled by a
retry. It runs in a child process with :class:`~tidal.io.log.feed.FeedProcess`, as
``tidal demo --kafka`` does.

Only one feed may write a topic: the feed holds a lock file in ``lock_dir`` (a local
directory; two machines feeding one topic are not guarded).

Example (not run here: it needs a broker)::

    feed = KafkaFeed(make, "sensors", config=KafkaConfig(), key="sensor", partitions=4,
                     lock_dir="/tmp/feeds")
    feed.open(); feed.produce(1_000); feed.close()
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tidal.core.batch import Array
from tidal.errors import ConnectorError
from tidal.io.kafka._confluent import confluent, kafka_error
from tidal.io.kafka.admin import KafkaAdmin
from tidal.io.kafka.config import KafkaConfig
from tidal.io.log.feed import LogFeed, MakeColumns

__all__ = ["KafkaFeed"]

_READ_TIMEOUT = 30.0


class _Values:
    """What :meth:`LogFeed._last_seq` reads of a record: its ``values``."""

    def __init__(self, values: list[bytes]) -> None:
        self.values = values


class _KafkaTopic:
    """The few calls of an embedded-log ``Topic`` a :class:`LogFeed` makes, on Kafka."""

    def __init__(self, config: KafkaConfig, name: str, partitions: int, lock_dir: Path) -> None:
        self.config = config
        self.name = name
        self.partitions = partitions
        self.path = lock_dir / f"kafka-feed-{name}"
        self.path.mkdir(parents=True, exist_ok=True)
        self._starts: dict[int, int] = {}
        self._ends: dict[int, int] = {}  # read by refresh(), which the feed's _resume calls
        ck = confluent()
        self._failed: list[Any] = []
        self._producer = ck.Producer(
            config.client(**{"enable.idempotence": True, "linger.ms": 5, "acks": "all"})
        )

    # -- reading the tail -------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the partitions' first and next offsets again."""
        admin = KafkaAdmin(self.config, timeout=_READ_TIMEOUT)
        self._starts = admin.start_offsets(self.name)
        self._ends = admin.end_offsets(self.name, committed=False)

    def start_offset(self, partition: int) -> int:
        return self._starts.get(partition, 0)

    def end_offset(self, partition: int) -> int:
        return self._ends.get(partition, 0)

    def read(self, partition: int, offset: int, count: int) -> _Values:
        """The record at ``offset`` of ``partition`` (``count`` is 1 here)."""
        ck = confluent()
        consumer = ck.Consumer(
            self.config.client(
                **{
                    "group.id": f"tidal-feed-{self.name}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_uncommitted",
                }
            )
        )
        try:
            consumer.assign([ck.TopicPartition(self.name, partition, offset)])
            deadline = time.monotonic() + _READ_TIMEOUT
            while time.monotonic() < deadline:
                message = consumer.poll(1.0)
                if message is None:
                    continue
                if message.error() is not None:
                    msg = f"feed {self.name!r}: reading its last record failed: {message.error()}"
                    raise ConnectorError(msg)
                if message.offset() >= offset:
                    return _Values([message.value()])
        finally:
            consumer.close()
        msg = (
            f"feed {self.name!r}: partition {partition}'s last record (offset {offset}) did "
            f"not arrive within {_READ_TIMEOUT:g} s"
        )
        raise ConnectorError(msg)

    # -- writing ----------------------------------------------------------------------------
    def clock(self) -> int:
        return time.time_ns() // 1_000_000

    def append(self, partition: int, values: Array, *, keys: Array, timestamps: Array) -> None:
        self._check()
        produce = self._producer.produce
        for value, key, stamp in zip(
            values.tolist(), keys.tolist(), timestamps.tolist(), strict=True
        ):
            while True:
                try:
                    produce(
                        self.name,
                        value=value,
                        key=key,
                        partition=partition,
                        timestamp=stamp,
                        on_delivery=self._delivered,
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    self._producer.poll(0.05)
        self._producer.poll(0)

    def _delivered(self, err: Any, _message: Any) -> None:
        if err is not None:
            self._failed.append(err)

    def _check(self) -> None:
        if self._failed:
            msg = f"feed {self.name!r}: producing failed: {self._failed[0]}"
            raise ConnectorError(msg)

    def sync(self) -> None:
        """Wait until every record produced so far is acknowledged."""
        left = self._producer.flush(_READ_TIMEOUT)
        if left:
            msg = f"feed {self.name!r}: {left} records not acknowledged in {_READ_TIMEOUT:g} s"
            raise ConnectorError(msg)
        self._check()

    def close(self) -> None:
        self.sync()


class KafkaFeed(LogFeed):
    """Write ``make(seq)`` for seq = 0, 1, 2, ... into a Kafka topic, resumably.

    Args:
        make: builds the columns of the events with the given int64 sequence numbers.
        topic: the topic (created with ``partitions`` if missing).
        config: the cluster.
        key: the column whose value keys each record (and picks its partition).
        partitions: partitions of a new topic; an existing one must have as many.
        lock_dir: a local directory for the feed's lock file.
        topic_config: settings of a new topic (e.g. ``{"retention.ms": "-1"}``).
        **options: as :class:`~tidal.io.log.feed.LogFeed` (``rate``, ``lead``, ``chunk``,
            ``seq_column``, ``sync_every``).

    Raises:
        ConfigError: for bad settings.
    """

    def __init__(
        self,
        make: MakeColumns,
        topic: str,
        *,
        config: KafkaConfig,
        key: str,
        partitions: int = 1,
        lock_dir: str | os.PathLike[str],
        topic_config: dict[str, str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(make, lock_dir, topic, key=key, partitions=partitions, **options)
        self.config = config
        self.lock_dir = Path(lock_dir)
        self.topic_config = dict(topic_config or {})

    def open(self) -> None:
        """Create the topic if missing, connect, and find where to resume."""
        if self.topic is not None:
            return
        admin = KafkaAdmin(self.config, timeout=_READ_TIMEOUT)
        admin.check()
        if self.topic_name in admin.topics():
            found = admin.partitions(self.topic_name)
            if found != self.partitions:
                msg = (
                    f"Kafka topic {self.topic_name!r} has {found} partitions, the feed "
                    f"expects {self.partitions}: delete it (`tidal kafka delete "
                    f"{self.topic_name}`) or give another topic"
                )
                raise ConnectorError(msg)
        else:
            admin.create_topic(
                self.topic_name, self.partitions, config=self.topic_config, exist_ok=True
            )
        try:
            self.topic = _KafkaTopic(  # type: ignore[assignment]
                self.config, self.topic_name, self.partitions, self.lock_dir
            )
        except confluent().KafkaException as exc:
            where = f"feed {self.topic_name!r}"
            raise kafka_error(where, "connecting", exc) from exc
        self._resume()

    def _resume(self) -> None:
        topic: Any = self.topic
        if topic is not None:
            topic.refresh()  # the tail may have grown since the topic was opened
        super()._resume()
