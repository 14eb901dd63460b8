"""Exactly-once part sinks: prepare/commit/recover idempotency, staging, formats, readers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidal import Batch, ConnectorError
from tidal.io.base import TransactionalSink
from tidal.io.csv import CsvPartSink
from tidal.io.jsonl import JsonlPartSink, JsonlSink
from tidal.io.parquet import ParquetPartSink
from tidal.io.parts import PartSink, committed_files, read_committed

FORMATS = [JsonlPartSink, CsvPartSink, ParquetPartSink]


def _staged(d: Path) -> list[str]:
    return sorted(p.name for p in (d / ".staging").iterdir())


@pytest.mark.parametrize("kind", FORMATS)
def test_protocol_and_formats(tmp_path: Path, kind: type[PartSink]) -> None:
    sink = kind(tmp_path)
    assert isinstance(sink, TransactionalSink)
    assert not isinstance(JsonlSink(tmp_path / "x.jsonl"), TransactionalSink)
    sink.recover([])
    sink.open()
    sink.write(Batch({"id": [1, 2], "v": [0.5, 1.5]}))
    sink.write(Batch({"id": [3], "v": [2.5]}))
    p1 = sink.prepare(1)
    assert read_committed(tmp_path) == []  # prepared, not visible
    sink.write(Batch({"id": [4], "v": [3.5]}))
    sink.commit(1, p1)
    assert [r["id"] for r in read_committed(tmp_path)] == [1, 2, 3]
    p2 = sink.prepare(2)
    sink.commit(2, p2)
    sink.close()
    assert [p.name for p in committed_files(tmp_path)] == [
        f"part-000000000001-0{kind.suffix}",
        f"part-000000000002-0{kind.suffix}",
    ]
    assert read_committed(tmp_path) == [{"id": i, "v": i - 0.5} for i in (1, 2, 3, 4)]
    assert _staged(tmp_path) == []


def test_commit_is_idempotent_and_prepare_without_writes_is_empty(tmp_path: Path) -> None:
    sink = JsonlPartSink(tmp_path)
    sink.write(Batch({"x": [1]}))
    pending = sink.prepare(5)
    assert pending == {
        "checkpoint": 5,
        "files": [{"file": pending["files"][0]["file"], "final": "part-000000000005-0.jsonl"}],
    }
    assert pending["files"][0]["file"].startswith(".staging/")
    for _ in range(3):
        sink.commit(5, pending)
    assert read_committed(tmp_path) == [{"x": 1}]
    assert sink.prepare(6) == {"checkpoint": 6, "files": []}
    sink.commit(6, {"checkpoint": 6, "files": []})
    sink.close()


def test_recover_commits_pending_and_discards_the_rest(tmp_path: Path) -> None:
    crashed = JsonlPartSink(tmp_path)
    crashed.write(Batch({"x": [1, 2]}))
    committed = crashed.prepare(1)  # in checkpoint 1, never committed: the crash came first
    crashed.write(Batch({"x": [3]}))
    unrecorded = crashed.prepare(2)  # prepared, but checkpoint 2 was torn
    crashed.write(Batch({"x": [4]}))  # staged, never prepared
    crashed.close()
    assert len(_staged(tmp_path)) == 3
    fresh = JsonlPartSink(tmp_path)
    fresh.recover([committed])  # before open, as the executor does
    assert read_committed(tmp_path) == [{"x": 1}, {"x": 2}]
    assert _staged(tmp_path) == []
    fresh.recover([committed])  # again: nothing changes
    assert read_committed(tmp_path) == [{"x": 1}, {"x": 2}]
    with pytest.raises(ConnectorError, match="checkpoint 2 prepared .* is lost"):
        fresh.commit(2, unrecorded)


def test_recover_keeps_the_files_this_sink_is_writing(tmp_path: Path) -> None:
    sink = JsonlPartSink(tmp_path)
    sink.write(Batch({"x": [1]}))
    sink.recover([])
    sink.commit(1, sink.prepare(1))
    assert read_committed(tmp_path) == [{"x": 1}]
    sink.close()


def test_roll_bytes_commits_several_files_in_order(tmp_path: Path) -> None:
    sink = JsonlPartSink(tmp_path, roll_bytes=1)
    for i in range(12):
        sink.write(Batch({"x": [i]}))
    pending = sink.prepare(3)
    assert len(pending["files"]) == 12
    sink.commit(3, pending)
    sink.close()
    assert [r["x"] for r in read_committed(tmp_path)] == list(range(12))  # -10 after -9


def test_write_after_close_and_unreadable_parts(tmp_path: Path) -> None:
    sink = JsonlPartSink(tmp_path)
    sink.close()
    with pytest.raises(ConnectorError, match="is closed"):
        sink.write(Batch({"x": [1]}))
    (tmp_path / "part-000000000001-0.jsonl").write_text('{"x": 1}\n{broken\n')
    with pytest.raises(ConnectorError, match="cannot read committed part file"):
        read_committed(tmp_path)
    assert read_committed(tmp_path / "missing") == []
