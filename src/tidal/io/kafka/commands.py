r"""What ``tidal kafka ...`` runs against a cluster: topics, create, describe, produce, consume.

They mirror the embedded log's tools (:mod:`tidal.io.log.commands`): ``produce`` reads JSON
Lines (one object per line, sent byte for byte as the record value, the ``key`` field's
value as the record key); ``consume`` prints the values as JSON Lines and stops at the end
offsets it saw when it started (the last stable offsets: it reads ``read_committed``), so it
works in pipes (``| head`` ends it quietly). With a group it starts at the group's committed
offsets and commits what it printed. Records are keyed to partitions with the Java client's
partitioner (murmur2), as :class:`~tidal.io.kafka.sink.KafkaSink` does.

Every function raises :class:`~tidal.errors.ConnectorError` with one clear line when the
cluster does not answer, naming where it looked.

Example (not run here: it needs a broker)::

    cfg = KafkaConfig(bootstrap_servers="127.0.0.1:9092")
    create(cfg, "clicks", partitions=2, out=sys.stdout)
    produce(cfg, "clicks", source=io.BytesIO(b'{"user": "a"}\n'), key="user", out=sys.stdout)
    consume(cfg, "clicks", max_records=10)
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections.abc import Mapping
from typing import IO, Any

import orjson

from tidal.errors import ConfigError, ConnectorError
from tidal.io.fileutil import open_input, quiet_broken_pipe
from tidal.io.kafka.admin import KafkaAdmin, client_settings
from tidal.io.kafka.config import KafkaConfig

__all__ = ["consume", "create", "delete", "describe", "produce", "topics"]

_BLOCK = 1 << 20
_STALL_S = 30.0  # consume gives up after this long without progress towards the end offsets


def topics(config: KafkaConfig, *, internal: bool = False, out: IO[str]) -> int:
    """Print the topic names, one per line."""
    admin = KafkaAdmin(config)
    admin.check()
    for name in admin.topics(internal=internal):
        print(name, file=out)
    return 0


def create(
    config: KafkaConfig,
    topic: str,
    *,
    partitions: int = 1,
    replication_factor: int = -1,
    settings: Mapping[str, str] | None = None,
    out: IO[str],
) -> int:
    """Create a topic (``settings``: topic configs such as ``retention.ms``)."""
    admin = KafkaAdmin(config)
    admin.check()
    admin.create_topic(topic, partitions, config=settings, replication_factor=replication_factor)
    print(f"created topic {topic!r} with {partitions} partitions at {admin.bootstrap}", file=out)
    return 0


def delete(config: KafkaConfig, topic: str, *, out: IO[str]) -> int:
    """Delete a topic."""
    admin = KafkaAdmin(config)
    admin.check()
    admin.partitions(topic)  # a clear "no topic" message first
    admin.delete_topic(topic)
    print(f"deleted topic {topic!r} at {admin.bootstrap}", file=out)
    return 0


def describe(config: KafkaConfig, topic: str, *, as_json: bool = False, out: IO[str]) -> int:
    """Print a topic's partitions (leader, first and next offsets) and every group's lag."""
    admin = KafkaAdmin(config)
    admin.check()
    info = admin.describe(topic)
    if as_json:
        print(orjson.dumps(info.to_json()).decode(), file=out)
        return 0
    print(f"topic {topic!r}: {len(info.partitions)} partitions at {admin.bootstrap}", file=out)
    head = ("partition", "leader", "start", "end", "records")
    print("  ".join(f"{h:>10}" for h in head), file=out)
    for p in info.partitions:
        row = (p.partition, p.leader, p.start, p.end, p.records)
        print("  ".join(f"{v:>10}" for v in row), file=out)
    for g in info.groups:
        shown = ", ".join(f"{p}: {g.committed.get(p, '-')} (lag {lag})" for p, lag in g.lag.items())
        print(f"group {g.group!r}: {shown}; total lag {g.total}", file=out)
    return 0


# -- produce -------------------------------------------------------------------------------
def _key_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    return orjson.dumps(value)  # 5 -> b"5", true -> b"true", as the value reads


class _Sender:
    """A librdkafka producer that counts deliveries and keeps the first failure."""

    def __init__(self, config: KafkaConfig, topic: str, partition: int | None) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.partition = -1 if partition is None else partition
        self.sent = 0
        self.delivered = 0
        self.failure: str | None = None
        settings = client_settings(
            config,
            **{"partitioner": "murmur2_random", "message.timeout.ms": 30_000, "linger.ms": 5},
        )
        self._producer = Producer(settings)

    def _done(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.delivered += 1
        elif self.failure is None:
            self.failure = err.str()

    def send(self, value: bytes, key: bytes | None) -> None:
        while True:
            try:
                self._producer.produce(
                    self.topic, value, key, partition=self.partition, on_delivery=self._done
                )
                break
            except BufferError:
                self._producer.poll(0.1)  # the local queue is full: let deliveries drain
        self.sent += 1
        self._producer.poll(0)

    def flush(self) -> None:
        while self._producer.flush(1.0) > 0:
            pass  # message.timeout.ms bounds this: every record is delivered or failed
        if self.failure is not None:
            msg = (
                f"{self.sent - self.delivered} of {self.sent} records to {self.topic!r} "
                f"were not delivered: {self.failure}"
            )
            raise ConnectorError(msg)


def _lines(source: IO[bytes]) -> Any:
    """``(line number, line)`` of the non-blank lines, read in blocks."""
    number = 0
    pending = b""
    read = getattr(source, "read1", source.read)
    while True:
        chunk = read(_BLOCK)
        data = pending + chunk
        parts = data.split(b"\n")
        pending = parts.pop() if chunk else b""
        for line in parts:
            number += 1
            if line.strip():
                yield number, line.rstrip(b"\r")
        if not chunk:
            return


def produce(
    config: KafkaConfig,
    topic: str,
    *,
    file: str | None = None,
    key: str | None = None,
    partition: int | None = None,
    source: IO[bytes] | None = None,
    out: IO[str],
) -> int:
    """Send JSON Lines from ``file`` (or ``source``, default standard input) to ``topic``.

    Raises:
        ConnectorError: at the first line that is not a JSON object (the records before it
            are sent, and the message says how many), or when records were not delivered.
    """
    admin = KafkaAdmin(config)
    admin.check()
    parts = admin.partitions(topic)
    if partition is not None and not 0 <= partition < parts:
        msg = f"topic {topic!r} has partitions 0..{parts - 1}, not {partition}"
        raise ConfigError(msg)
    name = file or "<stdin>"
    sender = _Sender(config, topic, partition)
    with contextlib.ExitStack() as stack:
        if file is not None:
            handle: IO[bytes] = stack.enter_context(open_input(file))
        else:
            handle = source or sys.stdin.buffer
        for number, line in _lines(handle):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                problem = f"invalid JSON: {exc}"
            else:
                if type(obj) is dict:
                    sender.send(line, None if key is None else _key_bytes(obj.get(key)))
                    continue
                problem = "not a JSON object"
            sender.flush()
            msg = (
                f"{name} line {number}: {problem}; each line must be one JSON object "
                f"(the {sender.delivered} records before it went in)"
            )
            raise ConnectorError(msg)
        sender.flush()
    print(f"produced {sender.delivered} records to {topic!r} at {admin.bootstrap}", file=out)
    return 0


# -- consume -------------------------------------------------------------------------------
def consume(
    config: KafkaConfig,
    topic: str,
    *,
    from_beginning: bool = False,
    max_records: int | None = None,
    group: str | None = None,
    partition: int | None = None,
    out: IO[bytes] | None = None,
) -> int:
    """Print the values present now as JSON Lines (``read_committed``), then stop.

    Starts at the group's committed offsets with ``group`` (committing as it prints;
    partitions the group never committed start at the beginning), else at the beginning;
    ``from_beginning`` ignores the group's offsets.
    """
    from confluent_kafka import Consumer

    admin = KafkaAdmin(config)
    admin.check()
    n = admin.partitions(topic)
    if partition is not None and not 0 <= partition < n:
        msg = f"topic {topic!r} has partitions 0..{n - 1}, not {partition}"
        raise ConfigError(msg)
    parts = list(range(n)) if partition is None else [partition]
    starts = admin.start_offsets(topic)
    ends = admin.end_offsets(topic)
    done = admin.committed(group, topic) if group is not None and not from_beginning else {}
    first = {p: max(done.get(p, starts[p]), starts[p]) for p in parts}
    consumer = Consumer(
        client_settings(
            config,
            **{
                "group.id": group or f"tidal-consume-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
            },
        )
    )
    stdout = out is None
    try:
        _copy(consumer, topic, first, ends, max_records, group, out or sys.stdout.buffer)
    except BrokenPipeError:
        if stdout:
            quiet_broken_pipe()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def _copy(
    consumer: Any,
    topic: str,
    first: dict[int, int],
    ends: dict[int, int],
    budget: int | None,
    group: str | None,
    out: IO[bytes],
) -> int:
    """Write values from ``first`` up to ``ends`` (or ``budget`` records); return the count."""
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    todo = {p for p, start in first.items() if start < ends[p]}
    consumer.assign([TopicPartition(topic, p, first[p]) for p in sorted(todo)])
    written = 0
    progress = time.monotonic()
    while todo and (budget is None or written < budget):
        want = 1000 if budget is None else min(1000, budget - written)
        try:
            msgs = consumer.consume(want, timeout=0.5)
        except KafkaException as exc:
            msg = f"consuming {topic!r} failed: {exc.args[0].str() if exc.args else exc}"
            raise ConnectorError(msg) from exc
        values: list[bytes] = []
        commit: dict[int, int] = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001 (-X enable.partition.eof)
                    continue
                msg = f"consuming {topic!r} failed: {err.str()}"
                raise ConnectorError(msg)
            p, offset = m.partition(), m.offset()
            if p not in todo or offset >= ends[p]:
                continue  # past the end this run stops at
            value = m.value()
            values.append(b"null" if value is None else value)
            commit[p] = offset + 1
            if offset + 1 >= ends[p]:
                todo.discard(p)
        if values:
            out.write(b"\n".join(values) + b"\n")
            out.flush()
            written += len(values)
            progress = time.monotonic()
            if group is not None:
                consumer.commit(
                    offsets=[TopicPartition(topic, p, o) for p, o in commit.items()],
                    asynchronous=False,
                )
        # Transaction markers and aborted records take offsets that no message reaches us
        # for: the consumer's position tells when a partition has passed its end.
        for tp in consumer.position([TopicPartition(topic, p) for p in sorted(todo)]):
            if tp.offset >= ends[tp.partition]:
                todo.discard(tp.partition)
                progress = time.monotonic()
        if todo and time.monotonic() - progress > _STALL_S:
            left = {p: ends[p] for p in sorted(todo)}
            msg = (
                f"consuming {topic!r}: nothing arrived for {_STALL_S:g} s though partitions "
                f"{sorted(left)} have records up to offsets {left}; is the broker still up?"
            )
            raise ConnectorError(msg)
    return written
