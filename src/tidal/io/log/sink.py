"""The embedded log as a pipeline sink: :class:`LogSink`.

Each row of a batch becomes one record: the user columns as a JSON object (encoded for the
whole batch in one orjson call), the ``key`` column's value as the record key, and the
row's event time (``Batch.time``) as the record timestamp (now, when the batch has none).

Partitioning, as Kafka's default partitioner does it: with a ``key`` column, a row goes to
partition ``hash(key bytes) % partitions``, where the hash is zlib's CRC-32 passed through
MurmurHash3's 32-bit finalizer (stable across runs and processes; computed once per
distinct key). The finalizer matters: CRC-32 alone is linear, so keys such as ``s1``,
``s2``, ``s3`` all land in the same partition of two. All records of a key stay in order
in one partition;
without a key, each batch goes whole to the next partition in turn (sticky round-robin:
one append per batch). Key bytes are the UTF-8 of strings, bytes as they are, and the
text of numbers (``7`` -> ``b"7"``); a missing key (``None``) is a null key and goes to
partition 0.

This sink is at-least-once; every record is appended through :meth:`LogSink._append_rows`,
the hook the exactly-once variant, :class:`TransactionalLogSink`, builds on.

Example:
    >>> import tempfile
    >>> from tidal.io.log.topic import Topic
    >>> tmp = tempfile.TemporaryDirectory()
    >>> sink = LogSink(tmp.name, "alerts", key="sensor", partitions=2)
    >>> sink.write(Batch({"sensor": ["a", "b", "a"], "level": [3, 1, 4]}, time=[10, 20, 30]))
    >>> sink.close()
    >>> topic = Topic.open(tmp.name, "alerts")
    >>> topic.read(0, 0).values.tolist()
    [b'{"sensor":"b","level":1}']
    >>> one = topic.read(1, 0)
    >>> one.values.tolist(), one.timestamps.tolist(), one.keys.tolist()
    ([b'{"sensor":"a","level":3}', b'{"sensor":"a","level":4}'], [10, 30], [b'a', b'a'])
    >>> topic.close(); tmp.cleanup()
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import orjson

from tidal.core.batch import Array, Batch
from tidal.errors import ConfigError, ConnectorError
from tidal.io.base import BaseSink
from tidal.io.formats.base import ValueFormat
from tidal.io.jsonl import dumps_rows
from tidal.io.log.topic import Topic
from tidal.io.log.writer import FsyncPolicy

__all__ = ["LogSink", "TransactionalLogSink", "key_bytes", "partition_of", "route_keys"]


def key_bytes(value: Any) -> bytes | None:
    """The bytes of a key value (``None`` stays ``None``).

    Example:
        >>> key_bytes("s1"), key_bytes(7), key_bytes(True), key_bytes(None)
        (b's1', b'7', b'true', None)
    """
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int | float):
        return str(value).encode()
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def partition_of(keys: Array, partitions: int) -> Array:
    """The partition of each key (bytes; ``None`` goes to partition 0).

    Example:
        >>> partition_of(np.array([b"a", b"b", b"c", None], dtype=object), 2).tolist()
        [1, 0, 1, 0]
    """
    crc = np.fromiter(
        (zlib.crc32(k) if k is not None else 0 for k in keys.tolist()),
        dtype=np.uint64,
        count=len(keys),
    )
    h = crc ^ (crc >> np.uint64(16))  # MurmurHash3 fmix32, in uint64 masked to 32 bits
    h = (h * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(16)
    out: Array = (h % np.uint64(partitions)).astype(np.int64)  # fmix32(0) = 0: None -> 0
    return out


def route_keys(column: Array, partitions: int) -> tuple[Array, Array]:
    """Key bytes and partition of each row, computed once per distinct key.

    Example:
        >>> keys, parts = route_keys(np.array(["a", "b", "a"], dtype=object), 4)
        >>> keys.tolist(), parts.tolist()
        ([b'a', b'b', b'a'], [3, 0, 3])
    """
    n = len(column)
    try:
        uniq, inverse = np.unique(column, return_inverse=True)
        distinct = uniq.tolist()
    except TypeError:  # None mixed with text, or other unorderable values
        seen: dict[Any, int] = {}
        try:
            inverse = np.fromiter(
                (seen.setdefault(v, len(seen)) for v in column.tolist()), dtype=np.int64, count=n
            )
        except TypeError as exc:
            msg = f"key values must be text, bytes or numbers: {exc}"
            raise ConnectorError(msg) from exc
        distinct = list(seen)
    kb = np.empty(len(distinct), dtype=object)
    kb[:] = [key_bytes(k) for k in distinct]
    parts = partition_of(kb, partitions)
    inverse = np.asarray(inverse).reshape(-1)
    return kb[inverse], parts[inverse]


class LogSink(BaseSink):
    """Write batches to a topic of the embedded log (created if missing).

    Args:
        data_dir: the data directory (``None``: ``$TIDAL_DATA_DIR`` or ``./.tidal``).
        topic: the topic.
        key: the column whose value is each record's key (and picks its partition).
        partitions: how many partitions to create the topic with if it does not exist
            (default 1); if it exists, it must have this many.
        value_format: ``"json"`` (the user columns as a JSON object) or ``"raw"`` (the
            ``value`` column, bytes or text, as it is).
        fsync: ``"batch"`` (every write is durable when it returns) or ``"none"``
            (durable at :meth:`flush`).
        format: any value format of :mod:`tidal.io.formats` (Avro, Protobuf, Arrow, ...)
            instead of ``value_format``. A batched format (Arrow) writes one record per
            partition a batch touches, holding all its rows; that record's key is null
            and its timestamp the rows' latest event time.

    Raises:
        ConfigError: for a bad format or a partition count that does not match.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None,
        topic: str,
        *,
        key: str | None = None,
        partitions: int | None = None,
        value_format: Literal["json", "raw"] = "json",
        fsync: FsyncPolicy = "batch",
        format: ValueFormat | None = None,
    ) -> None:
        if value_format not in ("json", "raw"):
            msg = f"value_format must be 'json' or 'raw', got {value_format!r}"
            raise ConfigError(msg)
        if format is not None and value_format != "json":
            msg = f"LogSink({topic!r}): pass format= or value_format=, not both"
            raise ConfigError(msg)
        self.format = format
        self.data_dir = data_dir
        self.topic_name = topic
        self.key = key
        self.partitions = partitions
        self.value_format = value_format
        self.fsync: FsyncPolicy = fsync
        self.topic: Topic | None = None
        self._turn = 0

    @property
    def label(self) -> str:
        """The sink for messages."""
        return f"LogSink({self.topic_name!r})"

    def open(self) -> None:
        """Open the topic, creating it when missing."""
        if self.topic is not None:
            return
        if Topic.exists(self.data_dir, self.topic_name):
            topic = Topic.open(self.data_dir, self.topic_name, fsync=self.fsync)
            if self.partitions is not None and topic.partitions != self.partitions:
                topic.close()
                msg = (
                    f"{self.label}: the topic has {topic.partitions} partitions, not "
                    f"{self.partitions}; pass partitions={topic.partitions} or None"
                )
                raise ConfigError(msg)
        else:
            topic = Topic.create(
                self.data_dir,
                self.topic_name,
                partitions=self.partitions or 1,
                exist_ok=True,
                fsync=self.fsync,
            )
        self.topic = topic

    def write(self, batch: Batch) -> None:
        """Append the batch's rows (one append per partition it touches)."""
        if not len(batch):
            return
        self.open()
        assert self.topic is not None
        n = len(batch)
        stamps = (
            np.full(n, self.topic.clock(), dtype=np.int64) if batch.time is None else batch.time
        )
        if self.format is not None and self.format.batched:
            self._write_batched(batch, stamps)
            return
        values = self._values(batch)
        if self.key is None:
            self._append_rows(self._turn, values, None, stamps)
            self._turn = (self._turn + 1) % self.topic.partitions
            return
        keys, parts = route_keys(batch[self.key], self.topic.partitions)
        if self.topic.partitions == 1:
            self._append_rows(0, values, keys, stamps)
            return
        order = np.argsort(parts, kind="stable")
        cuts = np.searchsorted(parts[order], np.arange(self.topic.partitions + 1))
        for p in range(self.topic.partitions):
            rows = order[cuts[p] : cuts[p + 1]]
            if len(rows):
                self._append_rows(p, values[rows], keys[rows], stamps[rows])

    def _write_batched(self, batch: Batch, stamps: Array) -> None:
        """One record per partition touched, holding its rows (a batched format)."""
        assert self.topic is not None and self.format is not None
        if self.key is None:
            groups = [(self._turn, np.arange(len(batch)))]
            self._turn = (self._turn + 1) % self.topic.partitions
        else:
            _, parts = route_keys(batch[self.key], self.topic.partitions)
            groups = [(p, np.flatnonzero(parts == p)) for p in np.unique(parts).tolist()]
        for p, rows in groups:
            value = np.empty(1, dtype=object)
            value[:] = self.format.encode(batch.take(rows))
            keys = np.array([None], dtype=object)
            self._append_rows(p, value, keys, np.array([stamps[rows].max()], dtype=np.int64))

    def _values(self, batch: Batch) -> Array:
        if self.format is not None:
            lines = self.format.encode(batch)
        elif self.value_format == "json":
            lines = dumps_rows(batch, self.label).split(b"\n")
            lines.pop()
        else:
            if "value" not in batch:
                msg = (
                    f"{self.label}: value_format='raw' writes the column 'value'; the batch "
                    f"has {batch.names}"
                )
                raise ConnectorError(msg)
            col = batch["value"].tolist()
            lines = [v.encode() if isinstance(v, str) else v for v in col]
        out = np.empty(len(lines), dtype=object)
        out[:] = lines
        return out

    def _append_rows(
        self, partition: int, values: Array, keys: Array | None, timestamps: Array
    ) -> int:
        """Append rows to one partition; return the first offset.

        The one place records are written: the hook for transactional variants.
        """
        assert self.topic is not None
        return self.topic.append(partition, values, keys=keys, timestamps=timestamps)

    def assign_worker(self, index: int, count: int) -> None:
        """Nothing to change: appends are serialized by each partition's lock.

        So the sinks of several worker processes (``tidal run --workers N``) may share a
        topic; the output is at least once, as always with this sink.
        """

    def flush(self) -> None:
        """Fsync what was written (a no-op with ``fsync="batch"``: it is durable already)."""
        if self.topic is not None:
            self.topic.sync()

    def close(self) -> None:
        """Flush and close the topic."""
        if self.topic is not None:
            self.topic.sync()
            self.topic.close()
            self.topic = None


def _pack(items: list[bytes | None]) -> tuple[Array, Array, Array]:
    """Byte strings as one uint8 buffer, end offsets and a null mask (no object arrays)."""
    null = np.fromiter((v is None for v in items), dtype=bool, count=len(items))
    lengths = np.fromiter((len(v or b"") for v in items), dtype=np.int64, count=len(items))
    blob = np.frombuffer(b"".join(v or b"" for v in items), dtype=np.uint8)
    return blob, np.cumsum(lengths), null


def _unpack(blob: Array, ends: Array, null: Array | None = None) -> Array:
    """The inverse of :func:`_pack`: an object array of bytes (``None`` where null)."""
    data = np.asarray(blob, dtype=np.uint8).tobytes()
    stops = np.asarray(ends, dtype=np.int64).tolist()
    starts = [0, *stops[:-1]]
    out = np.empty(len(stops), dtype=object)
    out[:] = [data[a:b] for a, b in zip(starts, stops, strict=True)]
    if null is not None:
        out[np.asarray(null, dtype=bool)] = None
    return out


class TransactionalLogSink(LogSink):
    """Exactly-once writes to a topic: appended when the checkpoint commits, once.

    The :class:`~tidal.io.base.TransactionalSink` protocol over the log (see
    ``docs/decisions/0007-exactly-once.md``):

    - ``write`` routes rows to partitions as :class:`LogSink` does, but keeps them in memory
      (readers see nothing);
    - ``prepare(N)`` returns the rows since the last prepare, packed as arrays, with each
      partition's *end offset before the append*; the runtime stores that inside checkpoint
      ``N``, which makes the rows durable with it;
    - ``commit(N, pending)`` appends each partition's rows with
      :meth:`LogSink._append_rows`, skipping the records that are already there: a partition
      whose end offset is ``start + count`` was committed before (a repeated commit changes
      nothing), one at ``start + k`` lost the rest of a torn append, and gets rows ``k:``;
    - ``recover(pending)`` commits the restored checkpoint's rows; rows staged by the
      attempt that crashed were only in its memory.

    The end offsets make appends idempotent without transaction markers, so readers need
    no ``read_committed`` filtering; in exchange this sink must be the only writer of the
    topic's partitions (a foreign append between prepare and commit is detected and
    raises). Rows written after the last prepare are discarded by ``close``. Output
    becomes visible once per checkpoint, and a checkpoint holds one interval's output.

    Args: as :class:`LogSink`.

    Example:
        >>> import tempfile
        >>> from tidal.io.log.topic import Topic
        >>> tmp = tempfile.TemporaryDirectory()
        >>> sink = TransactionalLogSink(tmp.name, "scores", key="user", partitions=2)
        >>> sink.recover([]); sink.open()
        >>> sink.write(Batch({"user": ["a", "b", "a"], "score": [1, 2, 3]}, time=[5, 6, 7]))
        >>> pending = sink.prepare(1)
        >>> topic = Topic.open(tmp.name, "scores")
        >>> topic.end_offset(0) + topic.end_offset(1)  # prepared: nothing visible yet
        0
        >>> sink.commit(1, pending); sink.commit(1, pending)  # the second changes nothing
        >>> topic.end_offset(0) + topic.end_offset(1)
        3
        >>> sink.close(); topic.close(); tmp.cleanup()
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._staged: list[tuple[int, Array, Array | None, Array]] = []

    def assign_worker(self, index: int, count: int) -> None:
        """Refuse to be split: the sink must be its topic's only writer (see the class).

        Raises:
            ConfigError: when ``count > 1``.
        """
        if count > 1:
            msg = (
                f"{self.label} must be the only writer of its topic (its commits check the "
                f"partitions' end offsets), so {count} worker processes cannot share it; with "
                "--workers write the output to part files (tidal.io.jsonl.JsonlPartSink, "
                "exactly once) or to a LogSink (at least once)"
            )
            raise ConfigError(msg)

    def _append_rows(
        self, partition: int, values: Array, keys: Array | None, timestamps: Array
    ) -> int:
        """Stage the rows until the checkpoint commits them (no offset yet: returns -1)."""
        self._staged.append((partition, values, keys, np.asarray(timestamps, dtype=np.int64)))
        return -1

    def prepare(self, checkpoint_id: int) -> dict[str, Any]:
        """The rows written since the last prepare, packed, with each partition's start."""
        self.open()
        assert self.topic is not None
        staged, self._staged = self._staged, []
        values: list[bytes | None] = []
        keys: list[bytes | None] = []
        parts: list[Array] = []
        stamps: list[Array] = []
        for p, v, k, t in staged:
            values.extend(v.tolist())
            keys.extend([None] * len(v) if k is None else k.tolist())
            parts.append(np.full(len(v), p, dtype=np.int32))
            stamps.append(t)
        blob, ends, _ = _pack(values)
        key_blob, key_ends, key_null = _pack(keys)
        partition = np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)
        starts = {str(p): self.topic.end_offset(int(p)) for p in np.unique(partition).tolist()}
        return {
            "checkpoint": checkpoint_id,
            "starts": starts,
            "partition": partition,
            "timestamps": np.concatenate(stamps) if stamps else np.empty(0, dtype=np.int64),
            "values": blob,
            "value_ends": ends,
            "keys": key_blob,
            "key_ends": key_ends,
            "key_null": key_null,
        }

    def commit(self, checkpoint_id: int, pending: dict[str, Any]) -> None:
        """Append the prepared rows that are not in the topic yet; fsync.

        Raises:
            ConnectorError: if a partition's end offset shows a foreign append or a
                truncation since ``prepare``.
        """
        starts = pending.get("starts") or {}
        if not starts:
            return
        self.open()
        assert self.topic is not None
        partition = np.asarray(pending["partition"], dtype=np.int64)
        values = _unpack(pending["values"], pending["value_ends"])
        keys = _unpack(pending["keys"], pending["key_ends"], pending["key_null"])
        stamps = np.asarray(pending["timestamps"], dtype=np.int64)
        for p_text, start in starts.items():
            p = int(p_text)
            rows = np.flatnonzero(partition == p)
            done = self.topic.end_offset(p) - int(start)
            if not 0 <= done <= len(rows):
                msg = (
                    f"{self.label}: checkpoint {checkpoint_id} prepared {len(rows)} records for "
                    f"partition {p} at offset {start}, but the partition now ends at "
                    f"{start + done}; another writer appended to it (or it was truncated). "
                    "An exactly-once sink must be the only writer of its topic"
                )
                raise ConnectorError(msg)
            if done < len(rows):
                rows = rows[done:]
                super()._append_rows(p, values[rows], keys[rows], stamps[rows])
        self.topic.sync()

    def recover(self, pending: Sequence[dict[str, Any]]) -> None:
        """Commit the restored checkpoint's rows; forget anything staged in memory."""
        self._staged = []
        for info in pending:
            self.commit(int(info["checkpoint"]), info)

    def close(self) -> None:
        """Discard rows not prepared, then close the topic."""
        self._staged = []
        super().close()
