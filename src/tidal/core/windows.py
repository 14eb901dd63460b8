"""Windowers: tumbling, sliding (hopping) and session windows over event time.

A window is half-open, ``[start, end)`` in int64 ms, and fires once the watermark reaches
``end``. A window's result row carries the key, ``window_start``, ``window_end``, one column
per aggregation, and event time ``end - 1`` (so a result falls in the same window of a
downstream windowing of equal size).

Tumbling 4s windows (times in seconds)::

    events:   1  2     5      7  8     11
              |--------|-------|--------|---
    windows:  [0, 4)   [4, 8)  [8, 12)

Sliding windows of 4s every 2s: each event belongs to ``size / slide`` windows::

    event at 5:  [2, 6) and [4, 8)

Session windows with a 3s gap: a key's events closer than the gap share a window that ends
``gap`` after its last event::

    events:   1  2        7  8  9          15
    sessions: [1, 5)      [7, 12)          [15, 18)

The clock (event time, or processing time where event time is arrival time) is chosen at the
source, with ``watermark=bounded(...)`` or ``watermark=processing_time()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tidal.core.batch import Array
from tidal.core.duration import Duration, to_millis
from tidal.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Tumbling:
    """Fixed, non-overlapping windows of ``size_ms``, aligned to ``offset_ms``."""

    size_ms: int
    offset_ms: int = 0

    @property
    def slide_ms(self) -> int:
        """A tumbling window slides by its size."""
        return self.size_ms

    def assign(self, times: Array) -> tuple[Array, Array]:
        """(row index, window start) for every window each row falls in."""
        start = times - np.mod(times - self.offset_ms, self.size_ms)
        return np.arange(len(times), dtype=np.int64), start


@dataclass(frozen=True, slots=True)
class Sliding:
    """Windows of ``size_ms`` starting every ``slide_ms`` (hopping windows)."""

    size_ms: int
    slide_ms: int
    offset_ms: int = 0

    def assign(self, times: Array) -> tuple[Array, Array]:
        """(row index, window start) for every window each row falls in."""
        per_row = math.ceil(self.size_ms / self.slide_ms)
        last = times - np.mod(times - self.offset_ms, self.slide_ms)
        rows = np.repeat(np.arange(len(times), dtype=np.int64), per_row)
        starts = np.repeat(last, per_row) - np.tile(
            np.arange(per_row, dtype=np.int64) * self.slide_ms, len(times)
        )
        keep = starts + self.size_ms > times[rows]
        return rows[keep], starts[keep]


@dataclass(frozen=True, slots=True)
class Session:
    """Per-key windows that close after ``gap_ms`` without events."""

    gap_ms: int


Windower = Tumbling | Sliding | Session


def tumbling(size: Duration, *, offset: Duration = "0s") -> Tumbling:
    """Tumbling windows of ``size``.

    Example:
        >>> import numpy as np
        >>> tumbling("4s").assign(np.array([1000, 5000]))[1].tolist()
        [0, 4000]
    """
    size_ms = to_millis(size)
    if size_ms <= 0:
        msg = f"a tumbling window needs a positive size, got {size!r}"
        raise ConfigError(msg)
    return Tumbling(size_ms, to_millis(offset))


def sliding(size: Duration, slide: Duration, *, offset: Duration = "0s") -> Sliding:
    """Sliding (hopping) windows of ``size`` that start every ``slide``.

    Example:
        >>> import numpy as np
        >>> sorted(sliding("4s", "2s").assign(np.array([5000]))[1].tolist())
        [2000, 4000]
    """
    size_ms, slide_ms = to_millis(size), to_millis(slide)
    if size_ms <= 0 or slide_ms <= 0 or slide_ms > size_ms:
        msg = f"a sliding window needs 0 < slide <= size, got size={size!r}, slide={slide!r}"
        raise ConfigError(msg)
    return Sliding(size_ms, slide_ms, to_millis(offset))


def session(gap: Duration) -> Session:
    """Session windows that close after ``gap`` without events for the key.

    Example:
        >>> session("30s").gap_ms
        30000
    """
    gap_ms = to_millis(gap)
    if gap_ms <= 0:
        msg = f"a session window needs a positive gap, got {gap!r}"
        raise ConfigError(msg)
    return Session(gap_ms)
