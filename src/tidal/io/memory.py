"""In-memory source and sink, for tests (users' and ours) and examples.

Example:
    >>> src = MemorySource([{"x": 1}, {"x": 2}, {"x": 3}])
    >>> src.open({})
    >>> src.poll(2, 0.0)["x"].tolist(), src.position()
    ([1, 2], {0: 2})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tidal.core.batch import Batch
from tidal.io.base import BaseSink, BaseSource


def _as_batches(data: Any) -> list[Batch]:
    if isinstance(data, Batch):
        return [data]
    if isinstance(data, Mapping):
        return [Batch(data)]
    items = list(data)
    if items and all(isinstance(b, Batch) for b in items):
        return items
    if items and all(isinstance(b, Mapping) for b in items):
        return [Batch.from_records(items)]
    if not items:
        return []
    msg = "MemorySource takes a Batch, a mapping of columns, a list of dicts or of Batches"
    raise TypeError(msg)


class MemorySource(BaseSource):
    """A bounded source over data in memory.

    Args:
        data: a ``Batch``, a mapping of columns, a list of record dicts, or a list of
            ``Batch`` objects. A list of batches is served batch by batch (a poll never
            crosses a batch boundary), which lets tests choose batch boundaries.
    """

    def __init__(self, data: Any) -> None:
        super().__init__()
        self.batches = _as_batches(data)
        self._bounds = np.cumsum([0] + [len(b) for b in self.batches])
        self.offset = 0

    def open(self, positions: Mapping[int, Any]) -> None:
        """Resume after the given row count."""
        self.offset = int(positions.get(0, 0) or 0)

    def poll(self, max_records: int, timeout: float) -> Batch | None:
        """The next rows, up to the end of the current batch."""
        total = int(self._bounds[-1])
        if self.offset >= total:
            return None
        i = int(np.searchsorted(self._bounds, self.offset, side="right")) - 1
        lo = self.offset - int(self._bounds[i])
        hi = min(len(self.batches[i]), lo + max_records)
        out = self.batches[i].slice(lo, hi)
        out.offset = np.arange(self.offset, self.offset + hi - lo, dtype=np.int64)
        self.offset += hi - lo
        return out

    def position(self) -> dict[int, Any]:
        """Rows consumed so far."""
        return {0: self.offset}


class MemorySink(BaseSink):
    """Collects every batch written to it; ``records()`` gives the rows as dicts."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def write(self, batch: Batch) -> None:
        """Keep the batch."""
        if len(batch):
            self.batches.append(batch)

    def batch(self) -> Batch:
        """Everything written, as one batch."""
        return Batch.concat(self.batches)

    def records(self) -> list[dict[str, Any]]:
        """Everything written, as a list of dicts."""
        return [r for b in self.batches for r in b.to_records()]

    def __len__(self) -> int:
        return sum(len(b) for b in self.batches)

    def clear(self) -> None:
        """Forget what was written."""
        self.batches.clear()


def records_of(batches: Sequence[Batch]) -> list[dict[str, Any]]:
    """Rows of several batches as dicts."""
    return [r for b in batches for r in b.to_records()]
