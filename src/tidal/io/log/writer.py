"""Appending to a partition: the file lock, torn-tail recovery, segment roll, retention.

Every append takes an exclusive ``fcntl.flock`` on ``<partition>/.lock``, so appends to one
partition are serialized across processes (and across :class:`PartitionWriter` objects in
one process), while different partitions proceed in parallel. Under the lock the writer
first checks that the partition is as it left it (same last segment, same size); if another
process appended or rolled meanwhile, it walks the new records from the last position it
knows, so finding the end costs only what others wrote. A tail that is not valid records
(a write cut short by a crash, a zero-filled block after a power loss, a bad CRC with no
valid record after it) is truncated there, and the truncation is logged with the file and
the byte and offset it happened at. Damage *followed* by valid records is left alone:
readers skip it and report the lost offsets as dead letters.

Then it encodes the batch, rolls to a new segment if this one would pass
``segment_bytes``, writes the batch with one ``write``, appends index entries, and fsyncs
when the policy is ``"batch"``. Retention runs after a roll.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tidal.core.batch import Array
from tidal.io.log.format import Header, encode, records_in, scan
from tidal.io.log.segment import (
    Records,
    SegmentCursor,
    Tail,
    index_entries,
    index_name,
    index_position,
    list_segments,
    read_index,
    segment_name,
    sync_dir,
    write_atomic,
)

__all__ = ["FsyncPolicy", "PartitionWriter"]

log = logging.getLogger("tidal.io.log")

_TAIL_READ = 64 << 20  # bytes of a torn tail looked at to count the records in it

FsyncPolicy = Literal["batch", "none"]
"""``"batch"``: fsync after every append; ``"none"``: only on ``sync()`` (a checkpoint)."""


@dataclass
class _Head:
    """The active segment as this writer knows it."""

    base: int
    path: Path
    fd: int
    size: int
    next_offset: int
    last_index: int  # position of the last index entry, -1 for none


class PartitionWriter:
    """Appends batches of records to one partition folder.

    Args:
        folder: the partition folder.
        segment_bytes: roll to a new segment when a batch would take a segment past this.
        fsync: the :data:`FsyncPolicy`.
        retention_bytes: keep at most about this many bytes (whole old segments go).
        retention_ms: delete old segments whose newest record is older than this.
        clock: the time now, in ms since the epoch (for age retention).
    """

    def __init__(
        self,
        folder: Path,
        *,
        segment_bytes: int,
        fsync: FsyncPolicy,
        retention_bytes: int | None,
        retention_ms: int | None,
        clock: Callable[[], int],
    ) -> None:
        self.folder = folder
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.retention_bytes = retention_bytes
        self.retention_ms = retention_ms
        self.clock = clock
        self._lock_fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        self._head: _Head | None = None
        self._unsynced: set[Path] = set()
        self._newest: dict[tuple[int, int], int] = {}  # (base, size) -> newest timestamp

    # -- life cycle -------------------------------------------------------------------
    def close(self) -> None:
        """Close the files (without syncing: call :meth:`sync` first if that matters)."""
        self._drop_head()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the partition's lock (blocks while another writer holds it)."""
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # -- appending --------------------------------------------------------------------
    def append(
        self,
        values: Sequence[bytes],
        timestamps: Array,
        keys: Sequence[bytes | None] | None,
        headers: Sequence[Sequence[Header] | None] | None,
    ) -> int:
        """Append records; return the offset of the first (the end offset if none)."""
        with self.locked():
            head = self._current()
            if not len(values):
                return head.next_offset
            enc = encode(head.next_offset, values, timestamps, keys, headers)
            if head.size > 0 and head.size + len(enc.data) > self.segment_bytes:
                head = self._roll(head)
            first = head.next_offset
            try:
                _write_all(head.fd, enc.data)
                entries = index_entries(
                    head.size + enc.starts, first + np.arange(enc.count), head.last_index
                )
                if len(entries):
                    self._append_index(head, entries)
                if self.fsync == "batch":
                    _datasync(head.fd)
                else:
                    self._unsynced.add(head.path)
            except OSError as exc:
                self._undo(head)
                if exc.filename is None:  # os.write names no file: say which segment
                    exc.filename = str(head.path)
                raise
            head.size += len(enc.data)
            head.next_offset += enc.count
            return first

    def end_offset(self) -> int:
        """The next offset to be written (takes the lock to recover the tail first)."""
        with self.locked():
            return self._current().next_offset

    def sync(self) -> None:
        """Fsync every segment written since the last sync, and the folder."""
        head = self._head
        for path in sorted(self._unsynced):
            if head is not None and path == head.path:
                os.fsync(head.fd)
                continue
            with contextlib.suppress(FileNotFoundError):  # deleted by retention
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        if self._unsynced:
            sync_dir(self.folder)
        self._unsynced.clear()

    # -- the active segment -----------------------------------------------------------
    def _drop_head(self) -> None:
        if self._head is not None:
            os.close(self._head.fd)
            self._head = None

    def _current(self) -> _Head:
        """The active segment, checked (and its tail recovered) under the lock."""
        bases = list_segments(self.folder)
        head = self._head
        if not bases:
            self._drop_head()
            return self._create(0)
        last = bases[-1]
        if head is not None and head.base == last:
            size = os.fstat(head.fd).st_size
            if size == head.size:
                return head
            if size > head.size:  # another process appended: walk what it wrote
                self._walk(head, head.size, head.next_offset)
                return head
        self._drop_head()
        return self._open(last)

    def _create(self, base: int) -> _Head:
        path = self.folder / segment_name(base)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self.fsync == "batch":
            sync_dir(self.folder)
        else:
            self._unsynced.add(path)
        self._head = _Head(base, path, fd, os.fstat(fd).st_size, base, -1)
        if self._head.size:  # a segment that a crashed writer had started
            self._drop_head()
            return self._open(base)
        return self._head

    def _open(self, base: int) -> _Head:
        path = self.folder / segment_name(base)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        pos, offset = index_position(path, base, 1 << 62)
        head = _Head(base, path, fd, pos, offset, -1)
        entries = read_index(path.with_name(index_name(base)), os.fstat(fd).st_size)
        if entries is not None and len(entries):
            head.last_index = int(entries["position"][-1])
        self._head = head
        self._walk(head, pos, offset)
        return head

    def _walk(self, head: _Head, pos: int, offset: int) -> None:
        """Walk from a known record boundary to the end; truncate a torn tail."""
        cursor = SegmentCursor(head.path, head.base, pos, offset)
        try:
            while True:
                ev = cursor.next(1 << 20)
                if ev is None:
                    break
                if isinstance(ev, Records):
                    continue
                if isinstance(ev, Tail):
                    self._truncate(head, ev, cursor.expect)
                    break
                log.warning(
                    "%s: %d damaged record(s) (offsets %d..%d) between bytes %d and %d: %s; "
                    "readers will skip them and report them as dead letters",
                    head.path,
                    ev.stop - ev.first,
                    ev.first,
                    ev.stop - 1,
                    ev.position,
                    ev.resume,
                    ev.reason,
                )
            head.size = cursor.pos
            head.next_offset = cursor.expect
        finally:
            cursor.close()

    def _truncate(self, head: _Head, tail: Tail, next_offset: int) -> None:
        size = os.fstat(head.fd).st_size
        with head.path.open("rb") as f:
            f.seek(tail.position)
            count, first, last = records_in(f.read(_TAIL_READ), next_offset)
        if count == 0:
            went = "no record header in them"
        elif count == 1:
            went = f"1 record lost: offset {first}"
        else:
            went = f"{count} records lost: offsets {first}..{last}"
        log.warning(
            "truncating the torn tail of %s at byte %d (%d bytes removed, %s; next offset %d): %s",
            head.path,
            tail.position,
            size - tail.position,
            went,
            next_offset,
            tail.reason,
        )
        os.ftruncate(head.fd, tail.position)
        os.fsync(head.fd)
        idx = head.path.with_name(index_name(head.base))
        entries = read_index(idx, tail.position)
        if entries is not None:
            write_atomic(idx, entries.tobytes(), durable=False)
            head.last_index = int(entries["position"][-1]) if len(entries) else -1

    def _undo(self, head: _Head) -> None:
        """Cut a failed append (a full disk, say) off the segment and its index.

        The partition is left as it was before the append, so that nothing half-written
        stays behind for readers to wait on; errors here are ignored (the next writer
        truncates a torn tail anyway).
        """
        with contextlib.suppress(OSError):
            os.ftruncate(head.fd, head.size)
        idx = head.path.with_name(index_name(head.base))
        with contextlib.suppress(OSError):
            entries = read_index(idx, head.size)
            if entries is not None and idx.stat().st_size != entries.nbytes:
                os.truncate(idx, entries.nbytes)

    def _append_index(self, head: _Head, entries: Array) -> None:
        idx = head.path.with_name(index_name(head.base))
        fd = os.open(idx, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _write_all(fd, entries.tobytes())
        finally:
            os.close(fd)
        head.last_index = int(entries["position"][-1])

    def _roll(self, head: _Head) -> _Head:
        self._drop_head()  # with fsync="batch" it is synced already
        new = self._create(head.next_offset)
        self._retain()
        return new

    # -- retention --------------------------------------------------------------------
    def apply_retention(self) -> list[int]:
        """Delete old segments past the size or age limit; return their base offsets."""
        with self.locked():
            return self._retain()

    def _retain(self) -> list[int]:
        if self.retention_bytes is None and self.retention_ms is None:
            return []
        bases = list_segments(self.folder)
        sizes = [(self.folder / segment_name(b)).stat().st_size for b in bases]
        total = sum(sizes)
        gone: list[int] = []
        now = self.clock()
        for base, size in zip(bases[:-1], sizes[:-1], strict=True):  # never the active one
            by_size = self.retention_bytes is not None and total - size >= self.retention_bytes
            by_age = self.retention_ms is not None and self._newest_ms(base, size) < (
                now - self.retention_ms
            )
            if not (by_size or by_age):
                break
            for name in (index_name(base), segment_name(base)):
                with contextlib.suppress(FileNotFoundError):
                    (self.folder / name).unlink()
            total -= size
            gone.append(base)
            why = "size" if by_size else "age"
            log.info("retention (%s): deleted segment %s", why, self.folder / segment_name(base))
        return gone

    def _newest_ms(self, base: int, size: int) -> int:
        """The newest record timestamp of a sealed segment (scanned once, then cached)."""
        key = (base, size)
        if key not in self._newest:
            data = (self.folder / segment_name(base)).read_bytes()
            newest = -(1 << 63)
            at = 0
            while at < len(data):
                sc = scan(data[at:])
                if len(sc):
                    newest = max(newest, int(sc.header["timestamp"].max()))
                if sc.stop != "end" or not sc.end:
                    break
                at += sc.end
            self._newest[key] = newest
        return self._newest[key]


_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
