"""The pipeline file that test_kafka_workers.py and test_kafka_group*.py run.

``tidal run --workers N`` or ``--group NAME``. A bounded ``KafkaSource`` (keyed input, the
message key declared as column ``k``, so ``--group`` needs no repartition) -> key_by k ->
1 s tumbling windows (count, sum, min, max) -> ``KafkaTransactionalSink`` with the
source's offsets in each transaction. Environment: kafka_pipeline_parts.py, and the gate
below.
"""

from __future__ import annotations

import os
from typing import Any

from kafka_pipeline_parts import (
    gate_batch,
    hold_for_a_second_member,
    hold_until_shared,
    kafka_pipeline,
    pace,
    park,
    per_second,
)

from tidal import Pipeline

_seen = [0]


def _gate(batch: Any) -> Any:
    """While file ``$SCALE_GATE`` exists, worker 1 parks in its 3rd batch (the test kills it).

    ``$SCALE_GATE_AT`` parks it in another batch than the 3rd (counted over its tasks).
    With ``$SCALE_HOLD_GROUP``, each worker waits in its first batch for a second member;
    with ``$SCALE_SHARE_GROUP``, worker 1 leaves the gate only once a joining member's
    share of the partitions is taken from it.
    """
    _seen[0] += 1
    worker = os.environ.get("TIDAL_WORKER", "")
    if _seen[0] == gate_batch() and worker.startswith("1/"):
        park()
        if os.environ.get("SCALE_SHARE_GROUP"):
            hold_until_shared()  # give up partitions before draining them
    elif _seen[0] == 1 and os.environ.get("SCALE_HOLD_GROUP"):
        hold_for_a_second_member()  # so that both members get partitions
    pace()
    return batch["v"] >= 0


def build() -> Pipeline:
    """Kafka -> keyed 1 s windows -> Kafka, exactly once."""
    schema = {"k": str, "v": int, "ts": int}
    p, stream, sink = kafka_pipeline("kafka-scaled", schema, key_column="k", gate=_gate)
    per_second(stream, "k", "v").sink("out", sink)
    return p
