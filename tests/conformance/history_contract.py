"""The retrain job's history contract, as one check every way of replaying history runs.

:func:`check_history` takes a reader (``spec -> Batch``, what the retrain job calls), the
parts of its spec that name the data (``topic``/``data_dir`` or ``pipeline``/``step``), the
end offset of every partition of the data, and a check of the rows' features, and checks
what the retrain loop relies on (decision 0055):

- the rows of a range are exactly the offsets ``starts`` up to (not including) ``ends`` of
  each partition: none missing, none twice, nothing past ``ends`` though the data goes on;
- with ``history`` smaller than the range, the newest ``history`` rows are kept, by
  (ingest time, partition, offset), oldest first;
- the same spec read twice gives the same rows, bit for bit (a job run again after a crash
  trains on the same rows);
- the rows went through the feature prefix (``features(rows)`` passes).

Used by tests/conformance/test_history.py (the embedded log, as stored and through a
pipeline) and by tests/integration/test_kafka_retrain.py (Kafka, which needs the broker).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tidal.core.batch import Batch

Reader = Callable[[dict[str, Any]], Batch]


def _spec(base: Mapping[str, Any], starts: dict[int, int], ends: dict[int, int], history: int):
    return {
        **base,
        "starts": {str(p): o for p, o in starts.items()},
        "ends": {str(p): o for p, o in ends.items()},
        "history": history,
    }


def _same(a: Batch, b: Batch) -> None:
    assert len(a) == len(b)
    assert set(a.columns) == set(b.columns)
    for c in a.columns:
        assert np.array_equal(a[c], b[c]), c
    for attr in ("partition", "offset", "ingest"):
        x, y = getattr(a, attr), getattr(b, attr)
        assert (x is None and y is None) or np.array_equal(x, y), attr


def check_history(
    read: Reader,
    base: Mapping[str, Any],
    ends: Mapping[int, int],
    features: Callable[[Batch], None] = lambda rows: None,
) -> None:
    """Check ``read`` against the contract (see the module doc) on data with ``ends``."""
    ends = {int(p): int(e) for p, e in ends.items()}
    assert all(e >= 40 for e in ends.values()), "the check needs 40+ rows per partition"
    # a range that stops before the data does, on every partition
    starts = {p: e - 30 for p, e in ends.items()}
    stop = {p: e - 5 for p, e in ends.items()}
    rows = read(_spec(base, starts, stop, 10_000))
    assert rows.partition is not None and rows.offset is not None and rows.ingest is not None
    for p in ends:
        got = np.sort(rows.offset[rows.partition == p]).tolist()
        assert got == list(range(starts[p], stop[p])), (p, got)
    assert len(rows) == 25 * len(ends)
    order = np.lexsort((rows.offset, rows.partition, rows.ingest))
    assert np.array_equal(order, np.arange(len(rows))), "rows are not oldest first"
    features(rows)
    # the newest `history` of them
    newest = read(_spec(base, starts, stop, 17))
    _same(newest, rows.take(np.arange(len(rows) - 17, len(rows))))
    # deterministic
    _same(read(_spec(base, starts, stop, 10_000)), rows)
    # a partition with nothing to read, and one read to its end
    first = min(ends)
    only = read(_spec(base, {first: ends[first] - 3}, {first: ends[first]}, 100))
    assert only.partition is not None and only.offset is not None
    assert set(only.partition.tolist()) == {first}
    assert only.offset.tolist() == list(range(ends[first] - 3, ends[first]))
    assert len(read(_spec(base, {first: 7}, {first: 7}, 100))) == 0
