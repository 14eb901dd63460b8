"""A run restored from a checkpoint keeps what single-file sinks wrote (issue 8, section 5).

Each test runs a real checkpointed pipeline, stops it after 400 of 1,000 events, and runs
it again from its checkpoint: the file must hold every event at least once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from tidal import Executor, Pipeline
from tidal.io import CsvSink, GeneratorSource, JsonlSink, ParquetSink
from tidal.io.base import Sink
from tidal.runtime.checkpoint import CheckpointConfig

TOTAL = 1000


def _events(seq: np.ndarray) -> dict[str, Any]:
    bad = seq % 100 == 7
    return {"seq": seq, "value": np.where(bad, np.nan, seq * 0.5), "ts": seq}


def _run(tmp: Path, sink: Sink, dead: Sink | None = None, **options: Any) -> Any:
    p = Pipeline("resume", dead_letters=dead)
    s = p.source("in", GeneratorSource(_events, total=TOTAL), time="ts")
    s.validate("check", {"value is a number": lambda b: ~np.isnan(b["value"])}).sink("out", sink)
    config = CheckpointConfig(data_dir=tmp / "data", interval="0ms")
    return Executor(p, checkpoint=config, handle_signals=False, max_batch=100, **options).run()


def _twice(tmp: Path, make: Any, between: Any = None) -> None:
    first = _run(tmp, *make(), max_events=400, at_limit="stop")
    assert first.events == 400
    if between is not None:
        between()
    second = _run(tmp, *make())
    assert second.restored_events == 400 and second.events_total == TOTAL


WANT = {i for i in range(TOTAL) if i % 100 != 7}
WANT_DEAD = {i for i in range(TOTAL) if i % 100 == 7}


def test_jsonl_sink_and_dead_letters_keep_the_first_runs_lines(tmp_path: Path) -> None:
    out, dead = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"

    def torn_write() -> None:  # the first run was cut off in the middle of a line
        with out.open("ab") as f:
            f.write(b'{"seq": 39')

    _twice(tmp_path, lambda: (JsonlSink(out), JsonlSink(dead)), torn_write)
    lines = out.read_bytes().splitlines()
    assert lines.count(b'{"seq": 39') == 1
    got = [orjson.loads(line)["seq"] for line in lines if line != b'{"seq": 39']
    assert set(got) == WANT and len(got) >= len(WANT)
    letters = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert {orjson.loads(d["raw"])["seq"] for d in letters} == WANT_DEAD


def test_csv_sink_keeps_the_first_runs_rows_and_one_header(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    _twice(tmp_path, lambda: (CsvSink(out),))
    table = pa_csv.read_csv(out)
    assert set(table.column("seq").to_pylist()) == WANT
    assert out.read_text().count("seq") == 1


def test_parquet_sink_keeps_the_first_runs_row_groups(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    _twice(tmp_path, lambda: (ParquetSink(out),))
    assert set(pq.read_table(out).column("seq").to_pylist()) == WANT
    assert not list(tmp_path.glob("*.tmp"))


def test_a_parquet_file_without_footer_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out.parquet"

    def kill_before_close() -> None:
        out.write_bytes(out.read_bytes()[:-100])  # what a kill -9 before close() leaves

    _twice(tmp_path, lambda: (ParquetSink(out),), kill_before_close)
    assert (tmp_path / "out.parquet.damaged").exists()
    assert set(pq.read_table(out).column("seq").to_pylist()) == {i for i in WANT if i >= 400}
    assert "has no Parquet footer" in caplog.text


def test_a_fresh_run_still_replaces_the_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"old": 1}\n')
    _run(tmp_path, JsonlSink(out))
    assert b'"old"' not in out.read_bytes()
