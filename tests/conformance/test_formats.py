"""The shared contract of every value format (:mod:`tidal.io.formats`), checked for each.

This is the first part of Tidal's conformance suite (STYLE.md, "Tests"): one test per
promise of a protocol, parametrized over every implementation, so a new implementation
joins by adding one case and gets every check.

To add a format: append a :class:`Case` to ``CASES`` with a factory for the format, a
sample batch that uses the types the format can carry (the round trip must give it back
column for column) and, if anything can fail to decode, a few bad values.
``test_every_exported_format_has_a_case`` fails until the case is there.

The promises:

- it is a :class:`~tidal.io.formats.ValueFormat` (``name``, ``batched``, ``decode``,
  ``encode``);
- encode then decode gives the same columns, types kept, and ``rows`` maps rows to values;
- neither call changes its inputs (the batch's arrays, the values);
- bad values become failures with their index, a reason and the original bytes, while the
  good values of the same call decode; ``dead_letters`` gives them positions;
- encoding and decoding are deterministic (same bytes, same columns; a fresh instance too);
- every container of values (list, numpy object array, Arrow binary array) decodes alike;
- no values decode to no rows.
"""

from __future__ import annotations

import copy
import inspect
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from google.protobuf import descriptor_pb2

import tidal.io.formats as formats
from tidal.core.batch import Batch
from tidal.io.formats import (
    ArrowFormat,
    AvroFormat,
    JsonFormat,
    ProtobufFormat,
    RawFormat,
    ValueFormat,
)


def obj(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


@dataclass(frozen=True)
class Case:
    """One format under test."""

    id: str
    make: Callable[[], Any]
    sample: Callable[[], Batch]
    bad: list[bytes | None] = field(default_factory=list)


def json_sample() -> Batch:
    return Batch(
        {
            "id": [1, 2, 3, 4],
            "value": [0.5, float("nan"), -1e-300, 2.0],
            "name": obj(["a", None, "é", ""]),
            "ok": [True, False, False, True],
            "nested": obj([{"k": [1]}, {"k": []}, {"k": [2, 3]}, {"k": None}]),
        }
    )


AVRO = {
    "type": "record",
    "name": "Row",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "value", "type": ["null", "double"]},
        {"name": "name", "type": ["null", "string"]},
        {"name": "ok", "type": "boolean"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "blob", "type": "bytes"},
        {
            "name": "nested",
            "type": {"type": "record", "name": "N", "fields": [{"name": "k", "type": "long"}]},
        },
    ],
}


def avro_sample() -> Batch:
    return Batch(
        {
            "id": [1, -2, 2**50, 0],
            "value": [0.5, float("nan"), -1e-300, 2.0],
            "name": obj(["a", None, "é", ""]),
            "ok": [True, False, False, True],
            "ts": [1_700_000_000_000, 0, 1, 2_000_000_000_000],
            "blob": obj([b"\x00", b"", b"\xff\xfe", b"ok"]),
            "nested": obj([{"k": 1}, {"k": 2}, {"k": -3}, {"k": 0}]),
        }
    )


def proto_sample() -> Batch:
    return Batch(
        {
            "name": obj([[{"name_part": "p", "is_extension": False}], [], [], []]),
            "identifier_value": obj(["x", None, "z", ""]),
            "positive_int_value": np.array([1, 2**64 - 1, 0, 5], dtype=np.uint64),
            "negative_int_value": [-1, 0, -(2**62), 4],
            "double_value": [0.5, float("nan"), -1e-300, 2.0],
            "string_value": obj([b"\x00", b"", b"\xff", None]),
            "aggregate_value": obj([None, "agg", "", "b"]),
        }
    )


def arrow_sample() -> Batch:
    return Batch(
        {
            "id": [1, -2, 2**50, 0],
            "value": [0.5, float("nan"), -1e-300, 2.0],
            "name": obj(["a", None, "é", ""]),
            "ok": [True, False, False, True],
            "ts": [1_700_000_000_000, 0, 1, 2_000_000_000_000],
            "nested": obj([{"k": 1}, {"k": 2}, {"k": -3}, {"k": 0}]),
        }
    )


CASES = [
    Case(
        "json",
        lambda: JsonFormat(schema={"id": int}),
        json_sample,
        [b'{"id": ', b"[]", b'{"id": "x"}', None, b"\xff"],
    ),
    Case("raw", RawFormat, lambda: Batch({"value": obj([b"\x00", b"", b"abc", b"\xff"])})),
    Case(
        "avro",
        lambda: AvroFormat(AVRO),
        avro_sample,
        [b"\x02", b"", None, b"\x02\x02\x02\x02\x02\x02\x02\x02\x02"],
    ),
    Case(
        "avro-confluent",
        lambda: AvroFormat(AVRO, wire="confluent", schema_id=9),
        avro_sample,
        [b"\x01\x00\x00\x00\x09\x02", struct.pack(">bI", 0, 10) + b"\x02", b"\x00", None],
    ),
    Case(
        "protobuf",
        lambda: ProtobufFormat(descriptor_pb2.UninterpretedOption),
        proto_sample,
        [b"\xff\xff\xff", b"\x12\x03\n\x01p", None],  # garbage; a required field missing
    ),
    Case(
        "arrow",
        ArrowFormat,
        arrow_sample,
        [b"not arrow", b"\xff\xff\xff\xff\x00\x00", None],
    ),
]
IDS = [c.id for c in CASES]
WITH_BAD = [c for c in CASES if c.bad]


def plain(value: Any) -> Any:
    """Nested numpy arrays as lists, for comparing nested columns."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def assert_same_columns(got: dict[str, np.ndarray], want: Batch) -> None:
    assert list(got) == want.names
    for name in want.names:
        g, w = got[name], want[name]
        assert g.dtype == w.dtype, (name, g.dtype, w.dtype)
        if w.dtype.kind == "f":
            assert np.array_equal(g, w, equal_nan=True), name
        else:
            assert plain(g) == plain(w), name


def encode_all(fmt: Any, batch: Batch) -> list[bytes]:
    """Values for the batch; a batched format gets it in two chunks, as a sink may cut it."""
    if fmt.batched:
        return fmt.encode(batch.slice(0, 1)) + fmt.encode(batch.slice(1, len(batch)))
    return fmt.encode(batch)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_is_a_value_format(case: Case) -> None:
    fmt = case.make()
    assert isinstance(fmt, ValueFormat)
    assert isinstance(fmt.name, str) and fmt.name and isinstance(fmt.batched, bool)


def test_every_exported_format_has_a_case() -> None:
    exported = {
        name
        for name in formats.__all__
        if inspect.isclass(obj_ := getattr(formats, name))
        and hasattr(obj_, "decode")
        and hasattr(obj_, "encode")
        and name != "ValueFormat"
    }
    covered = {type(c.make()).__name__ for c in CASES}
    assert exported <= covered, f"add a Case for {sorted(exported - covered)}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_round_trip_keeps_columns_and_types(case: Case) -> None:
    fmt = case.make()
    batch = case.sample()
    values = encode_all(fmt, batch)
    assert all(isinstance(v, bytes) for v in values)
    assert len(values) == (2 if fmt.batched else len(batch))
    decoded = fmt.decode(values)
    assert decoded.failures == []
    assert_same_columns(decoded.columns, batch)
    want_rows = [0] + [1] * (len(batch) - 1) if fmt.batched else list(range(len(batch)))
    assert decoded.rows.dtype == np.int64 and decoded.rows.tolist() == want_rows


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_inputs_are_not_mutated(case: Case) -> None:
    fmt = case.make()
    batch = case.sample()
    before = {k: copy.deepcopy(v) for k, v in batch.columns.items()}
    values = encode_all(fmt, batch)
    assert_same_columns(before, batch)
    given = list(values) + list(case.bad)
    kept = copy.deepcopy(given)
    fmt.decode(given)
    assert given == kept


@pytest.mark.parametrize("case", WITH_BAD, ids=[c.id for c in WITH_BAD])
def test_bad_values_are_dead_lettered_and_the_rest_decodes(case: Case) -> None:
    fmt = case.make()
    batch = case.sample()
    good = encode_all(fmt, batch)
    mixed: list[bytes | None] = []
    bad_at = []
    for i, value in enumerate(good):  # a bad value after each good one
        mixed.append(value)
        if i < len(case.bad):
            bad_at.append(len(mixed))
            mixed.append(case.bad[i])
    for value in case.bad[len(good) :]:
        bad_at.append(len(mixed))
        mixed.append(value)
    decoded = fmt.decode(mixed)
    assert [f.index for f in decoded.failures] == bad_at
    for f in decoded.failures:
        assert f.reason and f.value == mixed[f.index]
    assert_same_columns(decoded.columns, batch)
    good_at = [i for i in range(len(mixed)) if i not in bad_at]
    assert sorted(set(decoded.rows.tolist())) == good_at
    letters = decoded.dead_letters("read", lambda i: {"topic": "t", "partition": 0, "offset": i})
    assert [d.position["offset"] for d in letters] == bad_at
    assert all(d.reason.startswith(f"t[0] offset {d.position['offset']}: ") for d in letters)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_deterministic(case: Case) -> None:
    fmt, other = case.make(), case.make()
    batch = case.sample()
    values = encode_all(fmt, batch)
    assert encode_all(fmt, batch) == values == encode_all(other, batch)
    one, two = fmt.decode(values + case.bad), other.decode(values + case.bad)
    assert_same_columns(two.columns, Batch(one.columns))
    assert one.rows.tolist() == two.rows.tolist() and one.failures == two.failures


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_container_of_values_decodes_alike(case: Case) -> None:
    fmt = case.make()
    values = encode_all(fmt, case.sample())
    want = fmt.decode(values)
    for container in (obj(values), pa.array(values, pa.binary()), tuple(values)):
        got = fmt.decode(container)
        assert_same_columns(got.columns, Batch(want.columns))
        assert got.rows.tolist() == want.rows.tolist()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_no_values_no_rows(case: Case) -> None:
    decoded = case.make().decode([])
    assert len(decoded) == 0 and decoded.failures == [] and decoded.rows.dtype == np.int64
