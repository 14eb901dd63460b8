"""JSON objects to columns, one type per column: :class:`JsonColumns`.

The JSON Lines source and the log source (and any format that yields JSON objects) share
this decoder. Values are parsed with orjson in one pass and turned into Arrow columns in one
call; only a column that mixes types is looked at value by value (the slow path, taken
only when the input is bad).

Every column has one type, so that one bad value never changes what the good rows look
like downstream:

- a column in the ``schema`` has the schema's type: a row with another value (or, for
  ``int`` and ``bool``, no value) is a dead letter;
- any other column takes the JSON type that most of its values have (number, string,
  boolean, array or object), counted over everything this decoder has read, so that one
  ``"high"`` among numbers (or ``true`` among strings) sends its row to the dead letters
  and the rest flows. Ints and floats are both numbers; ``null`` and missing fields fit
  every type (NaN in a float column, ``None`` otherwise). Declare a schema when the first
  rows might be the odd ones: a column whose first value is ``"high"``, read alone in its
  batch, is a string column until numbers outnumber it.

Example:
    >>> decoder = JsonColumns()
    >>> values = [b'{"t": 1, "v": 0.5}', b'{"t": 2, "v": "high"}', b'{"t": 3, "v": 2}', b'[1]']
    >>> columns, rows, failed = decoder.decode(values)
    >>> columns["v"].tolist(), rows.tolist()
    ([0.5, 2.0], [0, 2])
    >>> for i, reason in failed:
    ...     print(i, reason)
    3 not a JSON object, got an array
    1 expected a number in 'v' (the type of most of its values), got "high"
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, cast

import numpy as np
import orjson
import pyarrow as pa

from tidal.core.batch import Array, Batch
from tidal.io.schema import ARROW_TYPES, EXPECTED, Kind

__all__ = ["JsonColumns", "JsonType"]

JsonType = Literal["number", "string", "boolean", "array", "object"]
"""The JSON type of a column without a schema."""

_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)
_INT64 = (-(2**63), 2**63)
_ORDER: tuple[JsonType, ...] = ("number", "string", "boolean", "array", "object")
_A: dict[JsonType, str] = {
    "number": "a number",
    "string": "a string",
    "boolean": "a boolean",
    "array": "an array",
    "object": "an object",
}
_PY: dict[type, JsonType] = {
    int: "number",
    float: "number",
    str: "string",
    bool: "boolean",
    list: "array",
    dict: "object",
}


_PLAIN: dict[type, Any] = {int: np.int64, float: np.float64, str: object, bool: np.bool_}
"""The Python types :meth:`JsonColumns._plain` turns into columns itself, and their dtypes."""


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


def _json_type(t: pa.DataType) -> JsonType | None:
    """The JSON type of an Arrow column built from JSON values (``None``: only nulls)."""
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "array"
    if pa.types.is_struct(t):
        return "object"
    return None


def _try_cast(values: pa.Array[Any], target: pa.DataType) -> pa.Array[Any] | None:
    try:
        return values.cast(target)
    except _ARROW_ERRORS:
        return None


def _show(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."


def json_kind(value: Any) -> str:
    """A JSON value's type in words, e.g. ``"an array"`` or ``"null"``.

    Example:
        >>> json_kind([1]), json_kind(None), json_kind(2.5)
        ('an array', 'null', 'a number')
    """
    if value is None:
        return "null"
    return _A.get(_PY.get(type(value), "number"), "a number")


def _object_column(values: list[Any]) -> Array:
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


class JsonColumns:
    """Decode JSON values into typed columns; rows that do not fit become failures.

    Args:
        schema: column -> :data:`~tidal.io.schema.Kind`, already resolved (see
            :func:`~tidal.io.schema.resolve_schema`); enforced row by row.
        infer: give every other column the JSON type most of its values have (counted
            over everything decoded so far) and fail the rows that do not fit; ``False``
            keeps a mixed column as an ``object`` column.
    """

    def __init__(self, schema: Mapping[str, Kind] | None = None, *, infer: bool = True) -> None:
        self.schema: dict[str, Kind] = dict(schema or {})
        self.infer = infer
        self.seen: dict[str, dict[JsonType, int]] = {}

    def decode(self, values: list[bytes]) -> tuple[dict[str, Array], Array, list[tuple[int, str]]]:
        """Decode JSON values (one object each) into columns.

        Returns:
            The columns of the good values, their indexes in ``values``, and
            ``(index, reason)`` for each bad one.
        """
        failed: list[tuple[int, str]] = []
        keep: list[int] | range = range(len(values))
        try:
            objs: list[Any] = list(map(orjson.loads, values))
            whole = set(map(type, objs)) <= {dict}
        except orjson.JSONDecodeError:
            whole = False
        if not whole:  # find the bad ones
            objs, good = [], []
            for i, raw in enumerate(values):
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    failed.append((i, f"invalid JSON: {exc}"))
                    continue
                if type(obj) is not dict:
                    failed.append((i, f"not a JSON object, got {json_kind(obj)}"))
                    continue
                objs.append(obj)
                good.append(i)
            keep = good
        plain = self._plain(objs) if whole else None
        if plain is not None:  # every row fits: the columns as they are
            return plain, np.arange(len(objs), dtype=np.int64), failed
        cols, ok, problems = self.columns(objs)
        for i, msgs in problems.items():
            failed.append((keep[i], "; ".join(msgs)))
        rows = np.asarray(keep, dtype=np.int64)[ok]
        return cols, rows, failed

    def observe(self, columns: Mapping[str, pa.Array[Any] | pa.ChunkedArray[Any]]) -> bool:
        """Count columns parsed elsewhere (a faster parser), if this decoder types them alike.

        For every column outside the schema, its JSON type must be the type this decoder
        would give the column now (or the column is new); then the values are counted as
        :meth:`decode` would count them and ``True`` is returned. Otherwise nothing is
        counted and ``False`` says: decode these values with :meth:`decode` instead.
        """
        if not self.infer:
            return True
        plan: list[tuple[str, JsonType, int]] = []
        for name, col in columns.items():
            jtype = None if name in self.schema else _json_type(col.type)
            if jtype is not None:
                plan.append((name, jtype, len(col) - col.null_count))
        return self._count(plan)

    def _count(self, plan: list[tuple[str, JsonType, int]]) -> bool:
        """Count ``(column, JSON type, values)`` if every type is the column's type now."""
        for name, jtype, _n in plan:
            counts = self.seen.get(name)
            if counts and (len(counts) != 1 or jtype not in counts):  # else: jtype's alone
                if self._decide(counts) != jtype:
                    return False
        for name, jtype, n in plan:
            counts = self.seen.setdefault(name, {})
            counts[jtype] = counts.get(jtype, 0) + n
        return True

    def _plain(self, objs: list[dict[str, Any]]) -> dict[str, Array] | None:
        """The columns straight from the objects, or ``None`` where :meth:`columns` is needed.

        The common case at small sizes, without Arrow's fixed cost per call: no schema,
        every object with the same fields, each column of one Python type (int in int64,
        float, str or bool; no null), and that type the column's type so far. The result
        (and the counting) equals :meth:`columns`'.
        """
        if self.schema or not objs:
            return None
        first = objs[0]
        names = list(first)
        if not names:
            return None
        if not all(map(first.keys().__eq__, map(dict.keys, objs))):  # same fields, any order
            return None
        out: dict[str, Array] = {}
        plan: list[tuple[str, JsonType, int]] = []
        for name in names:
            values = [o[name] for o in objs]
            kinds = set(map(type, values))
            if len(kinds) != 1:
                return None
            kind = kinds.pop()
            dtype = _PLAIN.get(kind)
            if dtype is None:
                return None
            try:
                out[name] = np.array(values, dtype=dtype)
            except OverflowError:  # an int beyond int64: Arrow's rules
                return None
            plan.append((name, _PY[kind], len(values)))
        if self.infer and not self._count(plan):
            return None
        return out

    def columns(
        self, objs: list[dict[str, Any]]
    ) -> tuple[dict[str, Array], Array, dict[int, list[str]]]:
        """Columns of the objects that fit, a mask of those objects, and the failures.

        Returns:
            numpy columns of the good objects (as :meth:`Batch.from_arrow
            <tidal.core.batch.Batch.from_arrow>` converts them), a boolean mask over
            ``objs`` of the good ones, and per bad object its reasons.
        """
        arrays: dict[str, pa.Array[Any] | Array] = {}
        mixed: list[str] = []
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
                    mixed.append(name)
        problems: dict[int, list[str]] = {}
        for name, kind in self.schema.items():
            arrays[name] = self._enforce(name, kind, arrays.get(name), objs, problems)
        if self.infer:
            for name in list(arrays):
                if name not in self.schema:
                    arrays[name] = self._infer(name, arrays[name], objs, problems)
        ok = np.ones(len(objs), dtype=bool)
        if problems:
            ok[list(problems)] = False
            mask = pa.array(ok)
            arrays = {
                k: v.filter(mask) if isinstance(v, pa.Array) else v[ok] for k, v in arrays.items()
            }
        table = pa.table({k: v for k, v in arrays.items() if isinstance(v, pa.Array)})
        converted = Batch.from_arrow(table).columns  # after the filter: no nulls left in ints
        cols = {k: converted[k] if isinstance(v, pa.Array) else v for k, v in arrays.items()}
        return cols, ok, problems

    def _infer(
        self,
        name: str,
        values: pa.Array[Any] | Array,
        objs: list[dict[str, Any]],
        problems: dict[int, list[str]],
    ) -> pa.Array[Any] | Array:
        """The column in the type most of its values have; other rows are noted."""
        counts = self.seen.setdefault(name, {})
        if isinstance(values, pa.Array):  # one JSON type (or nulls): the happy path
            jtype = _json_type(values.type)
            if jtype is None:
                return values
            counts[jtype] = counts.get(jtype, 0) + len(values) - values.null_count
            want = self._decide(counts)
            if want == jtype:
                return values
            types: list[JsonType | None] = [None if v is None else jtype for v in values.tolist()]
        else:  # the slow path: a column mixing types
            types = [None if v is None else _PY.get(type(v), "number") for v in values.tolist()]
            for t in types:
                if t is not None:
                    counts[t] = counts.get(t, 0) + 1
            want = self._decide(counts)
        kept: list[Any] = []
        expected = f"expected {_A[want]} in {name!r} (the type of most of its values)"
        for i, t in enumerate(types):
            if t is None or t == want:
                kept.append(objs[i].get(name))
                continue
            kept.append(None)
            problems.setdefault(i, []).append(f"{expected}, got {_show(objs[i].get(name))}")
        try:
            column: pa.Array[Any] = pa.array(kept)
            return column
        except _ARROW_ERRORS:  # e.g. arrays of different element types: objects
            return _object_column(kept)

    @staticmethod
    def _decide(counts: Mapping[JsonType, int]) -> JsonType:
        return max(_ORDER, key=lambda t: (counts.get(t, 0), -_ORDER.index(t)))

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
