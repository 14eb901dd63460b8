"""Latency histogram and run statistics, recorded a batch at a time.

:class:`LatencyHistogram` is log-linear: 32 buckets per power of two of nanoseconds, so a
reported percentile is within about 2% of the exact value, and recording a whole batch of
latencies is one ``np.bincount``.

Example:
    >>> import numpy as np
    >>> h = LatencyHistogram()
    >>> h.record(np.full(1000, 2_000_000))  # 2 ms each
    >>> round(h.percentile(0.99) / 1e6, 1)
    2.0
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tidal.core.batch import Array

_SUB = 32
_BUCKETS = 64 * _SUB
_SMALL = 512  # fewer values than this are counted one by one (np.add.at)


class LatencyHistogram:
    """Counts of latencies (ns) in log-linear buckets."""

    def __init__(self) -> None:
        self.counts = np.zeros(_BUCKETS, dtype=np.int64)
        self.total = 0
        self.max_ns = 0

    @staticmethod
    def _bucket(ns: Array) -> Array:
        if ns.dtype.kind == "i":  # log2 of a signed int is at most 63: no upper clip needed
            b: Array = (np.log2(np.maximum(ns, 1)) * _SUB).astype(np.int64)  # >= 0: floor
            return b
        v = np.maximum(ns.astype(np.float64), 1.0)
        out: Array = np.clip(np.floor(np.log2(v) * _SUB).astype(np.int64), 0, _BUCKETS - 1)
        return out

    def record(self, ns: Array) -> None:
        """Add latencies in nanoseconds."""
        n = len(ns)
        if n == 0:
            return
        if n < _SMALL:  # bincount's pass over every bucket costs more than the values
            np.add.at(self.counts, self._bucket(ns), 1)
        else:
            self.counts += np.bincount(self._bucket(ns), minlength=_BUCKETS)
        self.total += n
        self.max_ns = max(self.max_ns, int(ns.max()))

    def percentile(self, q: float) -> float:
        """The latency (ns) below which a fraction ``q`` of recorded values fall."""
        if self.total == 0:
            return float("nan")
        rank = max(1, int(np.ceil(q * self.total)))
        b = int(np.searchsorted(np.cumsum(self.counts), rank))
        mid = 2.0 ** ((b + 0.5) / _SUB)
        return float(min(mid, self.max_ns))

    def merge(self, other: LatencyHistogram) -> None:
        """Add another histogram's counts."""
        self.counts += other.counts
        self.total += other.total
        self.max_ns = max(self.max_ns, other.max_ns)

    def summary_ms(self) -> dict[str, Any]:
        """p50/p99/p999 in milliseconds (``None`` when nothing was recorded)."""
        if self.total == 0:
            return {"p50": None, "p99": None, "p999": None}
        return {
            "p50": round(self.percentile(0.50) / 1e6, 4),
            "p99": round(self.percentile(0.99) / 1e6, 4),
            "p999": round(self.percentile(0.999) / 1e6, 4),
        }
