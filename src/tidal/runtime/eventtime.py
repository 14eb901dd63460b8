"""Turning a source's time column into int64 epoch milliseconds, in bulk.

Rows whose time is missing or unreadable are split off so that the runtime can send them to
the dead letters with their position; they never stop the pipeline.

Example:
    >>> from typing import Any

import numpy as np
    >>> t, ok = event_time_ms(np.array([1.5, np.nan]), "s")
    >>> t[ok].tolist(), ok.tolist()
    ([1500], [True, False])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tidal.core.batch import Array

_TARGETS = (pa.timestamp("ms"), pa.timestamp("ms", tz="UTC"))
_SCALE = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "ns": 1e-6}


def event_time_ms(column: Array, unit: str) -> tuple[Array, Array]:
    """Event time in ms and a mask of rows whose time could be read.

    Numbers are read in ``unit``; ``datetime64`` values and ISO-8601 strings are converted.
    """
    n = len(column)
    kind = column.dtype.kind
    if kind == "M":
        ms = column.astype("datetime64[ms]")
        ok = ~np.isnat(ms)
        return np.where(ok, ms.astype(np.int64), 0), ok
    if kind in "iu":
        if unit == "ms":
            return column.astype(np.int64, copy=False), np.ones(n, dtype=bool)
        if unit in ("us", "ns"):
            div = 1_000 if unit == "us" else 1_000_000
            return np.floor_divide(column.astype(np.int64), div), np.ones(n, dtype=bool)
        return column.astype(np.int64) * int(_SCALE[unit]), np.ones(n, dtype=bool)
    if kind in "fb":
        values = column.astype(np.float64)
        ok = np.isfinite(values)
        scaled = np.where(ok, values, 0.0) * _SCALE[unit]
        return np.floor(scaled).astype(np.int64), ok
    return _from_objects(column)


def _from_objects(column: Array) -> tuple[Array, Array]:
    n = len(column)
    out = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    try:
        arr: Any = pa.array(column, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        arr = pa.array([None if v is None else str(v) for v in column.tolist()], pa.string())
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        vals = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
        ok = np.isfinite(vals)
        return np.where(ok, vals, 0).astype(np.int64), ok
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string(), safe=False)
    for target in _TARGETS:
        try:
            whole = pc.cast(arr, target).cast(pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        ok = whole.is_valid().to_numpy(zero_copy_only=False)
        return whole.fill_null(0).to_numpy(zero_copy_only=False), ok
    # some strings are not ISO-8601: find them one by one (the slow path, only on bad input)
    for i, value in enumerate(arr.to_pylist()):
        if value is None:
            continue
        for target in _TARGETS:
            try:
                ts = pc.cast(pa.scalar(value, pa.string()), target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
            out[i] = ts.cast(pa.int64()).as_py()
            ok[i] = True
            break
    return out, ok
