"""What the pipeline files of the Kafka run tests share (loaded from their folder).

kafka_scale_pipeline.py (``--workers N`` and ``--group``, keyed by the message key) and
kafka_repartition_pipeline.py (``--group`` with a repartition topic) read the same kind of
input with a bounded ``KafkaSource`` (group ``<SCALE_OUT>-in``) and write 1 s windows with
a ``KafkaTransactionalSink`` (transactional id ``$SCALE_OUT``, the source's offsets in each
transaction). Environment: ``SCALE_BOOTSTRAP``, ``SCALE_IN``, ``SCALE_OUT``,
``SCALE_MAX_POLL_MS`` (the consumers' ``max.poll.interval.ms``, which a group's membership
consumer uses too), ``SCALE_GATE``/``SCALE_GATE_AT`` (where a worker parks, see each file's
gate), ``SCALE_HOLD_GROUP`` (see :func:`hold_for_a_second_member`), ``SCALE_SHARE_GROUP``
(see :func:`hold_until_shared`) and ``SCALE_PACE_MS`` (see :func:`pace`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tidal import Pipeline, bounded, tumbling
from tidal import aggregations as agg
from tidal.io.kafka import KafkaConfig
from tidal.io.kafka.sink import KafkaTransactionalSink
from tidal.io.kafka.source import KafkaSource


def gate_batch() -> int | None:
    """The batch number (``$SCALE_GATE_AT``, default 3) to park in, if ``$SCALE_GATE`` is set."""
    return int(os.environ.get("SCALE_GATE_AT", "3")) if os.environ.get("SCALE_GATE") else None


def park() -> None:
    """Write this pid to ``$SCALE_GATE.reached`` and wait while ``$SCALE_GATE`` exists."""
    gate = os.environ["SCALE_GATE"]
    tmp = Path(gate + ".tmp")
    tmp.write_text(str(os.getpid()))
    tmp.replace(gate + ".reached")
    while Path(gate).exists():
        time.sleep(0.005)


def hold_for_a_second_member() -> None:
    """Wait until group ``$SCALE_HOLD_GROUP`` has a second member joining (120 s at most).

    Called inside a batch, so this member polls nothing meanwhile: a member that joins
    puts the group into a rebalance that waits for this one, and the rebalance is what
    this waits for (or two members, if it is over). Without it a fast first member can
    drain every partition before the second one has started.
    """
    from confluent_kafka.admin import AdminClient

    group = os.environ["SCALE_HOLD_GROUP"]
    admin = AdminClient({"bootstrap.servers": os.environ["SCALE_BOOTSTRAP"]})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        d = admin.describe_consumer_groups([group], request_timeout=10)[group].result(30)
        if len(d.members) >= 2 or d.state.name.endswith("REBALANCING"):
            return
        time.sleep(0.02)
    msg = f"group {group}: no second member joined in 120 s"
    raise AssertionError(msg)


def hold_until_shared() -> None:
    """Wait until group ``$SCALE_SHARE_GROUP`` has 2 members and neither is assigned every
    partition of ``$SCALE_IN`` (120 s at most).

    Called inside a batch by the member that owned every partition, after a second one
    joined: librdkafka's background thread takes this member through the rebalance's
    first round (the new assignment leaves out what it must give up) while the batch
    waits; its next poll then revokes those partitions, so it cannot drain them first.
    """
    from confluent_kafka.admin import AdminClient

    group, topic = os.environ["SCALE_SHARE_GROUP"], os.environ["SCALE_IN"]
    admin = AdminClient({"bootstrap.servers": os.environ["SCALE_BOOTSTRAP"]})
    parts = len(admin.list_topics(topic, timeout=30).topics[topic].partitions)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        d = admin.describe_consumer_groups([group], request_timeout=10)[group].result(30)
        held = [
            len([tp for tp in m.assignment.topic_partitions if tp.topic == topic])
            for m in d.members
        ]
        if len(held) >= 2 and max(held) < parts:
            return
        time.sleep(0.02)
    msg = f"group {group}: the partitions of {topic} were not shared out in 120 s"
    raise AssertionError(msg)


def pace() -> None:
    """Hold each batch ``$SCALE_PACE_MS``: a run then spans many checkpoints, however fast."""
    ms = os.environ.get("SCALE_PACE_MS")
    if ms:
        time.sleep(float(ms) / 1000.0)


def kafka_pipeline(
    name: str, schema: dict[str, type], *, key_column: str | None, gate: Any
) -> tuple[Pipeline, Any, KafkaTransactionalSink]:
    """The pipeline ``name`` up to its gate filter, and the exactly-once sink to end it with.

    The sink's record key is the column the windows group by: ``key_column`` if the message
    key is that column, else ``u``.
    """
    max_poll = os.environ.get("SCALE_MAX_POLL_MS")
    # librdkafka wants it >= session.timeout.ms (the group's: 6 s; a consumer's default: 45 s)
    extra = {"max.poll.interval.ms": max_poll, "session.timeout.ms": "6000"} if max_poll else {}
    config = KafkaConfig(bootstrap_servers=os.environ["SCALE_BOOTSTRAP"], extra=extra)
    out = os.environ["SCALE_OUT"]
    source = KafkaSource(
        os.environ["SCALE_IN"],
        config=config,
        group=f"{out}-in",
        bounded=True,
        schema=schema,
        key_column=key_column,
    )
    key = key_column or "u"
    sink = KafkaTransactionalSink(out, config=config, key=key, transactional_id=out, source=source)
    p = Pipeline(name)
    stream = p.source("in", source, time="ts", watermark=bounded("100ms")).filter("gate", gate)
    return p, stream, sink


def per_second(stream: Any, key: str, value: str) -> Any:
    """``key_by(key)`` and 1 s tumbling windows: count, sum of ``value``, min and max of v."""
    aggs = {"n": agg.count(), "sum": agg.sum(value), "lo": agg.min("v"), "hi": agg.max("v")}
    return stream.key_by(key).window("per_second", tumbling("1s"), aggs)
