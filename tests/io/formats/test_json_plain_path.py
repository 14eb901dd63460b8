"""JsonColumns' plain path (small polls of uniform objects, no Arrow) gives exactly what
its Arrow path gives, counting the column types alike, on random objects."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

# a column as Python values, NaN made comparable (pytest puts this folder on sys.path)
from test_json_fast_path import plain

from tidal.core.batch import Array
from tidal.io.jsoncolumns import JsonColumns

KEYS = st.sampled_from(["a", "b", "c", "d"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)
OBJECTS = st.dictionaries(KEYS, VALUES, max_size=4)


class ArrowOnly(JsonColumns):
    """The decoder without its plain path: every poll through Arrow."""

    def _plain(self, objs: list[dict[str, Any]]) -> dict[str, Array] | None:
        return None


class Counted(JsonColumns):
    """The decoder, counting the polls its plain path took."""

    taken = 0

    def _plain(self, objs: list[dict[str, Any]]) -> dict[str, Array] | None:
        out = super()._plain(objs)
        self.taken += out is not None
        return out


def cut(values: list[bytes], cuts: list[int]) -> list[list[bytes]]:
    """The values as consecutive polls, cut at ``cuts`` (each poll has at least one value)."""
    at = sorted({c % len(values) for c in cuts} - {0})
    return [values[a:b] for a, b in zip([0, *at], [*at, len(values)], strict=True)]


# one type per column in most polls, so the plain path is taken often; a few odd rows
UNIFORM = st.fixed_dictionaries(
    {
        "a": st.integers(-(2**53), 2**53),
        "b": st.floats(allow_nan=False, allow_infinity=False),
        "c": st.text(max_size=4),
        "d": st.booleans(),
    }
)
ODD = st.dictionaries(KEYS, st.one_of(st.none(), st.integers(-(2**53), 2**53)))
# beyond 2**53 only where every row has the field: with a missing one, the Arrow path's
# int -> float64 cast fails (see test_json_fast_path's BIG)
WIDE = st.fixed_dictionaries({"a": st.integers(-(2**63), 2**64 - 1)})


def same(polls: list[list[bytes]], **kw: Any) -> int:
    """Decode the polls with both decoders; compare. Returns how many took the plain path."""
    fast, ref = Counted(**kw), ArrowOnly(**kw)
    for values in polls:
        cols, rows, failed = fast.decode(values)
        want_cols, want_rows, want_failed = ref.decode(values)
        assert list(cols) == list(want_cols)
        for name, col in want_cols.items():
            assert cols[name].dtype == col.dtype, name
            assert plain(cols[name]) == plain(col), name
        assert rows.tolist() == want_rows.tolist()
        assert failed == want_failed
    assert fast.seen == ref.seen
    return fast.taken


@settings(max_examples=150, deadline=None)
@given(st.lists(OBJECTS, min_size=1, max_size=8), st.lists(st.integers(0, 7), max_size=2))
def test_any_objects_decode_alike(objects: list[dict[str, Any]], cuts: list[int]) -> None:
    same(cut([orjson.dumps(o) for o in objects], cuts))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(UNIFORM, UNIFORM, UNIFORM, ODD), min_size=1, max_size=12),
    st.lists(st.integers(0, 11), max_size=3),
    st.booleans(),
)
def test_uniform_objects_decode_alike(
    objects: list[dict[str, Any]], cuts: list[int], infer: bool
) -> None:
    same(cut([orjson.dumps(o) for o in objects], cuts), infer=infer)


@settings(max_examples=100, deadline=None)
@given(st.lists(WIDE, min_size=1, max_size=6), st.lists(st.integers(0, 5), max_size=2))
def test_wide_integers_decode_alike(objects: list[dict[str, Any]], cuts: list[int]) -> None:
    same(cut([orjson.dumps(o) for o in objects], cuts))


def test_the_plain_path_is_taken_for_uniform_objects() -> None:
    values = [orjson.dumps({"t": 1796663881016000000 + i, "seq": i, "s": "x"}) for i in range(50)]
    assert same([values[:20], values[20:]]) == 2
    decoder = JsonColumns()
    cols, rows, failed = decoder.decode(values)
    assert cols["t"].dtype == np.int64 and cols["s"].dtype == object
    assert rows.tolist() == list(range(50)) and failed == []
    assert decoder.seen == {"t": {"number": 50}, "seq": {"number": 50}, "s": {"string": 50}}


def test_a_column_whose_type_changed_takes_the_arrow_path() -> None:
    decoder = JsonColumns()
    decoder.decode([b'{"v": "high"}'] * 3)
    cols, rows, failed = decoder.decode([b'{"v": 1}', b'{"v": 2}'])  # strings still win
    assert cols["v"].tolist() == [] and rows.tolist() == []
    assert [i for i, _ in failed] == [0, 1]
    assert decoder.seen == {"v": {"string": 3, "number": 2}}
