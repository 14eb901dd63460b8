"""TransactionalLogSink: prepare/commit/recover idempotency, torn appends, foreign writers,
and a checkpointed pipeline resumed after an abandoned run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tidal import Batch, ConnectorError, Executor, Pipeline
from tidal.io.base import TransactionalSink
from tidal.io.log import LogSink, LogSource, Topic
from tidal.io.log.sink import TransactionalLogSink
from tidal.runtime.checkpoint import CheckpointConfig
from tidal.runtime.snapshot import decode, encode
from tidal.testing import MemorySource


def _records(root: Path, name: str) -> list[tuple[int, bytes | None, bytes, int]]:
    topic = Topic.open(root, name)
    out = []
    for p in range(topic.partitions):
        batch = topic.read(p, 0, max_records=100_000)
        out += list(
            zip(
                [p] * len(batch.values),
                batch.keys.tolist(),
                batch.values.tolist(),
                batch.timestamps.tolist(),
                strict=True,
            )
        )
    topic.close()
    return out


def _batch(lo: int, hi: int) -> Batch:
    n = np.arange(lo, hi)
    return Batch({"user": (n % 3).astype(str).astype(object), "n": n}, time=n * 10)


def test_protocol_and_commit_idempotency(tmp_path: Path) -> None:
    sink = TransactionalLogSink(tmp_path, "t", key="user", partitions=3)
    assert isinstance(sink, TransactionalSink)
    assert not isinstance(LogSink(tmp_path, "t"), TransactionalSink)
    sink.recover([])
    sink.write(_batch(0, 10))
    sink.write(_batch(10, 12))
    pending = decode(encode({"p": sink.prepare(1)}))["p"]  # as stored in a checkpoint
    assert _records(tmp_path, "t") == []
    for _ in range(3):
        sink.commit(1, pending)
    got = _records(tmp_path, "t")
    assert sorted(orjson.loads(v)["n"] for _, _, v, _ in got) == list(range(12))
    assert all(ts == orjson.loads(v)["n"] * 10 for _, _, v, ts in got)
    assert {k for _, k, _, _ in got} == {b"0", b"1", b"2"}
    assert sink.prepare(2)["starts"] == {}
    sink.commit(2, sink.prepare(2))
    sink.close()


def test_recover_finishes_a_torn_append_and_forgets_unprepared_rows(tmp_path: Path) -> None:
    crashed = TransactionalLogSink(tmp_path, "t")  # one partition, no key
    crashed.write(_batch(0, 6))
    pending = crashed.prepare(4)
    crashed.write(_batch(6, 9))  # never prepared: lost with the process
    topic = Topic.open(tmp_path, "t")
    topic.append(0, [orjson.dumps({"user": str(i % 3), "n": i}) for i in range(2)])
    topic.close()  # the crash came after 2 of the 6 records reached the log
    fresh = TransactionalLogSink(tmp_path, "t")
    fresh.recover([pending])
    fresh.recover([pending])
    assert [orjson.loads(v)["n"] for _, _, v, _ in _records(tmp_path, "t")] == list(range(6))
    crashed.close()
    fresh.close()


def test_a_foreign_append_is_detected(tmp_path: Path) -> None:
    sink = TransactionalLogSink(tmp_path, "t")
    sink.write(_batch(0, 2))
    pending = sink.prepare(1)
    other = LogSink(tmp_path, "t")
    other.write(_batch(100, 103))
    other.close()
    with pytest.raises(ConnectorError, match="another writer appended"):
        sink.commit(1, pending)
    sink.close()


def _pipeline(root: Path) -> Pipeline:
    p = Pipeline("log-eo")
    n = np.arange(3000)
    src = MemorySource(
        [Batch({"user": (n[i : i + 100] % 7), "n": n[i : i + 100]}) for i in range(0, 3000, 100)]
    )
    p.source("in", src).sink("out", TransactionalLogSink(root, "out", key="user", partitions=2))
    return p


def _executor(p: Pipeline, root: Path) -> Executor:
    config = CheckpointConfig(data_dir=root / "chk", interval=None, every_events=500)
    return Executor(p, max_wait="0ms", handle_signals=False, checkpoint=config)


def test_pipeline_resumes_with_every_record_once(tmp_path: Path) -> None:
    ex = _executor(_pipeline(tmp_path), tmp_path)
    ex.open()
    for _ in range(13):  # checkpoints after 5 and 10 batches, then 3 uncommitted batches
        ex.step()
    for n in ex.nodes:  # die: staged rows were in memory only
        if n.sink is not None:
            n.sink.close()
    assert ex.store is not None
    ex.store.unlock()
    got: list[Any] = _records(tmp_path, "out")
    assert len(got) == 1000
    _executor(_pipeline(tmp_path), tmp_path).run()
    values = [orjson.loads(v)["n"] for _, _, v, _ in _records(tmp_path, "out")]
    assert sorted(values) == list(range(3000))
    src = LogSource(tmp_path, "out", bounded=True)
    src.open({})
    assert src.poll(10_000, 0.0) is not None
    src.close()
    src.topic.close()
