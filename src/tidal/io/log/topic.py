"""Topics: partitioned, append-only logs under one data directory, like Kafka topics.

::

    <data_dir>/log/<topic>/topic.json          {"partitions": 3, "segment_bytes": ...,
                                                "retention_bytes": null, "retention_ms": ...}
    <data_dir>/log/<topic>/<partition>/...     segments and indexes (see segment.py)
    <data_dir>/groups/<group>/<topic>.json     committed consumer positions (groups.py)

Offsets are dense per partition (0, 1, 2, ...) and never reused, so a position is just the
next offset to read, as in Kafka. A :class:`Topic` object is not thread-safe; processes
are safe: appends to one partition are serialized by a file lock, appends to different
partitions run in parallel, and readers never block writers.

Example:
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> topic = Topic.create(tmp.name, "events", partitions=2)
    >>> topic.append(0, [b'{"n":1}', b'{"n":2}'], keys=[b"a", None])
    0
    >>> batch = topic.read(0, 0, max_records=10)
    >>> batch.offsets.tolist(), batch.values.tolist(), batch.keys.tolist()
    ([0, 1], [b'{"n":1}', b'{"n":2}'], [b'a', None])
    >>> topic.end_offset(0), topic.end_offset(1), Topic.names(tmp.name)
    (2, 0, ['events'])
    >>> topic.close(); tmp.cleanup()
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import orjson

from tidal.core.duration import Duration, to_millis
from tidal.errors import ConfigError, ConnectorError, os_error_text
from tidal.io.log.format import Header
from tidal.io.log.groups import check_name, remove_positions, resolve_data_dir
from tidal.io.log.reader import (
    PartitionReader,
    RecordBatch,
    end_offset,
    offset_for_time,
    start_offset,
)
from tidal.io.log.segment import list_segments, segment_name, write_atomic
from tidal.io.log.writer import FsyncPolicy, PartitionWriter

__all__ = ["DEFAULT_SEGMENT_BYTES", "WRITERS", "Topic", "TopicConfig"]

DEFAULT_SEGMENT_BYTES = 64 << 20
WRITERS = ".writers"
"""A file in the topic folder: every Topic that appends holds a shared lock on it."""
_DELETING = "~deleting-"  # a topic folder being deleted ("~" is not allowed in names)


def _try_lock(path: Path, how: int) -> int:
    """An fd holding a lock on ``path``, or -1 if someone else holds a conflicting one."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return -1
    return fd


_MIN_SEGMENT, _MAX_SEGMENT = 1 << 10, 1 << 31


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class TopicConfig:
    """A topic's settings, stored in ``topic.json``.

    Attributes:
        partitions: the number of partitions.
        segment_bytes: roll to a new segment file past this size.
        retention_bytes: keep about this many bytes per partition (``None``: no limit).
        retention_ms: delete segments whose newest record is older (``None``: no limit).
    """

    partitions: int
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    retention_bytes: int | None = None
    retention_ms: int | None = None

    def check(self, name: str) -> TopicConfig:
        """Raise :class:`ConfigError` for a setting out of range."""
        problems = []
        if not isinstance(self.partitions, int) or not 1 <= self.partitions <= 10_000:
            problems.append(f"partitions must be 1 to 10000, got {self.partitions!r}")
        if not _MIN_SEGMENT <= self.segment_bytes <= _MAX_SEGMENT:
            problems.append(f"segment_bytes must be 1 KiB to 2 GiB, got {self.segment_bytes}")
        if self.retention_bytes is not None and self.retention_bytes <= 0:
            problems.append(f"retention_bytes must be > 0, got {self.retention_bytes}")
        if self.retention_ms is not None and self.retention_ms <= 0:
            problems.append(f"retention must be > 0, got {self.retention_ms} ms")
        if problems:
            msg = f"topic {name!r}: " + "; ".join(problems)
            raise ConfigError(msg)
        return self


class Topic:
    """A partitioned log under a data directory; open one with :meth:`create` or :meth:`open`.

    Args:
        root: the data directory.
        name: the topic's name.
        config: its settings.
        fsync: ``"batch"`` (fsync every append: durable when ``append`` returns) or
            ``"none"`` (durable after :meth:`sync`, e.g. at a checkpoint).
        clock: the time now in ms since the epoch (default timestamps, age retention).
    """

    def __init__(
        self,
        root: Path,
        name: str,
        config: TopicConfig,
        *,
        fsync: FsyncPolicy = "batch",
        clock: Callable[[], int] | None = None,
    ) -> None:
        if fsync not in ("batch", "none"):
            msg = f"fsync must be 'batch' or 'none', got {fsync!r}"
            raise ConfigError(msg)
        self.root = root
        self.name = name
        self.config = config
        self.fsync: FsyncPolicy = fsync
        self.clock = clock or _now_ms
        self.path = root / "log" / name
        self._writers: dict[int, PartitionWriter] = {}
        self._readers: dict[int, PartitionReader] = {}
        self._writing = -1  # a shared lock on WRITERS while this object may append

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        data_dir: str | os.PathLike[str] | None,
        name: str,
        *,
        partitions: int = 1,
        retention_bytes: int | None = None,
        retention: Duration | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        exist_ok: bool = False,
        fsync: FsyncPolicy = "batch",
        clock: Callable[[], int] | None = None,
    ) -> Topic:
        """Create a topic (its folders and ``topic.json``) and open it.

        Args:
            data_dir: the data directory (``None``: ``$TIDAL_DATA_DIR`` or ``./.tidal``).
            name: letters, digits, ``.``, ``_``, ``-``.
            partitions: how many.
            retention_bytes: per partition, delete the oldest segments beyond this size.
            retention: delete segments whose newest record is older (``"7d"``).
            segment_bytes: the size at which a partition starts a new segment file.
            exist_ok: open the topic if it exists (with the same number of partitions).
            fsync: see :class:`Topic`.
            clock: see :class:`Topic`.

        Raises:
            ConfigError: for bad settings, or an existing topic with other partitions.
            ConnectorError: if the topic exists and ``exist_ok`` is false.
        """
        root = resolve_data_dir(data_dir)
        check_name(name, "topic")
        config = TopicConfig(
            partitions=partitions,
            segment_bytes=segment_bytes,
            retention_bytes=retention_bytes,
            retention_ms=None if retention is None else to_millis(retention),
        ).check(name)
        meta = root / "log" / name / "topic.json"
        if meta.exists():
            if not exist_ok:
                msg = f"topic {name!r} already exists in {root}; open it with Topic.open"
                raise ConnectorError(msg)
            topic = cls.open(root, name, fsync=fsync, clock=clock)
            if topic.config.partitions != partitions:
                msg = (
                    f"topic {name!r} exists with {topic.config.partitions} partitions, not "
                    f"{partitions}; use the existing count or another topic name"
                )
                raise ConfigError(msg)
            return topic
        try:
            for p in range(partitions):
                (meta.parent / str(p)).mkdir(parents=True, exist_ok=True)
            write_atomic(
                meta, orjson.dumps({"version": 1, **asdict(config)}, option=orjson.OPT_INDENT_2)
            )
        except OSError as exc:
            msg = f"cannot create topic {name!r} in {root}: {os_error_text(exc)}"
            raise ConnectorError(msg) from exc
        return cls(root, name, config, fsync=fsync, clock=clock)

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str] | None,
        name: str,
        *,
        fsync: FsyncPolicy = "batch",
        clock: Callable[[], int] | None = None,
    ) -> Topic:
        """Open an existing topic.

        Raises:
            ConnectorError: if there is no such topic, or its ``topic.json`` is unreadable.
        """
        root = resolve_data_dir(data_dir)
        check_name(name, "topic")
        meta = root / "log" / name / "topic.json"
        try:
            data: Any = orjson.loads(meta.read_bytes())
            config = TopicConfig(
                partitions=int(data["partitions"]),
                segment_bytes=int(data.get("segment_bytes", DEFAULT_SEGMENT_BYTES)),
                retention_bytes=data.get("retention_bytes"),
                retention_ms=data.get("retention_ms"),
            )
        except FileNotFoundError:
            known = ", ".join(cls.names(root)) or "none"
            msg = (
                f"no topic {name!r} in {root} (topics: {known}); create it with "
                f"`tidal log create {name} --partitions N` or Topic.create"
            )
            raise ConnectorError(msg) from None
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            msg = f"cannot read {meta}: {exc}"
            raise ConnectorError(msg) from exc
        return cls(root, name, config, fsync=fsync, clock=clock)

    @staticmethod
    def names(data_dir: str | os.PathLike[str] | None) -> list[str]:
        """The topics in a data directory, sorted."""
        folder = resolve_data_dir(data_dir) / "log"
        if not folder.is_dir():
            return []
        return sorted(
            p.name
            for p in folder.iterdir()
            if not p.name.startswith(_DELETING) and (p / "topic.json").is_file()
        )

    @staticmethod
    def delete(data_dir: str | os.PathLike[str] | None, name: str) -> list[str]:
        """Delete a topic: its records, its settings and every group's positions on it.

        Refused while another process may write it: a feed holding it, or any open
        :class:`Topic` that appended (a producer, a pipeline's ``LogSink``), because its
        next append would go nowhere. The folder is first renamed away, so that no reader
        ever sees half a topic.

        Returns:
            the groups whose positions on the topic were removed.

        Raises:
            ConnectorError: if there is no such topic, or a writer holds it.

        Example:
            >>> import tempfile
            >>> tmp = tempfile.TemporaryDirectory()
            >>> Topic.create(tmp.name, "old").close()
            >>> Topic.delete(tmp.name, "old"), Topic.names(tmp.name)
            ([], [])
            >>> tmp.cleanup()
        """
        topic = Topic.open(data_dir, name)  # raises for a topic that does not exist
        path, root = topic.path, topic.root
        topic.close()
        try:
            feed = _try_lock(path / "feed.lock", fcntl.LOCK_EX)
            if feed < 0:
                msg = (
                    f"cannot delete topic {name!r}: a feed is writing it (it holds "
                    f"{path / 'feed.lock'}: a running `tidal demo`?); stop it first"
                )
                raise ConnectorError(msg)
            writers = _try_lock(path / WRITERS, fcntl.LOCK_EX)
            if writers < 0:
                os.close(feed)
                msg = (
                    f"cannot delete topic {name!r}: another process has it open for writing "
                    "(a `tidal log produce`, or a pipeline with a LogSink); stop it first"
                )
                raise ConnectorError(msg)
            try:
                gone = path.with_name(f"{_DELETING}{name}.{os.getpid()}")
                path.rename(gone)
                shutil.rmtree(gone)
            finally:
                os.close(writers)
                os.close(feed)
            return remove_positions(root, name)
        except OSError as exc:
            msg = f"cannot delete topic {name!r} in {root}: {os_error_text(exc)}"
            raise ConnectorError(msg) from exc

    @staticmethod
    def exists(data_dir: str | os.PathLike[str] | None, name: str) -> bool:
        """Whether the topic exists."""
        return (resolve_data_dir(data_dir) / "log" / name / "topic.json").is_file()

    def __enter__(self) -> Topic:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Topic({self.name!r}, partitions={self.partitions}, path='{self.path}')"

    # -- partitions ---------------------------------------------------------------------
    @property
    def partitions(self) -> int:
        """The number of partitions."""
        return self.config.partitions

    def folder(self, partition: int) -> Path:
        """A partition's folder.

        Raises:
            ConfigError: for a partition the topic does not have.
        """
        if not isinstance(partition, int | np.integer) or not 0 <= partition < self.partitions:
            msg = (
                f"topic {self.name!r} has partitions 0..{self.partitions - 1}, "
                f"there is no partition {partition!r}"
            )
            raise ConfigError(msg)
        return self.path / str(int(partition))

    def _writer(self, partition: int) -> PartitionWriter:
        w = self._writers.get(partition)
        if w is None:
            self._hold_for_writing()
            folder = self.folder(partition)
            folder.mkdir(exist_ok=True)  # (not its parent: a deleted topic stays deleted)
            w = PartitionWriter(
                folder,
                segment_bytes=self.config.segment_bytes,
                fsync=self.fsync,
                retention_bytes=self.config.retention_bytes,
                retention_ms=self.config.retention_ms,
                clock=self.clock,
            )
            self._writers[partition] = w
        return w

    def _hold_for_writing(self) -> None:
        """Hold a shared lock on the topic's WRITERS file, so that it is not deleted."""
        if self._writing >= 0:
            return
        fd = os.open(self.path / WRITERS, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits out a delete in progress, then:
        if not (self.path / "topic.json").exists():
            os.close(fd)
            msg = f"topic {self.name!r} was deleted from {self.root}; create it again"
            raise ConnectorError(msg)
        self._writing = fd

    # -- writing ------------------------------------------------------------------------
    def append(
        self,
        partition: int,
        values: Sequence[bytes] | np.ndarray[Any, Any],
        keys: Sequence[bytes | None] | np.ndarray[Any, Any] | None = None,
        timestamps: Any = None,
        headers: Sequence[Sequence[Header] | None] | None = None,
    ) -> int:
        """Append records to a partition in one write; return the first one's offset.

        Args:
            partition: the partition.
            values: the values, bytes each (a list or an object array).
            keys: one key per value (bytes or ``None``), or ``None``.
            timestamps: int ms since the epoch per value (default: now).
            headers: per value a list of ``(name, bytes)`` or ``None``.

        Raises:
            ConnectorError: for values, keys, timestamps or headers that do not fit, or when
                the partition cannot be written (a full disk, a read-only file system): then
                none of the records went in.
        """
        self.folder(partition)  # raises ConfigError for a partition the topic does not have
        n = len(values)
        ts = np.full(n, self.clock(), dtype=np.int64) if timestamps is None else timestamps
        try:
            writer = self._writer(partition)
            return writer.append(values, np.asarray(ts, dtype=np.int64), keys, headers)  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:
            msg = f"cannot append to topic {self.name!r} partition {partition}: {exc}"
            raise ConnectorError(msg) from exc
        except OSError as exc:
            msg = (
                f"cannot append {n} records to topic {self.name!r} partition {partition}: "
                f"{os_error_text(exc)}"
            )
            raise ConnectorError(msg) from exc

    def sync(self, partition: int | None = None) -> None:
        """Fsync what was appended to ``partition`` (or every partition) since the last sync."""
        for p, w in self._writers.items():
            if partition is None or p == partition:
                w.sync()

    def apply_retention(self) -> int:
        """Apply the retention limits to every partition now; return the segments deleted."""
        if self.config.retention_bytes is None and self.config.retention_ms is None:
            return 0
        return sum(len(self._writer(p).apply_retention()) for p in range(self.partitions))

    # -- reading ------------------------------------------------------------------------
    def read(self, partition: int, offset: int, max_records: int = 8192) -> RecordBatch:
        """Up to ``max_records`` records from ``offset`` (sequential reads reuse a cursor).

        Raises:
            ConnectorError: for an offset past the end of the partition.
        """
        r = self._readers.get(partition)
        if r is None or r.next_offset != offset:
            if r is not None:
                r.close()
            r = self.reader(partition, offset)
            self._readers[partition] = r
        return r.read(max_records)

    def reader(self, partition: int, offset: int, *, step: str | None = None) -> PartitionReader:
        """A sequential reader of ``partition`` from ``offset``.

        Raises:
            ConfigError: for a negative offset.
            ConnectorError: for an offset past the end of the partition.
        """
        folder = self.folder(partition)
        if offset < 0:
            msg = f"an offset must be >= 0, got {offset}"
            raise ConfigError(msg)
        end = self.end_offset(partition)
        if offset > end:
            msg = (
                f"offset {offset} is past the end of topic {self.name!r} partition {partition} "
                f"(next offset {end}); was the topic deleted and created again?"
            )
            raise ConnectorError(msg)
        return PartitionReader(self.name, folder, int(partition), int(offset), step=step)

    def start_offset(self, partition: int) -> int:
        """The first offset still stored (it advances when retention deletes segments)."""
        return start_offset(self.folder(partition))

    def end_offset(self, partition: int) -> int:
        """The offset the next record appended to ``partition`` will get."""
        return end_offset(self.folder(partition))

    def offset_for_time(self, partition: int, time_ms: int) -> int:
        """The first offset whose record timestamp is ``>= time_ms`` (the end if none)."""
        return offset_for_time(self.folder(partition), int(time_ms))

    def segments(self, partition: int) -> list[tuple[int, int]]:
        """``(base offset, bytes)`` of each segment of ``partition``."""
        folder = self.folder(partition)
        out = []
        for base in list_segments(folder):
            try:
                out.append((base, (folder / segment_name(base)).stat().st_size))
            except FileNotFoundError:
                continue
        return out

    def size_bytes(self, partition: int) -> int:
        """Bytes the segments of ``partition`` take."""
        return sum(size for _, size in self.segments(partition))

    def close(self) -> None:
        """Close every file (appended data is synced first when fsync is ``"none"``)."""
        for w in self._writers.values():
            w.sync()
            w.close()
        for r in self._readers.values():
            r.close()
        self._writers.clear()
        self._readers.clear()
        if self._writing >= 0:
            os.close(self._writing)
            self._writing = -1
