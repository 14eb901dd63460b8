"""Topic: append/read, offsets, segment roll, index, retention (size and age), errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from logtools import segment_files, values

from tidal.errors import ConfigError, ConnectorError
from tidal.io.log import Topic
from tidal.io.log.format import MAGIC
from tidal.io.log.segment import INDEX_ENTRY


def read_all(topic: Topic, partition: int = 0, offset: int = 0, step: int = 1000) -> list[bytes]:
    out: list[bytes] = []
    while offset < topic.end_offset(partition):
        batch = topic.read(partition, offset, step)
        assert not batch.dead_letters
        out += batch.values.tolist()
        offset = batch.next_offset
    return out


def test_append_read_round_trip_with_keys_headers_timestamps(tmp_path: Path) -> None:
    topic = Topic.create(tmp_path, "t", partitions=3)
    first = topic.append(
        1,
        [b"v0", b"", b"v2"],
        keys=[b"k0", None, b""],
        timestamps=[5, 6, 7],
        headers=[[("trace", b"1"), ("\u00e9", b"")], None, []],
    )
    assert first == 0
    assert topic.append(1, np.array([b"v3"], dtype=object)) == 3
    batch = topic.read(1, 0, 10)
    assert batch.offsets.tolist() == [0, 1, 2, 3]
    assert batch.values.tolist() == [b"v0", b"", b"v2", b"v3"]
    assert batch.keys.tolist() == [b"k0", None, b"", None]
    assert batch.timestamps.tolist()[:3] == [5, 6, 7]
    assert batch.headers == [[("trace", b"1"), ("\u00e9", b"")], [], [], []]
    assert batch.next_offset == 4 and batch.nbytes == 4 * 40 + 6 + 2 + 22  # values, keys, headers
    assert (topic.start_offset(1), topic.end_offset(1)) == (0, 4)
    assert (topic.start_offset(0), topic.end_offset(0)) == (0, 0)
    assert topic.read(0, 0, 10).offsets.tolist() == []


def test_read_from_any_offset_and_in_steps(tmp_path: Path) -> None:
    topic = Topic.create(tmp_path, "t")
    for i in range(10):
        topic.append(0, values(100, start=100 * i))
    assert read_all(topic, step=37) == values(1000)
    assert topic.read(0, 777, 3).values.tolist() == values(3, start=777)
    assert topic.read(0, 1000, 3).offsets.tolist() == []  # at the end: nothing yet
    with pytest.raises(ConnectorError, match="past the end"):
        topic.read(0, 1001, 3)


def test_values_holding_the_sync_marker_are_read_back(tmp_path: Path) -> None:
    topic = Topic.create(tmp_path, "t")
    tricky = [MAGIC * 20, b"x" + MAGIC + (40).to_bytes(4, "little") + b"\0" * 40, MAGIC]
    topic.append(0, tricky * 50)
    assert read_all(topic) == tricky * 50


def test_segments_roll_and_reads_cross_them(tmp_path: Path) -> None:
    topic = Topic.create(tmp_path, "t", segment_bytes=4096)
    for i in range(20):
        topic.append(0, values(10, start=10 * i, size=100))  # ~1.4 KiB per append
    files = segment_files(topic)
    assert len(files) >= 6
    bases = [int(f.name[:20]) for f in files]
    assert bases[0] == 0 and bases == sorted(bases)
    assert all(f.with_suffix(".idx").exists() for f in files)
    assert all(f.stat().st_size <= 4096 for f in files)
    assert read_all(topic, step=7) == values(200, size=100)
    mid = bases[3] + 2
    assert topic.read(0, mid, 1).values.tolist() == values(1, start=mid, size=100)


def test_a_batch_larger_than_a_segment_gets_its_own(tmp_path: Path) -> None:
    topic = Topic.create(tmp_path, "t", segment_bytes=1024)
    topic.append(0, values(5))
    topic.append(0, values(100, start=5, size=200))
    assert [int(f.name[:20]) for f in segment_files(topic)] == [0, 5]
    assert read_all(topic) == values(5) + values(100, start=5, size=200)


def test_index_is_rebuilt_when_deleted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    topic = Topic.create(tmp_path, "t")
    topic.append(0, values(5000, size=50))
    idx = segment_files(topic)[0].with_suffix(".idx")
    entries = idx.stat().st_size // 16
    assert entries > 10
    idx.unlink()
    topic.close()
    caplog.set_level(logging.INFO, "tidal.io.log")
    again = Topic.open(tmp_path, "t")
    assert again.read(0, 4321, 2).values.tolist() == values(2, start=4321, size=50)
    assert idx.exists() and idx.stat().st_size // 16 == entries
    assert any("rebuilt the index" in r.message and str(idx) in r.message for r in caplog.records)
    again.append(0, values(1, start=5000, size=50))  # the writer finds the end without it
    assert again.end_offset(0) == 5001


def test_a_stale_index_is_detected_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topic = Topic.create(tmp_path, "t")
    topic.append(0, values(3000, size=50))
    idx = segment_files(topic)[0].with_suffix(".idx")
    entries = np.fromfile(idx, dtype=INDEX_ENTRY)
    target = int(entries["offset"][5])
    entries["position"][5] += 1  # entry 5 points into the middle of a record
    entries.tofile(idx)
    caplog.set_level(logging.INFO, "tidal.io.log")
    fresh = Topic.open(tmp_path, "t")
    assert fresh.read(0, target, 2).values.tolist() == values(2, start=target, size=50)
    assert any("points at the wrong record" in r.message for r in caplog.records)
    assert np.array_equal(
        np.fromfile(idx, dtype=INDEX_ENTRY)["position"][5], entries["position"][5] - 1
    )


def test_two_topic_objects_share_a_partition(tmp_path: Path) -> None:
    a = Topic.create(tmp_path, "t")
    b = Topic.open(tmp_path, "t")
    for i in range(10):
        (a if i % 2 else b).append(0, values(3, start=3 * i))
    assert read_all(a) == values(30)
    assert a.end_offset(0) == b.end_offset(0) == 30


def test_retention_by_size(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    topic = Topic.create(tmp_path, "t", segment_bytes=2048, retention_bytes=5000)
    for i in range(40):
        topic.append(0, values(5, start=5 * i, size=60))
    sizes = [f.stat().st_size for f in segment_files(topic)]
    assert sum(sizes[:-1]) - sizes[0] < 5000  # as checked at the last roll
    topic.apply_retention()
    sizes = [f.stat().st_size for f in segment_files(topic)]
    assert sum(sizes) - sizes[0] < 5000 <= sum(sizes)
    start = topic.start_offset(0)
    assert start > 0 and start == int(segment_files(topic)[0].name[:20])
    caplog.set_level(logging.WARNING, "tidal.io.log")
    fresh = Topic.open(tmp_path, "t")
    reader = fresh.reader(0, 0)
    batch = reader.read(10_000)
    assert batch.offsets.tolist() == list(range(start, 200))
    assert any("deleted by retention" in r.message for r in caplog.records)


def test_retention_by_age_with_an_injected_clock(tmp_path: Path) -> None:
    now = [1_000_000]
    topic = Topic.create(tmp_path, "t", segment_bytes=1024, retention="1h", clock=lambda: now[0])
    for i in range(6):  # one segment per append: records are stamped "now"
        topic.append(0, values(5, start=5 * i, size=200))
        now[0] += 20 * 60_000  # 20 minutes
    # retention runs at each roll: at the last one (t = 100 min) the segments whose newest
    # record is older than 40 min went: those of t = 0 and t = 20 min
    assert [int(f.name[:20]) for f in segment_files(topic)] == [10, 15, 20, 25]
    assert topic.start_offset(0) == 10
    assert topic.apply_retention() == 1  # now t = 120 min: the t = 40 min segment goes
    assert topic.start_offset(0) == 15
    now[0] += 10 * 3_600_000
    assert topic.apply_retention() == 2  # never the active segment
    assert topic.start_offset(0) == 25
    assert topic.read(0, 25, 100).values.tolist() == values(5, start=25, size=200)


def test_fsync_none_then_sync(tmp_path: Path) -> None:
    topic = Topic.create(tmp_path, "t", fsync="none", segment_bytes=1024)
    for i in range(5):
        topic.append(0, values(10, start=10 * i, size=50))
    topic.sync(0)
    topic.sync()
    assert read_all(topic) == values(50, size=50)


def test_errors_say_what_and_how(tmp_path: Path) -> None:
    with pytest.raises(ConnectorError, match="no topic 'nope'.*tidal log create nope"):
        Topic.open(tmp_path, "nope")
    with pytest.raises(ConfigError, match="invalid topic name"):
        Topic.create(tmp_path, "../x")
    with pytest.raises(ConfigError, match="partitions must be"):
        Topic.create(tmp_path, "t", partitions=0)
    topic = Topic.create(tmp_path, "t", partitions=2)
    with pytest.raises(ConnectorError, match="already exists"):
        Topic.create(tmp_path, "t")
    assert Topic.create(tmp_path, "t", partitions=2, exist_ok=True).partitions == 2
    with pytest.raises(ConfigError, match="exists with 2 partitions"):
        Topic.create(tmp_path, "t", partitions=3, exist_ok=True)
    with pytest.raises(ConfigError, match="no partition 2"):
        topic.append(2, [b"x"])
    with pytest.raises(ConnectorError, match="must be bytes"):
        topic.append(0, ["text"])  # type: ignore[list-item]
    with pytest.raises(ConnectorError, match="timestamps"):
        topic.append(0, [b"a", b"b"], timestamps=[1])
    assert topic.end_offset(0) == 0  # nothing was written by the failed appends
    assert Topic.names(tmp_path) == ["t"] and Topic.exists(tmp_path, "t")


def test_data_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDAL_DATA_DIR", str(tmp_path / "env"))
    Topic.create(None, "t").append(0, [b"x"])
    assert (tmp_path / "env" / "log" / "t" / "0" / f"{0:020d}.seg").is_file()
    assert Topic.names(None) == ["t"]
