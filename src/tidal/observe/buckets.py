"""Prometheus-style histograms filled a batch at a time: :class:`Buckets`.

``prometheus_client``'s ``Histogram.observe`` takes one value per call; a micro-batch of
8,192 latencies would be 8,192 calls. :class:`Buckets` keeps the same figures (a count per
upper bound, the sum, the count) and adds a whole array with one ``np.searchsorted`` and one
``np.bincount``; :mod:`tidal.observe.prometheus` exposes it as a Prometheus histogram.

Example:
    >>> import numpy as np
    >>> b = Buckets((0.001, 0.01, 0.1))
    >>> b.observe_many(np.array([0.0005, 0.002, 0.003, 0.5]))
    >>> b.observe(0.05)
    >>> b.cumulative(), b.count, round(b.total, 4)
    ([('0.001', 1), ('0.01', 3), ('0.1', 4), ('+Inf', 5)], 5, 0.5555)
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

import numpy as np

from tidal.core.batch import Array

__all__ = [
    "BATCH_ROWS",
    "CHECKPOINT_SECONDS",
    "LATENCY_SECONDS",
    "STEP_SECONDS",
    "Buckets",
]

LATENCY_SECONDS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
)  # fmt: skip
"""Upper bounds of end-to-end latency histograms."""
STEP_SECONDS = (
    1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
)  # fmt: skip
"""Upper bounds of a step's processing time per batch."""
BATCH_ROWS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536)
"""Upper bounds of batch sizes (rows)."""
CHECKPOINT_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds of checkpoint durations."""


class Buckets:
    """Counts per upper bound (``le``), plus the sum and count of what was observed."""

    __slots__ = ("bounds", "count", "counts", "total", "_edges")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self._edges = np.asarray(self.bounds, dtype=np.float64)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Add one value."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def observe_many(self, values: Array) -> None:
        """Add an array of values (one ``searchsorted`` and one ``bincount``)."""
        if len(values) == 0:
            return
        idx = np.searchsorted(self._edges, values, side="left")
        add = np.bincount(idx, minlength=len(self.counts)).tolist()
        self.counts = [a + b for a, b in zip(self.counts, add, strict=True)]
        self.count += len(values)
        self.total += float(values.sum())

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count of values <= le)`` pairs, ending with ``+Inf``, as Prometheus wants."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else f"{bound:g}", running))
        return out
