"""What the file connectors share: block-wise line reading, file sinks, Arrow tables.

:class:`LineSource` is the base of the text sources (CSV, JSON Lines), :class:`FileSink` of
the single-file sinks; :func:`to_table` and :func:`conform` turn batches into Arrow tables
of one fixed schema. The connectors themselves live one format per module (see
:mod:`tidal.io.files`).

File sources are *bounded*: ``poll`` returns ``None`` at the end of the file. They have one
partition, ``0``. A text source's position is the number of the last physical line it
has handed out (rows returned or rejected), so ``open({0: position})`` after a restore
continues with the next line: nothing is lost and nothing is read twice. Text is decoded
in blocks of whole lines with Arrow (CSV) or orjson (JSON Lines), never one Python call per
value on the happy path. Bad lines become :class:`~tidal.io.base.DeadLetter` objects with
the reason and ``{"file": path, "line": n}``; the good rows flow on.

Example:
    >>> start_position({"0": 7}, "src")
    7
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa

from tidal.core.batch import Array, Batch
from tidal.errors import ConfigError, ConnectorError
from tidal.io.base import BaseSink, BaseSource, DeadLetter

__all__ = [
    "FileSink",
    "LineSource",
    "conform",
    "open_error",
    "open_input",
    "quiet_broken_pipe",
    "start_position",
    "to_table",
]


def open_error(what: str, path: Path | str, exc: OSError) -> ConnectorError:
    """A :class:`ConnectorError` for a file that cannot be opened (chain it with ``from``).

    Example:
        >>> str(open_error("CSV file", "x.csv", FileNotFoundError(2, "No such file or directory")))
        "cannot open CSV file 'x.csv': No such file or directory; check the path"
    """
    reason = exc.strerror or str(exc)
    return ConnectorError(f"cannot open {what} '{path}': {reason}; check the path")


def start_position(positions: Mapping[Any, Any], label: str) -> int:
    """The position of partition 0 in ``positions`` (key ``0`` or ``"0"``), default 0.

    Example:
        >>> start_position({"0": 12}, "src"), start_position({}, "src")
        (12, 0)
    """
    for key, value in positions.items():
        if str(key) == "0" and value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                msg = f"{label}: a position must be an int >= 0, got {value!r}"
                raise ConnectorError(msg)
            return value
    return 0


class LineSource(BaseSource):
    r"""Base for a bounded one-partition source decoding a text file in blocks of lines.

    The base reads the file in large chunks, cuts them into blocks of whole lines
    (``_cut``), hands each block to ``_decode`` and then serves the decoded rows ``max_records``
    at a time. Dead letters are held back until the position passes their line, so that a
    checkpoint never sees a dead letter twice. Subclasses implement ``_cut`` and ``_decode``,
    and may read a header in ``_start``.

    Args:
        path: the file.
        name: the step name used in dead letters.
        what: the file kind for messages, e.g. ``"CSV file"``.
        read_size: bytes per read.

    Example:
        >>> class Lines(LineSource):
        ...     def _cut(self, buf, eof):
        ...         return buf.rfind(b"\n") + 1 or None
        ...     def _decode(self, block, first_line):
        ...         rows = block.decode().splitlines()
        ...         lines = np.arange(first_line, first_line + len(rows))
        ...         return Batch({"text": rows}, offset=lines), lines, []
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = Path(tmp.name) / "log.txt"
        >>> _ = path.write_text("a\nb\nc\n")
        >>> src = Lines(path, name="log", what="text file")
        >>> src.open({0: 1})
        >>> src.poll(10, 0.0)["text"].tolist(), src.position(), src.poll(10, 0.0)
        (['b', 'c'], {0: 3}, None)
        >>> src.close(); tmp.cleanup()
    """

    def __init__(self, path: str | Path, *, name: str, what: str, read_size: int = 1 << 20) -> None:
        super().__init__()
        self.path = Path(path)
        self.name = name
        self._what = what
        self._read_size = max(int(read_size), 1 << 12)
        self._file: IO[bytes] | None = None
        self._opened = False
        self._reset()

    def _reset(self) -> None:
        self._pending = b""
        self._eof = False
        self._first_read = True
        self._next_line = 1  # number of the first line in _pending
        self._pos = 0
        self._batch: Batch | None = None
        self._lines: Array = np.empty(0, dtype=np.int64)
        self._at = 0
        self._block_end = 0
        self._held: list[tuple[int, DeadLetter]] = []

    # -- hooks -----------------------------------------------------------------------------
    def _start(self) -> None:
        """Read what precedes the data (a header); called by ``open``."""

    def _cut(self, buf: bytes, eof: bool) -> int | None:  # pragma: no cover
        """Where to end the next block in ``buf`` (after a newline), or None for more data."""
        raise NotImplementedError

    def _decode(
        self, block: bytes, first_line: int
    ) -> tuple[Batch, Array, list[tuple[int, DeadLetter]]]:  # pragma: no cover
        """Decode a block of whole lines: good rows, their line numbers, dead letters."""
        raise NotImplementedError

    # -- protocol --------------------------------------------------------------------------
    def open(self, positions: Mapping[int, Any]) -> None:
        """Open the file; resume after the line given for partition 0.

        Raises:
            ConnectorError: if the file cannot be opened, or is shorter than the position.
        """
        start = start_position(positions, self.name)
        self.close()
        self._reset()
        try:
            self._file = self.path.open("rb")
        except OSError as exc:
            raise open_error(self._what, self.path, exc) from exc
        self._opened = True
        try:
            self._start()
            self._skip_to(start)
        except BaseException:
            self.close()
            raise
        self._pos = max(start, self._next_line - 1)

    def poll(self, max_records: int, timeout: float) -> Batch | None:
        """Up to ``max_records`` rows (never waits); ``None`` at the end of the file.

        A block whose lines were all rejected gives an empty batch, so that the dead
        letters are picked up before the next block is read.
        """
        if max_records < 1:
            msg = f"{self.name}: max_records must be >= 1, got {max_records}"
            raise ConfigError(msg)
        if not self._opened:
            self.open({})
        while self._batch is None or self._at >= len(self._batch):
            got = self._next_block(self._cut)
            if got is None:
                return None
            block, first = got
            batch, lines, dead = self._decode(block, first)
            self._batch, self._lines, self._at = batch, lines, 0
            self._block_end = self._next_line - 1
            self._held = sorted(dead, key=lambda d: d[0])
            if not len(batch):
                self._release(self._block_end)
                if dead:
                    return batch
        assert self._batch is not None  # narrowed by the loop above
        stop = min(self._at + max_records, len(self._batch))
        out = self._batch.slice(self._at, stop)
        self._at = stop
        after = int(self._lines[stop]) - 1 if stop < len(self._batch) else self._block_end
        self._release(after)
        return out

    def position(self) -> dict[int, Any]:
        """``{0: n}``: every line up to ``n`` (1-based) has been returned or rejected."""
        return {0: self._pos}

    def close(self) -> None:
        """Close the file (``open`` may be called again)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- reading ---------------------------------------------------------------------------
    def _release(self, line: int) -> None:
        held = self._held
        i = 0
        while i < len(held) and held[i][0] <= line:
            self.reject(held[i][1])
            i += 1
        self._held = held[i:]
        self._pos = max(self._pos, line)

    def _fill(self, size: int) -> None:
        if self._file is None:
            msg = f"{self.name}: the {self._what} '{self.path}' is closed; call open() first"
            raise ConnectorError(msg)
        data = self._file.read(size)
        if self._first_read:
            self._first_read = False
            data = data.removeprefix(b"\xef\xbb\xbf")
            if not data:
                data = self._file.read(size)
        if data:
            self._pending += data
            return
        self._eof = True
        if self._pending and not self._pending.endswith(b"\n"):
            self._pending += b"\n"  # the last line counts as a line without its newline
        self._file.close()
        self._file = None

    def _next_block(
        self, cut: Callable[[bytes, bool], int | None], *, consume: bool = True
    ) -> tuple[bytes, int] | None:
        """The next block of whole lines and the number of its first line.

        With ``consume=False`` the block stays unread (a peek).
        """
        while True:
            at = cut(self._pending, self._eof) if self._pending else None
            if at is not None:
                break
            if self._eof:
                if not self._pending:
                    return None
                at = len(self._pending)
                break
            self._fill(max(self._read_size, len(self._pending)))
        block, first = self._pending[:at], self._next_line
        if consume:
            self._pending = self._pending[at:]
            self._next_line += block.count(b"\n")
        return block, first

    def _skip_to(self, line: int) -> None:
        """Drop lines until the next one is ``line + 1``."""
        need = line - (self._next_line - 1)
        while need > 0:
            if self._pending:
                ends = np.flatnonzero(np.frombuffer(self._pending, dtype=np.uint8) == 10)
                if len(ends) >= need:
                    self._pending = self._pending[int(ends[need - 1]) + 1 :]
                    self._next_line += need
                    return
                if len(ends):
                    self._pending = self._pending[int(ends[-1]) + 1 :]
                    self._next_line += len(ends)
                    need -= len(ends)
            if self._eof:
                msg = (
                    f"{self.name}: cannot resume the {self._what} '{self.path}' after line "
                    f"{line}: it has only {self._next_line - 1} lines; was it replaced or "
                    "truncated? Start from an empty position to read it from the top"
                )
                raise ConnectorError(msg)
            self._fill(self._read_size)


def to_table(batch: Batch, label: str) -> pa.Table:
    """The user columns of ``batch`` as an Arrow table, or an error naming the column.

    Raises:
        ConnectorError: for a column Arrow cannot hold (e.g. mixed Python types).

    Example:
        >>> to_table(Batch({"x": [1, 2]}), "sink").column_names
        ['x']
    """
    try:
        return batch.to_arrow()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        culprit = next((n for n in batch.names if not _arrow_ok(batch[n])), "?")
        values = batch[culprit] if culprit in batch else None
        dtype = "?" if values is None else values.dtype
        msg = (
            f"{label}: cannot write column {culprit!r} ({dtype}): {exc}; give it one type "
            "(numbers or strings) in a step before the sink"
        )
        raise ConnectorError(msg) from exc


def _arrow_ok(values: Array) -> bool:
    try:
        Batch({"x": values}).to_arrow()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return False
    return True


def conform(table: pa.Table, schema: pa.Schema, label: str) -> pa.Table:
    """Make a batch's table match the schema the first batch fixed, or say why it cannot.

    Columns may come in another order; all-null columns and integer to float (or wider
    integer) changes are cast. Anything else is an error naming the column.

    Raises:
        ConnectorError: for other columns or an incompatible type.

    Example:
        >>> fixed = pa.schema([("x", pa.float64())])
        >>> conform(pa.table({"x": [1, 2]}), fixed, "sink").schema.types
        [DataType(double)]
    """
    if table.schema.equals(schema):
        return table
    if sorted(table.column_names) != sorted(schema.names):
        msg = (
            f"{label}: this batch has columns {table.column_names} but the file has "
            f"{schema.names} (fixed by the first batch); select or rename columns before the "
            "sink so that every batch has the same ones"
        )
        raise ConnectorError(msg)
    cols = []
    for field in schema:
        col = table.column(field.name)
        src, dst = col.type, field.type
        if src != dst:
            widen = pa.types.is_null(src) or (
                (pa.types.is_integer(src) or pa.types.is_floating(src))
                and pa.types.is_floating(dst)
            )
            widen = widen or (pa.types.is_integer(src) and pa.types.is_integer(dst))
            try:
                if not widen:
                    reason = f"no cast from {src} to {dst}"
                    raise pa.ArrowInvalid(reason)
                col = col.cast(dst)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                msg = (
                    f"{label}: column {field.name!r} is {src} in this batch but {dst} in the file "
                    f"(fixed by the first batch): {exc}; cast the column in a step before the "
                    "sink, or write to a new file"
                )
                raise ConnectorError(msg) from exc
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema)


class FileSink(BaseSink):
    """Base for a sink writing one file: opening, parent folders, append, flush, close.

    Subclasses implement ``_write(batch)`` with ``self._file`` open; ``write`` opens the
    file on first use and skips empty batches.

    Args:
        path: the file to write (parent folders are created).
        what: the file kind for messages, e.g. ``"JSON Lines file"``.
        append: add to an existing file instead of replacing it.

    Example:
        >>> class Names(FileSink):
        ...     def _write(self, batch):
        ...         self._file.write(" ".join(batch.names).encode())
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> sink = Names(Path(tmp.name) / "sub" / "out.txt", what="text file")
        >>> sink.write(Batch({"a": [1], "b": [2]})); sink.close()
        >>> sink.path.read_text()
        'a b'
        >>> tmp.cleanup()
    """

    can_reopen = True
    """Whether ``open`` after ``close`` may append to what was written."""

    def __init__(self, path: str | Path, *, what: str, append: bool = False) -> None:
        self.path = Path(path)
        self.append = append
        self._what = what
        self._file: IO[bytes] | None = None
        self._closed = False
        self._started = False
        self._resuming = False

    def resume(self) -> None:
        """Keep the file's contents: the run goes on from a checkpoint (see ``open``)."""
        self._resuming = True

    @property
    def label(self) -> str:
        """The sink for messages, e.g. ``CsvSink('out.csv')``."""
        return f"{type(self).__name__}('{self.path}')"

    def open(self) -> None:
        """Create parent folders and open the file (truncated unless ``append``).

        Opening again after ``close`` appends to what this sink wrote. After
        :meth:`resume` (a run restored from a checkpoint) the file is never truncated: new
        lines go after the old ones (at least once: the lines written after the checkpoint
        come again), and a last line that a crash cut short is ended first, so that it
        cannot swallow the next one.

        Raises:
            ConnectorError: if the file cannot be created.
        """
        if self._file is not None:
            return
        if self._started and not self.can_reopen:
            msg = f"{self.label} was closed and cannot be reopened; write to a new file"
            raise ConnectorError(msg)
        keep = self.append or self._started or self._resuming
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab" if keep else "wb")
            if self._resuming and not self._started and self._file.tell():
                with self.path.open("rb") as f:
                    f.seek(-1, 2)
                    if f.read(1) != b"\n":
                        self._file.write(b"\n")
        except OSError as exc:
            raise open_error(self._what, self.path, exc) from exc
        self._closed = False
        self._started = True

    def write(self, batch: Batch) -> None:
        """Write the user columns of ``batch`` (system arrays are not written).

        Raises:
            ConnectorError: after ``close``, or when the batch cannot be written.
        """
        if self._closed:
            msg = f"{self.label} is closed; call open() before writing to it again"
            raise ConnectorError(msg)
        if not len(batch):
            return
        self.open()
        self._write(batch)

    def _write(self, batch: Batch) -> None:  # pragma: no cover
        raise NotImplementedError

    def flush(self) -> None:
        """Hand what was written to the operating system."""
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Flush and close the file (closed even when the flush fails: a full disk)."""
        self._closed = True
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.flush()
            finally:
                file.close()


def open_input(file: str) -> IO[bytes]:
    """Open a command's input file for reading bytes, or raise a one-line ConnectorError."""
    try:
        return Path(file).open("rb")
    except OSError as exc:
        msg = f"cannot read {file!r}: {exc.strerror}"
        raise ConnectorError(msg) from exc


def quiet_broken_pipe() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail.

    For commands that print into a pipe whose reader went away (``... | head``).
    """
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())

