"""Helpers shared by the event-time operator tests (interval join, label join, dedupe)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tidal import Batch
from tidal.core.watermark import MIN_TIME


def arrival_wm(times: list[int], delay: int) -> list[int]:
    """Each record's watermark when it arrived: ``max time seen before it - delay``."""
    out, high = [], None
    for t in times:
        out.append(MIN_TIME if high is None else high - delay)
        high = t if high is None else max(high, t)
    return out


def split(cols: dict[str, Any], cuts: list[int]) -> list[Batch]:
    """The columns cut into batches at ``cuts`` (out-of-range cuts ignored; never empty)."""
    n = len(next(iter(cols.values())))
    bounds = [0, *[c for c in cuts if 0 < c < n], n]
    parts = [
        Batch({k: np.asarray(v)[lo:hi] for k, v in cols.items()})
        for lo, hi in zip(bounds, bounds[1:], strict=False)
        if hi > lo
    ]
    return parts or [Batch({k: np.asarray(v) for k, v in cols.items()})]
