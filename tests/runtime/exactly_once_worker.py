"""The process that test_exactly_once.py kills: a stateful windowed pipeline with checkpoints.

    python exactly_once_worker.py OUT_DIR DATA_DIR TOTAL RATE

A deterministic generator (``TOTAL`` events, ``RATE`` per second of wall clock, 0 for as
fast as possible) with out-of-order event time -> key_by -> 1 s tumbling window (count,
sum, min, max of an int column) -> exactly-once JSON Lines part files in ``OUT_DIR/main``;
records later than the 250 ms bound go to Parquet part files in ``OUT_DIR/late``.
Checkpoints every 50 ms under ``DATA_DIR``. After restoring it prints one JSON line
``{"restored_from": id}`` (the test kills it only after that line), and at the end the
summary.
"""

from __future__ import annotations

import sys
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


def main(argv: list[str]) -> int:
    import orjson

    from tidal import Executor, Pipeline, bounded, tumbling
    from tidal import aggregations as agg
    from tidal.io.generator import GeneratorSource
    from tidal.io.jsonl import JsonlPartSink
    from tidal.io.parquet import ParquetPartSink
    from tidal.runtime.checkpoint import CheckpointConfig

    out, data, total, rate = Path(argv[0]), argv[1], int(argv[2]), float(argv[3])
    p = Pipeline("exactly-once")
    source = GeneratorSource(make, total=total, rate=rate or None)
    windows = (
        p.source("gen", source, time="ts", watermark=bounded("250ms"))
        .key_by("k")
        .window(
            "per_second",
            tumbling("1s"),
            {"n": agg.count(), "sum": agg.sum("v"), "lo": agg.min("v"), "hi": agg.max("v")},
        )
    )
    windows.sink("main", JsonlPartSink(out / "main"))
    windows.late.sink("late", ParquetPartSink(out / "late"))
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
