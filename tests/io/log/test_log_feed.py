"""LogFeed: every sequence number in the topic exactly once, across crashes and restarts."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tidal.errors import ConnectorError
from tidal.io.log import LogSource, Topic
from tidal.io.log.feed import FeedProcess, LogFeed
from tidal.io.log.sink import route_keys


def _make(seq: Any) -> dict[str, Any]:
    return {"key": seq % 37, "x": seq * 2}


def _seqs(data: Path, topic: str = "t") -> list[list[int]]:
    """Per partition, the sequence numbers in log order."""
    t = Topic.open(data, topic)
    out = []
    for p in range(t.partitions):
        values = t.read(p, 0, 1_000_000).values.tolist() if t.end_offset(p) else []
        out.append([orjson.loads(v)["seq"] for v in values])
    t.close()
    return out


def _check_exactly_once(data: Path, upto: int) -> None:
    per_part = _seqs(data)
    for seqs in per_part:
        assert seqs == sorted(seqs)  # in order within a partition
    everything = sorted(s for seqs in per_part for s in seqs)
    assert everything == list(range(upto))


def test_resumes_after_a_chunk_that_reached_only_some_partitions(tmp_path: Path) -> None:
    feed = LogFeed(_make, tmp_path, "t", key="key", partitions=3)
    assert feed.produce(1000) == 1000
    feed.close()
    # a crash in the middle of the next chunk: only partition 1 got its share of 1000..1499
    topic = Topic.open(tmp_path, "t")
    seq = np.arange(1000, 1500)
    _, parts = route_keys(seq % 37, 3)
    rows = [orjson.dumps({"key": int(s % 37), "x": int(s * 2), "seq": int(s)}) for s in seq]
    topic.append(1, [r for r, p in zip(rows, parts, strict=True) if p == 1])
    topic.close()

    feed = LogFeed(_make, tmp_path, "t", key="key", partitions=3)
    feed.open()
    assert 990 <= feed.next_seq <= 1000  # the smallest "last + 1", of partition 0 or 2
    feed.produce(2000)
    feed.close()
    _check_exactly_once(tmp_path, 2000)


def test_thread_keeps_to_the_consumer_lead_and_stops(tmp_path: Path) -> None:
    consumed = 0
    feed = LogFeed(_make, tmp_path, "t", key="key", partitions=2, lead=5000, chunk=1000)
    feed.start(consumed=lambda: consumed)
    deadline = time.monotonic() + 10
    while feed.next_seq < 5000 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert feed.next_seq == 5000  # not one record more than the lead allows
    consumed = 2500
    while feed.next_seq < 7500 and time.monotonic() < deadline:
        time.sleep(0.01)
    feed.close()
    assert feed.next_seq == 7500
    _check_exactly_once(tmp_path, 7500)


def test_a_second_feed_of_the_same_topic_is_refused(tmp_path: Path) -> None:
    first = LogFeed(_make, tmp_path, "t", key="key")
    first.produce(10)
    second = LogFeed(_make, tmp_path, "t", key="key")
    second.open()
    with pytest.raises(ConnectorError, match="another feed is writing"):
        second._lock(timeout=0.05)  # noqa: SLF001 - the lock's timeout, shortened
    first.close()
    second.produce(20)  # the first one is gone: the second takes over where it stopped
    second.close()
    _check_exactly_once(tmp_path, 20)


def test_the_last_record_must_carry_a_sequence_number(tmp_path: Path) -> None:
    topic = Topic.create(tmp_path, "t")
    topic.append(0, [b'{"key": 1}'])  # written by something else
    topic.close()
    with pytest.raises(ConnectorError, match="no 'seq' number"):
        LogFeed(_make, tmp_path, "t", key="key").open()


def test_feed_process_feeds_a_consumer_and_stops(tmp_path: Path) -> None:
    feed = LogFeed(_make, tmp_path, "t", key="key", partitions=2, rate=50_000)
    feed.open()
    feed.close()
    source = LogSource(tmp_path, "t")
    source.open({})
    read = 0
    with FeedProcess(feed, consumed=lambda: read) as process:
        deadline = time.monotonic() + 30
        while read < 20_000 and time.monotonic() < deadline:
            batch = source.poll(4096, 0.05)
            read += 0 if batch is None else len(batch)
    source.close()
    assert read >= 20_000
    assert process.produced >= read
    _check_exactly_once(tmp_path, process.produced)


def test_feed_process_survives_ctrl_c_while_it_starts(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group, possibly while the child still imports numpy.

    The signals are sent the moment ``start`` returns, long before the child could install
    a handler of its own: it must start immune (issue 8, item 1), not die with status -2.
    """
    feed = LogFeed(_make, tmp_path, "t", key="key", partitions=2, rate=50_000)
    process = FeedProcess(feed)
    process.start()
    pid = process._proc.pid  # noqa: SLF001 - the test signals the child itself
    assert pid is not None
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + 60
    while process.produced < 5_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(pid, signal.SIGINT)  # and once its handlers are in place
    process.stop()  # raises ConnectorError if the child died
    assert process.produced >= 5_000
    _check_exactly_once(tmp_path, process.produced)


def test_feed_process_stops_on_a_sigterm_sent_while_it_starts(tmp_path: Path) -> None:
    feed = LogFeed(_make, tmp_path, "t", key="key", partitions=2, rate=1_000)
    process = FeedProcess(feed)
    process.start()
    pid = process._proc.pid  # noqa: SLF001 - the test signals the child itself
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # deferred until its handler is in place, then a clean stop
    # wait through the watcher, which reaps the child: a second thread waiting on it here
    # (_proc.join) races the watcher's waitpid, and the loser reads no exit code (ECHILD)
    process._watcher.join(60)  # noqa: SLF001 - it saw the exit: a clean stop, not a failure
    assert process._proc.exitcode == 0  # noqa: SLF001 - not -15
    assert process.failed is None
    process.stop()
    _check_exactly_once(tmp_path, process.produced)


def test_feed_process_stop_waits_for_a_child_that_is_still_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop asked while the child still starts must not kill it (exit status -9).

    The child's import of its ``make`` blocks on a gate file, as an import of numpy does for
    seconds on a busy machine. ``stop(timeout=15)`` is asked meanwhile: its kill deadline
    counts from the moment the child runs, so the child, released after 16 s, stops cleanly
    (15 s, not less: a released child on a machine at load 15 took over 2 s to open its
    topic, see that it must stop, sync and exit).
    """
    gate = tmp_path / "gate"
    gate.touch()
    monkeypatch.setenv("TIDAL_TEST_FEED_GATE", str(gate))
    from feed_gate import make  # the parent imports it through the open gate

    gate.unlink()
    process = FeedProcess(LogFeed(make, tmp_path / "data", "t", key="key", rate=1_000))
    process.start()
    errors: list[BaseException] = []

    def stop() -> None:
        try:
            process.stop(timeout=15.0)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    stopper = threading.Thread(target=stop)
    stopper.start()
    stopper.join(16.0)  # past the 15 s kill deadline: the child is still gated
    assert stopper.is_alive(), "stop() gave up on a child that had not started yet"
    gate.touch()
    stopper.join(120)
    assert not stopper.is_alive()
    assert errors == []
    assert process._proc.exitcode == 0  # noqa: SLF001 - a clean stop, not -9


def _parent(data: str, ready: Any) -> None:  # pragma: no cover - runs in a child process
    feed = LogFeed(_make, data, "t", key="key", partitions=2, rate=20_000)
    process = FeedProcess(feed)
    process.start()
    ready.put(process._proc.pid)  # noqa: SLF001 - the test needs the grandchild's pid
    time.sleep(60)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state  # exited, waiting to be reaped


def test_feed_process_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    parent = ctx.Process(target=_parent, args=(str(tmp_path), ready))
    parent.start()
    child = ready.get(timeout=30)
    deadline = time.monotonic() + 30
    while not Topic.exists(tmp_path, "t") or not any(_seqs(tmp_path)):
        assert time.monotonic() < deadline, "the feed process wrote nothing"
        time.sleep(0.02)
    assert parent.pid is not None
    os.kill(parent.pid, signal.SIGKILL)
    parent.join()
    deadline = time.monotonic() + 10
    while not _gone(child):
        assert time.monotonic() < deadline, "the orphaned feed process keeps running"
        time.sleep(0.02)
    # whatever it wrote before it noticed is whole, and a new feed resumes after it
    feed = LogFeed(_make, tmp_path, "t", key="key", partitions=2)
    feed.open()
    upto = feed.next_seq + 100
    feed.produce(upto)
    feed.close()
    _check_exactly_once(tmp_path, upto)


def test_resumes_after_a_torn_append(tmp_path: Path) -> None:
    """A feed killed in the middle of an append leaves half a record: it is cut off."""
    feed = LogFeed(_make, tmp_path, "t", key="key", partitions=2)
    feed.produce(300)
    feed.close()
    segment = next((tmp_path / "log" / "t" / "0").glob("*.seg"))
    whole = segment.read_bytes()
    segment.write_bytes(whole + whole[-40:-5])  # the start of a record, never finished
    feed = LogFeed(_make, tmp_path, "t", key="key", partitions=2)
    feed.produce(600)
    feed.close()
    _check_exactly_once(tmp_path, 600)


def test_a_feed_stopped_while_waiting_for_the_lock_writes_nothing(tmp_path: Path) -> None:
    first = LogFeed(_make, tmp_path, "t", key="key")
    first.produce(10)
    second = LogFeed(_make, tmp_path, "t", key="key")
    second.open()
    second.run(None, stopped=lambda: True)  # returns at once, without the lock
    second.close()
    first.close()
    _check_exactly_once(tmp_path, 10)
