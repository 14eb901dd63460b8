"""Checkpoints of one partition's task kept in Kafka, inside the output transaction.

Under ``tidal run --group NAME`` (:mod:`tidal.runtime.workers.group`) a worker runs one
task per input partition it owns. A task's checkpoint (the executor snapshot, bytes) goes
to the compacted topic ``<group>.<pipeline>.tidal-state`` (created by Tidal, one partition) as
records keyed ``<partition>/<n>`` (chunks of at most ``CHUNK`` bytes, under the broker's
message size limit) and ``<partition>/meta`` (checkpoint id, chunk count, size, SHA-256),
all produced **in the task's open transaction**: the state, the output and the input
offsets commit together, or not at all. Whoever owns the partition next (any machine of
the group) restores exactly that state from Kafka; nothing is shared but the cluster.
Compaction keeps the newest value of each key, which is the newest committed checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import orjson

from tidal.errors import StateError
from tidal.io.kafka._confluent import confluent
from tidal.io.kafka.config import KafkaConfig
from tidal.io.kafka.sink import KafkaTransactionalSink
from tidal.runtime.checkpoint import Checkpoint, CheckpointConfig, CheckpointStore

__all__ = [
    "CHUNK",
    "RESTORE_GATE_ENV",
    "RESTORE_PAUSE_ENV",
    "KafkaStateStore",
    "ensure_state_topic",
    "finished_partitions",
    "read_state",
    "state_topic",
]

CHUNK = 512 * 1024
"""Bytes per state record (the broker's default limit is 1 MiB)."""

RESTORE_GATE_ENV = "TIDAL_TEST_RESTORE_GATE"
"""Tests only: ``<path>``: a restore that finds committed state writes ``<path>.reached``
(this process's pid) and waits while ``<path>`` exists (a restore as slow as the test needs,
e.g. until it has made the group rebalance)."""

RESTORE_PAUSE_ENV = "TIDAL_TEST_RESTORE_PAUSE_MS"
"""Tests only: ``<ms>``: each restore that finds committed state takes that much longer
(stands for a large state)."""

log = logging.getLogger("tidal.workers")
_PARTITION_EOF = -191  # librdkafka's RD_KAFKA_RESP_ERR__PARTITION_EOF


def state_topic(group: str, pipeline: str) -> str:
    """The state topic of a job: its group (like Kafka Streams' application id) and pipeline.

    Example:
        >>> state_topic("fraud-prod", "fraud")
        'fraud-prod.fraud.tidal-state'
    """
    return re.sub(r"[^A-Za-z0-9._-]", "-", f"{group}.{pipeline}.tidal-state")


def ensure_state_topic(config: KafkaConfig, topic: str) -> None:
    """Create the compacted state topic if it does not exist."""
    from tidal.io.kafka.admin import KafkaAdmin

    KafkaAdmin(config, timeout=30.0).create_topic(
        topic, 1, config={"cleanup.policy": "compact", "retention.ms": "-1"}, exist_ok=True
    )


class KafkaStateStore(CheckpointStore):
    """The checkpoints of one partition's task, in the pipeline's state topic.

    Args:
        config: the checkpoint configuration (its ``data_dir`` is not used).
        pipeline: the pipeline's name.
        partition: the input partition the task owns (the records' key prefix).
        kafka: the cluster.
        sink: the task's exactly-once sink, whose open transaction carries the state.
        topic: the state topic (see :func:`state_topic`).
    """

    def __init__(
        self,
        config: CheckpointConfig,
        pipeline: str,
        partition: int,
        *,
        kafka: KafkaConfig,
        sink: KafkaTransactionalSink,
        topic: str,
    ) -> None:
        super().__init__(config, pipeline)
        self.partition = partition
        self.kafka = kafka
        self.sink = sink
        self.topic = topic
        self.path = Path(f"kafka:{self.topic}/{partition}")
        self.restore_ms: float | None = None

    # no local lock: the task's transactional id fences any other owner of the partition
    def lock(self) -> None:
        """Nothing to lock (fencing by transactional id)."""

    def unlock(self) -> None:
        """Nothing to unlock."""

    def ids(self) -> list[int]:
        """The committed checkpoint (fences a zombie owner first)."""
        cid = self.sink.committed_checkpoint()
        return [] if cid is None else [cid]

    def discard_after(self, checkpoint_id: int) -> list[int]:
        """Nothing: state of aborted transactions is invisible to ``read_committed``."""
        return []

    def prune(self) -> list[int]:
        """Nothing: compaction keeps the newest state."""
        return []

    def write(self, checkpoint_id: int, state: bytes, *, final: bool = False) -> Checkpoint:
        """Produce the state's chunks and meta record into the open transaction."""
        digest = hashlib.sha256(state).hexdigest()
        chunks = [state[i : i + CHUNK] for i in range(0, len(state), CHUNK)] or [b""]
        for n, chunk in enumerate(chunks):
            self.sink.produce_in_transaction(self.topic, f"{self.partition}/{n}", chunk)
        now = time.time()
        meta = {
            "checkpoint": checkpoint_id,
            "chunks": len(chunks),
            "size": len(state),
            "sha256": digest,
            "final": final,
            "time": now,
        }
        self.sink.produce_in_transaction(self.topic, f"{self.partition}/meta", orjson.dumps(meta))
        return Checkpoint(checkpoint_id, self.path, now, digest, len(state), final)

    def load_latest(self) -> tuple[Checkpoint, bytes] | None:
        """The committed state, if any."""
        ids = self.ids()
        return None if not ids else self.load(ids[-1])

    def load(self, checkpoint_id: int) -> tuple[Checkpoint, bytes]:
        """Read the partition's newest committed state; it must be ``checkpoint_id``.

        Raises:
            StateError: if the state topic lacks it or it is damaged.
        """
        t0 = time.perf_counter()
        _restore_gate()
        values = self._read()
        raw = values.get(f"{self.partition}/meta")
        if raw is None:
            msg = (
                f"pipeline {self.pipeline!r}, partition {self.partition}: the output says "
                f"checkpoint {checkpoint_id} committed, but topic {self.topic!r} has no state "
                "for it; was the state topic deleted? Replay (--from-offset) to new output"
            )
            raise StateError(msg)
        meta = orjson.loads(raw)
        data = b"".join(values.get(f"{self.partition}/{n}", b"") for n in range(meta["chunks"]))
        if (
            meta["checkpoint"] != checkpoint_id
            or hashlib.sha256(data).hexdigest() != meta["sha256"]
        ):
            msg = (
                f"pipeline {self.pipeline!r}, partition {self.partition}: the state in topic "
                f"{self.topic!r} is checkpoint {meta['checkpoint']} ({len(data)} bytes), not "
                f"the committed checkpoint {checkpoint_id} with hash {meta['sha256'][:12]}"
            )
            raise StateError(msg)
        self.restore_ms = (time.perf_counter() - t0) * 1000.0
        chk = Checkpoint(checkpoint_id, self.path, float(meta["time"]), meta["sha256"], len(data))
        return chk, data

    def _read(self) -> dict[str, bytes]:
        """The newest committed value of each of this partition's keys."""
        values = read_state(self.kafka, self.topic, f"{self.partition}/")
        assert values is not None  # no time limit
        return values


def _restore_gate() -> None:
    gate = os.environ.get(RESTORE_GATE_ENV)
    if gate:
        tmp = Path(f"{gate}.tmp")
        tmp.write_text(str(os.getpid()))
        tmp.replace(f"{gate}.reached")
        while Path(gate).exists():
            time.sleep(0.005)
    pause = os.environ.get(RESTORE_PAUSE_ENV)
    if pause:
        time.sleep(float(pause) / 1000.0)


def finished_partitions(kafka: KafkaConfig, topic: str, *, timeout: float) -> set[int]:
    """Partitions whose newest committed state is final (their bounded input drained).

    Reads for at most ``timeout`` seconds (an open transaction of a dead worker holds the
    topic's readers back until it is fenced): an incomplete read returns an empty set,
    i.e. "not known to be finished", and the caller asks again later.
    """
    out: set[int] = set()
    values = read_state(kafka, topic, "", timeout=timeout)
    if values is None:
        return out
    for key, value in values.items():
        part, _, what = key.partition("/")
        if what == "meta" and orjson.loads(value).get("final"):
            out.add(int(part))
    return out


def read_state(
    kafka: KafkaConfig, topic: str, prefix_text: str, *, timeout: float | None = None
) -> dict[str, bytes] | None:
    """The newest committed value of every key of the state topic starting with a prefix.

    ``None`` if the end was not reached within ``timeout`` seconds (``None``: no limit).

    Raises:
        StateError: if the topic cannot be read.
    """
    ck = confluent()
    consumer = ck.Consumer(
        kafka.client(
            **{
                "group.id": f"{topic}.restore",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
            }
        )
    )
    prefix = prefix_text.encode()
    out: dict[str, bytes] = {}
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        consumer.assign([ck.TopicPartition(topic, 0, ck.OFFSET_BEGINNING)])
        while deadline is None or time.monotonic() < deadline:
            msgs: list[Any] = consumer.consume(10_000, 0.05)
            done = False
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == _PARTITION_EOF:
                        done = True
                        continue
                    msg = f"reading state topic {topic!r}: {err}"
                    raise StateError(msg)
                key = m.key() or b""
                if key.startswith(prefix):
                    out[key.decode()] = m.value() or b""
            if done:
                return out
        return None
    finally:
        consumer.close()
