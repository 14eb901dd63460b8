"""Crash recovery and damage: torn, zero-filled and bad-CRC tails are truncated by the next
writer (with a log message naming the file, byte and offset); damage in the middle of a
segment costs only the damaged records, which come back as dead letters, and reading goes
on; a missing index is rebuilt.

Layout of the segment used below (10 records of 40 + 27 bytes)::

    byte   0      67     134    ...    603    670
           | r0   | r1   | r2   | ...  | r9   |
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from logtools import flip, record_starts, segment_files, values

from tidal.io.log import LogSource, Topic
from tidal.io.log.format import encode

N = 10


def make(tmp_path: Path, n: int = N, **options: object) -> tuple[Topic, Path]:
    topic = Topic.create(tmp_path, "t", **options)  # type: ignore[arg-type]
    topic.append(0, values(n))
    (seg,) = segment_files(topic)
    topic.close()
    return topic, seg


def read(tmp_path: Path) -> tuple[list[int], list[dict[str, object]], list[str]]:
    topic = Topic.open(tmp_path, "t")
    batch = topic.read(0, 0, 1000)
    topic.close()
    letters = batch.dead_letters
    return batch.offsets.tolist(), [dict(d.position) for d in letters], [d.reason for d in letters]


def truncation_logged(caplog: pytest.LogCaptureFixture, seg: Path, at: int, offset: int) -> bool:
    return any(
        "truncating the torn tail" in r.message
        and str(seg) in r.message
        and f"at byte {at}" in r.message
        and f"next offset {offset}" in r.message
        for r in caplog.records
    )


@pytest.mark.parametrize(
    ("damage", "why", "went"),
    [
        ("cut", "incomplete record", "1 record lost: offset 9;"),
        ("zeros", "no sync marker", "no record header in them;"),
        ("crc", "CRC mismatch", "1 record lost: offset 9;"),
        ("half-header", "incomplete record (20 of 36 bytes)", "1 record lost: offset 10;"),
    ],
)
def test_torn_tail_is_invisible_to_readers_and_truncated_by_the_next_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str, why: str, went: str
) -> None:
    _, seg = make(tmp_path)
    starts = record_starts(seg)
    size = seg.stat().st_size
    last = starts[-1]
    if damage == "cut":  # a write cut short: the last record lacks 7 bytes
        with seg.open("r+b") as f:
            f.truncate(size - 7)
    elif damage == "zeros":  # a power loss after the size was extended, before the data
        with seg.open("ab") as f:
            f.write(b"\0" * 4096)
        last = size
    elif damage == "crc":  # the last record's value damaged
        flip(seg, size - 10)
    else:  # only 20 bytes of a next record's header made it
        with seg.open("ab") as f:
            f.write(bytes(encode(N, [b"x"], np.zeros(1, dtype=np.int64)).data[:20]))
        last = size
    lost = 1 if last == starts[-1] else 0

    # a reader sees the valid records and treats the tail as "not written yet"
    offsets, dead, _ = read(tmp_path)
    assert offsets == list(range(N - lost)) and dead == []
    assert Topic.open(tmp_path, "t").end_offset(0) == N - lost

    # the next writer truncates it, says where, and continues at the right offset
    caplog.set_level(logging.WARNING, "tidal.io.log")
    topic = Topic.open(tmp_path, "t")
    assert topic.append(0, [b'{"i":99}']) == N - lost
    assert truncation_logged(caplog, seg, last, N - lost)
    assert any(why in r.message and went in r.message for r in caplog.records)
    batch = topic.read(0, 0, 100)
    assert batch.offsets.tolist() == list(range(N - lost + 1))
    assert batch.values.tolist()[-1] == b'{"i":99}' and not batch.dead_letters


def test_flipped_bytes_mid_segment_become_dead_letters(tmp_path: Path) -> None:
    _, seg = make(tmp_path)
    starts = record_starts(seg)
    flip(seg, starts[3] + 45)  # record 3's value
    flip(seg, starts[6] + 5)  # record 6's size field
    offsets, dead, reasons = read(tmp_path)
    assert offsets == [0, 1, 2, 4, 5, 7, 8, 9]
    assert [d["offset"] for d in dead] == [3, 6]
    assert dead[0] == {
        "topic": "t",
        "partition": 0,
        "offset": 3,
        "file": str(seg),
        "byte": starts[3],
    }
    assert reasons[0] == f"CRC mismatch at byte {starts[3]} of {seg}"
    assert reasons[1] == f"bad record length at byte {starts[6]} of {seg}"


def test_damage_across_records_loses_exactly_those(tmp_path: Path) -> None:
    _, seg = make(tmp_path)
    starts = record_starts(seg)
    with seg.open("r+b") as f:  # garbage over the end of r2, all of r3 and r4, start of r5
        f.seek(starts[2] + 50)
        f.write(b"\xab" * (starts[5] + 10 - starts[2] - 50))
    offsets, dead, reasons = read(tmp_path)
    assert offsets == [0, 1, 6, 7, 8, 9]
    assert [d["offset"] for d in dead] == [2, 3, 4, 5]
    assert all(r.startswith(f"CRC mismatch at byte {starts[2]} of") for r in reasons)


def test_mid_segment_damage_is_left_to_readers_by_writers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, seg = make(tmp_path)
    starts = record_starts(seg)
    flip(seg, starts[8] + 45)
    caplog.set_level(logging.WARNING, "tidal.io.log")
    topic = Topic.open(tmp_path, "t")
    # r8 is damaged but r9 is valid: not a tail, nothing is truncated
    assert topic.append(0, [b'{"i":10}']) == 10
    assert not any("truncating" in r.message for r in caplog.records)
    offsets, dead, _ = read(tmp_path)
    assert offsets == [0, 1, 2, 3, 4, 5, 6, 7, 9, 10] and [d["offset"] for d in dead] == [8]


def test_damaged_end_of_a_sealed_segment(tmp_path: Path) -> None:
    topic = Topic.create(tmp_path, "t", segment_bytes=1024)
    topic.append(0, values(10))
    topic.append(0, values(10, start=10, size=100))  # a second segment
    first = segment_files(topic)[0]
    topic.close()
    flip(first, first.stat().st_size - 3)  # the CRC of r9, the last of segment 0
    offsets, dead, reasons = read(tmp_path)
    assert offsets == [*range(9), *range(10, 20)]
    assert [d["offset"] for d in dead] == [9]
    assert reasons == [f"CRC mismatch at byte {record_starts(first)[9]} of {first}"]


def test_missing_index_after_a_torn_tail(tmp_path: Path) -> None:
    _, seg = make(tmp_path, 2000)
    seg.with_suffix(".idx").unlink()
    with seg.open("ab") as f:
        f.write(b"\0" * 100)
    topic = Topic.open(tmp_path, "t")
    assert topic.append(0, [b'{"i":2000}']) == 2000
    assert seg.with_suffix(".idx").exists()
    assert topic.read(0, 1990, 100).offsets.tolist() == list(range(1990, 2001))


def test_log_source_reports_damage_with_positions(tmp_path: Path) -> None:
    _, seg = make(tmp_path)
    flip(seg, record_starts(seg)[4] + 45)
    src = LogSource(tmp_path, "t", bounded=True)
    src.open({})
    got = []
    while (b := src.poll(3, 0.0)) is not None:
        got += b["i"].tolist()
    assert got == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    (dead,) = src.dead_letters()
    assert dead.step == "log:t" and dead.position["offset"] == 4
    assert dead.reason.startswith("CRC mismatch at byte")
    assert src.position() == {0: 10}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(hits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4))
def test_random_damage_never_crashes_and_loses_nothing_silently(
    tmp_path_factory: pytest.TempPathFactory, hits: list[tuple[int, int]]
) -> None:
    """Flip random bytes: every record before the tail is returned intact or reported."""
    tmp = tmp_path_factory.mktemp("fuzz")
    data = values(40, size=30)
    topic = Topic.create(tmp, "t")
    topic.append(0, data)
    (seg,) = segment_files(topic)
    starts = record_starts(seg)
    size = seg.stat().st_size
    for at, mask in hits:
        flip(seg, at % size, mask)
    batch = Topic.open(tmp, "t").read(0, 0, 1000)
    got = batch.offsets.tolist()
    dead = [d.position.get("offset") for d in batch.dead_letters]
    for o, v in zip(got, batch.values.tolist(), strict=True):
        assert v == data[o]  # what is returned is what was written
    assert not set(got) & {d for d in dead if d is not None}
    damaged = {next(i for i in reversed(range(40)) if starts[i] <= at % size) for at, _ in hits}
    tail = 40  # the damaged records at the very end read as a torn tail: not reported
    while tail - 1 in damaged:
        tail -= 1
    accounted = set(got) | {d for d in dead if d is not None}
    assert set(range(tail)) <= accounted <= set(range(40))


def test_kill_9_during_appends_then_recover(tmp_path: Path) -> None:
    """SIGKILL producers at random moments of 4 MB appends; each next writer recovers.

    A kill during ``write`` leaves a torn tail (whole records of the batch, then part of
    one): the next writer truncates the part and continues at the next offset.
    """
    import multiprocessing
    import os
    import random
    import signal
    import time

    from logtools import produce_forever

    rng = random.Random(3)
    Topic.create(tmp_path, "t", segment_bytes=16 << 20)
    ctx = multiprocessing.get_context("spawn")
    for _ in range(4):
        started = ctx.Event()
        worker = ctx.Process(target=produce_forever, args=(str(tmp_path), "t", started))
        worker.start()
        assert started.wait(60)
        time.sleep(rng.random() * 0.03)  # not a wait: a random moment to kill at
        os.kill(worker.pid or 0, signal.SIGKILL)
        worker.join(60)
    topic = Topic.open(tmp_path, "t")
    end = topic.append(0, [b"last"])
    assert end >= 4 * 4000
    offset, seen = 0, 0
    while offset <= end:
        batch = topic.read(0, offset, 20_000)
        assert not batch.dead_letters
        for o, v in zip(batch.offsets.tolist(), batch.values.tolist(), strict=True):
            assert o == seen and (v == b"last" if o == end else v.startswith(b"%d:" % o))
            seen += 1
        offset = batch.next_offset
    assert seen == end + 1
