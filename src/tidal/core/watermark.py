"""Event time and watermarks.

Event time is int64 milliseconds since the epoch. A watermark ``W`` is the pipeline's
promise that every record still to come has ``time >= W``: a window ``[start, end)`` is
complete, and fires, once ``W >= end``.

Tidal computes the watermark *per record*, not per batch: ``Batch.wm[i]`` is the watermark
in force just before record ``i`` arrived. Operators judge lateness against it, so results
are the same whether the input came one record at a time or in batches of any size, at any
replay speed. The watermark follows event time only; wall-clock time is used for nothing but
idleness (and for :func:`processing_time`, where event time *is* arrival time).

Timeline for ``bounded("2s")`` (times in seconds)::

    arrivals:     t=10   t=13   t=11   t=12   t=9
    max seen:      10     13     13     13     13
    W before:      -∞      8     11     11     11
    late?          no     no     no     no    yes (9 < 11)

Partitions keep their own watermark; the source's watermark is the minimum over
partitions that are not idle (no record for ``idle_timeout`` of wall-clock time).

Example:
    >>> import numpy as np
    >>> tracker = bounded("2s").tracker()
    >>> tracker.assign(np.array([10_000, 13_000, 11_000, 12_000, 9_000]), None, now=0.0).tolist()
    [-4611686018427387904, 8000, 11000, 11000, 11000]
    >>> tracker.current(now=0.0)
    11000
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from tidal.core.batch import Array
from tidal.core.duration import Duration, to_millis
from tidal.errors import ConfigError

MIN_TIME = -(2**62)
"""The watermark before anything arrived ("minus infinity"), safe to add durations to."""
MAX_TIME = 2**62
"""The watermark at the end of a bounded input: every window fires."""


@dataclass(frozen=True, slots=True)
class WatermarkStrategy:
    """How a source step derives event time's progress.

    Use :func:`bounded` or :func:`processing_time` rather than building one directly.
    """

    kind: Literal["bounded", "processing"]
    delay_ms: int = 0
    idle_ms: int | None = None
    max_future_ms: int | None = None

    def tracker(self) -> WatermarkTracker:
        """A fresh per-source tracker."""
        return WatermarkTracker(self)


def bounded(
    out_of_orderness: Duration = "0s",
    *,
    idle_timeout: Duration | None = None,
    max_future: Duration | None = None,
) -> WatermarkStrategy:
    """Watermark = highest event time seen minus ``out_of_orderness``.

    Args:
        out_of_orderness: how far behind the newest record a record may arrive and still
            count as on time.
        idle_timeout: a partition with no records for this long (wall clock) no longer
            holds the watermark back. ``None``: never idle.
        max_future: a guard against clocks gone wrong: a record whose event time is more
            than this ahead of the wall clock when it is read goes to the dead letters
            and does not move the watermark (as Kafka's
            ``message.timestamp.after.max.ms`` rejects it at the broker). ``None`` (the
            default): no guard, and one record dated in the year 3000 moves the
            watermark there, so that every later record is late (it goes to the ``late``
            outputs and counters, also after a restart, since watermarks are
            checkpointed).

    Raises:
        ConfigError: for a negative ``max_future``.

    Example:
        >>> bounded("500ms").delay_ms, bounded("2s", max_future="1h").max_future_ms
        (500, 3600000)
    """
    future = None if max_future is None else to_millis(max_future)
    if future is not None and future < 0:
        msg = f"max_future must be a duration >= 0, got {max_future!r}"
        raise ConfigError(msg)
    return WatermarkStrategy(
        "bounded",
        to_millis(out_of_orderness),
        None if idle_timeout is None else to_millis(idle_timeout),
        future,
    )


def processing_time() -> WatermarkStrategy:
    """Event time is the arrival time; the watermark is the wall clock. Nothing is late.

    Example:
        >>> processing_time().kind
        'processing'
    """
    return WatermarkStrategy("processing")


@dataclass(slots=True)
class WatermarkTracker:
    """Per-partition highest event time, turned into per-record and current watermarks."""

    strategy: WatermarkStrategy
    high: dict[int, int] = field(default_factory=dict)
    seen_at: dict[int, float] = field(default_factory=dict)
    partitions: tuple[int, ...] = (0,)
    emitted: int = MIN_TIME

    def set_partitions(self, partitions: tuple[int, ...]) -> None:
        """The partitions whose minimum makes the source's watermark."""
        self.partitions = partitions

    def assign(self, times: Array, partition: Array | None, *, now: float) -> Array:
        """Per-record watermarks for a batch (the watermark before each record arrived).

        Updates the partitions' high marks. ``now`` is monotonic wall-clock seconds.
        """
        n = len(times)
        out = np.empty(n, dtype=np.int64)
        if n == 0:
            return out
        if self.strategy.kind == "processing":
            prev = np.concatenate(([self.emitted], times[:-1]))
            out[:] = np.maximum.accumulate(np.maximum(prev, self.emitted))
            self.emitted = max(self.emitted, int(times.max()))
            return out
        delay = self.strategy.delay_ms
        parts = [0] if partition is None else np.unique(partition).tolist()
        for p in parts:
            idx = None if partition is None else np.flatnonzero(partition == p)
            t = times if idx is None else times[idx]
            before = self.high.get(p, MIN_TIME)
            running = np.maximum.accumulate(t)
            prior = np.empty(len(t), dtype=np.int64)
            prior[0] = before
            np.maximum(running[:-1], before, out=prior[1:])
            own = np.where(prior == MIN_TIME, MIN_TIME, prior - delay)
            self.high[p] = max(before, int(running[-1]))
            self.seen_at[p] = now
            others = self._others_min(p, now)
            row = np.minimum(own, others) if others is not None else own
            np.maximum(row, self.emitted, out=row)
            if idx is None:
                out[:] = row
            else:
                out[idx] = row
        self.emitted = max(self.emitted, self.current(now))
        return out

    def _others_min(self, exclude: int, now: float) -> int | None:
        marks = [self._mark(p, now) for p in self.partitions if p != exclude]
        live = [m for m in marks if m is not None]
        return min(live) if live else None

    def _mark(self, p: int, now: float) -> int | None:
        """A partition's watermark, or ``None`` when it is idle."""
        idle = self.strategy.idle_ms
        if idle is not None:
            last = self.seen_at.get(p)
            if last is None or (now - last) * 1000.0 >= idle:
                return None
        high = self.high.get(p, MIN_TIME)
        return MIN_TIME if high == MIN_TIME else high - self.strategy.delay_ms

    def current(self, now: float, wall_ms: int | None = None) -> int:
        """The source's watermark now: min over non-idle partitions, never decreasing."""
        if self.strategy.kind == "processing":
            if wall_ms is not None:
                self.emitted = max(self.emitted, wall_ms)
            return self.emitted
        marks = [self._mark(p, now) for p in self.partitions]
        live = [m for m in marks if m is not None]
        if live:
            self.emitted = max(self.emitted, min(live))
        return self.emitted

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state (idleness is wall-clock state and is not kept)."""
        return {"high": {str(k): v for k, v in self.high.items()}, "emitted": self.emitted}

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`."""
        self.high = {int(k): int(v) for k, v in snap["high"].items()}
        self.emitted = int(snap["emitted"])
