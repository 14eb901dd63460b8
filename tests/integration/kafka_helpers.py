"""Small helpers for the Kafka integration tests: topics, plain producing and reading.

Everything here uses confluent-kafka directly (never Tidal's connectors), so that the tests
check Tidal against a plain client.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tidal.io.kafka import KafkaConfig


def new_topic(config: KafkaConfig, prefix: str, partitions: int = 1) -> str:
    """Create a fresh topic named ``<prefix>-<random>`` and return its name.

    Retention by time is off: the tests write records stamped in the past (event time in
    2024), which the broker's default 7-day retention would delete under the reader.
    """
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    admin = AdminClient(config.client())
    topic = NewTopic(name, partitions, 1, config={"retention.ms": "-1"})
    futures = admin.create_topics([topic], operation_timeout=30)
    for f in futures.values():
        f.result(timeout=60)
    return name


def produce(
    config: KafkaConfig,
    topic: str,
    values: Iterable[bytes | None],
    *,
    keys: Sequence[bytes | None] | None = None,
    headers: Sequence[Any] | None = None,
    timestamps: Sequence[int] | None = None,
    partition: int | None = None,
) -> None:
    """Produce records with a plain producer and wait until all are acknowledged."""
    producer = Producer(config.client(**{"linger.ms": 5, "enable.idempotence": True}))
    failed: list[Any] = []

    def done(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err)

    for i, value in enumerate(values):
        extra: dict[str, Any] = {}
        if partition is not None:
            extra["partition"] = partition
        if timestamps is not None:
            extra["timestamp"] = timestamps[i]
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=None if keys is None else keys[i],
                    headers=None if headers is None else headers[i],
                    on_delivery=done,
                    **extra,
                )
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    assert not failed, failed


@dataclass
class Record:
    """A record as a plain consumer sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: int


def read_all(config: KafkaConfig, topic: str, *, committed: bool = True) -> list[Record]:
    """Every record of ``topic`` up to its current end (``read_committed`` by default)."""
    consumer = Consumer(
        config.client(
            **{
                "group.id": f"check-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed" if committed else "read_uncommitted",
                "enable.partition.eof": True,
            }
        )
    )
    meta = consumer.list_topics(topic, timeout=30)
    parts = sorted(meta.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    out: list[Record] = []
    todo = set(parts)  # until each partition reports its end (the last stable offset)
    while todo:
        for m in consumer.consume(10_000, 1.0):
            err = m.error()
            if err is not None:
                assert err.code() == KafkaError._PARTITION_EOF, err
                todo.discard(m.partition())
                continue
            out.append(
                Record(
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    m.key(),
                    m.value(),
                    list(m.headers() or []),
                    m.timestamp()[1],
                )
            )
    consumer.close()
    return out
