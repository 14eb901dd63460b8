"""A synthetic source: columns made by a function of the sequence number, at a target rate.

The function receives the sequence numbers of the events to make and returns their columns,
so a generator is deterministic and replayable from any position: restoring position ``n``
produces exactly the events ``n, n+1, ...`` again.

With ``rate`` set, event ``i`` is *due* at ``start + i / rate`` (wall clock); ``poll``
returns the events that are due and stamps each with its due time as ``Batch.ingest``, so
measured latency includes the time an event waited to be picked up.

Example:
    >>> import numpy as np
    >>> gen = GeneratorSource(lambda seq: {"x": seq * 2}, total=5)
    >>> gen.open({})
    >>> gen.poll(3, 0.0)["x"].tolist(), gen.poll(10, 0.0)["x"].tolist(), gen.poll(10, 0.0)
    ([0, 2, 4], [6, 8], None)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.io.base import BaseSource

MakeColumns = Callable[[Array], Mapping[str, Any] | Batch]


class GeneratorSource(BaseSource):
    """Events made by ``make(seq)`` for seq = 0, 1, 2, ... .

    Args:
        make: builds the columns of the events with the given int64 sequence numbers.
        rate: events per second (wall clock); ``None`` means as fast as asked.
        total: stop after this many events; ``None`` is unbounded.
        clock: a ``time.time``-like function (injectable for tests).
        sleep: a ``time.sleep``-like function (injectable for tests).
    """

    def __init__(
        self,
        make: MakeColumns,
        *,
        rate: float | None = None,
        total: int | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self.make = make
        self.rate = rate
        self.total = total
        self.clock = clock
        self.sleep = sleep
        self.seq = 0
        self._t0: float | None = None
        self._seq0 = 0

    def open(self, positions: Mapping[int, Any]) -> None:
        """Resume at the given sequence number; the rate clock restarts now."""
        self.seq = int(positions.get(0, 0) or 0)
        self._seq0 = self.seq
        self._t0 = None

    def _due(self, now: float) -> int:
        """How many events are due by ``now`` (absolute sequence number)."""
        assert self._t0 is not None and self.rate is not None
        return self._seq0 + int((now - self._t0) * self.rate) + 1

    def poll(self, max_records: int, timeout: float) -> Batch | None:
        """The events due now (or the next ``max_records`` when there is no rate)."""
        end = self.seq + max_records
        if self.total is not None:
            if self.seq >= self.total:
                return None
            end = min(end, self.total)
        ingest: Array | None = None
        if self.rate is not None:
            now = self.clock()
            if self._t0 is None:
                self._t0 = now
            due = self._due(now)
            if due <= self.seq:
                wait = (self.seq - self._seq0) / self.rate + self._t0 - now
                if wait > timeout:
                    self.sleep(max(timeout, 0.0))
                    return Batch()
                self.sleep(max(wait, 0.0))
                due = self._due(self.clock())
            end = min(end, due)
            if end <= self.seq:
                return Batch()
            seq_due = np.arange(self.seq, end, dtype=np.int64) - self._seq0
            ingest = ((self._t0 + seq_due / self.rate) * 1e9).astype(np.int64)
        seq = np.arange(self.seq, end, dtype=np.int64)
        made = self.make(seq)
        batch = made if isinstance(made, Batch) else Batch(made, length=len(seq))
        batch.offset = seq
        if ingest is not None:
            batch.ingest = ingest
        self.seq = end
        return batch

    def position(self) -> dict[int, Any]:
        """The next sequence number."""
        return {0: self.seq}
