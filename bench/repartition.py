"""What the repartition topic costs a ``--group`` job (decision 0042).

``python bench/run.py repartition [--records 100000] [--bootstrap HOST:PORT]``

One group member (in this process, :class:`~tidal.runtime.workers.group.GroupWorker`) runs
a keyed 1 s window job over a 4-partition input topic whose message key is ``k``, twice:

- **message key**: the pipeline groups by ``k`` and declares it
  (``KafkaSource(key_column="k")``): one stage, a task per input partition;
- **repartition**: the pipeline groups by ``u``: stage 1 writes every record to the
  repartition topic in its transactions, stage 2 reads it back and runs the windows.

Both are exactly once (``KafkaTransactionalSink``, checkpoints every 200 ms). The broker is
the project's own single-node broker on the same machine (started here), or
``--bootstrap`` / ``$TIDAL_KAFKA``; it shares the machine's cores with the job.
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import numpy as np
import orjson

from bench.common import console, table
from bench.kafka import cluster, create


def _fill(config: Any, topic: str, n: int) -> None:
    from confluent_kafka import Producer

    seq = np.arange(n, dtype=np.int64)
    keys = [f"key{k}" for k in ((seq * 7_919) % 1_000).tolist()]
    users = [f"u{u}" for u in ((seq * 31) % 997).tolist()]
    vals = ((seq * 2_654_435_761) % 1_000).tolist()
    ts = (1_704_067_200_000 + seq).tolist()
    producer = Producer(config.client(**{"linger.ms": 20, "compression.type": "lz4"}))
    for k, u, v, t in zip(keys, users, vals, ts, strict=True):
        value = orjson.dumps({"k": k, "u": u, "v": v, "ts": t})
        while True:
            try:
                producer.produce(topic, value, k.encode(), timestamp=t)
                break
            except BufferError:
                producer.poll(0.01)
    assert producer.flush(120) == 0


def _run(config: Any, in_topic: str, key: str) -> tuple[float, int]:
    from tidal import Pipeline, bounded, tumbling
    from tidal import aggregations as agg
    from tidal.io.kafka.sink import KafkaTransactionalSink
    from tidal.io.kafka.source import KafkaSource
    from tidal.runtime.workers.group import GroupWorker

    out = create(config, "bench-repart-out", 2)

    def build() -> Pipeline:
        source = KafkaSource(
            in_topic,
            config=config,
            group=f"{out}-in",
            bounded=True,
            schema={"k": str, "u": str, "v": int, "ts": int},
            key_column="k",
        )
        sink = KafkaTransactionalSink(
            out, config=config, key=key, transactional_id=out, source=source
        )
        p = Pipeline("bench-repartition")
        (
            p.source("in", source, time="ts", watermark=bounded("100ms"))
            .key_by(key)
            .window("w", tumbling("1s"), {"n": agg.count(), "sum": agg.sum("v")})
            .sink("out", sink)
        )
        return p

    group = GroupWorker(build, f"bench-repart-{uuid.uuid4().hex[:8]}", interval="200ms")
    t0 = time.perf_counter()
    stats = group.run()
    return time.perf_counter() - t0, stats.events


def main(records: int, bootstrap: str | None) -> None:
    """Run both layouts once each on the same input; print the table."""
    with cluster(bootstrap) as config:
        in_topic = create(config, "bench-repart-in", 4)
        _fill(config, in_topic, records)
        rows = []
        base = None
        for label, key in (("message key (one stage)", "k"), ("repartition (two stages)", "u")):
            seconds, events = _run(config, in_topic, key)
            base = base or seconds
            rows.append(
                [
                    label,
                    f"{seconds:.2f}",
                    f"{events / seconds / 1e3:.1f} k/s",
                    f"{seconds / base:.2f}x",
                ]
            )
    table(
        f"a --group member, {records:,} records on 4 partitions, keyed 1 s windows, exactly once",
        ["layout", "run s", "events/s", "time vs one stage"],
        rows,
    )
    console.print("broker on the same machine; the machine's load is in the line above.")


def cli(argv: list[str]) -> None:
    """Entry point of ``python bench/run.py repartition``."""
    ap = argparse.ArgumentParser(prog="bench/run.py repartition")
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--bootstrap", default=None, help="an existing cluster (else start one)")
    args = ap.parse_args(argv)
    main(args.records, args.bootstrap)
