"""The pipeline file that test_kafka_repartition.py runs with ``tidal run --group NAME``.

The input's message key is ``k``, but the pipeline groups by ``u``, so under ``--group`` it
runs in two stages joined by the repartition topic ``<group>.kafka-repartitioned.repartition``
(decision 0042). Environment: ``SCALE_BOOTSTRAP`` (the broker), ``SCALE_IN`` (the input
topic), ``SCALE_OUT`` (the output topic, also the transactional id), ``SCALE_GATE`` and
``SCALE_PACE_MS`` (see ``_gate``). A bounded ``KafkaSource`` (group ``<SCALE_OUT>-in``) ->
filter -> map (``w = 2 v``) -> key_by u -> 1 s tumbling windows (count, sum, min, max) ->
``KafkaTransactionalSink`` with the source's offsets in each transaction.
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
    """While file ``$SCALE_GATE`` exists, the first worker at its n-th stage 1 batch parks.

    n is ``$SCALE_GATE_AT`` (default 3); only one worker parks (the first to claim the
    gate), and the test kills it there.
    """
    gate = os.environ.get("SCALE_GATE")
    _seen[0] += 1
    at = int(os.environ.get("SCALE_GATE_AT", "3"))
    if gate and _seen[0] == at and Path(gate).exists():
        try:
            Path(gate + ".claim").touch(exist_ok=False)
        except FileExistsError:
            pass  # another worker parked first
        else:
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
    """Kafka (keyed by k) -> windows keyed by u -> Kafka, exactly once."""
    config = KafkaConfig(bootstrap_servers=os.environ["SCALE_BOOTSTRAP"])
    out = os.environ["SCALE_OUT"]
    source = KafkaSource(
        os.environ["SCALE_IN"],
        config=config,
        group=f"{out}-in",
        bounded=True,
        schema={"k": str, "u": str, "v": int, "ts": int},
    )
    sink = KafkaTransactionalSink(out, config=config, key="u", transactional_id=out, source=source)
    p = Pipeline("kafka-repartitioned")
    (
        p.source("in", source, time="ts", watermark=bounded("100ms"))
        .filter("gate", _gate)
        .map("double", lambda b: b.with_columns(w=b["v"] * 2))
        .key_by("u")
        .window(
            "per_second",
            tumbling("1s"),
            {"n": agg.count(), "sum": agg.sum("w"), "lo": agg.min("v"), "hi": agg.max("v")},
        )
        .sink("out", sink)
    )
    return p
