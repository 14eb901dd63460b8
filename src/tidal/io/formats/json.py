"""JSON objects as values: :class:`JsonFormat`.

Two decoders, one result:

- **the fast path**: the values of a poll joined with newlines and parsed by
  ``pyarrow.json`` in one call (one thread), straight into Arrow columns. It is taken for
  polls of at least ``fast_min`` values (:data:`FAST_MIN`: below that its fixed cost per
  call, about 0.1-0.3 ms, makes it slower than the reference), and only
  when its result is certain to equal the reference decoder's: every value one line and
  one object, valid UTF-8, no ``NaN``/``Infinity``/byte-order mark (which Arrow accepts
  and orjson rejects), only flat columns (numbers, booleans, text: Arrow turns ISO
  strings into timestamps, and Arrow 26's JSON reader builds invalid list arrays for
  ``[null, false]``, so nested values take the reference path), no
  top-level float at or beyond 2**63 (orjson keeps such integers exact), and with a
  ``schema``, every schema column present with a type that needs no check per row.
- **the reference decoder**, for everything else (and so for every bad value):
  :class:`~tidal.io.jsoncolumns.JsonColumns`, shared with the JSON Lines source: orjson
  per value, Arrow columns in one call, a value that is not a JSON object or breaks the
  schema (or the type most values of its column have) a failure of its own row. The fast
  path reports its columns to it (:meth:`~tidal.io.jsoncolumns.JsonColumns.observe`), so
  the types it counts over the stream stay the same, and steps aside when a column's
  type differs from the one counted so far.

``docs/decisions/0016-value-formats.md`` has the measurements (the fast path about 1.85x
the reference). Encoding is :func:`~tidal.io.jsonl.dumps_each`: one orjson call per row
for small batches, one for the whole batch above that.

Example:
    >>> fmt = JsonFormat()
    >>> decoded = fmt.decode([b'{"user": "a", "n": 1}', b'[1]', b'{"user": "b", "n": 2.5}'])
    >>> decoded.batch().to_records(), decoded.rows.tolist()
    ([{'user': 'a', 'n': 1.0}, {'user': 'b', 'n': 2.5}], [0, 2])
    >>> [(f.index, f.reason) for f in decoded.failures]
    [(1, 'not a JSON object, got an array')]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from tidal.core.batch import Array, Batch
from tidal.io.formats.base import (
    ARROW_ERRORS,
    Decoded,
    Failure,
    Values,
    as_values,
    columns_of,
)
from tidal.io.jsoncolumns import JsonColumns
from tidal.io.jsonl import dumps_each
from tidal.io.schema import Kind, SchemaLike, resolve_schema

__all__ = ["JsonFormat"]

FAST_MIN = 2048
"""The fewest values a poll needs for the fast path. Measured (2026-12-07, 2-core EPYC,
values of two int64 fields): per call, pyarrow.json 509 us vs the reference 459 us for
1,000 values, 809 vs 876 us for 2,048, 1.5 vs 1.7 ms for 4,096; for 50 values (a poll at
50,000 events/s with a 1 ms budget) 350 vs 92 us."""
_BOM = b"\xef\xbb\xbf"  # Arrow skips it, orjson refuses it
_BIG = float(2**63)
_TARGET: dict[Kind, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "str": pa.string(),
    "bool": pa.bool_(),
}


def _flat(t: pa.DataType) -> bool:
    """A type the fast path keeps: a number, a boolean, text, or all null."""
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_string(t)
        or pa.types.is_null(t)
    )


def _sure(kind: Kind, col: pa.ChunkedArray[Any]) -> bool:
    """Whether a column parsed by Arrow passes ``kind`` on every row as it is."""
    t = col.type
    if kind == "int":
        return pa.types.is_integer(t) and col.null_count == 0
    if kind == "bool":
        return pa.types.is_boolean(t) and col.null_count == 0
    if kind == "float":
        return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)
    return pa.types.is_string(t) or pa.types.is_null(t)


class JsonFormat:
    """Each value a JSON object; its fields become columns.

    Columns are the fields in order of first appearance, then any ``schema`` column no
    object had. Without a schema, types are JSON's (a number field with a missing value
    is float64 with NaN); nested arrays and objects are ``object`` columns.

    Args:
        schema: column -> ``"int"``/``"float"``/``"str"``/``"bool"`` (or the Python
            type), enforced per value: a value of the wrong type is a failure, and
            ``int``/``bool`` fields are required (missing or null is a failure), as in
            :class:`~tidal.io.jsonl.JsonlSource`.
        name: the label in error messages.
        fast_min: the fewest values a ``decode`` call needs to try the fast path
            (:data:`FAST_MIN`); both paths give the same result.

    Attributes:
        fast_polls: how many ``decode`` calls took the fast path.

    Raises:
        ConfigError: for a bad schema.
    """

    name = "json"
    batched = False

    def __init__(
        self, schema: SchemaLike | None = None, *, name: str = "json", fast_min: int = FAST_MIN
    ) -> None:
        self.schema = resolve_schema(schema, where=name)
        self.label = name
        self.fast_min = fast_min
        self._decoder = JsonColumns(self.schema)
        self.fast_polls = 0  # how many decode calls took the fast path (for benchmarks)

    def __repr__(self) -> str:
        return f"JsonFormat(schema={self.schema!r})"

    def decode(self, values: Values) -> Decoded:
        """Parse the values into columns; bad ones (and missing ones) become failures."""
        items = as_values(values)
        fast = self._fast(items) if len(items) >= self.fast_min else None
        if fast is not None:
            self.fast_polls += 1
            return Decoded(fast, np.arange(len(items), dtype=np.int64))
        return self._reference(items)

    def _fast(self, items: list[bytes | None]) -> dict[str, Array] | None:
        """The columns by ``pyarrow.json``, or ``None`` where that might differ."""
        if not items or None in items:
            return None
        data = b"\n".join(items)  # type: ignore[arg-type]  # no None: checked above
        if data.count(b"\n") != len(items) - 1:
            return None
        if not data.isascii():
            if _BOM in data:
                return None
            try:
                data.decode()
            except UnicodeDecodeError:
                return None
        options = pa_json.ReadOptions(use_threads=False, block_size=max(len(data) + 1, 1 << 16))
        try:
            table = pa_json.read_json(cast(Any, pa.BufferReader(data)), read_options=options)
        except ARROW_ERRORS:
            return None
        if table.num_rows != len(items):
            return None
        for col in table.columns:
            if not _flat(col.type):
                return None
            if pa.types.is_floating(col.type) and len(col) - col.null_count:
                if not pc.all(pc.is_finite(col)).as_py():  # NaN, Infinity: orjson refuses
                    return None
                if pc.max(pc.abs(col)).as_py() >= _BIG:
                    return None
        for name, kind in self.schema.items():
            if name not in table.column_names or not _sure(kind, table.column(name)):
                return None
            i = table.column_names.index(name)
            table = table.set_column(i, name, table.column(name).cast(_TARGET[kind]))
        try:
            columns = Batch.from_arrow(table).columns
        except ARROW_ERRORS:
            return None
        # the reference types a column by what most of its values were so far: agree, and count
        if not self._decoder.observe(dict(zip(table.column_names, table.columns, strict=True))):
            return None
        return columns

    def _reference(self, items: list[bytes | None]) -> Decoded:
        missing = [i for i, v in enumerate(items) if v is None] if None in items else []
        present = [v for v in items if v is not None] if missing else cast(list[bytes], items)
        columns, rows, failed = self._decoder.decode(present)
        failures = [Failure(i, reason, present[i]) for i, reason in failed]
        if missing:  # map indexes in ``present`` back to indexes in ``items``
            index = np.flatnonzero([v is not None for v in items])
            rows = index[rows]
            failures = [Failure(int(index[f.index]), f.reason, f.value) for f in failures]
            failures += [Failure(i, "no value (null)", None) for i in missing]
        failures.sort(key=lambda f: f.index)
        return Decoded(columns, np.asarray(rows, dtype=np.int64), failures)

    def encode(self, batch: Batch | Mapping[str, Any]) -> list[bytes]:
        """One compact JSON object per row (numpy values as JSON, NaN as null).

        Raises:
            ConnectorError: naming a column with a value JSON cannot hold.
        """
        return dumps_each(columns_of(batch), self.label)
