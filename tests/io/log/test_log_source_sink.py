"""LogSource and LogSink: in real pipelines, resume by position, groups, dead letters,
tail-following, key partitioning."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from logtools import values

from tidal import Batch, Executor, Pipeline
from tidal.errors import ConfigError, ConnectorError
from tidal.io.log import LogSink, LogSource, Topic, load_positions
from tidal.testing import MemorySource, collect, run


def fill(tmp_path: Path, per_partition: int = 100, partitions: int = 3) -> Topic:
    topic = Topic.create(tmp_path, "ev", partitions=partitions)
    for p in range(partitions):
        rows = [f'{{"p":{p},"i":{i},"v":{i * 0.5}}}'.encode() for i in range(per_partition)]
        topic.append(p, rows, timestamps=np.arange(per_partition) + 1_000 * p)
    return topic


def drain(src: LogSource, step: int = 64) -> list[Batch]:
    out = []
    while (b := src.poll(step, 0.0)) is not None:
        out.append(b)
    return out


def test_bounded_source_in_a_pipeline(tmp_path: Path) -> None:
    fill(tmp_path)
    p = Pipeline("read")
    out = collect(
        p.source("in", LogSource(tmp_path, "ev", bounded=True)).filter(
            "odd", lambda b: b["i"] % 2 == 1
        )
    )
    summary = run(p, max_batch=50)
    assert summary.events == 300 and summary.dead_letters == 0
    rows = out.records()
    assert len(rows) == 150
    for part in range(3):  # per partition, in offset order
        assert [r["i"] for r in rows if r["p"] == part] == list(range(1, 100, 2))


def test_batches_carry_partition_offset_and_produce_time(tmp_path: Path) -> None:
    fill(tmp_path, per_partition=5, partitions=2)
    src = LogSource(tmp_path, "ev", bounded=True, timestamp_column="ts")
    src.open({})
    batch = Batch.concat(drain(src))
    assert batch.names == ["p", "i", "v", "ts"]
    assert batch.partition is not None and batch.offset is not None and batch.ingest is not None
    assert np.array_equal(batch.partition, batch["p"]) and np.array_equal(batch.offset, batch["i"])
    assert np.array_equal(batch.ingest, batch["ts"] * 1_000_000)
    assert sorted(batch["ts"].tolist()) == [0, 1, 2, 3, 4, 1000, 1001, 1002, 1003, 1004]


def test_resume_from_positions_loses_and_repeats_nothing(tmp_path: Path) -> None:
    fill(tmp_path)
    first = LogSource(tmp_path, "ev", bounded=True)
    first.open({})
    seen = []
    for _ in range(4):
        b = first.poll(37, 0.0)
        assert b is not None
        seen += list(zip(b.partition.tolist(), b.offset.tolist(), strict=True))
    saved = first.position()
    first.close()
    assert sum(saved.values()) == len(seen) == 4 * 37
    json_like = {str(k): v for k, v in saved.items()}  # as a checkpoint stores it
    second = LogSource(tmp_path, "ev", bounded=True)
    second.open(json_like)
    for b in drain(second):
        seen += list(zip(b.partition.tolist(), b.offset.tolist(), strict=True))
    assert sorted(seen) == [(p, i) for p in range(3) for i in range(100)]


def test_executor_snapshot_positions_resume(tmp_path: Path) -> None:
    fill(tmp_path)
    p = Pipeline("copy")
    out = collect(p.source("in", LogSource(tmp_path, "ev", bounded=True)))
    ex = Executor(p, max_batch=40, max_events=120, max_wait="0ms", handle_signals=False)
    ex.run()
    positions = ex.sources[0].source.position()
    assert sum(positions.values()) == 120
    q = Pipeline("copy")
    rest = collect(q.source("in", LogSource(tmp_path, "ev", bounded=True)))
    ex2 = Executor(q, max_wait="0ms", handle_signals=False)
    ex2.open()
    ex2.sources[0].source.open(positions)
    ex2.run()
    got = sorted((r["p"], r["i"]) for r in out.records() + rest.records())
    assert got == [(p, i) for p in range(3) for i in range(100)]


def test_bad_json_and_schema_violations_are_dead_letters_with_offsets(tmp_path: Path) -> None:
    topic = Topic.create(tmp_path, "ev")
    topic.append(0, [b'{"n": 1}', b"{oops", b"[1, 2]", b'{"n": "two"}', b'{"n": 5}'])
    p = Pipeline("read")
    src = LogSource(tmp_path, "ev", bounded=True, schema={"n": int})
    out = collect(p.source("in", src))
    ex = Executor(p, max_wait="0ms", handle_signals=False)
    summary = ex.run()
    assert [r["n"] for r in out.records()] == [1, 5]
    assert summary.dead_letters == 3
    letters = ex.dead_letters
    assert [d.position for d in letters] == [
        {"topic": "ev", "partition": 0, "offset": o} for o in (1, 2, 3)
    ]
    assert letters[0].reason.startswith("ev[0] offset 1: invalid JSON:")
    assert letters[1].reason == "ev[0] offset 2: not a JSON object, got an array"
    assert letters[2].reason == "ev[0] offset 3: expected an integer in 'n', got \"two\""
    assert letters[0].raw == "{oops" and letters[0].step == "log:ev"


def test_groups_commit_and_resume(tmp_path: Path) -> None:
    fill(tmp_path, per_partition=10, partitions=2)
    src = LogSource(tmp_path, "ev", group="g", bounded=True)
    src.open({})
    assert src.poll(5, 0.0) is not None
    src.commit()
    assert load_positions(tmp_path, "g", "ev") == src.position()
    later = LogSource(tmp_path, "ev", group="g", bounded=True)
    later.open({})
    assert later.position() == src.position()
    assert sum(len(b) for b in drain(later)) == 15
    with pytest.raises(ConfigError, match="needs a group"):
        LogSource(tmp_path, "ev").commit()


def test_unbounded_source_follows_new_records(tmp_path: Path) -> None:
    topic = fill(tmp_path, per_partition=3, partitions=1)
    src = LogSource(tmp_path, "ev", from_beginning=False, value_format="raw", key_column="k")
    src.open({})
    empty = src.poll(10, 0.0)
    assert empty is not None and len(empty) == 0  # at the end: nothing, not None
    topic.append(0, [b"a", b"b"], keys=[b"x", None])
    got = src.poll(10, 0.0)
    assert got is not None
    assert got["value"].tolist() == [b"a", b"b"] and got["k"].tolist() == ["x", None]
    assert got.offset.tolist() == [3, 4] and src.position() == {0: 5}


def test_poll_waits_up_to_the_timeout_then_returns_empty(tmp_path: Path) -> None:
    fill(tmp_path, per_partition=1, partitions=1)
    src = LogSource(tmp_path, "ev", from_beginning=False)
    src.open({})
    t0 = time.monotonic()
    batch = src.poll(10, 0.05)
    assert batch is not None and len(batch) == 0
    assert time.monotonic() - t0 >= 0.05


def test_source_errors(tmp_path: Path) -> None:
    fill(tmp_path, per_partition=2, partitions=2)
    with pytest.raises(ConnectorError, match="no topic 'nope'"):
        LogSource(tmp_path, "nope")
    with pytest.raises(ConfigError, match="no partition 5"):
        LogSource(tmp_path, "ev", partitions=[5])
    src = LogSource(tmp_path, "ev")
    with pytest.raises(ConnectorError, match="past the end"):
        src.open({0: 3})
    with pytest.raises(ConnectorError, match="must be an offset"):
        src.open({0: "x"})


def test_sink_partitions_by_key_and_keeps_order(tmp_path: Path) -> None:
    n = 2_000
    keys = np.array([f"sensor-{i % 37}" for i in range(n)], dtype=object)
    data = Batch({"sensor": keys, "seq": np.arange(n), "ts": np.arange(n) * 10})
    p = Pipeline("write")
    batches = [data.slice(i, i + 300) for i in range(0, n, 300)]
    p.source("in", MemorySource(batches), time="ts").sink(
        "out", LogSink(tmp_path, "keyed", key="sensor", partitions=4)
    )  # the record timestamps are the event times
    run(p)
    topic = Topic.open(tmp_path, "keyed")
    home: dict[str, int] = {}
    total = 0
    for part in range(4):
        batch = topic.read(part, 0, n)
        total += len(batch)
        src = LogSource(tmp_path, "keyed", partitions=[part], bounded=True)
        rows = Batch.concat(drain(src, 10_000)).to_records()
        assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)  # order kept
        for r, k, ts in zip(rows, batch.keys.tolist(), batch.timestamps.tolist(), strict=True):
            assert k == r["sensor"].encode() and ts == r["seq"] * 10
            assert home.setdefault(r["sensor"], part) == part  # a key lives in one partition
    assert total == n and len(home) == 37
    assert len(set(home.values())) == 4


def test_sink_without_key_round_robins_whole_batches(tmp_path: Path) -> None:
    sink = LogSink(tmp_path, "rr", partitions=3, value_format="raw")
    for i in range(6):
        sink.write(Batch({"value": [f"b{i}-{j}" for j in range(4)]}))
    sink.close()
    topic = Topic.open(tmp_path, "rr")
    assert [topic.end_offset(p) for p in range(3)] == [8, 8, 8]
    assert topic.read(1, 0, 10).values.tolist()[:4] == [b"b1-0", b"b1-1", b"b1-2", b"b1-3"]
    with pytest.raises(ConfigError, match="has 3 partitions, not 2"):
        LogSink(tmp_path, "rr", partitions=2).open()
    with pytest.raises(ConnectorError, match="writes the column 'value'"):
        LogSink(tmp_path, "rr", value_format="raw").write(Batch({"x": [1]}))


def test_sink_then_source_round_trip_values(tmp_path: Path) -> None:
    rows = [{"s": "a", "x": 1.5, "n": 1, "ok": True}, {"s": "é", "x": None, "n": 2, "ok": False}]
    sink = LogSink(tmp_path, "rt", fsync="none")
    sink.write(Batch.from_records(rows))
    sink.flush()
    sink.close()
    Topic.open(tmp_path, "rt").append(0, [b'{"s": "n", "x": 0, "n": 3, "ok": true, "l": [1]}'])
    src = LogSource(tmp_path, "rt", bounded=True)
    src.open({})
    got = [r for b in drain(src, 2) for r in b.to_records()]  # columns differ per batch
    assert [r["s"] for r in got] == ["a", "é", "n"] and [r["n"] for r in got] == [1, 2, 3]
    assert np.isnan(got[1]["x"]) and got[0]["ok"] is True
    src = LogSource(tmp_path, "rt", bounded=True)
    (one,) = [b for b in drain(src, 10) if len(b)]
    assert one["l"].tolist()[2].tolist() == [1] and one["l"].tolist()[0] is None
    assert values(1) == [b'{"i":0,"p":""}']


def test_positions_for_time(tmp_path: Path) -> None:
    topic = Topic.create(tmp_path, "ev", partitions=2, segment_bytes=1024)
    for i in range(10):  # several segments
        topic.append(0, values(5, start=5 * i, size=40), timestamps=np.arange(5) + 100 * i)
    topic.append(1, [b'{"i":0}', b'{"i":1}'], timestamps=[50, 10])  # out of order
    src = LogSource(tmp_path, "ev", bounded=True)
    assert src.positions_for_time(0) == {0: 0, 1: 0}
    assert src.positions_for_time(302) == {0: 17, 1: 2}
    assert src.positions_for_time(20) == {0: 5, 1: 0}
    assert src.positions_for_time(10_000) == {0: 50, 1: 2}
    src.open(src.positions_for_time(903))
    assert Batch.concat(drain(src))["i"].tolist() == [48, 49]
