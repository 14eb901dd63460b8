"""Time to re-split a job's committed state for another worker count, for 1M keys.

``python bench/run.py resplit [--keys 1000000] [--partitions 4]``

What ``tidal run --workers M`` does before its workers start when the data directory holds
checkpoints of another layout (:mod:`tidal.runtime.workers.resplit`, decision 0052):
lock, read and hash-check every old worker's newest checkpoint, commit their prepared
output, split each keyed step's state by key (the log's partitioner decides which new
worker owns a key), write the new checkpoints (fsync) and switch ``LAYOUT.json``.

The state: a keyed 1 h tumbling window (count, sum, max per key) holding ``--keys`` keys,
all in one open window, spread over ``--partitions`` partitions of a log topic by the
log's own key hashing, and first checkpointed by 2 workers (each holding the keys of its
partitions). Then the job goes 2 -> 3 -> 1 -> 2 workers; each step is timed. Baseline, in
the same process: what any restart does anyway: read, hash-check and decode every old
checkpoint of that step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import console, table

EPOCH_MS = 1_704_067_200_000


def _pipeline(data: Path, out: Path) -> Any:
    from tidal import Pipeline, tumbling
    from tidal import aggregations as agg
    from tidal.io.jsonl import JsonlPartSink
    from tidal.io.log import LogSource

    p = Pipeline("resplit")
    (
        p.source("in", LogSource(data, "events"), time="ts")
        .key_by("k")
        .window("w", tumbling("1h"), {"n": agg.count(), "s": agg.sum("v"), "hi": agg.max("v")})
        .sink("out", JsonlPartSink(out))
    )
    return p


def _old_state(data: Path, keys: int, partitions: int) -> int:
    """Checkpoint 1 of each of 2 workers, holding the window state of its partitions' keys."""
    from tidal.core.batch import Batch
    from tidal.core.watermark import MIN_TIME
    from tidal.io.log.sink import partition_of
    from tidal.runtime.executor import SNAPSHOT_VERSION
    from tidal.runtime.snapshot import encode
    from tidal.runtime.workers.resplit import JobLayout

    k = np.arange(keys, dtype=np.int64)
    kb = np.empty(keys, dtype=object)
    kb[:] = [str(x).encode() for x in k.tolist()]
    owner = partition_of(kb, partitions) % 2
    pipeline = _pipeline(data, data / "out")
    layout = JobLayout(data, "resplit")
    size = 0
    for i in range(2):
        op = pipeline.nodes["w"].op.blank()
        mine = k[owner == i]
        n = len(mine)
        batch = Batch(
            {"k": mine, "v": (mine % 1000).astype(np.float64)},
            time=np.full(n, EPOCH_MS, dtype=np.int64),
            wm=np.full(n, MIN_TIME, dtype=np.int64),
        )
        op.process(batch, 0)
        ops = {
            name: {"type": type(node.op).__name__, "state": op.snapshot() if name == "w" else {}}
            for name, node in pipeline.nodes.items()
            if node.op is not None
        }
        snap = {
            "version": SNAPSHOT_VERSION,
            "pipeline": "resplit",
            "events": n,
            "operators": ops,
            "sources": {
                "in": {
                    "positions": {},
                    "watermark": {"high": {}, "emitted": MIN_TIME},
                    "finished": False,
                }
            },
            "watermarks": {"node": {}, "inputs": {}},
        }
        state = encode({"snapshot": snap, "sinks": {}, "ended": None})
        size += len(state)
        layout.store(2, i).write(1, state)
    return size


def _restore_baseline(data: Path, workers: int | None) -> float:
    from tidal.runtime.snapshot import decode
    from tidal.runtime.workers.resplit import JobLayout

    layout = JobLayout(data, "resplit")
    t0 = time.perf_counter()
    for i in range(1 if workers is None else workers):
        found = layout.store(workers, i).load_latest()
        assert found is not None
        decode(found[1])
    return time.perf_counter() - t0


def main(keys: int, partitions: int) -> None:
    """Build the state, re-split it 2 -> 3 -> 1 -> 2, print the table."""
    from tidal.io.log import Topic
    from tidal.runtime.workers.resplit import JobLayout, layout_name

    with tempfile.TemporaryDirectory(prefix="tidal-bench-resplit-") as tmp:
        data = Path(tmp)
        Topic.create(data, "events", partitions=partitions).close()
        t0 = time.perf_counter()
        size = _old_state(data, keys, partitions)
        console.print(
            f"state built and checkpointed by 2 workers in {time.perf_counter() - t0:.1f} s "
            f"({size / 1e6:.1f} MB of state.npz)"
        )
        rows = []
        old: int | None = 2
        for new in (3, None, 2):
            base = _restore_baseline(data, old)
            layout = JobLayout(data, "resplit")
            layout.lock()
            try:
                done = layout.ensure(new, lambda: _pipeline(data, data / "out"))
            finally:
                layout.unlock()
            assert done is not None and sum(done.keys.values()) == keys
            rows.append(
                [
                    f"{layout_name(old)} -> {layout_name(new)}",
                    f"{keys:,}",
                    f"{done.seconds:.2f}",
                    f"{base:.2f}",
                    f"{done.seconds / base:.1f}x",
                ]
            )
            old = new
    table(
        f"re-splitting {keys:,} keys of window state (1 open 1 h window per key; "
        f"{partitions} partitions)",
        ["change", "keys", "re-split s", "baseline: read + decode old checkpoints, s", "ratio"],
        rows,
    )
    console.print("the machine's load is in the line above; the data dir is under /tmp.")


def cli(argv: list[str]) -> None:
    """Entry point of ``python bench/run.py resplit``."""
    ap = argparse.ArgumentParser(prog="bench/run.py resplit")
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args(argv)
    main(args.keys, args.partitions)


if __name__ == "__main__":
    cli(sys.argv[1:])
