"""``dumps_rows`` (column by column) writes the same bytes as orjson over the rows as dicts,
and ``dumps_each`` (row by row for small batches) the same lines."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidal.core.batch import Batch
from tidal.errors import ConnectorError
from tidal.io.jsonl import ROWS_MAX, _default, dumps_each, dumps_rows


def _reference(batch: Batch) -> bytes:
    rows = batch.to_records()
    return b"".join(
        orjson.dumps(r, default=_default, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for r in rows
    )


def _cases() -> list[Batch]:
    rng = np.random.default_rng(7)
    tricky = ['he said "hi\\\\"', "a,b{[", "\\", "", '}]\\"', 'ünï,"{', None, "x"]
    nested = [[1, 2], {"k": [3, {"z": "]"}]}, None, (1, "x,"), {"a,": '"'}, [], {}, [[[]]]]
    return [
        Batch({"x": [1.5, float("nan")], "s": ["a", None]}),
        Batch({"a": [1, 2, 3]}),
        Batch(
            {
                "s": tricky,
                "n": np.array(nested, dtype=object),
                "b": np.array([True, False] * 4),
                "f32": np.arange(8, dtype=np.float32) / 10,
                "u8": np.arange(8, dtype=np.uint8),
                "i": np.arange(8, dtype=np.int64) - 4,
                "f": rng.normal(size=8) * 1e300,
                'k"é,': np.array([np.int64(3), np.float64(2.5), "x", None] * 2, dtype=object),
            }
        ),
        Batch({"t": np.arange(5, dtype=np.int64)}, length=5),
        # columns that are views with strides (a column of a 2-D array, a reversed slice)
        Batch({"c": np.arange(12.0).reshape(4, 3)[:, 1], "r": np.arange(4, dtype=np.int64)[::-1]}),
    ]


@pytest.mark.parametrize("batch", _cases())
def test_dumps_rows_equals_orjson_per_row(batch: Batch) -> None:
    assert dumps_rows(batch, "sink") == _reference(batch)


def test_dumps_rows_empty_and_columnless_batches() -> None:
    assert dumps_rows(Batch(), "sink") == b""
    assert dumps_rows(Batch({}, length=2), "sink") == b"{}\n{}\n"


def test_dumps_rows_names_the_column_it_cannot_write() -> None:
    bad = np.array([object(), object()], dtype=object)
    with pytest.raises(ConnectorError, match="cannot write column 'bad' as JSON"):
        dumps_rows(Batch({"ok": [1, 2], "bad": bad}), "sink")


def _lines(batch: Batch) -> list[bytes]:
    return dumps_rows(batch, "sink").split(b"\n")[:-1]


@pytest.mark.parametrize("batch", _cases())
def test_dumps_each_equals_the_lines_of_dumps_rows(batch: Batch) -> None:
    assert dumps_each(batch, "sink") == _lines(batch)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=20),
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=20, max_size=20),
)
def test_dumps_each_writes_numbers_as_the_columnar_encoding(
    floats: list[float], ints: list[int]
) -> None:
    n = len(floats)
    batch = Batch({"f": np.array(floats), "i": np.array(ints[:n], dtype=np.int64)})
    assert dumps_each(batch, "sink") == _lines(batch)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=20),
    st.lists(st.integers(0, 2**64 - 1), min_size=20, max_size=20),
    st.sampled_from(["t", 'a%d"\\', "é"]),
)
def test_dumps_each_writes_integer_columns_as_orjson(
    ints: list[int], unsigned: list[int], name: str
) -> None:
    n = len(ints)
    columns = {name: np.array(ints, dtype=np.int64), "u": np.array(unsigned[:n], dtype=np.uint64)}
    columns["i8"] = np.array(ints, dtype=np.int64).astype(np.int8)
    batch = Batch(columns)
    assert dumps_each(batch, "sink") == _lines(batch) == _reference(batch).split(b"\n")[:-1]


def test_dumps_each_above_rows_max_and_empty() -> None:
    batch = Batch({"t": np.arange(ROWS_MAX + 1, dtype=np.int64), "s": ["a"] * (ROWS_MAX + 1)})
    assert dumps_each(batch, "sink") == _lines(batch)
    assert dumps_each(Batch(), "sink") == []
    assert dumps_each(Batch({}, length=2), "sink") == [b"{}", b"{}"]
    wide = Batch({"m": np.arange(6).reshape(3, 2)})  # a 2-D column: the columnar encoding
    assert dumps_each(wide, "sink") == _lines(wide)


def test_dumps_each_names_the_column_it_cannot_write() -> None:
    bad = np.array([object(), object()], dtype=object)
    with pytest.raises(ConnectorError, match="cannot write column 'bad' as JSON"):
        dumps_each(Batch({"ok": [1, 2], "bad": bad}), "sink")
