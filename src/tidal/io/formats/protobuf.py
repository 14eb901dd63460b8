r"""Protocol Buffers values: :class:`ProtobufFormat`, from a compiled message class.

Each value is one serialized message of the given class (a generated ``*_pb2`` class, or
one built from a descriptor). Fields become columns in declaration order: integers int64
(``uint64`` uint64), ``float``/``double`` float64, ``bool`` bool, ``string`` str,
``bytes`` bytes, enums the value's name, ``google.protobuf.Timestamp`` int64 ms (the
Batch convention), other messages ``object`` columns of dicts, repeated fields ``object``
columns of lists and maps of dicts. A field with presence (``optional``, a message, a
oneof member) that is not set is null; a proto3 scalar without presence reads as its
default, as protobuf defines.

protobuf parses one message per call (in C, upb); the columns are then read field by
field from all the messages of the poll and built in one Arrow call each. A value that
does not parse (truncated, not protobuf, a missing proto2 ``required`` field) is a
failure; the other values of the call still decode. Random bytes can parse as a message
with only unknown fields: protobuf cannot tell them from a newer writer's fields, so
neither can this format.

Example:
    >>> from google.protobuf import timestamp_pb2
    >>> fmt = ProtobufFormat(timestamp_pb2.Timestamp)
    >>> values = fmt.encode({"seconds": [1, 2], "nanos": [5, 0]})
    >>> decoded = fmt.decode([values[0], b"\x08", values[1]])
    >>> decoded.batch().to_records(), decoded.rows.tolist()
    ([{'seconds': 1, 'nanos': 5}, {'seconds': 2, 'nanos': 0}], [0, 2])
    >>> print(decoded.failures[0].reason)  # doctest: +NORMALIZE_WHITESPACE
    not a google.protobuf.Timestamp message: Error parsing message with type
    'google.protobuf.Timestamp': Wire format was corrupt
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Any

import numpy as np
import pyarrow as pa

from tidal.core.batch import Array, Batch
from tidal.errors import ConfigError, ConnectorError
from tidal.io.formats.base import (
    ARROW_ERRORS,
    Decoded,
    Failure,
    Values,
    as_values,
    columns_of,
)

__all__ = ["ProtobufFormat"]

_TIMESTAMP = "google.protobuf.Timestamp"


def _descriptor_types() -> tuple[Any, Any]:
    try:
        from google.protobuf.descriptor import FieldDescriptor  # type: ignore[import-untyped]
        from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - the formats extra is installed in CI
        msg = "ProtobufFormat needs protobuf: pip install 'tidal-stream[formats]'"
        raise ImportError(msg) from exc
    return FieldDescriptor, DecodeError


def _arrow_type(fd: Any, FD: Any) -> pa.DataType | None:  # noqa: N803 - the class
    """The Arrow type of a field's column, or ``None`` for an ``object`` column."""
    if _is_repeated(fd, FD) or fd.type == FD.TYPE_GROUP:
        return None
    if fd.type == FD.TYPE_MESSAGE:
        return pa.int64() if fd.message_type.full_name == _TIMESTAMP else None
    if fd.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return pa.float64()
    if fd.type == FD.TYPE_BOOL:
        return pa.bool_()
    if fd.type == FD.TYPE_STRING or fd.type == FD.TYPE_ENUM:
        return pa.string()
    if fd.type == FD.TYPE_BYTES:
        return pa.binary()
    if fd.type in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return pa.uint64()
    return pa.int64()


def _is_repeated(fd: Any, FD: Any) -> bool:  # noqa: N803
    repeated = getattr(fd, "is_repeated", None)  # protobuf >= 5.29
    if repeated is not None:
        return bool(repeated)
    return bool(fd.label == FD.LABEL_REPEATED)


def _to_python(message: Any) -> dict[str, Any]:
    """A message as a dict of its set fields (nested messages as dicts)."""
    out: dict[str, Any] = {}
    for fd, value in message.ListFields():
        out[fd.name] = _value_to_python(fd, value)
    return out


def _value_to_python(fd: Any, value: Any) -> Any:
    FD, _ = _descriptor_types()  # noqa: N806
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        vfd = fd.message_type.fields_by_name["value"]
        return {k: _scalar_to_python(vfd, v) for k, v in value.items()}
    if _is_repeated(fd, FD):
        return [_scalar_to_python(fd, v) for v in value]
    return _scalar_to_python(fd, value)


def _scalar_to_python(fd: Any, value: Any) -> Any:
    if fd.message_type is not None:
        if fd.message_type.full_name == _TIMESTAMP:
            return value.ToMilliseconds()
        return _to_python(value)
    if fd.enum_type is not None:
        known = fd.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    return value


class ProtobufFormat:
    """Messages of one compiled protobuf class; its fields become columns.

    Args:
        message_class: the generated message class (e.g. ``readings_pb2.Reading``).

    Raises:
        ConfigError: if ``message_class`` is not a protobuf message class.
    """

    name = "protobuf"
    batched = False

    def __init__(self, message_class: type[Any]) -> None:
        FD, self._decode_error = _descriptor_types()  # noqa: N806
        descriptor = getattr(message_class, "DESCRIPTOR", None)
        if descriptor is None or not hasattr(descriptor, "fields"):
            msg = (
                "ProtobufFormat needs a compiled protobuf message class (from a *_pb2 module), "
                f"got {message_class!r}"
            )
            raise ConfigError(msg)
        self.message_class = message_class
        self.full_name: str = descriptor.full_name
        self._fields = list(descriptor.fields)
        self._types = {fd.name: _arrow_type(fd, FD) for fd in self._fields}
        self._readers = {fd.name: self._reader(fd, FD) for fd in self._fields}
        self._writers = {fd.name: self._writer(fd, FD) for fd in self._fields}

    def __repr__(self) -> str:
        return f"ProtobufFormat({self.full_name})"

    # -- decoding -------------------------------------------------------------------------
    def decode(self, values: Values) -> Decoded:
        """Parse each value; read each field of all the messages into one column."""
        items = as_values(values)
        parse = self.message_class.FromString
        messages: list[Any] = []
        rows: list[int] = []
        failures: list[Failure] = []
        for i, value in enumerate(items):
            if value is None:
                failures.append(Failure(i, "no value (null)", None))
                continue
            try:
                messages.append(parse(value))
            except (self._decode_error, ValueError, TypeError) as exc:
                failures.append(Failure(i, f"not a {self.full_name} message: {exc}", value))
                continue
            rows.append(i)
        columns = {name: self._column(name, messages) for name in self._readers}
        return Decoded(columns, np.asarray(rows, dtype=np.int64), failures)

    def _column(self, name: str, messages: list[Any]) -> Array:
        values = self._readers[name](messages)
        target = self._types[name]
        if target is not None:
            try:
                arr = pa.array(values, type=target)
                return Batch.from_arrow(pa.table({name: arr})).columns[name]
            except ARROW_ERRORS:
                pass
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out

    @staticmethod
    def _reader(fd: Any, FD: Any) -> Callable[[list[Any]], list[Any]]:  # noqa: N803
        """A function from messages to the field's Python values (``None`` when unset)."""
        get = attrgetter(fd.name)
        name = fd.name
        if _is_repeated(fd, FD) or fd.message_type is not None or fd.enum_type is not None:
            presence = not _is_repeated(fd, FD) and fd.has_presence

            def convert(messages: list[Any]) -> list[Any]:
                return [
                    None if presence and not m.HasField(name) else _value_to_python(fd, get(m))
                    for m in messages
                ]

            return convert
        if fd.has_presence:
            return lambda ms: [get(m) if m.HasField(name) else None for m in ms]
        return lambda ms: list(map(get, ms))

    # -- encoding -------------------------------------------------------------------------
    def encode(self, batch: Batch | Mapping[str, Any]) -> list[bytes]:
        """One serialized message per row (deterministic bytes); null values stay unset.

        Columns the message does not have are not written.

        Raises:
            ConnectorError: for a value that does not fit its field.
        """
        b = columns_of(batch)
        names = [n for n in self._writers if n in b]
        columns = [[self._writers[n](v) for v in b[n].tolist()] for n in names]
        out = []
        cls = self.message_class
        for i in range(len(b)):
            pairs = zip(names, columns, strict=True)
            kwargs = {n: col[i] for n, col in pairs if col[i] is not None}
            try:
                out.append(cls(**kwargs).SerializeToString(deterministic=True))
            except (TypeError, ValueError, AttributeError, KeyError) as exc:
                msg = f"{self!r}: row {i} does not fit the message: {type(exc).__name__}: {exc}"
                raise ConnectorError(msg) from exc
        return out

    @staticmethod
    def _writer(fd: Any, FD: Any) -> Callable[[Any], Any]:  # noqa: N803
        """A function from a column value to what the message constructor takes."""
        integer = _arrow_type(fd, FD) in (pa.int64(), pa.uint64()) and fd.message_type is None
        timestamp = fd.message_type is not None and fd.message_type.full_name == _TIMESTAMP

        def write(value: Any) -> Any:
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return None
            if isinstance(value, np.ndarray):
                value = value.tolist()
            if timestamp and not isinstance(value, dict):
                from google.protobuf.timestamp_pb2 import Timestamp  # type: ignore[import-untyped]

                ts = Timestamp()
                ts.FromMilliseconds(int(value))
                return ts
            if integer and isinstance(value, float) and value.is_integer():
                return int(value)
            return value

        return write
