"""CSV files: a bounded :class:`CsvSource` decoded in bulk by Arrow, and a :class:`CsvSink`.

The source splits the file into blocks of ``block_rows`` rows (quoted fields may hold
newlines), lets Arrow's CSV parser read each block as text, then converts every column
with vectorized checks: a value that is not of its column's type, or a row with the wrong
number of fields, becomes a dead letter and the rest of the block flows on. Types come
from ``schema``; each other column takes the kind that most values of the file's first
block fit (:func:`infer_kind`: one ``hot`` among numbers is a dead letter, not a string
column), kept so that every batch of a file has the same dtypes. Fields may be of any
size, and a quote left open costs its line only: decoding resyncs on the next line.

Example:
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = Path(tmp.name) / "readings.csv"
    >>> sink = CsvSink(path)
    >>> sink.write(Batch({"sensor": ["a", "b"], "value": [0.5, 2.25]})); sink.close()
    >>> src = CsvSource(path)
    >>> src.poll(100, 0.0).to_records()
    [{'sensor': 'a', 'value': 0.5}, {'sensor': 'b', 'value': 2.25}]
    >>> src.close(); tmp.cleanup()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from tidal.core.batch import Array, Batch
from tidal.errors import ConfigError, ConnectorError
from tidal.io.base import DeadLetter
from tidal.io.fileutil import FileSink, LineSource, conform, to_table
from tidal.io.parts import PartSink
from tidal.io.schema import ARROW_TYPES, EXPECTED, Kind, SchemaLike, resolve_schema

__all__ = ["CsvSource", "CsvSink", "CsvPartSink"]

_INT = r"^[+-]?[0-9]+$"
_FLOAT = r"(?i)^[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?|inf|infinity|nan)$"
_NEWLINE, _QUOTE, _CR = 10, 34, 13
_MAX_OPEN_LINES = 4096
"""Lines a quoted value may span before a block is cut in it (and the quote checked)."""


def _reader(data: bytes | pa.Buffer) -> Any:
    """A file-like reader over bytes in memory (typed ``Any`` for ``read_csv``)."""
    return pa.BufferReader(data)


def _block_size(size: int) -> int:
    """Arrow's CSV block size for ``size`` bytes of rows: all of them at once.

    Then no field straddles two of Arrow's blocks, however long it is.
    """
    return min(max(size + 1, 1 << 20), 2**31 - 1)


def _mask(arr: Any) -> Array:
    """A boolean Arrow array as numpy (nulls as False)."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _cast_each(text: pa.Array[Any], target: pa.DataType) -> tuple[pa.Array[Any], Array]:
    """Cast value by value (the slow path, for values the regex let through)."""
    values: list[Any] = []
    bad = np.zeros(len(text), dtype=bool)
    for i, value in enumerate(text.to_pylist()):
        try:
            values.append(None if value is None else pa.array([value]).cast(target)[0].as_py())
        except (pa.ArrowInvalid, OverflowError):
            values.append(None)
            bad[i] = True
    return pa.array(values, type=target), bad


def parse_text(text: pa.Array[Any], kind: Kind) -> tuple[pa.Array[Any], Array, Array]:
    """Convert a column of CSV text to ``kind``, vectorized.

    Surrounding spaces are ignored for numbers and booleans; an empty ``float`` value is a
    missing value (NaN), an empty ``int`` or ``bool`` value is an error; ``str`` is kept as
    written. Booleans are ``true``/``false``/``1``/``0`` in any case.

    Returns:
        the converted values (null where bad), a mask of the bad values, a mask of the
        empty ones.

    Example:
        >>> values, bad, empty = parse_text(pa.array(["1.5", "abc", ""]), "float")
        >>> values.to_pylist(), bad.tolist(), empty.tolist()
        ([1.5, None, None], [False, True, False], [False, False, True])
    """
    if kind == "str":
        none = np.zeros(len(text), dtype=bool)
        return text, none, none
    trimmed = pc.utf8_trim_whitespace(text)
    empty = _mask(pc.equal(trimmed, pa.scalar("")))
    if kind == "bool":
        low = pc.utf8_lower(trimmed)
        true = _mask(pc.is_in(low, pa.array(["true", "1"])))
        ok = true | _mask(pc.is_in(low, pa.array(["false", "0"])))
        return pa.array(true, mask=~ok), ~ok, empty
    target = ARROW_TYPES[kind]
    if kind == "int":
        ok = _mask(pc.match_substring_regex(trimmed, _INT))
        trimmed = pc.replace_substring_regex(trimmed, r"^\+", "")
        bad = ~ok
    else:
        ok = _mask(pc.match_substring_regex(trimmed, _FLOAT))
        bad = ~(ok | empty)
    kept = pc.if_else(pa.array(ok), trimmed, pa.scalar(None, pa.string()))
    try:
        values = kept.cast(target)
    except pa.ArrowInvalid:
        values, worse = _cast_each(kept, target)
        bad = bad | worse
    return values, bad, empty


def infer_kind(text: pa.Array[Any]) -> Kind:
    """The kind that most values of a CSV text column fit (more than half of those not empty).

    A column whose values are mostly numbers is ``int`` (all of them integers, none empty)
    or ``float`` (an empty value is NaN); mostly booleans and none empty, ``bool``; else
    ``str``, which every value fits. The values that do not fit the kind chosen become
    dead letters, so one ``hot`` among numbers costs its row, not the column's type. A
    column with no values at all is ``str``.

    Example:
        >>> [infer_kind(pa.array(v)) for v in (["1", "2"], ["1", ""], ["x", "1"], ["true"])]
        ['int', 'float', 'str', 'bool']
        >>> infer_kind(pa.array(["1", "2", "hot"])), infer_kind(pa.array(["1.5", "2", "hot"]))
        ('int', 'float')
    """
    trimmed = pc.utf8_trim_whitespace(text)
    empty = _mask(pc.equal(trimmed, pa.scalar("")))
    values = int((~empty).sum())
    if values == 0:
        return "str"
    ints = int(_mask(pc.match_substring_regex(trimmed, _INT)).sum())
    numbers = int(_mask(pc.match_substring_regex(trimmed, _FLOAT)).sum())
    if 2 * numbers > values:
        return "int" if ints == numbers and not empty.any() else "float"
    if not empty.any() and 2 * int((~parse_text(text, "bool")[1]).sum()) > values:
        return "bool"
    return "str"


class CsvSource(LineSource):
    r"""Rows of a CSV file with a header line, decoded in bulk; bad rows become dead letters.

    Each row's ``Batch.offset`` is its line number (1-based physical lines, the header is
    line 1); ``position()`` is ``{0: last line handed out}`` and ``open({0: n})`` resumes at
    line ``n + 1``.

    Dead-letter reasons (``position`` is ``{"file": path, "line": n}``, ``raw`` the row):

    - ``line 4: expected 3 fields, got 2``
    - ``line 7: expected a number in 'value', got 'abc'`` (several columns are joined with
      ``"; "``; an empty value reads ``got an empty value``)
    - ``line 9: cannot parse the row as CSV (...)`` (e.g. invalid UTF-8)

    Args:
        path: the CSV file.
        schema: column -> ``"int"``/``"float"``/``"str"``/``"bool"`` (or the Python type);
            other columns take the kind most values of the first block fit (see
            :func:`infer_kind`), kept for the whole file.
        delimiter: the field separator.
        block_rows: rows decoded per block.
        name: the step name in dead letters (default ``csv:<file name>``).

    Raises:
        ConfigError: for a bad delimiter, block size or schema.

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = Path(tmp.name) / "in.csv"
        >>> _ = path.write_text("id,value\n1,2.5\n2,abc\n3\n4,-1\n")
        >>> src = CsvSource(path, schema={"value": float})
        >>> src.open({})
        >>> src.poll(100, 0.0).to_records()
        [{'id': 1, 'value': 2.5}, {'id': 4, 'value': -1.0}]
        >>> [d.reason for d in src.dead_letters()]
        ["line 3: expected a number in 'value', got 'abc'", 'line 4: expected 2 fields, got 1']
        >>> src.close(); tmp.cleanup()
    """

    def __init__(
        self,
        path: str | Path,
        *,
        schema: SchemaLike | None = None,
        delimiter: str = ",",
        block_rows: int = 65536,
        name: str | None = None,
    ) -> None:
        label = name or f"csv:{Path(path).name}"
        if len(delimiter) != 1 or delimiter in '"\r\n':
            msg = (
                f"{label}: delimiter must be one character other than a quote or a newline, "
                f"got {delimiter!r}"
            )
            raise ConfigError(msg)
        if block_rows < 1:
            msg = f"{label}: block_rows must be >= 1, got {block_rows}"
            raise ConfigError(msg)
        super().__init__(path, name=label, what="CSV file")
        self.schema = resolve_schema(schema, where=label)
        self.delimiter = delimiter
        self.block_rows = int(block_rows)
        self.columns: list[str] = []
        self._kinds: dict[str, Kind] = {}

    # -- header and inference -----------------------------------------------------------
    def _start(self) -> None:
        got = self._next_block(lambda buf, eof: self._cut_rows(buf, eof, 1))
        header = got[0] if got else b""
        if not header.rstrip(b"\r\n"):
            what = "is empty" if got is None else "starts with an empty line"
            msg = (
                f"CSV file '{self.path}' {what}; its first line must be the header with the "
                "column names"
            )
            raise ConnectorError(msg)
        try:
            names = pa_csv.read_csv(
                _reader(header),
                read_options=pa_csv.ReadOptions(block_size=_block_size(len(header))),
                parse_options=self._parse_options(None),
            ).column_names
        except pa.ArrowInvalid as exc:
            msg = f"cannot read the header of CSV file '{self.path}': {exc}; check the first line"
            raise ConnectorError(msg) from exc
        dupes = sorted({n for n in names if names.count(n) > 1})
        missing = [n for n in self.schema if n not in names]
        if dupes or missing:
            problem = (
                f"repeats the columns {dupes}" if dupes else f"lacks {missing} from the schema"
            )
            msg = (
                f"the header of CSV file '{self.path}' {problem} (columns: {names}); "
                "fix the header or the schema"
            )
            raise ConnectorError(msg)
        self.columns = list(names)
        self._kinds = {n: self.schema.get(n, "str") for n in names}
        if any(n not in self.schema for n in names):
            self._infer()

    def _infer(self) -> None:
        """Infer the undeclared columns' kinds from the file's first block (not consumed)."""
        got = self._next_block(self._cut, consume=False)
        if got is None:
            return
        text, _, _, _ = self._split(got[0], got[1])
        if text.num_rows:
            for name in self.columns:
                if name not in self.schema:
                    self._kinds[name] = infer_kind(text.column(name).combine_chunks())

    # -- blocks -------------------------------------------------------------------------
    def _cut(self, buf: bytes, eof: bool) -> int | None:
        return self._cut_rows(buf, eof, self.block_rows)

    @staticmethod
    def _row_ends(buf: bytes) -> tuple[Array, Array]:
        """Offsets of all newlines, and of those that end a row (outside quotes)."""
        arr = np.frombuffer(buf, dtype=np.uint8)
        newlines = np.flatnonzero(arr == _NEWLINE)
        if b'"' not in buf:
            return newlines, newlines
        quotes = np.flatnonzero(arr == _QUOTE)
        return newlines, newlines[np.searchsorted(quotes, newlines) % 2 == 0]

    def _cut_rows(self, buf: bytes, eof: bool, rows: int) -> int | None:
        newlines, ends = self._row_ends(buf)
        if len(ends) >= rows:
            return int(ends[rows - 1]) + 1
        if eof:
            return len(buf)
        # a quote left open spans more lines than a block holds: cut at a line end and let
        # _decode find the bad line, rather than read the rest of the file into one row
        open_lines = len(newlines) - (
            int(np.searchsorted(newlines, ends[-1])) + 1 if len(ends) else 0
        )
        if open_lines > max(rows, _MAX_OPEN_LINES):
            return int(newlines[-1]) + 1
        return None

    def _parse_options(self, invalid: list[tuple[int | None, int]] | None) -> Any:
        def handler(row: pa_csv.InvalidRow) -> Literal["skip", "error"]:
            assert invalid is not None
            invalid.append((row.number, row.actual_columns))
            return "skip"

        return pa_csv.ParseOptions(
            delimiter=self.delimiter,
            newlines_in_values=True,
            invalid_row_handler=None if invalid is None else handler,
        )

    def _read(self, data: pa.Buffer) -> tuple[pa.Table, list[tuple[int | None, int]]]:
        invalid: list[tuple[int | None, int]] = []
        table = pa_csv.read_csv(
            _reader(data),
            read_options=pa_csv.ReadOptions(
                column_names=self.columns,
                use_threads=False,
                block_size=_block_size(data.size),
            ),
            parse_options=self._parse_options(invalid),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(self.columns, pa.string()),
                strings_can_be_null=False,
            ),
        )
        return table, invalid

    def _split(
        self, block: bytes, first_line: int
    ) -> tuple[pa.Table, Array, Array, list[tuple[int, str]]]:
        """Parse a block as text: the good rows, their row indices, row spans, failures.

        Returns:
            the rows with the right number of fields (all ``string``), the indices of
            those rows among the block's non-empty rows, an ``(n, 3)`` array of start,
            stop and line per non-empty row, and ``(row index, reason)`` for the others.
        """
        newlines, ends = self._row_ends(block)
        if not len(ends) or ends[-1] != len(block) - 1:  # an unterminated quote at the end
            ends = np.append(ends, len(block) - 1)
        starts = np.concatenate(([0], ends[:-1] + 1))
        arr = np.frombuffer(block, dtype=np.uint8)
        stops = ends - ((ends > starts) & (arr[ends - 1] == _CR))
        rows = np.flatnonzero(stops > starts)
        spans = np.stack(
            [starts[rows], stops[rows], first_line + np.searchsorted(newlines, starts[rows])],
            axis=1,
        )
        keep = np.ones(len(rows), dtype=bool)
        tables: list[pa.Table] = []
        failed: list[tuple[int, str]] = []
        buf = pa.py_buffer(block)
        todo = [(0, len(rows))] if len(rows) else []
        while todo:
            lo, hi = todo.pop()
            start, stop = int(spans[lo, 0]), int(spans[hi - 1, 1])
            try:
                table, invalid = self._read(buf.slice(start, stop - start))
                error = "" if table.num_rows + len(invalid) == hi - lo else "rows out of step"
                error = error or (
                    "row numbers unknown" if any(n is None for n, _ in invalid) else ""
                )
            except pa.ArrowInvalid as exc:
                error = str(exc)
            if error and hi - lo > 1:
                mid = (lo + hi) // 2
                todo += [(mid, hi), (lo, mid)]  # popped lo half first: tables stay in order
                continue
            if error:
                keep[lo] = False
                failed.append((lo, f"cannot parse the row as CSV ({error})"))
                continue
            tables.append(table)
            for number, actual in invalid:
                keep[lo + int(number or 0) - 1] = False
                failed.append(
                    (
                        lo + int(number or 0) - 1,
                        f"expected {len(self.columns)} fields, got {actual}",
                    )
                )
        schema = pa.schema([(n, pa.string()) for n in self.columns])
        text = pa.concat_tables(tables) if tables else schema.empty_table()
        return text, np.flatnonzero(keep), spans, failed

    def _decode(
        self, block: bytes, first_line: int
    ) -> tuple[Batch, Array, list[tuple[int, DeadLetter]]]:
        """Decode a block; a row that spans lines and is broken costs its first line only.

        A quote left open (``1,"abc,2``) or a stray one (``5" screen``) makes the lines
        after it one long row. Such a row (several lines, and unparseable, with the wrong
        number of fields, or with a quote that RFC 4180 does not allow where it is) is cut:
        its first line is decoded alone, and decoding goes on with the next line.
        """
        pieces: list[tuple[Batch, Array, list[tuple[int, DeadLetter]]]] = []
        at, line = 0, first_line
        while at < len(block):
            part = block[at:] if at else block
            split = self._split(part, line)
            r = self._suspect(part, split[2], split[3])
            if r is None:
                pieces.append(self._convert(part, *split))
                break
            start, _, row_line = (int(v) for v in split[2][r])
            end = part.index(b"\n", start) + 1
            if start:
                pieces.append(self._convert(part[:start], *self._split(part[:start], line)))
            one = part[start:end]
            if self._unclosed(one):  # Arrow would take the rest of the line as the value
                stop = len(one.rstrip(b"\r\n"))
                text = pa.schema([(n, pa.string()) for n in self.columns]).empty_table()
                empty = np.empty(0, dtype=np.int64)
                span = np.array([[0, stop, row_line]], dtype=np.int64)
                reason = "a quoted value is not closed on this line (nor on the next ones)"
                pieces.append(self._convert(one, text, empty, span, [(0, reason)]))
            else:
                pieces.append(self._convert(one, *self._split(one, row_line)))
            at, line = at + end, row_line + 1
        if len(pieces) == 1:
            return pieces[0]
        batches = [b for b, _, _ in pieces if len(b)]
        batch = Batch.concat(batches) if batches else pieces[0][0]
        lines = np.concatenate([ln for _, ln, _ in pieces])
        return batch, lines, [d for _, _, dead in pieces for d in dead]

    def _unclosed(self, line: bytes) -> bool:
        """Whether a line opens a quoted value (a quote at a field's start) left open.

        Quotes inside an unquoted value (``5" screen``) are text, as Arrow reads them.
        """
        if not line.count(b'"') % 2:
            return False
        delim = self.delimiter.encode()
        return line.startswith(b'"') or delim + b'"' in line

    def _suspect(self, block: bytes, spans: Array, failed: list[tuple[int, str]]) -> int | None:
        """The first row that spans lines and is broken, or ``None`` (the happy path)."""
        if not len(spans) or b'"' not in block:
            return None
        arr = np.frombuffer(block, dtype=np.uint8)
        newlines = np.flatnonzero(arr == _NEWLINE)
        inner = np.searchsorted(newlines, spans[:, 1]) - np.searchsorted(newlines, spans[:, 0])
        multi = inner > 0
        if not multi.any():
            return None
        quotes = np.flatnonzero(arr == _QUOTE)
        opening, closing = quotes[0::2], quotes[1::2]
        delim = ord(self.delimiter)
        before = arr[np.maximum(opening - 1, 0)]
        bad_open = (opening > 0) & ~np.isin(before, [delim, _NEWLINE, _QUOTE])
        after = arr[np.minimum(closing + 1, len(arr) - 1)]
        bad_close = (closing < len(arr) - 1) & ~np.isin(after, [delim, _NEWLINE, _CR, _QUOTE])
        stray = np.concatenate((opening[bad_open], closing[bad_close]))
        rows = set((np.searchsorted(spans[:, 0], stray, side="right") - 1).tolist())
        rows |= {row for row, _ in failed}
        suspects = [r for r in rows if 0 <= r < len(spans) and multi[r]]
        return min(suspects) if suspects else None

    def _convert(
        self,
        block: bytes,
        text: pa.Table,
        good: Array,
        spans: Array,
        failed: list[tuple[int, str]],
    ) -> tuple[Batch, Array, list[tuple[int, DeadLetter]]]:
        """Typed columns from a parsed block; values of the wrong kind become dead letters."""
        problems: dict[int, list[str]] = {}
        bad = np.zeros(text.num_rows, dtype=bool)
        columns: dict[str, pa.Array[Any]] = {}
        for name in self.columns:
            raw = text.column(name).combine_chunks()
            kind = self._kinds[name]
            values, wrong, empty = parse_text(raw, kind)
            columns[name] = values
            if wrong.any():
                where = np.flatnonzero(wrong)
                shown = raw.take(where).to_pylist()
                for i, value in zip(where.tolist(), shown, strict=True):
                    got = "an empty value" if empty[i] else repr(value)
                    problems.setdefault(i, []).append(
                        f"expected {EXPECTED[kind]} in {name!r}, got {got}"
                    )
                bad |= wrong
        ok = ~bad
        table = pa.table(columns).filter(pa.array(ok)) if columns else pa.table({})
        lines = spans[good[ok], 2]
        batch = Batch.from_arrow(table)
        batch = Batch(
            batch.columns,
            offset=lines,
            partition=np.zeros(len(lines), dtype=np.int32),
            length=len(lines),
        )
        dead = [(row, reason) for row, reason in failed]
        dead += [(int(good[i]), "; ".join(msgs)) for i, msgs in problems.items()]
        letters = []
        for row, reason in dead:
            start, stop, line = (int(v) for v in spans[row])
            raw_text = block[start:stop].decode("utf-8", "replace")
            letter = DeadLetter(
                self.name,
                f"line {line}: {reason}",
                {"file": str(self.path), "line": line},
                raw_text,
            )
            letters.append((line, letter))
        return batch, lines, letters


class CsvSink(FileSink):
    r"""Write the user columns of each batch as CSV rows, with a header line.

    The first batch fixes the columns; with ``append=True`` the header is written only to
    an empty file, and an existing file's header must name the same columns. Numbers and
    strings are written by Arrow's CSV writer; NaN and None are empty values.

    Args:
        path: the file (parent folders are created).
        append: add rows to an existing file instead of replacing it.
        delimiter: the field separator.

    Raises:
        ConnectorError: for a batch whose columns differ from the first batch's, or a
            column CSV cannot hold (lists, dicts).

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> sink = CsvSink(Path(tmp.name) / "out.csv")
        >>> sink.write(Batch({"id": [1, 2], "ok": [True, False]})); sink.close()
        >>> sink.path.read_text()
        '"id","ok"\n1,true\n2,false\n'
        >>> tmp.cleanup()
    """

    def __init__(self, path: str | Path, *, append: bool = False, delimiter: str = ",") -> None:
        super().__init__(path, what="CSV file", append=append)
        self.delimiter = delimiter
        self._schema: pa.Schema | None = None
        self._writer: pa_csv.CSVWriter | None = None

    def _write(self, batch: Batch) -> None:
        assert self._file is not None
        table = to_table(batch, self.label)
        if self._schema is None:
            for field in table.schema:
                if pa.types.is_nested(field.type):
                    msg = (
                        f"{self.label}: column {field.name!r} holds {field.type}, which CSV "
                        "cannot hold; flatten it in a step before the sink, or write JSON "
                        "Lines or Parquet"
                    )
                    raise ConnectorError(msg)
            self._schema = table.schema
        else:
            table = conform(table, self._schema, self.label)
        if self._writer is None:
            header = self._file.tell() == 0
            if not header:
                self._check_header(table.column_names)
            options = pa_csv.WriteOptions(include_header=header, delimiter=self.delimiter)
            self._writer = pa_csv.CSVWriter(self._file, table.schema, write_options=options)
        self._writer.write_table(table)

    def _check_header(self, names: list[str]) -> None:
        with self.path.open("rb") as f:
            first = f.readline()
        try:
            existing = pa_csv.read_csv(
                _reader(first),
                parse_options=pa_csv.ParseOptions(delimiter=self.delimiter),
            ).column_names
        except pa.ArrowInvalid:
            existing = [first.rstrip(b"\r\n").decode("utf-8", "replace")]
        if existing != names:
            msg = (
                f"{self.label}: cannot append columns {names} to a file whose header is "
                f"{existing}; select the same columns or write to a new file"
            )
            raise ConnectorError(msg)

    def close(self) -> None:
        """Finish the CSV writer and close the file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        super().close()


class CsvPartSink(PartSink):
    """Exactly-once CSV output: part files in a directory, committed by checkpoints.

    Each checkpoint commits the rows written since the previous one as
    ``<directory>/part-<checkpoint:012d>-<n>.csv``, each with its header line; rows are
    encoded as in :class:`CsvSink`. See :mod:`tidal.io.parts` for the protocol.

    Args:
        directory: the output directory (one per sink).
        roll_bytes: start a new part file after this many bytes (``None``: one per
            checkpoint).
        delimiter: the field separator.

    Example:
        >>> import tempfile
        >>> from tidal.io.parts import read_committed
        >>> tmp = tempfile.TemporaryDirectory()
        >>> sink = CsvPartSink(tmp.name)
        >>> sink.write(Batch({"id": [1, 2]}))
        >>> sink.commit(3, sink.prepare(3)); sink.close()
        >>> read_committed(tmp.name)
        [{'id': 1}, {'id': 2}]
        >>> tmp.cleanup()
    """

    suffix = ".csv"

    def __init__(
        self, directory: str | Path, *, roll_bytes: int | None = 256 << 20, delimiter: str = ","
    ) -> None:
        super().__init__(directory, roll_bytes=roll_bytes)
        self.delimiter = delimiter

    def _file_sink(self, path: Path) -> CsvSink:
        return CsvSink(path, delimiter=self.delimiter)
