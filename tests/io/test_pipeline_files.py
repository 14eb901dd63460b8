"""Files through whole pipelines: bad lines reach the dead-letter sink with reason and
position, the pipeline keeps running, and results are right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from tidal import Batch, Pipeline
from tidal import aggregations as agg
from tidal.io.csv import CsvSource
from tidal.io.jsonl import JsonlSink, JsonlSource
from tidal.io.parquet import ParquetSink, ParquetSource
from tidal.testing import MemorySink, collect, run
from tidal.windows import tumbling


def test_csv_with_bad_lines_flows_on_and_dead_letters_say_where(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        "sensor,ts,value\n"
        "a,100,1.0\n"
        "a,200,oops\n"  # line 3: not a number
        "b,300\n"  # line 4: missing field
        "b,,2.0\n"  # line 5: empty time
        "b,1200,3.0\n"
    )
    dlq = MemorySink()
    p = Pipeline("csv", dead_letters=dlq)
    src = CsvSource(path, schema={"sensor": str, "ts": float, "value": float})
    s = p.source("in", src, time="ts")
    out = collect(s.key_by("sensor").window("w", tumbling("1s"), {"n": agg.count()}))
    summary = run(p)
    assert sorted((r["sensor"], r["window_start"], r["n"]) for r in out.records()) == [
        ("a", 0, 1),
        ("b", 1000, 1),
    ]
    assert summary.dead_letters == 3
    letters = dlq.records()
    lines = sorted(
        orjson.loads(d["position"]).get("line", orjson.loads(d["position"]).get("offset"))
        for d in letters
    )
    assert lines == [3, 4, 5]
    reasons = " | ".join(d["reason"] for d in letters)
    assert "expected a number in 'value', got 'oops'" in reasons
    assert "expected 3 fields, got 2" in reasons
    assert "event time" in reasons or "empty" in reasons


def test_jsonl_to_parquet_and_back(tmp_path: Path) -> None:
    src_path = tmp_path / "in.jsonl"
    src_path.write_text(
        "\n".join(
            [
                '{"user": "u1", "ts": 10, "amount": 5.0}',
                '{"user": "u2", "ts": 20, "amount": 7.5}',
                "{not json",
                '{"user": "u1", "ts": 30, "amount": 1.0}',
            ]
        )
        + "\n"
    )
    p = Pipeline("convert")
    s = p.source("in", JsonlSource(src_path), time="ts")
    s.filter("big", lambda b: b["amount"] > 2).sink("pq", ParquetSink(tmp_path / "out.parquet"))
    s.sink("copy", JsonlSink(tmp_path / "copy.jsonl"))
    summary = run(p)
    assert summary.events == 3 and summary.dead_letters == 1
    p2 = Pipeline("readback")
    out = collect(p2.source("pq", ParquetSource(tmp_path / "out.parquet")))
    run(p2)
    assert out.records() == [
        {"user": "u1", "ts": 10, "amount": 5.0},
        {"user": "u2", "ts": 20, "amount": 7.5},
    ]
    copied = [orjson.loads(x) for x in (tmp_path / "copy.jsonl").read_text().splitlines()]
    assert [r["ts"] for r in copied] == [10, 20, 30]


def test_flat_map_expands_rows_and_keeps_event_time() -> None:
    p = Pipeline("explode")
    from tidal.testing import MemorySource

    s = p.source("in", MemorySource({"n": [2, 0, 3], "ts": [100, 200, 300]}), time="ts")

    def explode(batch: Batch) -> tuple[dict[str, np.ndarray], np.ndarray]:
        parent = np.repeat(np.arange(len(batch)), batch["n"])
        starts = np.cumsum(batch["n"]) - batch["n"]
        return {"i": np.arange(len(parent)) - starts[parent]}, parent

    exploded = s.flat_map("explode", explode)
    out = collect(exploded)
    counts = collect(exploded.window("w", tumbling("1s"), {"n": agg.count()}))
    run(p)
    assert [r["i"] for r in out.records()] == [0, 1, 0, 1, 2]
    assert [int(t) for b in out.batches for t in b.time] == [100, 100, 300, 300, 300]
    assert counts.records()[0]["n"] == 5
