"""AvroFormat: plain schemaless records and the Confluent wire format (schemas by id)."""

from __future__ import annotations

import io
import math
import struct

import fastavro
import numpy as np
import pytest

from tidal.core.batch import Batch
from tidal.errors import ConfigError, ConnectorError
from tidal.io.formats import AvroFormat

READING = {
    "type": "record",
    "name": "Reading",
    "namespace": "tidal.test",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "small", "type": "int"},
        {"name": "value", "type": "double"},
        {"name": "f32", "type": "float"},
        {"name": "name", "type": "string"},
        {"name": "ok", "type": "boolean"},
        {"name": "maybe", "type": ["null", "long"], "default": None},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {
            "name": "where",
            "type": {
                "type": "record",
                "name": "Location",
                "fields": [{"name": "lat", "type": "double"}, {"name": "lon", "type": "double"}],
            },
        },
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "counts", "type": {"type": "map", "values": "long"}},
        {"name": "level", "type": {"type": "enum", "name": "Level", "symbols": ["LOW", "HIGH"]}},
        {"name": "blob", "type": "bytes"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


def obj(values: list[object]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def sample() -> Batch:
    return Batch(
        {
            "id": [1, 2**40, -3],
            "small": [7, 0, -1],
            "value": [0.5, -1e-9, 3.25],
            "f32": [1.5, 0.25, -2.0],
            "name": ["a", "é", ""],
            "ok": [True, False, True],
            "maybe": [5.0, float("nan"), -6.0],  # ints with a null: float64 + NaN
            "ts": [1_700_000_000_123, 0, 1_800_000_000_000],
            "where": [{"lat": 1.0, "lon": 2.0}, {"lat": -1.0, "lon": 0.0}, {"lat": 0, "lon": 0}],
            "tags": obj([["x", "y"], [], ["z"]]),
            "counts": [{"a": 1}, {}, {"b": 2, "c": 3}],
            "level": ["HIGH", "LOW", "LOW"],
            "blob": [b"\x00\x01", b"", b"\xff"],
            "note": ["hi", None, None],
        }
    )


def check_equal(decoded: dict[str, np.ndarray], expected: Batch) -> None:
    assert list(decoded) == expected.names
    for name in expected.names:
        got, want = decoded[name], expected[name]
        if want.dtype.kind == "f":
            assert got.dtype == np.float64, name
            assert np.array_equal(got, want, equal_nan=True), name
        elif name == "tags":
            assert [list(v) for v in got] == [list(v) for v in want]
        else:
            assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
            assert got.tolist() == want.tolist(), name


def test_plain_round_trip_keeps_every_type() -> None:
    fmt = AvroFormat(READING)
    batch = sample()
    values = fmt.encode(batch)
    assert len(values) == 3
    decoded = fmt.decode(values)
    assert decoded.failures == [] and decoded.rows.tolist() == [0, 1, 2]
    check_equal(decoded.columns, batch)
    assert decoded.columns["ts"].dtype == np.int64  # timestamps as int64 ms


def test_values_are_what_fastavro_writes_and_reads() -> None:
    fmt = AvroFormat(READING)
    values = fmt.encode(sample())
    parsed = fastavro.parse_schema(READING)
    record = fastavro.schemaless_reader(io.BytesIO(values[1]), parsed, None)
    assert record["id"] == 2**40 and record["maybe"] is None and record["level"] == "LOW"
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, record)
    assert out.getvalue() == values[1]


def test_bad_values_fail_alone() -> None:
    fmt = AvroFormat(READING)
    good = fmt.encode(sample())
    values = [good[0], good[1][:-3], good[1] + b"\x00", None, b"", good[2]]
    decoded = fmt.decode(values)
    assert decoded.rows.tolist() == [0, 5]
    assert decoded.columns["id"].tolist() == [1, -3]
    reasons = {f.index: f.reason for f in decoded.failures}
    assert sorted(reasons) == [1, 2, 3, 4]
    assert reasons[1] == "not an Avro record of Reading: truncated (EOFError)"
    assert reasons[2] == "not an Avro record of Reading: 1 bytes left over after the record"
    assert reasons[3] == "no value (null)"
    assert {f.index: f.value for f in decoded.failures}[1] == good[1][:-3]


def test_a_value_of_another_type_fails() -> None:
    fmt = AvroFormat({"type": "record", "name": "S", "fields": [{"name": "s", "type": "string"}]})
    # a string whose length prefix says 100 bytes, followed by 2
    decoded = fmt.decode([b"\xc8\x01ab", b"\x04ok"])
    assert decoded.rows.tolist() == [1] and decoded.columns["s"].tolist() == ["ok"]
    assert decoded.failures[0].index == 0


def confluent(schema_id: int, payload: bytes) -> bytes:
    return struct.pack(">bI", 0, schema_id) + payload


def test_confluent_round_trip_and_header() -> None:
    fmt = AvroFormat(READING, wire="confluent", schema_id=42)
    values = fmt.encode(sample())
    assert all(v[:5] == b"\x00\x00\x00\x00\x2a" for v in values)
    assert [v[5:] for v in values] == AvroFormat(READING).encode(sample())
    decoded = fmt.decode(values)
    check_equal(decoded.columns, sample())


def test_confluent_bad_framing_fails_alone() -> None:
    fmt = AvroFormat(READING, wire="confluent", schema_id=42)
    good = fmt.encode(sample())
    values = [b"\x01" + good[0][1:], confluent(7, good[0][5:]), b"\x00\x00", good[1]]
    decoded = fmt.decode(values)
    assert decoded.rows.tolist() == [3]
    reasons = [f.reason for f in decoded.failures]
    assert reasons == [
        "not in the Confluent wire format: magic byte 1, expected 0",
        "unknown schema id 7 (known: [42]); add it to schemas=",
        "not in the Confluent wire format: 2 bytes, shorter than the 5-byte header",
    ]
    assert [f.value for f in decoded.failures] == values[:3]


def test_confluent_resolves_older_writer_schemas() -> None:
    v1 = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]}
    v2 = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "a", "type": "long"},
            {"name": "b", "type": "string", "default": "none"},
        ],
    }
    old = AvroFormat(v1, wire="confluent", schema_id=1).encode({"a": [1]})
    new = AvroFormat(v2, wire="confluent", schema_id=2).encode({"a": [2], "b": ["x"]})
    reader = AvroFormat(v2, wire="confluent", schemas={1: v1, 2: v2})
    decoded = reader.decode([old[0], new[0]])
    assert decoded.batch().to_records() == [{"a": 1, "b": "none"}, {"a": 2, "b": "x"}]


def test_encode_errors_name_the_field() -> None:
    fmt = AvroFormat(READING)
    batch = sample().drop(["name"])
    with pytest.raises(ConnectorError, match="needs a column 'name'"):
        fmt.encode(batch)
    with pytest.raises(ConnectorError, match="column 'id'"):
        fmt.encode(sample().with_columns(id=[1.5, 2.0, 3.0]))
    bad = sample().with_columns(counts=np.array(["no", "map", "here"], dtype=object))
    with pytest.raises(ConnectorError, match="row 0 does not fit"):
        fmt.encode(bad)


def test_missing_fields_take_defaults() -> None:
    fmt = AvroFormat(READING)
    values = fmt.encode(sample().drop(["maybe", "note"]))
    decoded = fmt.decode(values)
    assert all(math.isnan(v) for v in decoded.columns["maybe"])
    assert decoded.columns["note"].tolist() == [None, None, None]


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="must be a record"):
        AvroFormat({"type": "string"})
    with pytest.raises(ConfigError, match="fastavro rejects"):
        AvroFormat({"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]})
    with pytest.raises(ConfigError, match="needs schema_id"):
        AvroFormat(READING, wire="confluent")
    with pytest.raises(ConfigError, match="for wire='confluent'"):
        AvroFormat(READING, schema_id=3)
    with pytest.raises(ConfigError, match="not valid JSON"):
        AvroFormat("{")


SMALL = {
    "type": "record",
    "name": "Small",
    "fields": [{"name": "sensor", "type": "string"}, {"name": "value", "type": "double"}],
}


def test_registry_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="are for wire='confluent'"):
        AvroFormat(SMALL, registry="http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="http:// or https://"):
        AvroFormat(SMALL, wire="confluent", registry="127.0.0.1:8081")
    fmt = AvroFormat(SMALL, wire="confluent", registry="http://127.0.0.1:9")  # reads only
    with pytest.raises(ConnectorError, match="registry= and subject="):
        fmt.encode({"sensor": ["a"], "value": [1.0]})


def test_for_topic_names_the_subject_only_where_a_registry_is_set() -> None:
    plain = AvroFormat(SMALL, wire="confluent", schema_id=3)
    assert plain.for_topic("t") is plain
    named = AvroFormat(SMALL, wire="confluent", registry="http://127.0.0.1:9", subject="s")
    assert named.for_topic("t") is named
    bound = AvroFormat(SMALL, wire="confluent", registry="http://127.0.0.1:9").for_topic("t")
    assert bound.subject == "t-value"


def test_ids_in_schemas_need_no_registry_call() -> None:
    # port 9 answers nothing: a lookup would raise, so decoding proves the cache is used
    writer = AvroFormat(SMALL, wire="confluent", schema_id=5)
    values = writer.encode({"sensor": ["a"], "value": [1.0]})
    fmt = AvroFormat(SMALL, wire="confluent", registry="http://127.0.0.1:9", schemas={5: SMALL})
    assert fmt.decode(values).batch().to_records() == [{"sensor": "a", "value": 1.0}]
