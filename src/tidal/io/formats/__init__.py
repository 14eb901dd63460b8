r"""Value formats: record values (bytes) to columns and back, for Kafka and the embedded log.

One formats layer serves every transport that carries values as bytes: the embedded log
(:class:`~tidal.io.log.source.LogSource` / :class:`~tidal.io.log.sink.LogSink`, ``format=``)
and Kafka. A transport hands a format the values of one poll; the format hands back columns.

The contract (:class:`~tidal.io.formats.base.ValueFormat`)
-----------------------------------------------------------

``decode(values) -> Decoded``
    ``values`` are all the values of one poll: a list of ``bytes`` (``None`` for a missing
    value, e.g. a Kafka tombstone), an object array of them or an Arrow binary array.
    Decoding is columnar: one call per poll, columns built in bulk (Arrow), never one
    Python object per field on the hot path where the library allows it. It never raises
    for bad data; it returns a :class:`~tidal.io.formats.base.Decoded`:

    ``columns``
        name -> numpy array, in the :class:`~tidal.core.batch.Batch` convention (strings
        and nested values ``object``, timestamps int64 ms, integers with nulls float64).
    ``rows``
        int64, one per decoded row: the index of the value it came from, rising. For the
        row formats (JSON, Avro, Protobuf, raw) each good value gives exactly one row;
        for :class:`ArrowFormat` one value gives many rows (``rows`` repeats its index).
        A source takes its per-value arrays with them: ``offsets[decoded.rows]``.
    ``failures``
        one :class:`~tidal.io.formats.base.Failure` per bad value: its index, the
        reason (without the position: the caller knows it) and the original bytes, so a
        Kafka dead-letter topic can carry them unchanged. The good values of the same
        call still decode. ``decoded.dead_letters(step, where)`` turns them into
        :class:`~tidal.core.deadletter.DeadLetter` objects, with ``where(index)`` giving
        the position (``{"topic", "partition", "offset"}``) and the bytes as text.

``encode(batch) -> list[bytes]``
    The user columns of a :class:`~tidal.core.batch.Batch` (or a mapping of columns):
    one value per row, or, for a ``batched`` format (Arrow), one value for all the rows
    given: the sink chooses the chunks (per partition, bounded by the message size).
    Raises :class:`~tidal.errors.ConnectorError` for data the format cannot hold.

``batched``
    ``False`` for the row formats, ``True`` for Arrow. Positions stay per value (a log
    or Kafka offset): a source hands out all the rows of a value in the same batch and
    its position moves past the value, so a checkpoint never falls inside one; after a
    restart the value is read again whole or not at all, and exactly-once holds at
    value granularity (``Batch.offset`` of each row is its value's offset).

Formats
-------

- :class:`JsonFormat` ``(schema=None)``: a JSON object per value; the decoder of
  :class:`~tidal.io.jsonl.JsonlSource` (types, required ``int``/``bool`` fields).
- :class:`AvroFormat` ``(schema)``: fastavro, schemaless records of a given schema, or
  the Confluent wire format (``wire="confluent"``: magic byte 0, a 4-byte schema id,
  the record) with the writer schemas given by id.
- :class:`ProtobufFormat` ``(message_class)``: a compiled message class.
- :class:`RawFormat`: the bytes as one column (``value``).
- :class:`ArrowFormat`: one Arrow IPC stream (schema + one record batch) per value, for
  Tidal-to-Tidal topics: many rows per value, no per-row parsing.

Example:
    >>> fmt = JsonFormat(schema={"n": int})
    >>> decoded = fmt.decode([b'{"n": 1}', b'{"n": "x"}', b'{"n": 3}'])
    >>> decoded.columns["n"].tolist(), decoded.rows.tolist()
    ([1, 3], [0, 2])
    >>> decoded.failures
    [Failure(index=1, reason='expected an integer in \'n\', got "x"', value=b'{"n": "x"}')]
    >>> fmt.encode({"n": [1, 3]})
    [b'{"n":1}', b'{"n":3}']
"""

from tidal.io.formats.arrow import ArrowFormat
from tidal.io.formats.avro import AvroFormat
from tidal.io.formats.base import Decoded, Failure, ValueFormat, Values
from tidal.io.formats.json import JsonFormat
from tidal.io.formats.protobuf import ProtobufFormat
from tidal.io.formats.raw import RawFormat

__all__ = [
    "ArrowFormat",
    "AvroFormat",
    "Decoded",
    "Failure",
    "JsonFormat",
    "ProtobufFormat",
    "RawFormat",
    "ValueFormat",
    "Values",
]
