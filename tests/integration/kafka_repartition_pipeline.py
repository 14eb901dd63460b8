"""The pipeline file that test_kafka_repartition.py runs with ``tidal run --group NAME``.

The input's message key is ``k``, but the pipeline groups by ``u``, so under ``--group`` it
runs in two stages joined by the repartition topic ``<group>.kafka-repartitioned.repartition``
(decision 0042). A bounded ``KafkaSource`` -> filter -> map (``w = 2 v``) -> key_by u ->
1 s tumbling windows (count, sum, min, max) -> ``KafkaTransactionalSink`` with the source's
offsets in each transaction. Environment: kafka_pipeline_parts.py, and the gate below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kafka_pipeline_parts import gate_batch, kafka_pipeline, pace, park, per_second

from tidal import Pipeline

_seen = [0]


def _gate(batch: Any) -> Any:
    """While file ``$SCALE_GATE`` exists, the first worker at its n-th stage 1 batch parks.

    n is ``$SCALE_GATE_AT`` (default 3); only one worker parks (the first to claim the
    gate), and the test kills it there.
    """
    _seen[0] += 1
    if _seen[0] == gate_batch() and Path(os.environ["SCALE_GATE"]).exists():
        try:
            Path(os.environ["SCALE_GATE"] + ".claim").touch(exist_ok=False)
        except FileExistsError:
            pass  # another worker parked first
        else:
            park()
    pace()
    return batch["v"] >= 0


def build() -> Pipeline:
    """Kafka (keyed by k) -> windows keyed by u -> Kafka, exactly once."""
    schema = {"k": str, "u": str, "v": int, "ts": int}
    p, stream, sink = kafka_pipeline("kafka-repartitioned", schema, key_column=None, gate=_gate)
    stream = stream.map("double", lambda b: b.with_columns(w=b["v"] * 2))
    per_second(stream, "u", "w").sink("out", sink)
    return p
