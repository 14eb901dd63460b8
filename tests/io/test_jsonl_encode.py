"""``dumps_rows`` (column by column) writes the same bytes as orjson over the rows as dicts."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from tidal.core.batch import Batch
from tidal.errors import ConnectorError
from tidal.io.jsonl import _default, dumps_rows


def _reference(batch: Batch) -> bytes:
    rows = batch.to_records()
    return b"".join(
        orjson.dumps(r, default=_default, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for r in rows
    )


def _cases() -> list[Batch]:
    rng = np.random.default_rng(7)
    tricky = ['he said "hi\\\\"', "a,b{[", "\\", "", "}]\\\"", "ünï,\"{", None, "x"]
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
