"""Reading a partition: batches of records as columns, damage as dead letters.

A :class:`PartitionReader` keeps a cursor (segment, byte position, next offset), so that
sequential reads cost one ``pread`` and one bulk scan per chunk. It never modifies the log
(no lock is taken): an invalid tail at the end of the active segment is treated as "no
more data yet", because it may be a write in progress or a torn tail that the next writer
will truncate. Damage anywhere else costs only the damaged records: each lost offset is
returned as a :class:`~tidal.core.deadletter.DeadLetter` whose reason names the file and
byte (``"CRC mismatch at byte 4182 of .../00000000000000000000.seg"``) and whose position
is ``{"topic", "partition", "offset", "file", "byte"}``; reading goes on with the next
valid record.

Offsets below the partition's start (deleted by retention) are skipped with a logged
warning, as Kafka's ``auto.offset.reset=earliest`` does.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tidal.core.batch import Array
from tidal.core.deadletter import DeadLetter
from tidal.io.log.format import Header, headers_of, keys_of, values_of
from tidal.io.log.segment import (
    Records,
    SegmentCursor,
    Tail,
    index_position,
    list_segments,
    segment_name,
)

__all__ = ["PartitionReader", "RecordBatch", "end_offset", "offset_for_time", "start_offset"]

log = logging.getLogger("tidal.io.log")


@dataclass(frozen=True)
class RecordBatch:
    """Records of one partition as columns.

    Attributes:
        topic: the topic's name.
        partition: the partition.
        offsets: int64 offsets, rising (gaps where records were damaged).
        timestamps: int64 ms since the epoch.
        keys: object array of ``bytes`` (``None`` for a null key).
        values: object array of ``bytes``.
        headers: per record a list of ``(name, value)``; ``None`` when no record has any.
        next_offset: where the next read starts.
        dead_letters: damaged records skipped by this read.
        nbytes: bytes the records take in the log.
    """

    topic: str
    partition: int
    offsets: Array
    timestamps: Array
    keys: Array
    values: Array
    headers: list[list[Header]] | None
    next_offset: int
    dead_letters: list[DeadLetter] = field(default_factory=list)
    nbytes: int = 0

    def __len__(self) -> int:
        return len(self.offsets)


def _concat(arrays: list[Array], dtype: type) -> Array:
    if len(arrays) == 1:
        return np.ascontiguousarray(arrays[0], dtype=dtype)
    if not arrays:
        return np.empty(0, dtype=dtype)
    return np.concatenate(arrays).astype(dtype, copy=False)


def start_offset(folder: Path) -> int:
    """The first offset still in a partition (0 for an empty one)."""
    bases = list_segments(folder)
    return bases[0] if bases else 0


def end_offset(folder: Path) -> int:
    """The offset after the last valid record of a partition, as a reader sees it now."""
    bases = list_segments(folder)
    if not bases:
        return 0
    path = folder / segment_name(bases[-1])
    pos, offset = index_position(path, bases[-1], 1 << 62)
    cursor = SegmentCursor(path, bases[-1], pos, offset)
    try:
        while True:
            ev = cursor.next(1 << 20)
            if ev is None or isinstance(ev, Tail):
                return max(cursor.expect, bases[-1])
    finally:
        cursor.close()


def offset_for_time(folder: Path, time_ms: int) -> int:
    """The offset of the first record stamped ``>= time_ms``, else the end offset.

    Kafka's ``offsetsForTimes``. Timestamps need not rise with offsets and there is no
    time index, so this scans the partition from its start: the bulk header scan of a
    read, without building values.
    """
    for base in list_segments(folder):
        try:
            cursor = SegmentCursor(folder / segment_name(base), base, 0, base)
        except FileNotFoundError:
            continue  # deleted by retention meanwhile
        try:
            while True:
                ev = cursor.next(1 << 20)
                if ev is None or isinstance(ev, Tail):
                    break
                if isinstance(ev, Records) and len(ev):
                    hit = np.flatnonzero(ev.header["timestamp"] >= time_ms)
                    if len(hit):
                        return int(ev.header["offset"][hit[0]])
        finally:
            cursor.close()
    return end_offset(folder)


class PartitionReader:
    """Reads one partition sequentially from an offset.

    Args:
        topic: the topic's name (for batches and dead letters).
        folder: the partition folder.
        partition: the partition number.
        offset: the first offset to read.
        step: the step name in dead letters.
    """

    def __init__(
        self, topic: str, folder: Path, partition: int, offset: int, *, step: str | None = None
    ) -> None:
        self.topic = topic
        self.folder = folder
        self.partition = partition
        self.next_offset = offset
        self.step = step or f"log:{topic}"
        self._cursor: SegmentCursor | None = None

    def close(self) -> None:
        """Close the current segment."""
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None

    def read(self, max_records: int) -> RecordBatch:
        """Up to ``max_records`` valid records (fewer at the end of what is written)."""
        parts: list[Records] = []
        dead: list[DeadLetter] = []
        count = 0
        while count < max_records:
            cur = self._cursor or self._seek()
            if cur is None:
                break
            ev = cur.next(max_records - count)
            if ev is None or isinstance(ev, Tail):
                nxt = self._next_base(cur.base)
                if nxt is None:
                    break  # the active segment: wait for more
                ev = cur.next(max_records - count)  # sealed: its size is final now
                if ev is None or isinstance(ev, Tail):
                    dead += self._segment_end(cur, ev, nxt)
                    continue
            if isinstance(ev, Records):
                if len(ev):
                    parts.append(ev)
                    count += len(ev)
            else:
                dead += self._lost(ev.first, ev.stop, ev.reason, cur.path, ev.position)
            self.next_offset = cur.expect
        return self._batch(parts, dead)

    # -- segments ---------------------------------------------------------------------
    def _seek(self) -> SegmentCursor | None:
        for _ in range(3):  # a segment may vanish (retention) between listing and opening
            bases = list_segments(self.folder)
            if not bases:
                return None
            if self.next_offset < bases[0]:
                log.warning(
                    "%s partition %d: offsets %d..%d were deleted by retention; continuing at %d",
                    self.topic,
                    self.partition,
                    self.next_offset,
                    bases[0] - 1,
                    bases[0],
                )
                self.next_offset = bases[0]
            base = bases[bisect.bisect_right(bases, self.next_offset) - 1]
            path = self.folder / segment_name(base)
            try:
                pos, _ = index_position(path, base, self.next_offset)
                self._cursor = SegmentCursor(path, base, pos, self.next_offset)
            except FileNotFoundError:
                continue
            return self._cursor
        return None

    def _next_base(self, base: int) -> int | None:
        later = [b for b in list_segments(self.folder) if b > base]
        return later[0] if later else None

    def _segment_end(self, cur: SegmentCursor, tail: Tail | None, nxt: int) -> list[DeadLetter]:
        """Leave a sealed segment; what is missing before the next one is dead letters."""
        dead: list[DeadLetter] = []
        if self.next_offset < nxt:
            if tail is not None:
                dead = self._lost(self.next_offset, nxt, tail.reason, cur.path, tail.position)
            else:  # the segment ends cleanly, the next starts later: a segment file is gone
                gone = self.folder / segment_name(self.next_offset)
                reason = (
                    f"no segment file holds offsets {self.next_offset}..{nxt - 1} "
                    f"(expected {gone}, between {cur.path.name} and {segment_name(nxt)}: "
                    "deleted?)"
                )
                dead = self._lost(self.next_offset, nxt, reason, gone, 0)
        cur.close()
        self.next_offset = max(self.next_offset, nxt)
        path = self.folder / segment_name(nxt)
        try:
            self._cursor = SegmentCursor(path, nxt, 0, self.next_offset)
        except FileNotFoundError:
            self._cursor = None
        return dead

    def _lost(self, first: int, stop: int, reason: str, path: Path, at: int) -> list[DeadLetter]:
        where = {"topic": self.topic, "partition": self.partition, "file": str(path), "byte": at}
        if stop <= first:  # damaged bytes, but no offset lost
            return [DeadLetter(self.step, reason, where)]
        return [DeadLetter(self.step, reason, {**where, "offset": o}) for o in range(first, stop)]

    # -- columns ----------------------------------------------------------------------
    def _batch(self, parts: list[Records], dead: list[DeadLetter]) -> RecordBatch:
        heads = [p.header for p in parts]
        headers: list[list[Header]] | None = None
        per = [headers_of(p.data, p.starts, p.header) for p in parts]
        if any(h is not None for h in per):
            headers = []
            for p, h in zip(parts, per, strict=True):
                headers += h if h is not None else [[] for _ in range(len(p))]
        return RecordBatch(
            topic=self.topic,
            partition=self.partition,
            offsets=_concat([h["offset"] for h in heads], np.int64),
            timestamps=_concat([h["timestamp"] for h in heads], np.int64),
            keys=_concat([keys_of(p.data, p.starts, p.header) for p in parts], object),
            values=_concat([values_of(p.data, p.starts, p.header) for p in parts], object),
            headers=headers,
            next_offset=self.next_offset,
            dead_letters=dead,
            nbytes=int(sum(int(h["size"].sum()) for h in heads)),
        )
