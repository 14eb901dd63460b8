"""JsonFormat (the log's JSON decoder behind the format contract) and RawFormat."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from tidal.core.batch import Batch
from tidal.errors import ConfigError, ConnectorError
from tidal.io.formats import JsonFormat, RawFormat, ValueFormat


def plain(value: object) -> object:
    """Nested numpy arrays as lists, for comparing nested columns."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def test_json_round_trip_keeps_types() -> None:
    fmt = JsonFormat()
    batch = Batch(
        {
            "i": [1, -2, 3],
            "f": [0.5, float("nan"), 1e300],
            "s": ["a", "é", None],
            "b": [True, False, True],
            "ts": [1_700_000_000_000, 1_700_000_000_001, 0],
            "nested": [{"x": [1, 2], "y": "p"}, {"x": [], "y": None}, {"x": [3], "y": "q"}],
        }
    )
    values = fmt.encode(batch)
    assert len(values) == 3
    decoded = fmt.decode(values)
    cols = decoded.columns
    assert cols["i"].dtype == np.int64 and cols["i"].tolist() == [1, -2, 3]
    assert cols["f"].dtype == np.float64
    assert cols["f"][0] == 0.5 and math.isnan(cols["f"][1]) and cols["f"][2] == 1e300
    assert cols["s"].tolist() == ["a", "é", None]
    assert cols["b"].dtype == np.bool_ and cols["b"].tolist() == [True, False, True]
    assert cols["ts"].tolist() == [1_700_000_000_000, 1_700_000_000_001, 0]
    assert plain(cols["nested"]) == plain(batch["nested"])
    assert decoded.rows.tolist() == [0, 1, 2] and decoded.failures == []


def test_json_bad_values_fail_alone_with_reason_and_bytes() -> None:
    fmt = JsonFormat(schema={"n": int, "v": float})
    values = [
        b'{"n": 1, "v": 0.5}',
        b'{"n": 2, "v": ',  # invalid JSON
        b"[1, 2]",  # not an object
        b'{"n": "3", "v": 1.0}',  # wrong type
        None,  # a tombstone
        b'{"v": 2.0}',  # required int missing
        b'{"n": 7, "v": 7}',
    ]
    decoded = fmt.decode(values)
    assert decoded.rows.tolist() == [0, 6]
    assert decoded.columns["n"].tolist() == [1, 7]
    assert decoded.columns["v"].tolist() == [0.5, 7.0]
    got = {f.index: (f.reason, f.value) for f in decoded.failures}
    assert sorted(got) == [1, 2, 3, 4, 5]
    assert got[1][0].startswith("invalid JSON") and got[1][1] == values[1]
    assert got[2] == ("not a JSON object, got an array", values[2])
    assert got[3] == ("expected an integer in 'n', got \"3\"", values[3])
    assert got[4] == ("no value (null)", None)
    assert got[5] == ("expected an integer in 'n', but the field is missing", values[5])
    letters = decoded.dead_letters("read", lambda i: {"topic": "t", "partition": 0, "offset": i})
    assert letters[0].reason.startswith("t[0] offset 1: invalid JSON")
    assert letters[0].raw == '{"n": 2, "v": '
    assert letters[3].raw is None


def test_json_takes_arrow_and_numpy_values() -> None:
    fmt = JsonFormat()
    arrow = pa.array([b'{"a": 1}', b'{"a": 2}'], pa.binary())
    obj = np.array([b'{"a": 1}', b'{"a": 2}'], dtype=object)
    assert fmt.decode(arrow).columns["a"].tolist() == [1, 2]
    assert fmt.decode(obj).columns["a"].tolist() == [1, 2]


def test_json_schema_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="must be one of"):
        JsonFormat(schema={"n": "integer"})


def test_json_encode_names_the_column_it_cannot_write() -> None:
    with pytest.raises(ConnectorError, match="column 'o'"):
        JsonFormat().encode({"o": np.array([object()], dtype=object)})


def test_raw_round_trip_and_errors() -> None:
    fmt = RawFormat(column="payload")
    assert isinstance(fmt, ValueFormat)
    values = [b"\x00\xff", b"", b"text"]
    decoded = fmt.decode(values)
    assert decoded.columns["payload"].tolist() == values
    assert fmt.encode(decoded.batch()) == values
    with pytest.raises(ConnectorError, match="writes the column 'payload'"):
        fmt.encode({"value": [b"x"]})
    with pytest.raises(ConnectorError, match="row 1 holds int"):
        fmt.encode({"payload": np.array([b"x", 3], dtype=object)})
