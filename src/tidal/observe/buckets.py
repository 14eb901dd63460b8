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
"""Upper bounds of end-to-end latency histograms (see :class:`FineToCoarse`)."""
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

    def add_counts(self, counts: list[int], total: float) -> None:
        """Add counts already bucketed (one per bound, then one above all) and their sum."""
        self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
        self.count += sum(counts)
        self.total += total

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count of values <= le)`` pairs, ending with ``+Inf``, as Prometheus wants."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else f"{bound:g}", running))
        return out


class FineToCoarse:
    """Regroups :class:`~tidal.observe.metrics.LatencyHistogram` counts into ``bounds``.

    The executor already buckets every latency into its log-linear histogram (32 buckets
    per power of two of nanoseconds); the difference of its counts between two batches is
    the batch's histogram, and summing runs of it gives the Prometheus buckets in a few
    microseconds, whatever the batch size. A latency within ~2 % of a bound may be counted
    on the bound's other side (the fine buckets' width).

    Example:
        >>> import numpy as np
        >>> from tidal.observe.metrics import LatencyHistogram
        >>> h = LatencyHistogram()
        >>> h.record(np.array([300_000, 2_000_000, 40_000_000]))  # 0.3, 2 and 40 ms
        >>> FineToCoarse((0.001, 0.01, 0.1)).regroup(h.counts)
        [1, 1, 1, 0]
    """

    def __init__(self, bounds: Sequence[float], sub: int = 32) -> None:
        ns = np.asarray(bounds, dtype=np.float64) * 1e9
        self.starts = np.concatenate(([0], np.floor(np.log2(ns) * sub).astype(np.int64) + 1))

    def regroup(self, fine: Array) -> list[int]:
        """Counts per coarse bucket (one per bound, then one above all)."""
        out: list[int] = np.add.reduceat(fine, self.starts).tolist()
        return out
