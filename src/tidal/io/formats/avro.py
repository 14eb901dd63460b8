r"""Avro values with fastavro: :class:`AvroFormat`, plain or in the Confluent wire format.

``wire="plain"``: each value is one schemaless Avro record of the given schema (what
fastavro's ``schemaless_writer`` writes). ``wire="confluent"``: each value is the
Confluent framing, ``0x00``, a 4-byte big-endian schema id, then the record written with
that id's schema; the writer schemas come from ``schemas`` (id -> schema) and are
resolved against ``schema``, the reader schema, by Avro's rules (so a topic can carry
several versions of a record). Encoding writes ``schema_id`` in front.

With ``registry=`` (a Confluent-compatible schema registry's URL, or a
:class:`~tidal.io.formats.registry.SchemaRegistry`), an id not in ``schemas`` is looked up
once (``GET /schemas/ids/{id}``) and cached; an id the registry does not have is a failure
(a dead letter). Encoding without ``schema_id`` registers ``schema`` under ``subject``
(``POST /subjects/{subject}/versions``) on first use and writes the id it gets; a
:class:`~tidal.io.kafka.sink.KafkaSink` sets ``subject`` to ``<topic>-value`` (Confluent's
default naming) when it is not given. A registry that cannot be reached is an error, not a
dead letter: the values are fine, the service is down.

fastavro reads one record per call (in C); the records of a poll then become Arrow
columns in one call, typed from the Avro schema: ``long``/``int`` int64, ``float``/
``double`` float64, ``string``/``enum`` str, ``bytes``/``fixed`` bytes, ``boolean`` bool,
``timestamp-millis``/``-micros`` int64 ms (the Batch convention), ``date`` int64 ms,
``["null", T]`` T with nulls, records and arrays nested (``object`` columns of dicts and
arrays), maps and other unions ``object`` columns of Python values.

A value that is truncated, has bytes left over after its record, has the wrong magic byte
or an unknown schema id becomes a failure; the others of the call still decode.

Example:
    >>> schema = {"type": "record", "name": "Reading", "fields": [
    ...     {"name": "sensor", "type": "string"},
    ...     {"name": "value", "type": ["null", "double"]}]}
    >>> fmt = AvroFormat(schema)
    >>> values = fmt.encode({"sensor": ["a", "b"], "value": [1.5, float("nan")]})
    >>> values
    [b'\x02a\x02\x00\x00\x00\x00\x00\x00\xf8?', b'\x02b\x00']
    >>> decoded = fmt.decode([values[0], b"\x02", values[1]])
    >>> decoded.batch().to_records(), decoded.rows.tolist()
    ([{'sensor': 'a', 'value': 1.5}, {'sensor': 'b', 'value': nan}], [0, 2])
    >>> decoded.failures[0].reason
    'not an Avro record of Reading: truncated (EOFError)'
"""

from __future__ import annotations

import copy
import io
import struct
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa

from tidal.core.batch import Batch
from tidal.errors import ConfigError, ConnectorError
from tidal.io.formats.base import (
    Decoded,
    Failure,
    Values,
    as_values,
    columns_of,
    records_to_columns,
    table_for,
)
from tidal.io.formats.registry import SchemaRegistry

__all__ = ["AvroFormat", "AvroSchema", "arrow_schema_of"]

AvroSchema = Mapping[str, Any] | str
"""An Avro record schema as a dict, or its JSON text."""

Wire = Literal["plain", "confluent"]
MAGIC = 0
_HEADER = struct.Struct(">bI")

_PRIMITIVES: dict[str, pa.DataType] = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int64(),
    "long": pa.int64(),
    "float": pa.float64(),
    "double": pa.float64(),
    "string": pa.string(),
    "bytes": pa.binary(),
}
_LOGICAL: dict[str, pa.DataType] = {
    "timestamp-millis": pa.timestamp("ms", tz="UTC"),
    "timestamp-micros": pa.timestamp("us", tz="UTC"),
    "local-timestamp-millis": pa.timestamp("ms"),
    "local-timestamp-micros": pa.timestamp("us"),
    "date": pa.date32(),
}


def _fastavro() -> Any:
    try:
        import fastavro
    except ImportError as exc:  # pragma: no cover - the formats extra is installed in CI
        msg = "AvroFormat needs fastavro: pip install 'tidal-stream[formats]'"
        raise ImportError(msg) from exc
    return fastavro


def _load(schema: AvroSchema, where: str) -> dict[str, Any]:
    if isinstance(schema, str):
        try:
            loaded = orjson.loads(schema)
        except orjson.JSONDecodeError as exc:
            msg = f"{where}: the Avro schema is not valid JSON: {exc}"
            raise ConfigError(msg) from exc
    else:
        loaded = dict(schema)
    if not isinstance(loaded, dict) or loaded.get("type") != "record":
        msg = (
            f"{where}: the Avro schema must be a record (its fields become columns), got {schema!r}"
        )
        raise ConfigError(msg)
    return loaded


def _arrow_type(schema: Any, named: dict[str, pa.DataType | None]) -> pa.DataType | None:
    """The Arrow type for an Avro type, or ``None`` for an ``object`` column."""
    if isinstance(schema, str):
        return _PRIMITIVES.get(schema, named.get(schema))
    if isinstance(schema, list):  # a union
        rest = [s for s in schema if s != "null"]
        return _arrow_type(rest[0], named) if len(rest) == 1 else None
    kind = schema.get("type")
    logical = schema.get("logicalType")
    if logical in _LOGICAL:
        return _LOGICAL[logical]
    if logical == "decimal" and kind == "bytes":
        return pa.decimal128(int(schema["precision"]), int(schema.get("scale", 0)))
    if logical is not None:
        return None  # uuid, time-*: Python values
    result: pa.DataType | None
    if kind == "record":
        fields = [(f["name"], _arrow_type(f["type"], named)) for f in schema["fields"]]
        known = all(t is not None for _, t in fields)
        result = pa.struct([pa.field(n, t) for n, t in fields]) if known else None
    elif kind == "enum":
        result = pa.string()
    elif kind == "fixed":
        result = pa.binary()
    elif kind == "array":
        item = _arrow_type(schema["items"], named)
        result = None if item is None else pa.list_(item)
    elif kind == "map":
        result = None
    else:
        return _arrow_type(kind, named)
    if "name" in schema:
        named[schema["name"]] = result
        if "namespace" in schema:
            named[f"{schema['namespace']}.{schema['name']}"] = result
    return result


def arrow_schema_of(schema: AvroSchema) -> tuple[pa.Schema, list[str]]:
    """The Arrow schema of an Avro record's fields, and the fields with no Arrow type.

    Example:
        >>> arrow, untyped = arrow_schema_of({"type": "record", "name": "R", "fields": [
        ...     {"name": "n", "type": ["null", "long"]},
        ...     {"name": "tags", "type": {"type": "map", "values": "string"}}]})
        >>> arrow.field("n"), untyped
        (pyarrow.Field<n: int64>, ['tags'])
    """
    record = _load(schema, "AvroFormat")
    named: dict[str, pa.DataType | None] = {}
    fields = []
    untyped = []
    for f in record["fields"]:
        t = _arrow_type(f["type"], named)
        if t is None:
            untyped.append(f["name"])
            continue
        nullable = isinstance(f["type"], list) and "null" in f["type"]
        fields.append(pa.field(f["name"], t, nullable=nullable or t == pa.null()))
    return pa.schema(fields), untyped


class AvroFormat:
    """Avro records of one record schema; plain or Confluent-framed values.

    Args:
        schema: the record schema (a dict or JSON text): the columns, the schema values
            are written with, and, for ``wire="confluent"``, the reader schema that the
            writer schemas are resolved against.
        wire: ``"plain"`` (schemaless records) or ``"confluent"`` (magic byte 0 and a
            4-byte schema id before each record).
        schema_id: for ``"confluent"``: the id written by :meth:`encode` (``schema``'s id
            in the registry).
        schemas: for ``"confluent"``: writer schemas by id (``schema_id`` maps to
            ``schema`` unless given here). A value with any other id is a failure
            (unless ``registry`` has it).
        registry: for ``"confluent"``: a schema registry (URL or
            :class:`~tidal.io.formats.registry.SchemaRegistry`) to look unknown ids up in
            and to register ``schema`` with when encoding without ``schema_id``.
        subject: the subject ``schema`` is registered under (``<topic>-value`` by
            Confluent's convention; a KafkaSink fills that in when left out).

    Raises:
        ConfigError: for a schema fastavro rejects, or confluent settings that are missing.
    """

    name = "avro"
    batched = False

    def __init__(
        self,
        schema: AvroSchema,
        *,
        wire: Wire = "plain",
        schema_id: int | None = None,
        schemas: Mapping[int, AvroSchema] | None = None,
        registry: str | SchemaRegistry | None = None,
        subject: str | None = None,
    ) -> None:
        fastavro = _fastavro()
        if wire not in ("plain", "confluent"):
            msg = f"AvroFormat: wire must be 'plain' or 'confluent', got {wire!r}"
            raise ConfigError(msg)
        if wire == "plain" and (schema_id is not None or schemas or registry or subject):
            msg = "AvroFormat: schema_id, schemas, registry and subject are for wire='confluent'"
            raise ConfigError(msg)
        if wire == "confluent" and schema_id is None and not schemas and registry is None:
            msg = (
                "AvroFormat(wire='confluent') needs schema_id= (to write), schemas= (to read) "
                "or registry= (both)"
            )
            raise ConfigError(msg)
        self.registry = SchemaRegistry(registry) if isinstance(registry, str) else registry
        self.subject = subject
        self.record = _load(schema, "AvroFormat")
        self.record_name = str(self.record.get("name"))
        self.wire: Wire = wire
        self.schema_id = schema_id
        self.arrow_schema, self.untyped = arrow_schema_of(self.record)
        try:
            self._parsed = fastavro.parse_schema(self.record)
            self._writers = {
                int(k): fastavro.parse_schema(_load(v, f"AvroFormat schema id {k}"))
                for k, v in (schemas or {}).items()
            }
        except (fastavro.schema.SchemaParseException, ValueError, TypeError, KeyError) as exc:
            msg = f"AvroFormat: fastavro rejects the schema: {exc}"
            raise ConfigError(msg) from exc
        if schema_id is not None:
            self._writers.setdefault(int(schema_id), self._parsed)
        self._read = fastavro.schemaless_reader
        self._write = fastavro.schemaless_writer
        self._order = [f["name"] for f in self.record["fields"]]

    def __repr__(self) -> str:
        if self.wire == "plain":
            return f"AvroFormat({self.record_name!r})"
        return f"AvroFormat({self.record_name!r}, wire='confluent', schema_id={self.schema_id})"

    def for_topic(self, topic: str) -> AvroFormat:
        """This format for a sink writing ``topic``.

        A copy with ``subject`` ``<topic>-value`` where a registry is set and no subject
        was given; else this format itself.

        Example:
            >>> fmt = AvroFormat({"type": "record", "name": "R", "fields": []},
            ...                  wire="confluent", registry="http://127.0.0.1:9")
            >>> fmt.for_topic("readings").subject, fmt.subject
            ('readings-value', None)
        """
        if self.registry is None or self.subject is not None:
            return self
        bound = copy.copy(self)
        bound.subject = f"{topic}-value"
        return bound

    # -- decoding -------------------------------------------------------------------------
    def decode(self, values: Values) -> Decoded:
        """Read each value's record; build the columns of all of them in one call."""
        items = as_values(values)
        records: list[dict[str, Any]] = []
        rows: list[int] = []
        failures: list[Failure] = []
        read = self._read
        confluent = self.wire == "confluent"
        for i, value in enumerate(items):
            if value is None:
                failures.append(Failure(i, "no value (null)", None))
                continue
            writer = self._parsed
            start = 0
            if confluent:
                writer, why = self._writer_of(value)
                if writer is None:
                    failures.append(Failure(i, why, value))
                    continue
                start = _HEADER.size
            buf = io.BytesIO(value)
            buf.seek(start)
            try:
                record = read(buf, writer, self._parsed if confluent else None)
            except Exception as exc:  # noqa: BLE001 - any failure of one value is its dead letter
                failures.append(Failure(i, self._why(exc), value))
                continue
            left = len(value) - buf.tell()
            if left:
                reason = (
                    f"not an Avro record of {self.record_name}: {left} bytes left over after "
                    "the record"
                )
                failures.append(Failure(i, reason, value))
                continue
            records.append(record)
            rows.append(i)
        return Decoded(self._columns(records), np.asarray(rows, dtype=np.int64), failures)

    def _writer_of(self, value: bytes) -> tuple[Any, str]:
        if len(value) < _HEADER.size:
            return None, (
                f"not in the Confluent wire format: {len(value)} bytes, shorter than the "
                "5-byte header"
            )
        magic, schema_id = _HEADER.unpack_from(value)
        if magic != MAGIC:
            return None, (
                f"not in the Confluent wire format: magic byte {magic & 0xFF}, expected {MAGIC}"
            )
        writer = self._writers.get(schema_id)
        if writer is None and self.registry is not None:
            return self._look_up(schema_id)
        if writer is None:
            known = sorted(self._writers)
            return None, f"unknown schema id {schema_id} (known: {known}); add it to schemas="
        return writer, ""

    def _look_up(self, schema_id: int) -> tuple[Any, str]:
        assert self.registry is not None
        text = self.registry.schema(schema_id)  # ConnectorError where it cannot be reached
        if text is None:
            return (
                None,
                f"unknown schema id {schema_id}: the schema registry {self.registry.url} has none",
            )
        fastavro = _fastavro()
        try:
            writer = fastavro.parse_schema(orjson.loads(text))
        except Exception as exc:  # noqa: BLE001 - a schema fastavro cannot read
            return (
                None,
                f"schema id {schema_id} from the registry is not an Avro schema "
                f"fastavro reads: {exc}",
            )
        self._writers[schema_id] = writer  # ids are immutable in a registry: cache for good
        return writer, ""

    def _why(self, exc: Exception) -> str:
        if isinstance(exc, EOFError | StopIteration):
            return f"not an Avro record of {self.record_name}: truncated ({type(exc).__name__})"
        return f"not an Avro record of {self.record_name}: {type(exc).__name__}: {exc}"

    def _columns(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        cols = records_to_columns(
            [{k: r[k] for k in self.arrow_schema.names} for r in records]
            if self.untyped
            else records,
            self.arrow_schema,
        )
        for name in self.untyped:
            col = np.empty(len(records), dtype=object)
            col[:] = [r.get(name) for r in records]
            cols[name] = col
        return {k: cols[k] for k in self._order}

    # -- encoding -------------------------------------------------------------------------
    def encode(self, batch: Batch | Mapping[str, Any]) -> list[bytes]:
        """One record per row (with the Confluent header for ``wire="confluent"``).

        Columns the schema does not name are not written; a field with no column is
        written as its default, or null where the field allows it.

        Raises:
            ConnectorError: for a missing required field, a value that does not fit its
                field, or ``wire="confluent"`` without a ``schema_id``.
        """
        b = columns_of(batch)
        label = repr(self)
        header = b""
        if self.wire == "confluent":
            if self.schema_id is None and self.registry is not None and self.subject:
                self.schema_id = self.registry.register(
                    self.subject, orjson.dumps(self.record).decode()
                )
                self._writers.setdefault(self.schema_id, self._parsed)
            if self.schema_id is None:
                msg = (
                    f"{label}: encoding in the Confluent wire format needs schema_id=, or "
                    "registry= and subject= to register the schema"
                )
                raise ConnectorError(msg)
            header = _HEADER.pack(MAGIC, self.schema_id)
        present = [f for f in self.arrow_schema if f.name in b or f.name not in self._defaults]
        typed = table_for(b, pa.schema(present), label) if present else pa.table({})
        columns = {name: typed.column(name).to_pylist() for name in typed.column_names}
        for name in self.untyped:
            if name in b:
                columns[name] = b[name].tolist()
        names = list(columns)
        out = []
        buf = io.BytesIO()
        for i, row in enumerate(zip(*columns.values(), strict=True) if names else ()):
            buf.seek(0)
            buf.truncate()
            buf.write(header)
            try:
                self._write(buf, self._parsed, dict(zip(names, row, strict=True)))
            except Exception as exc:  # noqa: BLE001 - fastavro raises many kinds
                msg = f"{label}: row {i} does not fit the schema: {type(exc).__name__}: {exc}"
                raise ConnectorError(msg) from exc
            out.append(buf.getvalue())
        if not names:
            out = [header + self._empty(label) for _ in range(len(b))]
        return out

    @property
    def _defaults(self) -> set[str]:
        return {f["name"] for f in self.record["fields"] if "default" in f}

    def _empty(self, label: str) -> bytes:
        buf = io.BytesIO()
        try:
            self._write(buf, self._parsed, {})
        except Exception as exc:  # noqa: BLE001
            msg = f"{label}: the batch has none of the schema's fields: {exc}"
            raise ConnectorError(msg) from exc
        return buf.getvalue()
