"""The embedded log with ``format=``: Avro and Arrow values through LogSink and LogSource."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tidal import Batch, Executor, Pipeline
from tidal.errors import ConfigError
from tidal.io.formats import ArrowFormat, AvroFormat, JsonFormat
from tidal.io.log import LogSink, LogSource, Topic
from tidal.io.log.sink import TransactionalLogSink
from tidal.runtime.checkpoint import CheckpointConfig

SCHEMA = {
    "type": "record",
    "name": "Reading",
    "fields": [
        {"name": "sensor", "type": "string"},
        {"name": "n", "type": "long"},
        {"name": "value", "type": ["null", "double"]},
    ],
}


def readings(lo: int, hi: int) -> Batch:
    n = np.arange(lo, hi)
    sensor = np.array([f"s{k % 16}" for k in n], dtype=object)
    return Batch({"sensor": sensor, "n": n, "value": n * 0.25}, time=1_000 + n)


def drain(src: LogSource, step: int = 64) -> Batch:
    out = []
    while (b := src.poll(step, 0.0)) is not None:
        out.append(b)
    return Batch.concat(out)


@pytest.fixture(autouse=True)
def _no_data_dir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIDAL_DATA_DIR", raising=False)


def test_avro_through_the_log_with_dead_letters(tmp_path: Path) -> None:
    fmt = AvroFormat(SCHEMA)
    sink = LogSink(tmp_path, "r", key="sensor", partitions=2, format=fmt)
    sink.write(readings(0, 50))
    sink.close()
    topic = Topic.open(tmp_path, "r")
    bad_at = topic.end_offset(1)
    good = fmt.encode(readings(50, 51))[0]
    topic.append(1, [b"\x02", good], keys=[b"s2", b"s2"])  # truncated, then good
    topic.close()
    src = LogSource(tmp_path, "r", bounded=True, format=fmt, key_column="key")
    src.open({})
    batch = drain(src, step=16)
    assert sorted(batch["n"].tolist()) == list(range(51))
    assert batch.names == ["sensor", "n", "value", "key"]
    assert batch["key"].tolist() == batch["sensor"].tolist()
    assert batch["value"].tolist() == [n * 0.25 for n in batch["n"].tolist()]
    for p in (0, 1):  # offsets per partition rise, one per record
        offs = batch.offset[batch.partition == p]
        assert np.all(np.diff(offs) > 0)
    letters = src.dead_letters()
    assert len(letters) == 1
    assert letters[0].position == {"topic": "r", "partition": 1, "offset": bad_at}
    assert letters[0].reason == (
        f"r[1] offset {bad_at}: not an Avro record of Reading: truncated (EOFError)"
    )
    assert letters[0].raw == "\x02"


def test_arrow_records_hold_many_rows(tmp_path: Path) -> None:
    sink = LogSink(tmp_path, "a", key="sensor", partitions=2, format=ArrowFormat())
    for lo in range(0, 1000, 100):
        sink.write(readings(lo, lo + 100))  # one record per partition touched
    sink.close()
    topic = Topic.open(tmp_path, "a")
    ends = {p: topic.end_offset(p) for p in (0, 1)}
    assert ends == {0: 10, 1: 10}
    topic.close()
    src = LogSource(tmp_path, "a", bounded=True, format=ArrowFormat())
    src.open({})
    first = src.poll(100, 0.0)
    assert first is not None and 0 < len(first) <= 200  # whole records, about 100 rows
    rest = drain(src, step=100)
    whole = Batch.concat([first, rest])
    assert sorted(whole["n"].tolist()) == list(range(1000))
    assert src.position() == {0: 10, 1: 10}
    # each row carries its record's offset and the record's timestamp (latest event time)
    assert whole.offset is not None and whole.ingest is not None
    for p in (0, 1):
        rows = whole.partition == p
        assert np.array_equal(np.unique(whole.offset[rows]), np.arange(10))
    for p in (0, 1):
        for off in range(10):
            rows = (whole.partition == p) & (whole.offset == off)
            stamps = set((whole.ingest[rows] // 1_000_000).tolist())
            assert stamps == {1_000 + int(whole["n"][rows].max())}


def test_arrow_resumes_at_a_record_boundary(tmp_path: Path) -> None:
    sink = LogSink(tmp_path, "a", format=ArrowFormat())
    for lo in range(0, 500, 50):
        sink.write(readings(lo, lo + 50))
    sink.close()
    src = LogSource(tmp_path, "a", bounded=True, format=ArrowFormat())
    src.open({})
    head = src.poll(120, 0.0)
    assert head is not None and len(head) % 50 == 0
    position = src.position()
    src.close()
    again = LogSource(tmp_path, "a", bounded=True, format=ArrowFormat())
    again.open(position)
    tail = drain(again, step=120)
    assert head["n"].tolist() + tail["n"].tolist() == list(range(500))


def pipeline(root: Path) -> Pipeline:
    p = Pipeline("arrow-eo")
    src = LogSource(root, "in", bounded=True, format=ArrowFormat())
    out = TransactionalLogSink(root, "out", key="sensor", partitions=2, format=ArrowFormat())
    p.source("in", src).sink("out", out)
    return p


def executor(p: Pipeline, root: Path) -> Executor:
    config = CheckpointConfig(data_dir=root / "chk", interval=None, every_events=300)
    return Executor(p, max_wait="0ms", max_batch=100, handle_signals=False, checkpoint=config)


def test_arrow_log_to_log_exactly_once_after_an_abandoned_run(tmp_path: Path) -> None:
    sink = LogSink(tmp_path, "in", format=ArrowFormat())
    for lo in range(0, 3000, 100):
        sink.write(readings(lo, lo + 100))
    sink.close()
    ex = executor(pipeline(tmp_path), tmp_path)
    ex.open()
    for _ in range(13):  # some checkpoints, then batches that are never committed
        ex.step()
    for n in ex.nodes:  # die: staged rows were in memory only
        if n.sink is not None:
            n.sink.close()
        if n.source is not None:
            n.source.close()
    assert ex.store is not None
    ex.store.unlock()
    executor(pipeline(tmp_path), tmp_path).run()
    out = LogSource(tmp_path, "out", bounded=True, format=ArrowFormat())
    out.open({})
    got = drain(out, step=1000)["n"].tolist()
    assert sorted(got) == list(range(3000))  # every row once


def test_format_and_value_format_exclude_each_other(tmp_path: Path) -> None:
    Topic.create(tmp_path, "t").close()
    with pytest.raises(ConfigError, match="not both"):
        LogSource(tmp_path, "t", value_format="raw", format=ArrowFormat())
    with pytest.raises(ConfigError, match="not both"):
        LogSource(tmp_path, "t", schema={"n": int}, format=JsonFormat())
    with pytest.raises(ConfigError, match="not both"):
        LogSink(tmp_path, "t", value_format="raw", format=ArrowFormat())
