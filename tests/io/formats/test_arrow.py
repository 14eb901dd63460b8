"""ArrowFormat: one IPC stream per value, many rows per value."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tidal.core.batch import Batch
from tidal.errors import ConfigError
from tidal.io.formats import ArrowFormat


def obj(values: list[object]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def sample(n: int = 5, start: int = 0) -> Batch:
    i = np.arange(start, start + n)
    return Batch(
        {
            "id": i,
            "value": i * 0.5,
            "gap": np.where(i % 2 == 0, i.astype(float), np.nan),  # ints with nulls
            "name": obj([f"s{k}" for k in i]),
            "ok": i % 3 == 0,
            "ts": 1_700_000_000_000 + i,
            "where": obj([{"lat": float(k), "tag": str(k)} for k in i]),
        }
    )


@pytest.mark.parametrize("compression", [None, "lz4", "zstd"])
def test_many_rows_per_value_round_trip(compression: str | None) -> None:
    fmt = ArrowFormat(compression=compression)  # type: ignore[arg-type]
    a, b = sample(5), sample(3, start=5)
    values = fmt.encode(a) + fmt.encode(b)
    assert len(values) == 2
    decoded = fmt.decode(values)
    assert decoded.rows.tolist() == [0] * 5 + [1] * 3
    whole = Batch.concat([a, b])
    for name in whole.names:
        got, want = decoded.columns[name], whole[name]
        assert got.dtype == want.dtype, name
        if want.dtype.kind == "f":
            assert np.array_equal(got, want, equal_nan=True), name
        else:
            assert got.tolist() == want.tolist(), name


def test_values_are_plain_arrow_ipc_streams() -> None:
    value = ArrowFormat().encode(sample(4))[0]
    table = pa.ipc.open_stream(value).read_all()
    assert table.num_rows == 4 and table.column("name").to_pylist()[:2] == ["s0", "s1"]


def test_bad_values_fail_alone() -> None:
    fmt = ArrowFormat()
    good = fmt.encode(sample(2))[0]
    sink = pa.BufferOutputStream()
    table = sample(2).to_arrow()
    with pa.ipc.new_stream(sink, table.schema) as writer:  # two batches in one value
        writer.write_table(table)
        writer.write_table(table)
    two = sink.getvalue().to_pybytes()
    clash = fmt.encode({"id": obj(["x", "y"])})[0]  # id as text: cannot join int64
    values = [b"not arrow", good, good[: len(good) // 2], None, two, clash, good]
    decoded = fmt.decode(values)
    assert decoded.rows.tolist() == [1, 1, 6, 6]
    reasons = {f.index: f.reason for f in decoded.failures}
    assert sorted(reasons) == [0, 2, 3, 4, 5]
    assert reasons[0].startswith("not an Arrow IPC stream")
    assert reasons[3] == "no value (null)"
    assert reasons[4] == "an Arrow value holds one record batch, this one has 2"
    assert reasons[5].startswith("its Arrow schema cannot be unified with the first value's")
    assert {f.index: f.value for f in decoded.failures}[5] == clash


def test_values_with_other_columns_are_unified() -> None:
    fmt = ArrowFormat()
    values = fmt.encode({"a": [1, 2]}) + fmt.encode({"a": [3], "b": ["x"]})
    decoded = fmt.decode(values)
    assert decoded.batch().to_records() == [
        {"a": 1, "b": None},
        {"a": 2, "b": None},
        {"a": 3, "b": "x"},
    ]


def test_empty_and_settings() -> None:
    fmt = ArrowFormat()
    decoded = fmt.decode(fmt.encode(sample(0)))
    assert len(decoded) == 0 and decoded.failures == []
    assert len(fmt.decode([])) == 0
    with pytest.raises(ConfigError, match="compression"):
        ArrowFormat(compression="gzip")  # type: ignore[arg-type]
