"""Turning a source's time column into int64 epoch milliseconds, in bulk.

Rows whose time is missing or unreadable are split off so that the runtime can send them to
the dead letters with their position; they never stop the pipeline, and they never take
the good rows of their batch with them. Readable are:

- integers in the source's ``time_unit``, floats likewise (``time_unit="s"``: ``1.5`` is
  1,500 ms);
- ``datetime64`` values, Python ``datetime``/``date`` objects;
- ISO-8601 strings, with any number of fraction digits up to nanoseconds and an optional
  ``Z`` or ``+hh:mm`` offset (``2024-01-01T00:00:00.868000Z``, what ``isoformat()`` writes);
  a string without an offset is UTC.

Unreadable are missing values, NaN and infinities, booleans, anything else, and times that
fall outside ``MIN_TIME < t < MAX_TIME`` of :mod:`tidal.core.watermark` (about ±146
million years): ``1e300`` or ``2**64`` are dead letters, never an undefined integer cast.

The happy path is a few numpy or Arrow calls per column; only a column with unreadable
values takes a slower path, which finds them by halving (log n Arrow casts per bad value),
or, for a column that mixes types (an ISO string among integers), by one Python loop over
its values.

Example:
    >>> import numpy as np
    >>> t, ok = event_time_ms(np.array([1.5, np.nan, 1e300]), "s")
    >>> t[ok].tolist(), ok.tolist()
    ([1500], [True, False, False])
    >>> t, ok = event_time_ms(np.array(["2024-01-01T00:00:00.868000Z", "abc"], dtype=object), "ms")
    >>> t[ok].tolist(), ok.tolist()
    ([1704067200868], [True, False])
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tidal.core.batch import Array

__all__ = [
    "event_time_ms",
    "unreadable_reason",
    "future_rows",
    "future_reason",
    "TIME_LIMIT_MS",
]

TIME_LIMIT_MS = 2**62
"""Event times must lie strictly between ``-TIME_LIMIT_MS`` and ``TIME_LIMIT_MS``."""

_SCALE = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "ns": 1e-6}
_DIV = {"ms": 1, "us": 1_000, "ns": 1_000_000}
# microseconds first (fractions up to 6 digits, years 0001-9999), then nanoseconds; a
# string with a zone (Z, +02:00) needs a zoned target, one without a naive target
_NAIVE = ((pa.timestamp("us"), 1_000), (pa.timestamp("ns"), 1_000_000))
_ZONED = ((pa.timestamp("us", "UTC"), 1_000), (pa.timestamp("ns", "UTC"), 1_000_000))
_TARGETS = (_ZONED[0], _NAIVE[0], _ZONED[1], _NAIVE[1])
_ZONE = r"(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$"
_ISO_START = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def event_time_ms(column: Array, unit: str) -> tuple[Array, Array]:
    """Event time in ms and a mask of the rows whose time could be read.

    Numbers are read in ``unit``; ``datetime64`` values, datetimes and ISO-8601 strings are
    converted. An unreadable row gets time 0 and ``False`` in the mask.
    """
    kind = column.dtype.kind
    if kind == "M":
        ms = column.astype("datetime64[ms]")
        ok = ~np.isnat(ms)
        return np.where(ok, ms.astype(np.int64), 0), ok
    if kind in "iu":
        return _from_ints(column, unit)
    if kind == "f":
        return _from_floats(column, unit)
    if kind == "b":
        return np.zeros(len(column), dtype=np.int64), np.zeros(len(column), dtype=bool)
    return _from_objects(column, unit)


def _from_ints(values: Array, unit: str) -> tuple[Array, Array]:
    n = len(values)
    limit = TIME_LIMIT_MS * _DIV.get(unit, 1) if unit != "s" else TIME_LIMIT_MS // 1000
    limit = min(limit, 2**63 - 1)
    if n == 0:
        return np.empty(0, dtype=np.int64), np.ones(0, dtype=bool)
    lo, hi = values.min(), values.max()
    if -limit < lo and hi < limit:
        ok = np.ones(n, dtype=bool)
        ints = values.astype(np.int64, copy=False)
    else:
        ok = (values > -limit) & (values < limit)
        ints = np.where(ok, values, 0).astype(np.int64)
    if unit == "ms":
        return ints, ok
    if unit in _DIV:
        return np.floor_divide(ints, _DIV[unit]), ok
    return ints * int(_SCALE[unit]), ok


def _from_floats(values: Array, unit: str) -> tuple[Array, Array]:
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = values.astype(np.float64, copy=False) * _SCALE[unit]
        ok = np.abs(scaled) < TIME_LIMIT_MS  # False for NaN and the infinities
    return np.floor(np.where(ok, scaled, 0.0)).astype(np.int64), ok


def _from_objects(column: Array, unit: str) -> tuple[Array, Array]:
    n = len(column)
    try:
        arr: Any = pa.array(column, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return _from_mixed(column, unit)
    return _from_arrow(arr, unit, n)


def _from_arrow(arr: Any, unit: str, n: int) -> tuple[Array, Array]:
    t = arr.type
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_integer(t):
        ms, ok = _from_ints(arr.fill_null(0).to_numpy(zero_copy_only=False), unit)
        return ms, ok & valid
    if pa.types.is_floating(t):
        return _from_floats(arr.to_numpy(zero_copy_only=False).astype(np.float64), unit)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _from_strings(arr)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        try:
            us = arr.cast(pa.timestamp("us")).cast(pa.int64()).fill_null(0)
        except _CAST_ERRORS:
            return _from_mixed(arr.to_numpy(zero_copy_only=False), unit)
        ms = np.floor_divide(us.to_numpy(zero_copy_only=False), 1000)
        return ms, valid
    return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)


def _from_strings(arr: Any) -> tuple[Array, Array]:
    """ISO-8601 strings: one cast on the happy path; bad values found by halving."""
    n = len(arr)
    out = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    if _cast_into(arr, _TARGETS, out, ok):
        return out, ok
    # the slow path, only with bad values: drop what cannot be a date, split the strings
    # with a zone from those without, then halve each part until the bad values are alone
    looks = pc.fill_null(pc.match_substring_regex(arr, _ISO_START), False)
    zoned = pc.fill_null(pc.match_substring_regex(arr, _ZONE), False)
    none = pa.scalar(None, pa.string())
    for mask, targets in ((pc.and_not(looks, zoned), _NAIVE), (pc.and_(looks, zoned), _ZONED)):
        part = pc.if_else(mask, arr, none)
        todo = [(0, n)]
        while todo:
            lo, hi = todo.pop()
            piece = part.slice(lo, hi - lo)
            if piece.null_count == hi - lo:
                continue
            if not _cast_into(piece, targets, out[lo:hi], ok[lo:hi], merge=True) and hi - lo > 1:
                mid = (lo + hi) // 2
                todo += [(lo, mid), (mid, hi)]
    return out, ok


def _cast_into(
    arr: Any,
    targets: tuple[tuple[pa.DataType, int], ...],
    out: Array,
    ok: Array,
    *,
    merge: bool = False,
) -> bool:
    """Cast strings with the first target that takes them all; write ms and validity.

    With ``merge``, only the valid values are written (the others keep what they have).
    """
    for target, div in targets:
        try:
            got = pc.cast(arr, target).cast(pa.int64())
        except _CAST_ERRORS:
            continue
        valid = np.asarray(got.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        ms = np.floor_divide(got.fill_null(0).to_numpy(zero_copy_only=False), div)
        if merge:
            out[valid], ok[valid] = ms[valid], True
        else:
            out[:], ok[:] = ms, valid
        return True
    return False


def _from_mixed(column: Array, unit: str) -> tuple[Array, Array]:
    """A column mixing types (the slow path): numbers, strings and datetimes apart."""
    n = len(column)
    out = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    groups: dict[str, tuple[list[int], list[Any]]] = {
        "int": ([], []),
        "float": ([], []),
        "str": ([], []),
        "datetime": ([], []),
    }
    for i, value in enumerate(column.tolist()):
        t = type(value)
        if t is bool or value is None:
            continue
        if t is int or isinstance(value, np.integer):
            if -(2**63) <= value < 2**63:
                group = "int"
            else:
                continue
        elif t is float or isinstance(value, np.floating):
            group = "float"
        elif t is str:
            group = "str"
        elif isinstance(value, dt.date | np.datetime64):
            group = "datetime"
        else:
            continue
        groups[group][0].append(i)
        groups[group][1].append(value)
    for group, (rows, values) in groups.items():
        if not rows:
            continue
        if group == "int":
            ms, good = _from_ints(np.asarray(values, dtype=np.int64), unit)
        elif group == "float":
            ms, good = _from_floats(np.asarray(values, dtype=np.float64), unit)
        elif group == "str":
            ms, good = _from_strings(pa.array(values, pa.string()))
        else:
            try:
                ms, good = _from_arrow(pa.array(values), unit, len(values))
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                continue
        idx = np.asarray(rows, dtype=np.int64)
        out[idx], ok[idx] = ms, good
    return out, ok


def unreadable_reason(value: Any, column: str, unit: str) -> str:
    """Why a row's event time could not be read, for its dead letter.

    Example:
        >>> unreadable_reason("abc", "ts", "ms")
        "unreadable event time in column 'ts': got 'abc' (expected a number in ms, a datetime or an ISO-8601 string)"
    """  # noqa: E501
    expected = f"expected a number in {unit}, a datetime or an ISO-8601 string"
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return f"missing event time in column {column!r} ({expected})"
    shown = repr(value.item() if isinstance(value, np.generic) else value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    if isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_):
        return (
            f"event time out of range in column {column!r}: got {shown} {unit} (times must "
            f"lie within ±2**62 ms of 1970, and be finite)"
        )
    return f"unreadable event time in column {column!r}: got {shown} ({expected})"


def future_rows(times: Array, max_future_ms: int, wall_ms: int) -> Array:
    """A mask of the times more than ``max_future_ms`` ahead of the wall clock ``wall_ms``.

    Example:
        >>> future_rows(np.array([1_000, 5_000, 9_000]), 2_000, 4_000).tolist()
        [False, False, True]
    """
    return times > wall_ms + max_future_ms


def future_reason(time_ms: int, max_future_ms: int, wall_ms: int) -> str:
    """The dead-letter reason for a time rejected by the ``max_future`` guard.

    Example:
        >>> future_reason(32503680000000, 3_600_000, 1704067200000)
        'event time 3000-01-01T00:00:00.000Z is more than 1h ahead of the wall clock (2024-01-01T00:00:00.000Z; max_future=1h of the watermark strategy)'
    """  # noqa: E501
    bound = _duration(max_future_ms)
    return (
        f"event time {_iso(time_ms)} is more than {bound} ahead of the wall clock "
        f"({_iso(wall_ms)}; max_future={bound} of the watermark strategy)"
    )


def _iso(ms: int) -> str:
    try:
        stamp = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
    except OverflowError:
        return f"{ms} ms"
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _duration(ms: int) -> str:
    for size, unit in ((86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s")):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
