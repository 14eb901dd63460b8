"""The value-format contract: :class:`ValueFormat`, :class:`Decoded`, :class:`Failure`.

See :mod:`tidal.io.formats` for the contract in words. This module holds the types and
the few helpers every format shares (turning a source's values into a list of bytes,
records into columns, a batch into an Arrow table of a given schema).

Example:
    >>> decoded = Decoded({"n": np.array([1, 3])}, np.array([0, 2]),
    ...                   [Failure(1, "invalid JSON", b"{")])
    >>> len(decoded), decoded.batch().to_records()
    (2, [{'n': 1}, {'n': 3}])
    >>> [d.reason for d in decoded.dead_letters("read", lambda i: {"offset": 10 + i})]
    ['offset 11: invalid JSON']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, cast, runtime_checkable

import numpy as np
import pyarrow as pa

from tidal.core.batch import Array, Batch
from tidal.core.deadletter import DeadLetter
from tidal.errors import ConnectorError

__all__ = [
    "Decoded",
    "Failure",
    "Values",
    "ValueFormat",
    "as_values",
    "columns_of",
    "raw_text",
    "records_to_columns",
    "table_for",
]

Values: TypeAlias = "Sequence[bytes | None] | pa.Array[Any] | pa.ChunkedArray[Any] | Array"
"""What ``decode`` takes: a list of ``bytes`` (``None`` for a missing value, a Kafka
tombstone), an object array of them, or an Arrow binary array."""

ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)


@dataclass(frozen=True, slots=True)
class Failure:
    """One value that did not decode (or broke the schema).

    Attributes:
        index: its index in the values given to ``decode``.
        reason: why, in words, without the position (the caller knows where it was).
        value: the original bytes, unchanged (``None`` for a missing value), for a
            dead-letter topic.
    """

    index: int
    reason: str
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Decoded:
    """The result of one ``decode`` call: columns, where each row came from, failures.

    Attributes:
        columns: column name -> numpy array (the :class:`~tidal.core.batch.Batch`
            convention: strings and nested values as ``object`` arrays, timestamps as
            int64 ms, integer columns with nulls as float64 with NaN).
        rows: int64, one per decoded row: the index of the value it came from. Rising;
            a value gives one row (JSON, Avro, Protobuf, raw) or many (Arrow), so a
            source takes its per-value arrays (offsets, keys, timestamps) with
            ``offsets[decoded.rows]``.
        failures: the values that did not decode, in index order.
    """

    columns: dict[str, Array]
    rows: Array
    failures: list[Failure] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self) -> Batch:
        """The columns as a batch (no system arrays: the source adds those)."""
        return Batch(self.columns, length=len(self.rows))

    def dead_letters(
        self, step: str, where: Callable[[int], Mapping[str, Any]]
    ) -> list[DeadLetter]:
        """The failures as dead letters, with ``where(index)`` as each one's position.

        The reason starts with the position (``"events[0] offset 17: invalid JSON ..."``
        when the position has ``topic``, ``partition`` and ``offset``); ``raw`` is the
        value as text (see :func:`raw_text`).
        """
        out = []
        for f in self.failures:
            position = dict(where(f.index))
            reason = f"{_describe(position)}: {f.reason}" if position else f.reason
            raw = None if f.value is None else raw_text(f.value)
            out.append(DeadLetter(step, reason, position, raw))
        return out


@runtime_checkable
class ValueFormat(Protocol):
    """How record values (bytes) become columns and columns become values.

    Attributes:
        name: a short name for messages and settings (``"json"``, ``"avro"``, ...).
        batched: ``False``: one value per row both ways. ``True`` (Arrow): ``encode``
            returns one value for all the rows it is given (the sink chooses the
            chunks), and ``decode`` may give many rows per value.
    """

    name: str
    batched: bool

    def decode(self, values: Values) -> Decoded:
        """Decode many values in one call; a bad value becomes a :class:`Failure`."""
        ...

    def encode(self, batch: Batch | Mapping[str, Any]) -> list[bytes]:
        """Encode the user columns of ``batch``: one value per row (or one, if batched).

        Raises:
            ConnectorError: for a column or value the format cannot hold.
        """
        ...


def as_values(values: Values) -> list[bytes | None]:
    """The values as a list of ``bytes`` (``None`` kept), whatever container they came in.

    Example:
        >>> as_values(pa.array([b"a", None], pa.binary())), as_values(["x"])
        ([b'a', None], [b'x'])
    """
    if isinstance(values, pa.ChunkedArray | pa.Array):
        out: list[Any] = values.to_pylist()
    elif isinstance(values, np.ndarray):
        out = values.tolist()
    else:
        out = list(values)
    if any(issubclass(t, str) for t in set(map(type, out))):
        return [v.encode() if isinstance(v, str) else v for v in out]
    return out


def raw_text(value: bytes) -> str:
    r"""A value as dead-letter text: the text if it is UTF-8, else ``\xNN`` escapes for the rest.

    Example:
        >>> raw_text(b'{"a": 1'), raw_text(b"\x02ok\xff")
        ('{"a": 1', '\x02ok\\xff')
    """
    return value.decode("utf-8", "backslashreplace")


def _describe(position: Mapping[str, Any]) -> str:
    if {"topic", "partition", "offset"} <= position.keys():
        return f"{position['topic']}[{position['partition']}] offset {position['offset']}"
    return ", ".join(f"{k} {v}" for k, v in position.items())


def columns_of(batch: Batch | Mapping[str, Any]) -> Batch:
    """A :class:`Batch` of the user columns, from a batch or a mapping of columns."""
    return batch if isinstance(batch, Batch) else Batch(batch)


def _object_column(values: list[Any]) -> Array:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def records_to_columns(
    records: list[dict[str, Any]], schema: pa.Schema | None = None
) -> dict[str, Array]:
    """Dicts to columns in one Arrow call, typed by ``schema`` when given.

    Fields the schema does not name follow it, typed as Arrow infers them; a field whose
    values fit no Arrow type becomes an ``object`` column.

    Example:
        >>> cols = records_to_columns([{"a": 1, "b": "x"}, {"a": None, "b": "y"}])
        >>> cols["a"].tolist(), cols["b"].tolist()
        ([1.0, nan], ['x', 'y'])
    """
    if schema is not None:
        try:
            struct = cast(pa.StructArray, pa.array(records, type=pa.struct(list(schema))))
            table = pa.Table.from_struct_array(struct)
            return Batch.from_arrow(table).columns
        except ARROW_ERRORS:
            pass  # a value that does not fit its field's type: column by column below
    names = list(schema.names) if schema is not None else []
    names += [k for k in dict.fromkeys(k for r in records for k in r) if k not in set(names)]
    arrays: dict[str, Any] = {}
    for name in names:
        values = [r.get(name) for r in records]
        target = schema.field(name).type if schema is not None and name in schema.names else None
        try:
            arrays[name] = pa.array(values, type=target)
        except ARROW_ERRORS:
            try:
                arrays[name] = pa.array(values)
            except ARROW_ERRORS:
                arrays[name] = _object_column(values)
    table = pa.table({k: v for k, v in arrays.items() if isinstance(v, pa.Array)})
    converted = Batch.from_arrow(table).columns
    return {k: converted[k] if isinstance(v, pa.Array) else v for k, v in arrays.items()}


def table_for(batch: Batch, schema: pa.Schema, label: str) -> pa.Table:
    """The batch's columns cast to ``schema`` (missing nullable fields become nulls).

    Int64 milliseconds become timestamps, NaN becomes null, and so on, with Arrow's safe
    casts: a value that does not fit raises.

    Raises:
        ConnectorError: naming the column that is missing or does not fit.
    """
    arrays = []
    for f in schema:
        if f.name not in batch:
            if not f.nullable:
                msg = (
                    f"{label}: the schema needs a column {f.name!r}, the batch has "
                    f"{batch.names}; add it in a step before the sink"
                )
                raise ConnectorError(msg)
            arrays.append(pa.nulls(len(batch), f.type))
            continue
        col = batch[f.name]
        try:
            arr = _to_arrow(col, f.type)
        except ARROW_ERRORS as exc:
            msg = (
                f"{label}: column {f.name!r} ({col.dtype}) does not fit the schema's "
                f"{f.type}: {exc}"
            )
            raise ConnectorError(msg) from exc
        if arr.null_count and not f.nullable:
            msg = f"{label}: column {f.name!r} has missing values, the schema's field is required"
            raise ConnectorError(msg)
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=schema)


def _to_arrow(col: Array, target: pa.DataType) -> pa.Array[Any]:
    if col.dtype.kind == "f" and (pa.types.is_integer(target) or pa.types.is_timestamp(target)):
        arr = pa.array(col, from_pandas=True)  # NaN -> null, then a safe cast
        return arr.cast(pa.int64()).cast(target)
    if col.dtype.kind in "iu" and pa.types.is_timestamp(target):
        return pa.array(col.astype(np.int64)).cast(pa.timestamp("ms", tz=target.tz)).cast(target)
    if col.dtype == object:
        return pa.array(col.tolist(), type=target)
    return pa.array(col, type=target, from_pandas=col.dtype.kind == "f")


def fail_all(values: Iterable[bytes | None], reason: str) -> list[Failure]:
    """Every value as a failure with the same reason."""
    return [Failure(i, reason, v) for i, v in enumerate(values)]
