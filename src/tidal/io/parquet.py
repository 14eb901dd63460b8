"""Parquet files: a bounded :class:`ParquetSource` and a :class:`ParquetSink` (pyarrow).

Example:
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = Path(tmp.name) / "scores.parquet"
    >>> sink = ParquetSink(path)
    >>> sink.write(Batch({"id": [1, 2, 3], "score": [0.1, 0.7, 0.4]})); sink.close()
    >>> src = ParquetSource(path, columns=["score"])
    >>> src.poll(2, 0.0)["score"].tolist(), src.position()
    ([0.1, 0.7], {0: 2})
    >>> src.close(); tmp.cleanup()
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tidal.core.batch import Batch
from tidal.errors import ConfigError, ConnectorError
from tidal.io.base import BaseSource
from tidal.io.fileutil import FileSink, conform, open_error, start_position, to_table
from tidal.io.parts import PartSink

log = logging.getLogger("tidal.io.parquet")

__all__ = ["ParquetSource", "ParquetSink", "ParquetPartSink", "Compression"]

Compression = Literal["snappy", "zstd", "gzip", "brotli", "lz4", "none"]
"""The Parquet codecs pyarrow writes."""


class ParquetSource(BaseSource):
    """Rows of a Parquet file, read ``batch_rows`` at a time with pyarrow.

    Each row's ``Batch.offset`` is its 0-based row index in the file; ``position()`` is
    ``{0: rows handed out}`` and ``open({0: n})`` resumes at row ``n`` (skipping whole row
    groups without reading them). Timestamps become int64 milliseconds, as in
    :meth:`Batch.from_arrow <tidal.core.batch.Batch.from_arrow>`.

    Args:
        path: the Parquet file.
        columns: the columns to read (default: all).
        batch_rows: rows decoded at a time.
        name: the step name in messages (default ``parquet:<file name>``).

    Raises:
        ConfigError: for a bad ``batch_rows``.

    Example:
        >>> import tempfile
        >>> import pyarrow.parquet as pq
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = Path(tmp.name) / "in.parquet"
        >>> pq.write_table(pa.table({"x": [10, 20, 30]}), path)
        >>> src = ParquetSource(path)
        >>> src.open({0: 1})
        >>> batch = src.poll(100, 0.0)
        >>> batch["x"].tolist(), batch.offset.tolist(), src.poll(100, 0.0)
        ([20, 30], [1, 2], None)
        >>> src.close(); tmp.cleanup()
    """

    def __init__(
        self,
        path: str | Path,
        *,
        columns: Sequence[str] | None = None,
        batch_rows: int = 65536,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.name = name or f"parquet:{self.path.name}"
        if batch_rows < 1:
            msg = f"{self.name}: batch_rows must be >= 1, got {batch_rows}"
            raise ConfigError(msg)
        self.columns = None if columns is None else list(columns)
        self.batch_rows = int(batch_rows)
        self._file: pq.ParquetFile | None = None
        self._batches: Iterator[pa.RecordBatch] | None = None
        self._batch: Batch | None = None
        self._at = 0
        self._skip = 0
        self._pos = 0
        self._opened = False

    def open(self, positions: Mapping[int, Any]) -> None:
        """Open the file and resume at the row given for partition 0.

        Raises:
            ConnectorError: if the file cannot be opened or read as Parquet, lacks a
                requested column, or has fewer rows than the position.
        """
        start = start_position(positions, self.name)
        self.close()
        try:
            file = pq.ParquetFile(self.path)
        except OSError as exc:
            if isinstance(exc, pa.ArrowException):
                msg = f"cannot read Parquet file '{self.path}': {exc}; is it a Parquet file?"
                raise ConnectorError(msg) from exc
            what = "Parquet file"
            raise open_error(what, self.path, exc) from exc
        except pa.ArrowException as exc:
            msg = f"cannot read Parquet file '{self.path}': {exc}; is it a Parquet file?"
            raise ConnectorError(msg) from exc
        names = file.schema_arrow.names
        missing = [c for c in self.columns or () if c not in names]
        meta = file.metadata
        if missing or start > meta.num_rows:
            problem = (
                f"has no columns {missing} (it has {names}); fix `columns`"
                if missing
                else f"has {meta.num_rows} rows, cannot resume after row {start}; was it "
                "replaced? Start from an empty position to read it from the top"
            )
            file.close()
            msg = f"{self.name}: Parquet file '{self.path}' {problem}"
            raise ConnectorError(msg)
        group, first = 0, 0
        while group < meta.num_row_groups and first + meta.row_group(group).num_rows <= start:
            first += meta.row_group(group).num_rows
            group += 1
        self._file = file
        self._batches = file.iter_batches(
            batch_size=self.batch_rows,
            row_groups=list(range(group, meta.num_row_groups)),
            columns=self.columns,
        )
        self._batch, self._at = None, 0
        self._skip, self._pos = start - first, start
        self._opened = True

    def poll(self, max_records: int, timeout: float) -> Batch | None:
        """Up to ``max_records`` rows (never waits); ``None`` after the last row."""
        if max_records < 1:
            msg = f"{self.name}: max_records must be >= 1, got {max_records}"
            raise ConfigError(msg)
        if not self._opened:
            self.open({})
        while self._batch is None or self._at >= len(self._batch):
            record = self._next()
            if record is None:
                return None
            if self._skip:
                drop = min(self._skip, record.num_rows)
                record, self._skip = record.slice(drop), self._skip - drop
            self._batch, self._at = Batch.from_arrow(record), 0
        stop = min(self._at + max_records, len(self._batch))
        out = self._batch.slice(self._at, stop)
        offsets = np.arange(self._pos, self._pos + len(out), dtype=np.int64)
        self._at, self._pos = stop, self._pos + len(out)
        return Batch(
            out.columns,
            offset=offsets,
            partition=np.zeros(len(out), dtype=np.int32),
            length=len(out),
        )

    def _next(self) -> pa.RecordBatch | None:
        if self._batches is None:
            return None
        try:
            return next(self._batches)
        except StopIteration:
            self.close()
            return None
        except (OSError, pa.ArrowException) as exc:
            msg = (
                f"{self.name}: cannot read Parquet file '{self.path}' at row {self._pos}: "
                f"{exc}; the file may be damaged"
            )
            raise ConnectorError(msg) from exc

    def position(self) -> dict[int, Any]:
        """``{0: n}``: the first ``n`` rows have been handed out."""
        return {0: self._pos}

    def close(self) -> None:
        """Close the file (``open`` may be called again)."""
        self._batches = None
        if self._file is not None:
            self._file.close()
            self._file = None


class ParquetSink(FileSink):
    """Write the user columns of each batch to a Parquet file, one row group per batch.

    The first batch fixes the schema; a later batch must have the same columns, with the
    same types (all-null columns and integer to float are cast). ``close()`` writes the
    footer: the file is readable only after it. A sink opened but never written to leaves
    a valid Parquet file without columns.

    Args:
        path: the file (parent folders are created; an existing file is replaced).
        compression: a Parquet codec (``"snappy"``, ``"zstd"``, ``"gzip"``, ``"none"``...).

    Raises:
        ConnectorError: for a batch whose schema does not match, naming the column.

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> sink = ParquetSink(Path(tmp.name) / "out.parquet")
        >>> sink.write(Batch({"x": [1, 2]}))
        >>> sink.write(Batch({"x": ["a"]}))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tidal.errors.ConnectorError: ParquetSink('...out.parquet'): column 'x' is string ...
        >>> sink.close(); tmp.cleanup()
    """

    can_reopen = False

    def __init__(self, path: str | Path, *, compression: Compression = "snappy") -> None:
        super().__init__(path, what="Parquet file")
        self.compression = compression
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._staged: Path | None = None

    def open(self) -> None:
        """Open the file; after :meth:`resume`, keep the rows of the file there is.

        A Parquet file cannot be appended to: when a run resumes from a checkpoint, the
        existing file's row groups are copied into a new file (``<name>.resume.tmp``, which
        replaces the old one at ``close()``), and new rows follow them; the schema stays the
        old file's. A file without a footer (the earlier run was killed before
        ``close()``) holds nothing readable: it is moved aside to ``<name>.damaged`` with a
        warning, and the file starts afresh.

        Raises:
            ConnectorError: if a file cannot be opened or moved.
        """
        if self._file is None and self._resuming and not self._started and self._nonempty():
            try:
                old = pq.ParquetFile(self.path)
                schema = old.schema_arrow
            except (pa.ArrowException, OSError):
                old = None
            if old is None:
                self._move_aside()
            elif len(schema):
                self._copy_rows(old, schema)
                return
        super().open()

    def _nonempty(self) -> bool:
        try:
            return self.path.stat().st_size > 0
        except OSError:
            return False

    def _move_aside(self) -> None:
        aside = self.path.with_name(self.path.name + ".damaged")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            raise open_error(self._what, self.path, exc) from exc
        log.warning(
            "%s: '%s' has no Parquet footer (the earlier run stopped before close()); moved "
            "it to '%s' and starting the file afresh",
            self.label,
            self.path,
            aside,
        )

    def _copy_rows(self, old: pq.ParquetFile, schema: pa.Schema) -> None:
        staged = self.path.with_name(self.path.name + ".resume.tmp")
        try:
            self._file = staged.open("wb")
            self._writer = pq.ParquetWriter(self._file, schema, compression=self.compression)
            for i in range(old.num_row_groups):
                self._writer.write_table(old.read_row_group(i))
        except (OSError, pa.ArrowException) as exc:
            raise open_error(self._what, staged, OSError(str(exc))) from exc
        finally:
            old.close()
        self._schema, self._staged = schema, staged
        self._closed, self._started = False, True

    def _write(self, batch: Batch) -> None:
        assert self._file is not None
        table = to_table(batch, self.label)
        if self._schema is not None:
            table = conform(table, self._schema, self.label)
        if self._writer is None:
            try:
                self._writer = pq.ParquetWriter(
                    self._file, table.schema, compression=self.compression
                )
            except (pa.ArrowException, ValueError) as exc:
                msg = f"{self.label}: cannot write schema {table.schema}: {exc}"
                raise ConnectorError(msg) from exc
            self._schema = table.schema
        self._writer.write_table(table)

    def close(self) -> None:
        """Write the Parquet footer and close the file."""
        if self._writer is None and self._file is not None:
            self._writer = pq.ParquetWriter(self._file, pa.schema([]))
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        super().close()
        if self._staged is not None:
            os.replace(self._staged, self.path)
            self._staged = None


class ParquetPartSink(PartSink):
    """Exactly-once Parquet output: part files in a directory, committed by checkpoints.

    Each checkpoint commits the rows written since the previous one as
    ``<directory>/part-<checkpoint:012d>-<n>.parquet``, a complete Parquet file (footer
    written at ``prepare``), so that ``pyarrow.dataset`` or DuckDB can read
    ``part-*.parquet`` at any time. Each part's schema is fixed by its first batch, as in
    :class:`ParquetSink`. See :mod:`tidal.io.parts` for the protocol.

    Args:
        directory: the output directory (one per sink).
        roll_bytes: start a new part file after this many bytes (``None``: one per
            checkpoint).
        compression: a Parquet codec.

    Example:
        >>> import tempfile
        >>> from tidal.io.parts import read_committed
        >>> tmp = tempfile.TemporaryDirectory()
        >>> sink = ParquetPartSink(tmp.name)
        >>> sink.write(Batch({"id": [1, 2], "score": [0.5, 0.25]}))
        >>> pending = sink.prepare(1)
        >>> sink.recover([pending])  # after a crash: commits what checkpoint 1 prepared
        >>> read_committed(tmp.name)
        [{'id': 1, 'score': 0.5}, {'id': 2, 'score': 0.25}]
        >>> sink.close(); tmp.cleanup()
    """

    suffix = ".parquet"

    def __init__(
        self,
        directory: str | Path,
        *,
        roll_bytes: int | None = 256 << 20,
        compression: Compression = "snappy",
    ) -> None:
        super().__init__(directory, roll_bytes=roll_bytes)
        self.compression: Compression = compression

    def _file_sink(self, path: Path) -> ParquetSink:
        return ParquetSink(path, compression=self.compression)
