"""ProtobufFormat with a message class built from its descriptor, as protoc's code does."""

from __future__ import annotations

import math

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

from tidal.core.batch import Batch
from tidal.errors import ConfigError, ConnectorError
from tidal.io.formats import ProtobufFormat

F = descriptor_pb2.FieldDescriptorProto


def reading_class() -> type:
    """``tidal.test.Reading`` (proto3): what protoc would generate from::

    syntax = "proto3";
    import "google/protobuf/timestamp.proto";
    message Reading {
      enum Level { LOW = 0; HIGH = 1; }
      message Location { double lat = 1; double lon = 2; }
      int64 id = 1; double value = 2; string name = 3; bool ok = 4;
      optional int64 maybe = 5; google.protobuf.Timestamp ts = 6; Location where = 7;
      repeated string tags = 8; Level level = 9; bytes blob = 10; uint64 big = 11;
      map<string, int64> counts = 12;
    }
    """
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(timestamp_pb2.DESCRIPTOR.serialized_pb))
    file = descriptor_pb2.FileDescriptorProto(
        name="tidal_test_reading.proto",
        package="tidal.test",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )
    msg = file.message_type.add(name="Reading")
    level = msg.enum_type.add(name="Level")
    level.value.add(name="LOW", number=0)
    level.value.add(name="HIGH", number=1)
    loc = msg.nested_type.add(name="Location")
    loc.field.add(name="lat", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    loc.field.add(name="lon", number=2, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    entry = msg.nested_type.add(name="CountsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    msg.oneof_decl.add(name="_maybe")
    add = msg.field.add
    add(name="id", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    add(name="value", number=2, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    add(name="name", number=3, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    add(name="ok", number=4, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    add(name="maybe", number=5, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL, oneof_index=0,
        proto3_optional=True)
    add(name="ts", number=6, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
        type_name=".google.protobuf.Timestamp")
    add(name="where", number=7, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
        type_name=".tidal.test.Reading.Location")
    add(name="tags", number=8, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
    add(name="level", number=9, type=F.TYPE_ENUM, label=F.LABEL_OPTIONAL,
        type_name=".tidal.test.Reading.Level")
    add(name="blob", number=10, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    add(name="big", number=11, type=F.TYPE_UINT64, label=F.LABEL_OPTIONAL)
    add(name="counts", number=12, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
        type_name=".tidal.test.Reading.CountsEntry")
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tidal.test.Reading"))


Reading = reading_class()


def obj(values: list[object]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def sample() -> Batch:
    return Batch(
        {
            "id": [1, 2**40, -3],
            "value": [0.5, -1e-9, 3.25],
            "name": ["a", "é", ""],
            "ok": [True, False, True],
            "maybe": [5.0, float("nan"), 0.0],
            "ts": [1_700_000_000_123, 0, -1000],
            "where": obj([{"lat": 1.5, "lon": 2.0}, None, {"lat": -1.0}]),
            "tags": obj([["x", "y"], [], ["z"]]),
            "level": ["HIGH", "LOW", "HIGH"],
            "blob": [b"\x00\x01", b"", b"\xff"],
            "big": np.array([2**64 - 1, 0, 7], dtype=np.uint64),
            "counts": obj([{"a": 1}, {}, {"b": 2, "c": -3}]),
        }
    )


def test_round_trip_keeps_every_type() -> None:
    fmt = ProtobufFormat(Reading)
    batch = sample()
    values = fmt.encode(batch)
    decoded = fmt.decode(values)
    cols = decoded.columns
    assert list(cols) == batch.names and decoded.rows.tolist() == [0, 1, 2]
    for name in ("id", "name", "ok", "ts", "level", "blob", "big", "value"):
        assert cols[name].dtype == batch[name].dtype, name
        assert cols[name].tolist() == batch[name].tolist(), name
    assert np.array_equal(cols["maybe"], batch["maybe"], equal_nan=True)  # presence kept
    assert cols["where"].tolist() == [{"lat": 1.5, "lon": 2.0}, None, {"lat": -1.0}]
    assert cols["tags"].tolist() == [["x", "y"], [], ["z"]]
    assert cols["counts"].tolist() == [{"a": 1}, {}, {"b": 2, "c": -3}]


def test_values_parse_with_protobuf_itself() -> None:
    values = ProtobufFormat(Reading).encode(sample())
    msg = Reading.FromString(values[0])
    assert msg.id == 1 and msg.ts.ToMilliseconds() == 1_700_000_000_123
    assert msg.HasField("maybe") and not Reading.FromString(values[1]).HasField("maybe")
    assert msg.level == 1 and list(msg.tags) == ["x", "y"] and dict(msg.counts) == {"a": 1}
    again = Reading(id=1, value=0.5, name="a", ok=True, maybe=5, tags=["x", "y"], level=1,
                    blob=b"\x00\x01", big=2**64 - 1, counts={"a": 1})
    again.ts.FromMilliseconds(1_700_000_000_123)
    again.where.lat, again.where.lon = 1.5, 2.0
    assert again.SerializeToString(deterministic=True) == values[0]


def test_garbage_fails_alone() -> None:
    fmt = ProtobufFormat(Reading)
    good = fmt.encode(sample())
    values = [good[0], good[0][:-2], b"\xff\xff\xff", None, b"\x0a\x05ab", good[2]]
    decoded = fmt.decode(values)
    assert decoded.rows.tolist() == [0, 5]
    assert decoded.columns["id"].tolist() == [1, -3]
    failed = {f.index: f for f in decoded.failures}
    assert sorted(failed) == [1, 2, 3, 4]
    assert failed[1].reason.startswith("not a tidal.test.Reading message: Error parsing")
    assert failed[2].value == b"\xff\xff\xff" and failed[3].reason == "no value (null)"


def test_empty_messages_decode_to_defaults() -> None:
    decoded = ProtobufFormat(Reading).decode([b""])
    row = decoded.batch().to_records()[0]
    assert row["id"] == 0 and row["name"] == "" and row["where"] is None
    assert math.isnan(row["maybe"]) and math.isnan(row["ts"])  # unset: null


def test_encode_errors_and_settings() -> None:
    fmt = ProtobufFormat(Reading)
    with pytest.raises(ConnectorError, match="row 1 does not fit"):
        fmt.encode({"id": np.array([1, "x"], dtype=object)})
    with pytest.raises(ConnectorError, match="row 0 does not fit"):
        fmt.encode({"level": ["MEDIUM"]})
    with pytest.raises(ConfigError, match="compiled protobuf message class"):
        ProtobufFormat(dict)
