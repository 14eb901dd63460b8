"""JsonFormat's fast path (pyarrow.json over the joined values) gives exactly what the
reference decoder (the log's orjson decoder) gives, on random objects."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tidal.io.formats import JsonFormat as _JsonFormat


def JsonFormat(**kw: Any) -> _JsonFormat:  # noqa: N802 - the class, fast path from 1 value
    """The format with the fast path tried on every poll, however small (these polls are)."""
    return _JsonFormat(fast_min=1, **kw)


# BIG: integers beyond 2**53 in a column with a missing value make Batch.from_arrow's
# int -> float64 cast fail in both decoders (reported; not a formats matter), so the
# random ints stay within 2**53; 2**63 is checked by name below.
KEYS = st.sampled_from(["a", "b", "c", "when"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),  # see BIG below
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["2024-01-01T00:00:00", "2024-01-01", "NaN", "é", "a\nb"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)
OBJECTS = st.dictionaries(KEYS, VALUES, max_size=4)
# rows that share one type per key, so that the fast path is taken often
TYPED = st.fixed_dictionaries(
    {},
    optional={
        "a": st.integers(min_value=-(2**53), max_value=2**53),
        "b": st.floats(allow_nan=False, allow_infinity=False),
        "c": st.text(max_size=5),
        "when": st.booleans(),
    },
)


def plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return "NaN!"
    return value


def same(make: Callable[[], _JsonFormat], polls: list[list[bytes]]) -> int:
    """Decode the polls with one format and with another's reference decoder only; compare.

    Two instances, because the reference may keep state across polls (column types).
    Returns how many polls took the fast path.
    """
    fmt, reference = make(), make()
    for values in polls:
        fast = fmt.decode(values)
        ref = reference._reference(list(values))
        assert list(fast.columns) == list(ref.columns)
        for name, col in ref.columns.items():
            assert fast.columns[name].dtype == col.dtype, name
            assert plain(fast.columns[name]) == plain(col), name
        assert fast.rows.tolist() == ref.rows.tolist()
        assert fast.failures == ref.failures
    return fmt.fast_polls


def cut(values: list[bytes], cuts: list[int]) -> list[list[bytes]]:
    """The values as consecutive polls, cut at ``cuts`` (each poll has at least one value)."""
    at = sorted({c % len(values) for c in cuts} - {0})
    return [values[a:b] for a, b in zip([0, *at], [*at, len(values)], strict=True)]


@settings(max_examples=150, deadline=None)
@given(st.lists(OBJECTS, min_size=1, max_size=8), st.lists(st.integers(0, 7), max_size=2))
def test_any_objects_decode_alike(objects: list[dict[str, Any]], cuts: list[int]) -> None:
    same(JsonFormat, cut([orjson.dumps(o) for o in objects], cuts))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(TYPED, min_size=1, max_size=10),
    st.lists(st.integers(0, 9), max_size=3),
    st.booleans(),
)
def test_typed_objects_decode_alike_with_and_without_schema(
    objects: list[dict[str, Any]], cuts: list[int], with_schema: bool
) -> None:
    schema = {"a": int, "b": float, "c": str, "when": bool} if with_schema else None
    same(lambda: JsonFormat(schema=schema), cut([orjson.dumps(o) for o in objects], cuts))


def test_the_fast_path_is_taken_for_plain_values() -> None:
    rows = [{"a": i, "b": i / 3, "c": str(i), "when": i % 2 == 0} for i in range(50)]
    values = [orjson.dumps(r) for r in rows]
    assert same(lambda: JsonFormat(schema={"a": int, "b": float}), [values]) == 1
    assert same(JsonFormat, [values[:20], values[20:]]) == 2


def test_values_the_fast_path_leaves_to_the_reference() -> None:
    for values in (
        [b'{"a": NaN}'],  # Arrow reads it; orjson refuses: a dead letter
        [b'{"a": Infinity}'],
        [b'\xef\xbb\xbf{"a": 1}'],
        [b'{"a": "2024-01-01"}'],  # Arrow would make a timestamp
        [b'{"a": 9223372036854775808}'],  # orjson keeps the integer
        [b'{"a": 1}{"a": 2}'],
        [b'{"a":\n1}'],
        [b'{"a": "\xff"}'],
        [b""],
    ):
        assert same(JsonFormat, [values]) == 0, values
    fmt = JsonFormat()
    assert fmt.decode([b'{"a": NaN}']).failures[0].reason.startswith("invalid JSON")
    assert JsonFormat().decode([b'{"a": "2024-01-01"}']).columns["a"].tolist() == ["2024-01-01"]
    assert JsonFormat().decode([b'{"a":\n1}']).columns["a"].tolist() == [1]


def test_small_polls_take_the_reference_decoder_by_default() -> None:
    values = [orjson.dumps({"a": i}) for i in range(100)]
    fmt = _JsonFormat()
    assert fmt.decode(values).columns["a"].tolist() == list(range(100))
    assert fmt.fast_polls == 0
    fmt.decode([orjson.dumps({"a": i}) for i in range(fmt.fast_min)])
    assert fmt.fast_polls == 1
