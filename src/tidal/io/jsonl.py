"""JSON Lines files: a bounded :class:`JsonlSource` and a :class:`JsonlSink` (orjson).

One JSON object per line. The source cuts the file into blocks of about ``block_bytes``,
parses a block's lines with orjson in one pass and turns the objects into Arrow columns in
one call; only a block with a bad line is re-read line by line to find it. Missing fields
are missing values (NaN in float columns; integer columns with a gap become float64, as
:meth:`Batch.from_arrow <tidal.core.batch.Batch.from_arrow>` does), unless ``schema`` says
the column is ``int`` or ``bool``: then the row is a dead letter, as is any value of the
wrong type.

Example:
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = Path(tmp.name) / "events.jsonl"
    >>> sink = JsonlSink(path)
    >>> sink.write(Batch({"user": ["u1", "u2"], "clicks": [3, 5]})); sink.close()
    >>> path.read_text().splitlines()
    ['{"user":"u1","clicks":3}', '{"user":"u2","clicks":5}']
    >>> JsonlSource(path).poll(10, 0.0)["clicks"].tolist()
    [3, 5]
    >>> tmp.cleanup()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import pyarrow as pa

from tidal.core.batch import Array, Batch
from tidal.errors import ConfigError, ConnectorError
from tidal.io.base import DeadLetter
from tidal.io.fileutil import FileSink, LineSource
from tidal.io.parts import PartSink
from tidal.io.schema import ARROW_TYPES, EXPECTED, Kind, SchemaLike, resolve_schema

__all__ = ["JsonlSource", "JsonlSink", "JsonlPartSink", "dumps_rows"]

_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)
_INT64 = (-(2**63), 2**63)


def _fits(kind: Kind, value: Any) -> bool:
    """Whether a JSON value is of ``kind`` (``None`` fits only float and str)."""
    t = type(value)
    if kind == "int":
        return t is int and _INT64[0] <= value < _INT64[1]
    if kind == "float":
        return value is None or t is float or t is int
    if kind == "bool":
        return t is bool
    return value is None or t is str


def _arrow_fits(kind: Kind, t: pa.DataType) -> bool:
    """Whether an inferred Arrow type can be cast to ``kind`` without looking at values."""
    if pa.types.is_null(t):
        return True
    if kind == "int":
        return pa.types.is_integer(t)
    if kind == "float":
        return pa.types.is_integer(t) or pa.types.is_floating(t)
    if kind == "bool":
        return pa.types.is_boolean(t)
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _try_cast(values: pa.Array[Any], target: pa.DataType) -> pa.Array[Any] | None:
    try:
        return values.cast(target)
    except _ARROW_ERRORS:
        return None


def _show(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."


def _json_kind(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number"}
    return "null" if value is None else names.get(type(value), "a number")


def _object_column(values: list[Any]) -> Array:
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


class JsonlSource(LineSource):
    r"""Objects from a JSON Lines file, one per line; bad lines become dead letters.

    Blank lines are skipped. Each row's ``Batch.offset`` is its (1-based) line number;
    ``position()`` is ``{0: last line handed out}`` and ``open({0: n})`` resumes at line
    ``n + 1``. Columns are the objects' fields in order of first appearance, then any
    ``schema`` column no object had. Nested arrays and objects are ``object`` columns.

    Dead-letter reasons (``position`` is ``{"file": path, "line": n}``, ``raw`` the line):

    - ``line 3: invalid JSON: unexpected end of data: line 1 column 9 (char 8)``
      (the parser's message)
    - ``line 4: not a JSON object, got an array``
    - ``line 5: expected a number in 'value', got "high"``
    - ``line 6: expected an integer in 'time', but the field is missing`` (or ``got null``)

    Args:
        path: the JSON Lines file.
        schema: column -> ``"int"``/``"float"``/``"str"``/``"bool"`` (or the Python
            type), enforced row by row; other fields keep the types JSON gives them.
        block_bytes: about how many bytes to decode per block.
        name: the step name in dead letters (default ``jsonl:<file name>``).

    Raises:
        ConfigError: for a bad block size or schema.

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = Path(tmp.name) / "in.jsonl"
        >>> _ = path.write_text('{"t": 1, "v": 0.5}\n{"t": 2, "v": "x"}\n\n{"v": 1}\n')
        >>> src = JsonlSource(path, schema={"t": int, "v": float})
        >>> src.poll(10, 0.0).to_records(), src.position()
        ([{'t': 1, 'v': 0.5}], {0: 4})
        >>> for d in src.dead_letters():
        ...     print(d.reason)
        line 2: expected a number in 'v', got "x"
        line 4: expected an integer in 't', but the field is missing
        >>> src.close(); tmp.cleanup()
    """

    def __init__(
        self,
        path: str | Path,
        *,
        schema: SchemaLike | None = None,
        block_bytes: int = 1 << 20,
        name: str | None = None,
    ) -> None:
        label = name or f"jsonl:{Path(path).name}"
        if block_bytes < 1:
            msg = f"{label}: block_bytes must be >= 1, got {block_bytes}"
            raise ConfigError(msg)
        super().__init__(path, name=label, what="JSON Lines file", read_size=block_bytes)
        self.schema = resolve_schema(schema, where=label)
        self.block_bytes = int(block_bytes)

    def _cut(self, buf: bytes, eof: bool) -> int | None:
        if len(buf) < self.block_bytes and not eof:
            return None
        at = buf.rfind(b"\n", 0, self.block_bytes)
        if at < 0:
            at = buf.find(b"\n")  # one line longer than a block
        return at + 1 if at >= 0 else None

    def _decode(
        self, block: bytes, first_line: int
    ) -> tuple[Batch, Array, list[tuple[int, DeadLetter]]]:
        lines = block.split(b"\n")
        lines.pop()  # the block ends with a newline
        keep = [i for i, line in enumerate(lines) if line and not line.isspace()]
        failed: list[tuple[int, str]] = []
        try:
            objs: list[Any] = [orjson.loads(lines[i]) for i in keep]
            whole = all(type(o) is dict for o in objs)
        except orjson.JSONDecodeError:
            whole = False
        if not whole:  # find the bad lines
            objs, good = [], []
            for i in keep:
                try:
                    obj = orjson.loads(lines[i])
                except orjson.JSONDecodeError as exc:
                    failed.append((i, f"invalid JSON: {exc}"))
                    continue
                if type(obj) is not dict:
                    failed.append((i, f"not a JSON object, got {_json_kind(obj)}"))
                    continue
                objs.append(obj)
                good.append(i)
            keep = good
        columns, problems = self._columns(objs)
        ok = np.ones(len(objs), dtype=bool)
        for i, msgs in problems.items():
            ok[i] = False
            failed.append((keep[i], "; ".join(msgs)))
        mask = pa.array(ok)
        table = pa.table({k: v.filter(mask) for k, v in columns.items() if isinstance(v, pa.Array)})
        converted = Batch.from_arrow(table).columns  # after the filter: no nulls left in ints
        offsets = first_line + np.asarray(keep, dtype=np.int64)[ok]
        batch = Batch(
            {k: converted[k] if isinstance(v, pa.Array) else v[ok] for k, v in columns.items()},
            offset=offsets,
            partition=np.zeros(len(offsets), dtype=np.int32),
            length=len(offsets),
        )
        letters = []
        for i, reason in failed:
            line = first_line + i
            raw = lines[i].rstrip(b"\r").decode("utf-8", "replace")
            position = {"file": str(self.path), "line": line}
            letters.append((line, DeadLetter(self.name, f"line {line}: {reason}", position, raw)))
        return batch, offsets, letters

    def _columns(
        self, objs: list[dict[str, Any]]
    ) -> tuple[dict[str, pa.Array[Any] | Array], dict[int, list[str]]]:
        """Columns of the objects (Arrow where one type fits) and the schema violations."""
        arrays: dict[str, pa.Array[Any] | Array] = {}
        try:
            struct = cast(pa.StructArray, pa.array(objs) if objs else pa.array([], pa.struct([])))
            arrays.update(zip([f.name for f in struct.type], struct.flatten(), strict=True))
        except _ARROW_ERRORS:  # a field with mixed types: column by column
            for name in dict.fromkeys(k for o in objs for k in o):
                values = [o.get(name) for o in objs]
                try:
                    arrays[name] = pa.array(values)
                except _ARROW_ERRORS:
                    arrays[name] = _object_column(values)
        problems: dict[int, list[str]] = {}
        for name, kind in self.schema.items():
            arrays[name] = self._enforce(name, kind, arrays.get(name), objs, problems)
        return arrays, problems

    @staticmethod
    def _enforce(
        name: str,
        kind: Kind,
        values: pa.Array[Any] | Array | None,
        objs: list[dict[str, Any]],
        problems: dict[int, list[str]],
    ) -> pa.Array[Any]:
        """The column as ``kind``, with null where a row breaks the schema (noted)."""
        target: Any = ARROW_TYPES[kind]
        expected = f"expected {EXPECTED[kind]} in {name!r}"
        if values is None:
            values = pa.nulls(len(objs), target)
        if isinstance(values, pa.Array) and _arrow_fits(kind, values.type):
            done = _try_cast(values, target)
            if done is not None:
                if kind in ("int", "bool") and done.null_count:
                    missing = np.flatnonzero(done.is_null().to_numpy(zero_copy_only=False))
                    for i in missing.tolist():
                        got = "got null" if name in objs[i] else "but the field is missing"
                        problems.setdefault(i, []).append(f"{expected}, {got}")
                return done
        kept: list[Any] = []
        for i, obj in enumerate(objs):
            value = obj.get(name)
            if _fits(kind, value):
                kept.append(value)
                continue
            kept.append(None)
            got = f"got {_show(value)}" if name in obj else "but the field is missing"
            problems.setdefault(i, []).append(f"{expected}, {got}")
        result: pa.Array[Any] = pa.array(kept, type=target)
        return result


def _default(value: Any) -> Any:
    """Fallback for orjson: for numpy values and sets."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError


_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_COMMA, _QUOTE, _BACKSLASH = 44, 34, 92
_OPENS, _CLOSES = (91, 123), (93, 125)


def _lines(data: bytes) -> bytes:
    r"""Turn orjson's compact ``[{...},{...}]`` into ``{...}\n{...}\n``, vectorized.

    Encoding the whole list in one call is many times faster than one call per row. The
    commas between rows are those outside strings at bracket depth 1; a quote inside a
    string is always escaped by an odd run of backslashes.
    """
    if len(data) <= 2:
        return b""
    arr = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(arr == _QUOTE)
    if b"\\" in data:  # drop escaped quotes: those after an odd run of backslashes
        slashes = np.flatnonzero(arr == _BACKSLASH)
        run_start = np.maximum.accumulate(np.where(np.diff(slashes, prepend=-2) != 1, slashes, 0))
        at = np.searchsorted(slashes, quotes - 1)
        hit = at < len(slashes)
        hit[hit] = slashes[at[hit]] == quotes[hit] - 1
        run = np.zeros(len(quotes), dtype=np.int64)
        run[hit] = quotes[hit] - run_start[at[hit]]
        quotes = quotes[run % 2 == 0]
    marks = (arr == _COMMA) | (arr == _OPENS[0]) | (arr == _OPENS[1])
    marks |= (arr == _CLOSES[0]) | (arr == _CLOSES[1])
    where = np.flatnonzero(marks)
    where = where[np.searchsorted(quotes, where) % 2 == 0]  # outside strings
    chars = arr[where]
    step = np.isin(chars, _OPENS).astype(np.int64) - np.isin(chars, _CLOSES)
    depth = np.cumsum(step)
    out = arr.copy()
    out[where[(chars == _COMMA) & (depth == 1)]] = 10
    return out[1:-1].tobytes() + b"\n"


def dumps_rows(batch: Batch, label: str) -> bytes:
    r"""The user columns of ``batch`` as JSON Lines (numpy values as JSON, NaN as null).

    Raises:
        ConnectorError: naming the column with a value JSON cannot hold.

    Example:
        >>> dumps_rows(Batch({"x": [1.5, float("nan")], "s": ["a", None]}), "sink")
        b'{"x":1.5,"s":"a"}\n{"x":null,"s":null}\n'
    """
    try:
        return _lines(orjson.dumps(batch.to_records(), default=_default, option=_OPTIONS))
    except orjson.JSONEncodeError as exc:
        culprit = "?"
        for name in batch.names:
            try:
                orjson.dumps(batch[name].tolist(), default=_default, option=_OPTIONS)
            except orjson.JSONEncodeError:
                culprit = name
                break
        msg = (
            f"{label}: cannot write column {culprit!r} as JSON: {exc}; convert its values to "
            "numbers, strings, lists or dicts in a step before the sink"
        )
        raise ConnectorError(msg) from exc


class JsonlSink(FileSink):
    r"""Write each row of a batch as one JSON object per line (user columns only).

    Values are written with orjson: numpy numbers and arrays as JSON numbers and arrays,
    NaN and None as ``null``.

    Args:
        path: the file (parent folders are created).
        append: add lines to an existing file instead of replacing it.

    Raises:
        ConnectorError: for a value JSON cannot hold.

    Example:
        >>> import tempfile
        >>> from tidal.io.base import DeadLetter
        >>> tmp = tempfile.TemporaryDirectory()
        >>> sink = JsonlSink(Path(tmp.name) / "dead.jsonl")
        >>> dead = DeadLetter("read", "line 2: invalid JSON", {"line": 2}, "{")
        >>> sink.write(Batch.from_records([dead.to_record()])); sink.close()
        >>> sink.path.read_text()
        '{"step":"read","reason":"line 2: invalid JSON","position":{"line":2},"raw":"{"}\n'
        >>> tmp.cleanup()
    """

    def __init__(self, path: str | Path, *, append: bool = False) -> None:
        super().__init__(path, what="JSON Lines file", append=append)

    def _write(self, batch: Batch) -> None:
        assert self._file is not None
        self._file.write(dumps_rows(batch, self.label))


class JsonlPartSink(PartSink):
    r"""Exactly-once JSON Lines output: part files in a directory, committed by checkpoints.

    Each checkpoint commits the rows written since the previous one as
    ``<directory>/part-<checkpoint:012d>-<n>.jsonl``; rows are encoded as in
    :class:`JsonlSink`. Needs an executor with checkpoints; read the result with
    :func:`tidal.io.parts.read_committed`. See :mod:`tidal.io.parts` for the protocol.

    Args:
        directory: the output directory (one per sink).
        roll_bytes: start a new part file after this many bytes (``None``: one per
            checkpoint).

    Example:
        >>> import tempfile
        >>> from tidal import Executor, Pipeline
        >>> from tidal.io.parts import read_committed
        >>> from tidal.runtime.checkpoint import CheckpointConfig
        >>> from tidal.testing import MemorySource
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = Pipeline("copy")
        >>> p.source("in", MemorySource({"x": [1, 2, 3]})).sink("out", JsonlPartSink(
        ...     Path(tmp.name) / "out"))
        >>> config = CheckpointConfig(data_dir=Path(tmp.name) / "data")
        >>> _ = Executor(p, checkpoint=config, handle_signals=False).run()
        >>> read_committed(Path(tmp.name) / "out")
        [{'x': 1}, {'x': 2}, {'x': 3}]
        >>> tmp.cleanup()
    """

    suffix = ".jsonl"

    def _file_sink(self, path: Path) -> JsonlSink:
        return JsonlSink(path)
