"""A key that cannot be a key costs its row, never the batch (issue 8, section 2)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tidal import Pipeline
from tidal import aggregations as agg
from tidal.core.keys import KeyIndex, KeyValuesError
from tidal.testing import MemorySink, MemorySource, collect, run
from tidal.windows import session, sliding, tumbling


def _records(bad: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"k": f"s{i % 3}", "ts": i, "v": 1.0} for i in range(30)]
    rows[7]["k"] = bad
    return rows


@pytest.mark.parametrize("bad", [[1, 2], {"a": 1}, None])
@pytest.mark.parametrize("windower", [tumbling("1s"), sliding("1s", "500ms"), session("1s")])
def test_a_list_dict_or_missing_key_is_a_dead_letter(bad: Any, windower: Any) -> None:
    dlq = MemorySink()
    p = Pipeline("t", dead_letters=dlq)
    s = p.source("in", MemorySource(_records(bad)), time="ts")
    out = collect(s.key_by("k").window("w", windower, {"n": agg.count()}))
    summary = run(p)
    keys = {r["k"] for r in out.records()}
    assert keys == {"s0", "s1", "s2"}  # strings stay strings, nothing is stringified
    assert summary.dead_letters == 1
    (letter,) = dlq.records()
    assert letter["step"] == "w" and letter["reason"].startswith("key column 'k': a key must")


def test_a_mixed_string_and_int_key_column_keeps_each_type() -> None:
    index = KeyIndex()
    ids = index.ids(np.array(["a", 1, "a", 1.5], dtype=object))
    assert ids.tolist() == [0, 1, 0, 2]
    assert index.values(np.array([0, 1, 2])).tolist() == ["a", 1, 1.5]


def test_key_index_names_the_bad_rows_for_other_keyed_steps() -> None:
    with pytest.raises(KeyValuesError, match=r"row 1 of the key column: .* got a dict") as info:
        KeyIndex().ids(np.array(["a", {"x": 1}, [2]], dtype=object))
    assert info.value.rows.tolist() == [1, 2]
