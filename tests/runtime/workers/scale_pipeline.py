"""The pipeline file that test_workers.py runs with ``tidal run --workers N``.

Environment: ``SCALE_DATA`` (data directory of the input topic ``events``), ``SCALE_OUT``
(the part-file directory of the windows), ``SCALE_BOUNDED`` (``1``: stop at the end of the
input, default; ``0``: follow the topic), and for the kill test ``SCALE_GATE``: while that
file exists, worker 1 stops in its third batch, after writing its pid to ``<gate>.reached`` (so the
test kills it mid-run at a moment it knows, without a timer). ``SCALE_GATE_WHO``: which
process the gate stops (a prefix of ``$TIDAL_WORKER``, default ``1/``; ``-``: a process
without ``--workers``). For test_resplit.py: ``SCALE_KEY`` (the column the window groups by,
default ``k``, the input's partitioning key) and ``SCALE_DEDUPE=1`` (a dedupe step, whose
state is not split by key, before the window).

Input: ``produce(data, total, partitions)`` writes events keyed by ``k`` (so every key
lives in one partition), with event times increasing per partition: no record is late,
and the windows are the same whichever worker computes them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from tidal import Pipeline, bounded, tumbling
from tidal import aggregations as agg
from tidal.io.jsonl import JsonlPartSink
from tidal.io.log import LogSource

EPOCH_MS = 1_704_067_200_000
KEYS = 97


def produce(data: Path, total: int, partitions: int) -> None:
    """``total`` events over ``KEYS`` keys, 1 ms apart, into topic ``events``."""
    from tidal import Batch
    from tidal.io.log import LogSink

    seq = np.arange(total, dtype=np.int64)
    cols = {
        "k": [f"key{k}" for k in ((seq * 7_919) % KEYS).tolist()],
        "v": (seq * 2_654_435_761) % 1_000,
        "ts": EPOCH_MS + seq,
    }
    sink = LogSink(data, "events", key="k", partitions=partitions)
    sink.open()
    step = 10_000
    for a in range(0, total, step):
        part = {c: v[a : a + step] for c, v in cols.items()}
        sink.write(Batch(part, time=np.asarray(part["ts"])))
    sink.close()


_seen = [0]


def _gate(batch: Any) -> Any:
    gate = os.environ.get("SCALE_GATE")
    _seen[0] += 1
    who = os.environ.get("SCALE_GATE_WHO", "1/")
    if gate and os.environ.get("TIDAL_WORKER", "-").startswith(who) and _seen[0] == 3:
        tmp = Path(gate + ".tmp")
        tmp.write_text(str(os.getpid()))
        tmp.replace(gate + ".reached")  # the test reads this worker's pid from it
        while Path(gate).exists():  # the test kills this process here
            time.sleep(0.005)
    return batch["v"] >= 0


def build() -> Pipeline:
    """Events -> key_by k -> 1 s tumbling windows -> exactly-once part files."""
    source = LogSource(
        os.environ["SCALE_DATA"],
        "events",
        bounded=os.environ.get("SCALE_BOUNDED", "1") == "1",
        schema={"k": str, "v": int, "ts": int},
    )
    p = Pipeline("scaled")
    stream = p.source("in", source, time="ts", watermark=bounded("100ms")).filter("gate", _gate)
    if os.environ.get("SCALE_DEDUPE") == "1":
        stream = stream.key_by("ts").dedupe("once", within="1s")
    (
        stream.key_by(os.environ.get("SCALE_KEY", "k"))
        .window(
            "per_second",
            tumbling("1s"),
            {"n": agg.count(), "sum": agg.sum("v"), "lo": agg.min("v"), "hi": agg.max("v")},
        )
        .sink("out", JsonlPartSink(os.environ["SCALE_OUT"]))
    )
    return p
