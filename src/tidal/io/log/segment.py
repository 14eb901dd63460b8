"""Segment files, their sparse offset indexes, and a cursor that walks a segment.

A partition is a folder of segments named by the offset of their first record::

    <data_dir>/log/<topic>/<partition>/
        .lock                          fcntl lock: appends are serialized across processes
        00000000000000000000.seg       records 0 ..
        00000000000000000000.idx       sparse index of that segment
        00000000000000052311.seg       the active (last) segment, records 52311 ..
        00000000000000052311.idx

An index holds ``(offset, position)`` pairs (two int64) for the first record in each
4 KiB block of its segment. It is only an accelerator: a missing, short or stale index is
rebuilt by scanning the segment, and every entry is checked against the record it points
to before it is trusted.

:class:`SegmentCursor` walks a segment from a known record boundary and turns what it
finds into events: :class:`Records` (a verified chunk), :class:`Damage` (bytes that are
not valid records, followed by a valid one: the lost offsets are known because offsets are
dense) and :class:`Tail` (invalid or incomplete bytes up to the end of the file: a torn
tail, or a write in progress). What a tail means is the caller's decision: a writer
holding the lock truncates it, a reader waits, and a reader of a sealed segment reports it.

Example:
    >>> import tempfile
    >>> from tidal.io.log.format import encode
    >>> tmp = tempfile.TemporaryDirectory()
    >>> seg = Path(tmp.name) / segment_name(0)
    >>> _ = seg.write_bytes(bytes(encode(0, [b"a", b"b"], np.zeros(2, dtype=np.int64)).data))
    >>> cur = SegmentCursor(seg, 0, 0, 0)
    >>> ev = cur.next(10); type(ev).__name__, ev.header["offset"].tolist(), cur.next(10)
    ('Records', [0, 1], None)
    >>> cur.close(); tmp.cleanup()
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tidal.core.batch import Array
from tidal.io.log.format import HEADER_SIZE, MAGIC, find_record, read_header, scan

__all__ = [
    "INDEX_ENTRY",
    "INDEX_INTERVAL",
    "Damage",
    "Records",
    "SegmentCursor",
    "Tail",
    "index_entries",
    "index_name",
    "index_position",
    "list_segments",
    "read_index",
    "rebuild_index",
    "segment_name",
    "write_atomic",
]

log = logging.getLogger("tidal.io.log")

INDEX_ENTRY = np.dtype([("offset", "<i8"), ("position", "<i8")])
"""One index entry: a record's offset and its byte position in the segment."""

INDEX_INTERVAL = 4096
"""An index entry for the first record of every 4 KiB block of a segment."""

_SEG, _IDX = ".seg", ".idx"
_MIN_READ, _MAX_READ = 64 << 10, 16 << 20


def segment_name(base: int) -> str:
    """The file name of the segment whose first offset is ``base``.

    Example:
        >>> segment_name(42)
        '00000000000000000042.seg'
    """
    return f"{base:020d}{_SEG}"


def index_name(base: int) -> str:
    """The file name of that segment's index."""
    return f"{base:020d}{_IDX}"


def list_segments(folder: Path) -> list[int]:
    """The base offsets of the segments in a partition folder, in order."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(
        int(n[:20]) for n in names if len(n) == 24 and n.endswith(_SEG) and n[:20].isdigit()
    )


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: write a temp file, fsync it, rename, fsync the folder."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or a signal must not leave it behind
        raise
    if durable:
        sync_dir(path.parent)


def sync_dir(folder: Path) -> None:
    """Fsync a folder, so that files created or renamed in it survive a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the index ----------------------------------------------------------------------------
def read_index(path: Path, segment_size: int) -> Array | None:
    """The index's trustworthy prefix, or ``None`` if the file is missing.

    Entries must rise strictly in offset and position and point inside the segment; the
    first that does not ends the usable part (a partly written entry is ignored too).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    entries = np.frombuffer(raw[: len(raw) - len(raw) % INDEX_ENTRY.itemsize], dtype=INDEX_ENTRY)
    if not len(entries):
        return entries
    off, pos = entries["offset"], entries["position"]
    ok = (pos >= 0) & (pos + HEADER_SIZE <= segment_size)
    ok[1:] &= (np.diff(off) > 0) & (np.diff(pos) > 0)
    return entries if ok.all() else entries[: int(np.argmin(ok))]


def index_entries(positions: Array, offsets: Array, last: int) -> Array:
    """Index entries for records at ``positions`` after one at ``last`` (-1: none yet).

    Example:
        >>> index_entries(np.array([0, 100, 4200, 4300]), np.array([5, 6, 7, 8]), -1).tolist()
        [(5, 0), (7, 4200)]
    """
    blocks = positions // INDEX_INTERVAL
    prev = np.empty_like(blocks)
    prev[0] = last // INDEX_INTERVAL if last >= 0 else -1
    prev[1:] = blocks[:-1]
    take = blocks > prev
    out = np.empty(int(take.sum()), dtype=INDEX_ENTRY)
    out["offset"] = offsets[take]
    out["position"] = positions[take]
    return out


def rebuild_index(segment: Path, base: int) -> Array:
    """Scan a whole segment and write its index again (atomically); return the entries."""
    parts: list[Array] = []
    last = -1
    cursor = SegmentCursor(segment, base, 0, base)
    try:
        while True:
            ev = cursor.next(1 << 20)
            if ev is None or isinstance(ev, Tail):
                break
            if isinstance(ev, Records):
                entries = index_entries(ev.position + ev.starts, ev.header["offset"], last)
                if len(entries):
                    parts.append(entries)
                    last = int(entries["position"][-1])
    finally:
        cursor.close()
    out = np.concatenate(parts) if parts else np.empty(0, dtype=INDEX_ENTRY)
    path = segment.with_name(index_name(base))
    try:
        write_atomic(path, out.tobytes(), durable=False)
    except OSError as exc:  # a read-only data directory: use it from memory
        log.warning("could not write the rebuilt index %s: %s", path, exc)
    else:
        log.info("rebuilt the index %s by scanning the segment (%d entries)", path, len(out))
    return out


def _points_at(fd: int, position: int, offset: int) -> bool:
    fields = read_header(os.pread(fd, HEADER_SIZE, position))
    return (
        fields is not None and fields[0] == int.from_bytes(MAGIC, "little") and fields[2] == offset
    )


def index_position(segment: Path, base: int, offset: int) -> tuple[int, int]:
    """Where to start reading ``segment`` to reach ``offset``: ``(position, offset there)``.

    Uses the index (rebuilding it when it is missing or points at the wrong record).
    """
    fd = os.open(segment, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        idx = segment.with_name(index_name(base))
        entries = read_index(idx, size)
        for attempt in range(2):
            if entries is None:
                log.info("the index %s is missing", idx)
                entries = rebuild_index(segment, base)
            j = int(np.searchsorted(entries["offset"], offset, side="right")) - 1
            if j < 0:
                return 0, base
            pos, at = int(entries["position"][j]), int(entries["offset"][j])
            if _points_at(fd, pos, at):
                return pos, at
            if attempt == 0:
                log.warning("the index %s points at the wrong record; rebuilding it", idx)
                entries = None
        return 0, base
    finally:
        os.close(fd)


# -- walking a segment --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Records:
    """A run of valid records: ``data[starts[i]:]`` holds record ``i``.

    ``position`` is the file position of ``data[0]``; ``header`` the fixed headers.
    """

    data: bytes
    starts: Array
    header: Array
    position: int

    def __len__(self) -> int:
        return len(self.starts)


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes ``[position, resume)`` that are not valid records, a valid one following.

    Offsets ``first`` to ``stop - 1`` are lost (none if equal: only bytes were damaged).
    """

    position: int
    resume: int
    reason: str
    first: int
    stop: int


@dataclass(frozen=True, slots=True)
class Tail:
    """From ``position`` to the end of the file there is no valid record."""

    position: int
    reason: str


class SegmentCursor:
    """Walks one segment file from a record boundary, in chunks, verifying as it goes.

    Args:
        path: the segment file.
        base: its first offset.
        position: a record boundary to start at (0, or an index entry).
        expect: the offset to start returning at; records before it are skipped.
    """

    def __init__(self, path: Path, base: int, position: int, expect: int) -> None:
        self.path = path
        self.base = base
        self.pos = position
        self.expect = expect
        self._fd = os.open(path, os.O_RDONLY)
        self._avg = 256.0  # bytes per record, to size reads
        self._tail: tuple[int, int, Tail] | None = None

    def size(self) -> int:
        """The file's size now."""
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        """Close the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _where(self, at: int) -> str:
        return f"byte {at} of {self.path}"

    def next(self, max_records: int) -> Records | Damage | Tail | None:
        """The next event, or ``None`` at a clean end of the file (for now)."""
        size = self.size()
        if self.pos >= size:
            return None
        if self._tail is not None and self._tail[:2] == (self.pos, size):
            return self._tail[2]
        want = int(min(max(max_records * self._avg * 1.05 + 4096, _MIN_READ), _MAX_READ))
        while True:
            n = min(size - self.pos, want)
            data = os.pread(self._fd, n, self.pos)
            if not data:
                return None
            sc = scan(data, max_records)
            if len(sc):
                return self._records(data, sc.starts, sc.header, sc.end)
            if sc.stop == "partial" and self.pos + sc.need <= size:
                want = max(sc.need, 2 * n)  # the window cut a record: read more
                continue
            if sc.stop == "partial":
                got = size - self.pos
                why = f"incomplete record ({got} of {sc.need} bytes) at {self._where(self.pos)}"
                return self._tail_at(size, why)
            return self._damage(size, sc.reason)

    def _records(self, data: bytes, starts: Array, header: Array, end: int) -> Records | Damage:
        offsets = header["offset"]
        first = int(offsets[0])
        if first > self.expect:  # a gap before the first record: report, then go on
            reason = f"offsets {self.expect}..{first - 1} missing before {self._where(self.pos)}"
            dmg = Damage(self.pos, self.pos, reason, self.expect, first)
            self.expect = first
            return dmg
        skip = min(self.expect - first, len(starts))
        at = self.pos
        self.pos += end
        self._avg = 0.5 * self._avg + 0.5 * end / len(starts)
        self.expect = max(self.expect, int(offsets[-1]) + 1)
        return Records(data, starts[skip:], header[skip:], at)

    def _damage(self, size: int, why: str) -> Damage | Tail:
        rest = os.pread(self._fd, size - self.pos, self.pos)
        found = find_record(rest, 1, self.expect)
        reason = f"{why} at {self._where(self.pos)}"
        if found is None:
            return self._tail_at(size, reason)
        q, offset = found
        dmg = Damage(self.pos, self.pos + q, reason, self.expect, offset)
        self.pos += q
        self.expect = offset
        return dmg

    def _tail_at(self, size: int, reason: str) -> Tail:
        tail = Tail(self.pos, reason)
        self._tail = (self.pos, size, tail)
        return tail
