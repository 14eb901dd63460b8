"""The process that test_exactly_once.py kills: a stateful windowed pipeline with checkpoints.

    python exactly_once_worker.py SOURCE OUT_DIR DATA_DIR TOTAL RATE

``SOURCE`` is ``gen`` (a deterministic generator of ``TOTAL`` events) or ``log`` (the same
events, produced beforehand into the embedded-log topic ``events`` under ``DATA_DIR`` by
:func:`produce`). Out-of-order event time -> pace (sleeps to hold ``RATE`` events per second
of wall clock; 0: as fast as possible) -> key_by -> 1 s tumbling window (count, sum, min,
max of an int column). With ``gen`` the windows go to exactly-once JSON Lines part files in
``OUT_DIR/main`` and records later than the 250 ms bound to Parquet part files in
``OUT_DIR/late``; with ``log`` the windows go to the topic ``windows`` (exactly once) and
late records to JSON Lines part files. Checkpoints every 50 ms under ``DATA_DIR``. After
restoring it prints one JSON line ``{"restored_from": id}``, and at the end the summary.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

EPOCH_MS = 1_704_067_200_000
KEYS = 200


def make(seq: Any) -> dict[str, Any]:
    """Columns for sequence numbers: a pure function of ``seq``."""
    import numpy as np

    mixed = (seq * 2_654_435_761) % 4_294_967_296
    return {
        "k": (seq * 7_919) % KEYS,
        "v": (mixed % 1_000).astype(np.int64),
        "ts": EPOCH_MS + seq - (mixed % 401),  # up to 400 ms early: some are late
    }


def produce(data: Path, total: int) -> None:
    """Write the ``total`` events into the one-partition topic ``events``."""
    import numpy as np
    import orjson

    from tidal.io.log import Topic

    cols = make(np.arange(total, dtype=np.int64))
    k, v, ts = (cols[c].tolist() for c in ("k", "v", "ts"))
    values = [orjson.dumps({"k": a, "v": b, "ts": c}) for a, b, c in zip(k, v, ts, strict=True)]
    topic = Topic.create(data, "events", partitions=1)
    topic.append(0, values, timestamps=cols["ts"])
    topic.close()


def windowed(p: Any, source: Any, rate: float) -> Any:
    """source -> pace to ``rate`` events/s -> key_by ``k`` -> 1 s windows (count/sum/min/max)."""
    from tidal import aggregations as agg
    from tidal import bounded, tumbling

    def pace(batch: Any) -> Any:
        if rate:
            time.sleep(len(batch) / rate)
        return batch["k"] >= 0

    return (
        p.source("in", source, time="ts", watermark=bounded("250ms"))
        .filter("pace", pace)
        .key_by("k")
        .window(
            "per_second",
            tumbling("1s"),
            {"n": agg.count(), "sum": agg.sum("v"), "lo": agg.min("v"), "hi": agg.max("v")},
        )
    )


def run(p: Any, data: str) -> int:
    """Checkpoint every 50 ms under ``data``; print where it restored from, then the summary."""
    import orjson

    from tidal import Executor
    from tidal.runtime.checkpoint import CheckpointConfig

    executor = Executor(
        p,
        max_batch=500,
        max_wait="0ms",
        checkpoint=CheckpointConfig(data_dir=data, interval="50ms", keep=3),
    )
    executor.open()
    sys.stdout.write(orjson.dumps({"restored_from": executor.restored_from}).decode() + "\n")
    sys.stdout.flush()
    summary = executor.run()
    sys.stdout.write(orjson.dumps(summary.to_json()).decode() + "\n")
    return 0


def main(argv: list[str]) -> int:
    from tidal import Pipeline
    from tidal.io.generator import GeneratorSource
    from tidal.io.jsonl import JsonlPartSink
    from tidal.io.log import LogSource
    from tidal.io.log.sink import TransactionalLogSink
    from tidal.io.parquet import ParquetPartSink

    kind, out, data, total, rate = argv[0], Path(argv[1]), argv[2], int(argv[3]), float(argv[4])
    p = Pipeline("exactly-once")
    if kind == "gen":
        source: Any = GeneratorSource(make, total=total)
    else:
        source = LogSource(data, "events", bounded=True, schema={"k": int, "v": int, "ts": int})
    windows = windowed(p, source, rate)
    if kind == "gen":
        windows.sink("main", JsonlPartSink(out / "main"))
        windows.late.sink("late", ParquetPartSink(out / "late"))
    else:
        windows.sink("main", TransactionalLogSink(data, "windows", key="k", partitions=2))
        windows.late.sink("late", JsonlPartSink(out / "late"))
    return run(p, data)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
