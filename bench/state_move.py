"""Time to move a partition's keyed state between workers of a ``--group`` job, via Kafka.

``python bench/run.py state-move [--keys 1000000] [--bootstrap HOST:PORT]``

Builds the real checkpoint of a keyed pipeline holding ``--keys`` keys of open 1 h
tumbling-window state (count, sum, max per key), then does what a rebalance does
(:mod:`tidal.runtime.workers.group`):

1. **revoke** (old owner): the state's chunks and meta record are produced into the task's
   open transaction and the transaction commits (``KafkaStateStore.write`` + commit);
2. **assign** (new owner): a new producer with the partition's transactional id fences the
   old one, reads which checkpoint committed, and reads the state back from the compacted
   state topic (``KafkaStateStore.load``);
3. the new owner's executor decodes and restores it (``Executor.open(snapshot)``).

The broker is the project's own single-node broker on the same machine (started here), or
``--bootstrap`` / ``$TIDAL_KAFKA``.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

import numpy as np

from bench.common import console, table
from bench.kafka import cluster


def _pipeline(keys: int) -> Any:
    from tidal import Pipeline, tumbling
    from tidal import aggregations as agg
    from tidal.io.memory import MemorySink, MemorySource

    k = np.arange(keys, dtype=np.int64)
    source = MemorySource({"k": k, "v": k % 1000, "ts": np.full(keys, 1_704_067_200_000)})
    p = Pipeline("state-move")
    (
        p.source("in", source, time="ts")
        .key_by("k")
        .window("w", tumbling("1h"), {"n": agg.count(), "s": agg.sum("v"), "hi": agg.max("v")})
        .sink("out", MemorySink())
    )
    return p


def main(keys: int, bootstrap: str | None) -> None:
    """Measure one hand-over of ``keys`` keys of state; print the table."""
    from tidal.io.kafka.sink import KafkaTransactionalSink
    from tidal.runtime.checkpoint import CheckpointConfig
    from tidal.runtime.executor import Executor
    from tidal.runtime.snapshot import decode, encode
    from tidal.runtime.workers.kafka_state import KafkaStateStore, ensure_state_topic

    ex = Executor(_pipeline(keys), max_batch=1 << 20, handle_signals=False)
    ex.open()
    while ex.step():
        pass
    state = encode({"snapshot": ex.snapshot(), "sinks": {}, "ended": None})
    with cluster(bootstrap) as config:
        from tidal.io.kafka.admin import KafkaAdmin

        run = uuid.uuid4().hex[:8]
        out, topic, tid = f"bench-move-out-{run}", f"bench-move-state-{run}", f"bench-move-{run}"
        KafkaAdmin(config, timeout=30.0).create_topic(out, 1)
        ensure_state_topic(config, topic)
        chk = CheckpointConfig(interval=None)

        def store_of(sink: KafkaTransactionalSink) -> KafkaStateStore:
            return KafkaStateStore(chk, "state-move", 0, kafka=config, sink=sink, topic=topic)

        old = KafkaTransactionalSink(out, config=config, transactional_id=tid)
        old.open()
        t0 = time.perf_counter()
        pending = old.prepare(1)
        store_of(old).write(1, state)
        old.commit(1, pending)
        revoke = time.perf_counter() - t0

        new = KafkaTransactionalSink(out, config=config, transactional_id=tid)
        t0 = time.perf_counter()
        store = store_of(new)
        cid = store.ids()[-1]  # fences the old producer first
        _, data = store.load(cid)
        fetch = time.perf_counter() - t0
        t0 = time.perf_counter()
        snap = decode(data)["snapshot"]
        fresh = Executor(_pipeline(1), handle_signals=False)
        fresh.open(snap)
        restore = time.perf_counter() - t0
        old.close()
        new.close()
    mb = len(state) / 1e6
    table(
        f"moving {keys:,} keys of window state between workers through Kafka "
        f"({mb:.1f} MB checkpoint, {-(-len(state) // (512 * 1024))} chunks of 512 KiB)",
        ["step", "seconds"],
        [
            ["revoke: produce the state in the transaction + commit", f"{revoke:.2f}"],
            ["assign: fence, find the committed checkpoint, read the state", f"{fetch:.2f}"],
            ["assign: decode + restore into the executor", f"{restore:.2f}"],
            ["total hand-over", f"{revoke + fetch + restore:.2f}"],
        ],
    )
    console.print("broker on the same machine; the machine's load is in the line above.")


def cli(argv: list[str]) -> None:
    """Entry point of ``python bench/run.py state-move``."""
    ap = argparse.ArgumentParser(prog="bench/run.py state-move")
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--bootstrap", default=None, help="an existing cluster (else start one)")
    args = ap.parse_args(argv)
    main(args.keys, args.bootstrap)


if __name__ == "__main__":
    cli(sys.argv[1:])
