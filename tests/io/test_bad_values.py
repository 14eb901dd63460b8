"""A wrong value costs its row, never its column or the run (issue 8, section 2).

Files and the embedded log, with and without a schema: the bad row goes to the dead
letters with its reason and position, the rest reaches a window that sums the column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tidal import Pipeline
from tidal import aggregations as agg
from tidal.io import CsvSource, JsonlSource
from tidal.io.base import Source
from tidal.io.log.source import LogSource
from tidal.io.log.topic import Topic
from tidal.runtime.checkpoint import CheckpointConfig
from tidal.testing import MemorySink, collect, run
from tidal.windows import tumbling

N = 1000


def _sum(source: Source, **options: Any) -> tuple[Any, float, list[dict[str, Any]]]:
    dlq = MemorySink()
    p = Pipeline("t", dead_letters=dlq)
    s = p.source("in", source, time="ts")
    out = collect(s.key_by("k").window("w", tumbling("1h"), {"s": agg.sum("value")}))
    summary = run(p, **options)
    return summary, sum(r["s"] for r in out.records()), dlq.records()


def _rows(bad_at: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"k": "a", "ts": i, "value": float(i)} for i in range(N)]
    rows[bad_at]["value"] = "high"
    return rows


WANT = sum(range(N))


@pytest.mark.parametrize("schema", [None, {"value": float}])
@pytest.mark.parametrize("bad_at", [0, 500])
def test_a_string_in_a_numeric_log_column_is_a_dead_letter(
    tmp_path: Path, schema: Any, bad_at: int
) -> None:
    topic = Topic.create(tmp_path, "s", partitions=1)
    topic.append(0, [orjson.dumps(r) for r in _rows(bad_at)])
    topic.close()
    source = LogSource(tmp_path, "s", bounded=True, schema=schema)
    summary, total, letters = _sum(source)
    assert total == WANT - bad_at
    assert summary.dead_letters == 1
    (letter,) = letters
    assert f"offset {bad_at}: expected a number in 'value'" in letter["reason"]
    assert letter["reason"].endswith('got "high"')
    assert orjson.loads(letter["position"]) == {"topic": "s", "partition": 0, "offset": bad_at}


def test_a_restart_goes_past_a_poison_record(tmp_path: Path) -> None:
    topic = Topic.create(tmp_path / "data", "s", partitions=1)
    topic.append(0, [orjson.dumps(r) for r in _rows(500)])
    topic.close()
    config = CheckpointConfig(data_dir=tmp_path / "data", interval="0ms")
    source = LogSource(tmp_path / "data", "s", bounded=True)
    first, _, _ = _sum(source, checkpoint=config, max_batch=100, max_events=300, at_limit="stop")
    assert first.events == 300
    source = LogSource(tmp_path / "data", "s", bounded=True)
    second, total, letters = _sum(source, checkpoint=config, max_batch=100)
    assert second.restored_events == 300 and second.events_total == N - 1
    assert total == WANT - 500  # the windows restored from the checkpoint hold the first 300
    assert len(letters) == 1 and "offset 500" in letters[0]["reason"]


@pytest.mark.parametrize("schema", [None, {"value": float}])
def test_a_string_in_a_numeric_jsonl_column_is_a_dead_letter(tmp_path: Path, schema: Any) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in _rows(500)) + b"\n")
    summary, total, letters = _sum(JsonlSource(path, schema=schema))
    assert total == WANT - 500 and summary.dead_letters == 1
    assert letters[0]["reason"].startswith("line 501: expected a number in 'value'")
    assert orjson.loads(letters[0]["position"]) == {"file": str(path), "line": 501}


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("k,ts,value\n" + "".join(f"{r}\n" for r in rows))
    return path


@pytest.mark.parametrize("schema", [None, {"value": float}])
def test_hot_in_a_numeric_csv_column_is_a_dead_letter(tmp_path: Path, schema: Any) -> None:
    rows = [f"a,{i},{i}" for i in range(N)]
    rows[500] = "a,500,hot"
    summary, total, letters = _sum(CsvSource(_csv(tmp_path / "in.csv", rows), schema=schema))
    assert total == WANT - 500 and summary.dead_letters == 1
    assert letters[0]["reason"].startswith("line 502: expected ")
    assert "in 'value', got 'hot'" in letters[0]["reason"]


def test_iso_times_with_microseconds_in_a_csv_all_flow(tmp_path: Path) -> None:
    rows = [f"a,2024-01-01T00:00:{i % 60:02d}.{i:06d}Z,1" for i in range(1802)]
    summary, total, _ = _sum(CsvSource(_csv(tmp_path / "in.csv", rows)))
    assert summary.dead_letters == 0 and total == 1802


@pytest.mark.parametrize("n", [712, 10_000])  # 10,000 lines: more than a block may hold
def test_an_unterminated_quote_costs_its_line_only(tmp_path: Path, n: int) -> None:
    rows = [f'a,{i},"{i}"' if i % 7 == 0 else f"a,{i},{i}" for i in range(n)]
    rows[3] = 'a,3,"3'  # the quote is never closed
    rows[100] = 'a,100,5" screen'  # a stray quote inside a value
    src = CsvSource(_csv(tmp_path / "in.csv", rows), schema={"value": str}, block_rows=256)
    dlq = MemorySink()
    p = Pipeline("t", dead_letters=dlq)
    out = collect(p.source("in", src))
    summary = run(p)
    got = out.records()
    assert summary.dead_letters == 1 and len(got) == n - 1
    assert dlq.records()[0]["reason"].startswith("line 5: a quoted value is not closed")
    assert {"k": "a", "ts": 100, "value": '5" screen'} in got
    assert got[-1] == {"k": "a", "ts": n - 1, "value": str(n - 1)}


def test_a_quoted_value_over_several_lines_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('k,ts,value\na,1,"two\nlines"\na,2,"say ""hi""\nthere"\na,3,x\n')
    src = CsvSource(path)
    batch = src.poll(10, 0.0)
    assert batch is not None and batch["value"].tolist() == ["two\nlines", 'say "hi"\nthere', "x"]
    assert list(src.dead_letters()) == []


@pytest.mark.parametrize("size", [2 << 20, 5 << 20])
def test_csv_fields_of_several_mebibytes_read(tmp_path: Path, size: int) -> None:
    big = "x" * size
    path = _csv(tmp_path / "big.csv", [f"a,1,{big}", "b,2,small", f'c,3,"{big}"'])
    src = CsvSource(path, schema={"value": str})
    batch = src.poll(10, 0.0)
    assert batch is not None
    assert [len(v) for v in batch["value"].tolist()] == [size, 5, size]
    assert list(src.dead_letters()) == []
