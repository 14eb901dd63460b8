"""The embedded log as a pipeline source: :class:`LogSource`.

It reads every partition of a topic round-robin, decodes the values in bulk (JSON objects
into columns, or raw bytes) and returns one :class:`~tidal.core.batch.Batch` per poll, with
``Batch.partition`` and ``Batch.offset`` set and ``Batch.ingest`` taken from the record
timestamps, so that latency is measured from the moment a record was produced.

Positions are ``{partition: next offset}``: ``open(position())`` after a restart resumes
with the next record, so nothing is lost or read twice. A value that is not a JSON object,
or breaks the ``schema``, becomes a dead letter with ``{"topic", "partition", "offset"}``;
so do damaged records in the log (see :mod:`tidal.io.log.reader`).

Example:
    >>> import tempfile
    >>> from tidal.io.log.topic import Topic
    >>> tmp = tempfile.TemporaryDirectory()
    >>> topic = Topic.create(tmp.name, "events", partitions=2)
    >>> _ = topic.append(0, [b'{"user": "a", "n": 1}', b'not json'])
    >>> _ = topic.append(1, [b'{"user": "b", "n": 2}'])
    >>> src = LogSource(tmp.name, "events", bounded=True)
    >>> src.open({})
    >>> batch = src.poll(100, 0.0)
    >>> batch.to_records(), batch.partition.tolist(), batch.offset.tolist()
    ([{'user': 'a', 'n': 1}, {'user': 'b', 'n': 2}], [0, 1], [0, 0])
    >>> [d.position for d in src.dead_letters()]
    [{'topic': 'events', 'partition': 0, 'offset': 1}]
    >>> src.position(), src.poll(100, 0.0)
    ({0: 2, 1: 1}, None)
    >>> src.close(); topic.close(); tmp.cleanup()
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.errors import ConfigError, ConnectorError
from tidal.io.base import BaseSource
from tidal.io.formats.base import ValueFormat as Format
from tidal.io.formats.json import JsonFormat
from tidal.io.log.groups import commit_positions, load_positions
from tidal.io.log.reader import PartitionReader, RecordBatch
from tidal.io.log.topic import Topic
from tidal.io.schema import SchemaLike, resolve_schema

__all__ = ["LogSource", "ValueFormat"]

ValueFormat = Literal["json", "raw"]
"""``"json"``: each value is a JSON object, its fields become columns; ``"raw"``: a
``value`` column of ``bytes``."""


class LogSource(BaseSource):
    """Read a topic of the embedded log as a stream of columnar batches.

    Args:
        data_dir: the data directory (``None``: ``$TIDAL_DATA_DIR`` or ``./.tidal``).
        topic: the topic to read.
        group: a consumer group: without a position from ``open``, a partition starts at
            the group's committed position; :meth:`commit` writes the positions.
        value_format: ``"json"`` or ``"raw"`` (see :data:`ValueFormat`).
        format: any value format of :mod:`tidal.io.formats` (Avro, Protobuf, Arrow, ...),
            instead of ``value_format``/``schema``. With a batched format (Arrow) one
            record gives many rows, each with the record's offset; a poll reads about
            ``max_records`` rows, never part of a record.
        schema: for JSON, column -> ``"int"``/``"float"``/``"str"``/``"bool"``, enforced
            per record as :class:`~tidal.io.jsonl.JsonlSource` does.
        from_beginning: with no position at all, start at the first offset (else at the
            end, reading only new records).
        bounded: stop (``poll`` returns ``None``) at the end offsets seen at ``open``;
            otherwise follow the topic like ``tail -f``.
        partitions: read only these partitions (default: all).
        key_column: also return each record's key (UTF-8 text, ``None`` for none) here.
        timestamp_column: also return each record's timestamp (int ms) here.
        name: the step name in dead letters (default ``log:<topic>``).

    Raises:
        ConfigError: for a bad format, or a partition the topic does not have.
        ConnectorError: if the topic does not exist.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None,
        topic: str,
        *,
        group: str | None = None,
        value_format: ValueFormat = "json",
        schema: SchemaLike | None = None,
        from_beginning: bool = True,
        bounded: bool = False,
        partitions: Sequence[int] | None = None,
        key_column: str | None = None,
        timestamp_column: str | None = None,
        name: str | None = None,
        format: Format | None = None,
    ) -> None:
        super().__init__()
        if value_format not in ("json", "raw"):
            msg = f"value_format must be 'json' or 'raw', got {value_format!r}"
            raise ConfigError(msg)
        if format is not None and (value_format != "json" or schema is not None):
            msg = "LogSource: pass format= or value_format=/schema=, not both"
            raise ConfigError(msg)
        self.topic = Topic.open(data_dir, topic)
        self.name = name or f"log:{topic}"
        self.group = group
        self.value_format: ValueFormat = value_format
        self.from_beginning = from_beginning
        self.bounded = bounded
        self.key_column = key_column
        self.timestamp_column = timestamp_column
        parts = range(self.topic.partitions) if partitions is None else partitions
        for p in parts:
            self.topic.folder(p)  # raises for a partition the topic does not have
        self._parts = [int(p) for p in parts]
        if format is None and value_format == "json":
            format = JsonFormat(resolve_schema(schema, where=self.name), name=self.name)
        self.format = format
        self._per_value = float("inf")  # rows per record (batched formats): read 1 first
        self._readers: dict[int, PartitionReader] = {}
        self._ends: dict[int, int] = {}
        self._turn = 0

    def partitions(self) -> Sequence[int]:
        """The partitions this source reads."""
        return tuple(self._parts)

    def assign_worker(self, index: int, count: int) -> None:
        """Read only worker ``index``'s share: every ``count``-th of the partitions.

        Partition ``parts[j]`` belongs to worker ``j % count`` (a static assignment, for
        ``tidal run --workers N`` on one machine; see :mod:`tidal.runtime.workers`).

        Example:
            >>> import tempfile
            >>> from tidal.io.log.topic import Topic
            >>> tmp = tempfile.TemporaryDirectory()
            >>> Topic.create(tmp.name, "events", partitions=5).close()
            >>> src = LogSource(tmp.name, "events")
            >>> src.assign_worker(1, 2)
            >>> src.partitions()
            (1, 3)
            >>> src.close(); src.topic.close(); tmp.cleanup()
        """
        if not 0 <= index < count:
            msg = f"{self.name}: worker index {index} is not in 0..{count - 1}"
            raise ConfigError(msg)
        self._parts = self._parts[index::count]

    def restrict(self, partitions: Sequence[int]) -> None:
        """Read only these partitions (of those it reads) from the next ``open`` on."""
        keep = {int(p) for p in partitions}
        self._parts = [p for p in self._parts if p in keep]

    def open(self, positions: Mapping[int, Any]) -> None:
        """Start each partition at its position (the next offset).

        Without one, a partition starts at the group's committed position, else at the
        beginning or the end (``from_beginning``).

        Raises:
            ConnectorError: for a position that is not an offset, or past the end.
        """
        self.close()
        self._readers.clear()
        given = {str(k): v for k, v in positions.items()}
        committed = (
            load_positions(self.topic.root, self.group, self.topic.name) if self.group else {}
        )
        for p in self._parts:
            end = self.topic.end_offset(p)
            at = given.get(str(p), committed.get(p))
            if at is None:
                at = self.topic.start_offset(p) if self.from_beginning else end
            if isinstance(at, bool) or not isinstance(at, int | np.integer) or at < 0:
                msg = (
                    f"{self.name}: the position of partition {p} must be an offset >= 0, got {at!r}"
                )
                raise ConnectorError(msg)
            self._readers[p] = self.topic.reader(p, int(at), step=self.name)
            self._ends[p] = end

    def positions_for_time(self, time_ms: int) -> dict[int, int]:
        """Per partition, the offset of the first record stamped ``>= time_ms``.

        For replays from a point in time (``tidal run --from-time``): pass the result to
        :meth:`open`.
        """
        return {p: self.topic.offset_for_time(p, time_ms) for p in self._parts}

    def position(self) -> dict[int, Any]:
        """``{partition: next offset}`` for every partition (safe to call from a thread)."""
        return {p: r.next_offset for p, r in list(self._readers.items())}

    def end_offsets(self) -> dict[int, int]:
        """The end offsets seen at ``open`` (where a bounded source stops)."""
        return dict(self._ends)

    def lag(self) -> dict[int, int]:
        """Consumer lag: ``{partition: records appended but not read yet}`` (for metrics)."""
        return {
            p: max(0, self.topic.end_offset(p) - r.next_offset)
            for p, r in list(self._readers.items())
        }

    def commit(self, group: str | None = None) -> None:
        """Write the current positions as ``group``'s (default: this source's group).

        Raises:
            ConfigError: if there is no group.
        """
        group = group or self.group
        if not group:
            msg = f"{self.name}: commit() needs a group; pass group= here or to LogSource"
            raise ConfigError(msg)
        commit_positions(self.topic.root, group, self.topic.name, self.position())

    def close(self) -> None:
        """Close the partition files; ``position()`` stays valid, ``open`` may follow."""
        for r in self._readers.values():
            r.close()

    def poll(self, max_records: int, timeout: float) -> Batch | None:
        """Up to ``max_records`` records, round-robin over the partitions.

        At the end of the data it waits up to ``timeout`` seconds for more (checking the
        files with a short, growing sleep), then returns an empty batch; a bounded source
        returns ``None`` once every partition reached its end offset.
        """
        if max_records < 1:
            msg = f"{self.name}: max_records must be >= 1, got {max_records}"
            raise ConfigError(msg)
        if not self._readers:
            self.open({})
        deadline: float | None = None
        nap = 0.0005
        values = max_records
        if self.format is not None and self.format.batched:
            values = max(1, int(max_records / self._per_value))
        while True:
            parts, dead = self._read(values)
            if parts:
                return self._batch(parts)
            if dead:
                return Batch()
            if self.bounded and self._done():
                return None
            now = time.monotonic()
            if deadline is None:
                deadline = now + max(timeout, 0.0)
            if now >= deadline:
                return Batch()
            time.sleep(min(nap, deadline - now))
            nap = min(nap * 2, 0.002)

    def _done(self) -> bool:
        return all(r.next_offset >= self._ends[p] for p, r in self._readers.items())

    def _read(self, max_records: int) -> tuple[list[RecordBatch], bool]:
        parts: list[RecordBatch] = []
        dead = False
        n = 0
        order = self._parts[self._turn :] + self._parts[: self._turn]
        self._turn = (self._turn + 1) % len(self._parts)
        for p in order:
            r = self._readers[p]
            limit = max_records - n
            if self.bounded:
                limit = min(limit, self._ends[p] - r.next_offset)
            if limit <= 0:
                continue
            rb = r.read(limit)
            for d in rb.dead_letters:
                self.reject(d)
                dead = True
            if len(rb):
                parts.append(rb)
                n += len(rb)
            if n >= max_records:
                break
        return parts, dead

    def _batch(self, parts: list[RecordBatch]) -> Batch:
        one = len(parts) == 1
        offsets = parts[0].offsets if one else np.concatenate([p.offsets for p in parts])
        stamps = parts[0].timestamps if one else np.concatenate([p.timestamps for p in parts])
        values = parts[0].values if one else np.concatenate([p.values for p in parts])
        part = np.repeat(
            np.asarray([p.partition for p in parts], dtype=np.int32), [len(p) for p in parts]
        )
        cols: dict[str, Array]
        if self.format is not None:
            cols, rows = self._decode(values, part, offsets)
            if rows is not None:
                offsets, stamps, part = offsets[rows], stamps[rows], part[rows]
        else:
            cols = {"value": values}
            rows = None
        if self.key_column is not None:
            keys = parts[0].keys if one else np.concatenate([p.keys for p in parts])
            if rows is not None and (len(rows) < len(keys) or self.format is not None):
                keys = keys[rows]
            cols[self.key_column] = np.array(
                [None if k is None else k.decode("utf-8", "replace") for k in keys.tolist()],
                dtype=object,
            )
        if self.timestamp_column is not None:
            cols[self.timestamp_column] = stamps
        return Batch(
            cols, ingest=stamps * 1_000_000, partition=part, offset=offsets, length=len(offsets)
        )

    def _decode(self, values: Array, part: Array, offsets: Array) -> tuple[dict[str, Array], Any]:
        """Decode with ``format``; the rows taken (``None``: one per value, all good)."""
        assert self.format is not None
        decoded = self.format.decode(values)
        topic = self.topic.name
        for d in decoded.dead_letters(
            self.name,
            lambda i: {"topic": topic, "partition": int(part[i]), "offset": int(offsets[i])},
        ):
            self.reject(d)
        if self.format.batched:
            self._per_value = max(len(decoded) / max(len(values), 1), 1.0)
        elif not decoded.failures:
            return decoded.columns, None
        return decoded.columns, decoded.rows

    @staticmethod
    def _at(where: dict[str, Any]) -> str:
        return f"{where['topic']}[{where['partition']}] offset {where['offset']}"
