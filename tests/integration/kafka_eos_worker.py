"""The process test_kafka_exactly_once.py kills: Kafka -> 1 s window -> Kafka, checkpointed.

    python kafka_eos_worker.py SINK BOOTSTRAP IN_TOPIC OUT_TOPIC OUT_DIR DATA_DIR RATE

The events of tests/runtime/exactly_once_worker.py (``make``), produced beforehand into the
one-partition topic ``IN_TOPIC`` by :func:`produce`, are read by a bounded ``KafkaSource``
(group ``<OUT_TOPIC>-in``), paced to ``RATE`` events/s (0: as fast as possible), keyed and
counted in 1 s tumbling windows (count, sum, min, max), which go to ``OUT_TOPIC`` through
``SINK``: ``eos`` (``KafkaTransactionalSink``, transactional id ``<OUT_TOPIC>``, the source's
offsets in each transaction) or ``alo`` (the at-least-once ``KafkaSink``). Records later than
the 250 ms bound go to exactly-once JSON Lines part files in ``OUT_DIR/late``. Checkpoints
every 50 ms under ``DATA_DIR``. After restoring it prints ``{"restored_from": id}``, and at
the end the summary.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

HOUSE = Path(__file__).parents[1] / "runtime" / "exactly_once_worker.py"


def house() -> Any:
    """tests/runtime/exactly_once_worker.py: its events (``make``) and pipeline (``windowed``)."""
    spec = importlib.util.spec_from_file_location("exactly_once_worker", HOUSE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def produce(bootstrap: str, topic: str, total: int) -> None:
    """Produce the ``total`` events into partition 0 of ``topic``, stamped with their time."""
    import numpy as np
    import orjson
    from confluent_kafka import Producer

    cols = house().make(np.arange(total, dtype=np.int64))
    k, v, ts = (cols[c].tolist() for c in ("k", "v", "ts"))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for a, b, c in zip(k, v, ts, strict=True):
        while True:
            try:
                producer.produce(
                    topic, orjson.dumps({"k": a, "v": b, "ts": c}), partition=0, timestamp=c
                )
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def main(argv: list[str]) -> int:
    from tidal import Pipeline
    from tidal.io.jsonl import JsonlPartSink
    from tidal.io.kafka import KafkaConfig
    from tidal.io.kafka.sink import KafkaSink, KafkaTransactionalSink
    from tidal.io.kafka.source import KafkaSource

    kind, bootstrap, in_topic, out_topic = argv[0], argv[1], argv[2], argv[3]
    out, data, rate = Path(argv[4]), argv[5], float(argv[6])
    config = KafkaConfig(bootstrap_servers=bootstrap)
    source = KafkaSource(
        in_topic,
        config=config,
        group=f"{out_topic}-in",
        bounded=True,
        schema={"k": int, "v": int, "ts": int},
    )
    sink: Any
    if kind == "eos":
        sink = KafkaTransactionalSink(
            out_topic, config=config, key="k", transactional_id=out_topic, source=source
        )
    else:
        sink = KafkaSink(out_topic, config=config, key="k")

    worker = house()
    p = Pipeline("kafka-exactly-once")
    windows = worker.windowed(p, source, rate)
    windows.sink("main", sink)
    windows.late.sink("late", JsonlPartSink(out / "late"))
    return int(worker.run(p, data))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
