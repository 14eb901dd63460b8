"""The pipeline file that test_kafka_workers.py runs with ``tidal run --workers N``.

Environment: ``SCALE_BOOTSTRAP`` (the broker), ``SCALE_IN`` (the keyed input topic),
``SCALE_OUT`` (the output topic, also the transactional id), ``SCALE_GATE``,
``SCALE_GATE_AT`` and ``SCALE_PACE_MS`` (see ``_gate``), ``SCALE_MAX_POLL_MS`` (the
consumers' ``max.poll.interval.ms``, which the group's membership consumer uses too).
A bounded ``KafkaSource`` (group ``<SCALE_OUT>-in``)
-> key_by k -> 1 s tumbling windows (count, sum, min, max) -> ``KafkaTransactionalSink``
with the source's offsets in each transaction.
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

_seen = [0]


def _gate(batch: Any) -> Any:
    """While file ``$SCALE_GATE`` exists, worker 1 parks in its 3rd batch (the test kills it).

    ``$SCALE_GATE_AT`` parks it in another batch than the 3rd (counted over its tasks).
    """
    gate = os.environ.get("SCALE_GATE")
    _seen[0] += 1
    at = int(os.environ.get("SCALE_GATE_AT", "3"))
    if gate and os.environ.get("TIDAL_WORKER", "").startswith("1/") and _seen[0] == at:
        tmp = Path(gate + ".tmp")
        tmp.write_text(str(os.getpid()))
        tmp.replace(gate + ".reached")
        while Path(gate).exists():
            time.sleep(0.005)
    pace = os.environ.get("SCALE_PACE_MS")
    if pace:  # hold each batch this long: a run then spans many checkpoints, however fast
        time.sleep(float(pace) / 1000.0)
    return batch["v"] >= 0


def build() -> Pipeline:
    """Kafka -> keyed 1 s windows -> Kafka, exactly once."""
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
        schema={"k": str, "v": int, "ts": int},
        key_column="k",  # the message key is k: --group needs no repartition topic
    )
    sink = KafkaTransactionalSink(out, config=config, key="k", transactional_id=out, source=source)
    p = Pipeline("kafka-scaled")
    (
        p.source("in", source, time="ts", watermark=bounded("100ms"))
        .filter("gate", _gate)
        .key_by("k")
        .window(
            "per_second",
            tumbling("1s"),
            {"n": agg.count(), "sum": agg.sum("v"), "lo": agg.min("v"), "hi": agg.max("v")},
        )
        .sink("out", sink)
    )
    return p
