"""A source step at run time: :class:`SourceRun`, which the executor owns per source node.

It polls micro-batches bounded by ``max_batch`` and ``max_wait``, reads event time from a
column (unreadable or far-future times go to the dead letters) and assigns watermarks per
partition.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from tidal.core.batch import Batch
from tidal.core.deadletter import DeadLetter
from tidal.core.operators import position_of, raw_of
from tidal.core.watermark import MAX_TIME, WatermarkTracker
from tidal.runtime.eventtime import (
    event_time_ms,
    future_reason,
    future_rows,
    unreadable_reason,
)
from tidal.runtime.graph import Node

__all__ = ["SourceRun"]


class SourceRun:
    """A source step at run time: polling, event time, watermarks."""

    def __init__(self, node: Node, dead: Callable[[DeadLetter], None]) -> None:
        assert node.source is not None and node.watermark is not None
        self.node = node
        self.source = node.source
        self.tracker: WatermarkTracker = node.watermark.tracker()
        self.processing = node.watermark.kind == "processing"
        self.finished = False
        self.dead = dead

    def poll(self, max_batch: int, max_wait: float, idle: float) -> Batch | None:
        """Collect one micro-batch (``None`` once the source is exhausted)."""
        parts: list[Batch] = []
        n = 0
        deadline: float | None = None
        while n < max_batch:
            now = time.monotonic()
            remaining = idle if deadline is None else deadline - now
            if remaining < 0:
                break
            b = self.source.poll(max_batch - n, remaining)
            for d in self.source.dead_letters():
                self.dead(d)
            if b is None:
                self.finished = True
                break
            if len(b):
                if b.ingest is None:
                    b.ingest = np.full(len(b), time.time_ns(), dtype=np.int64)
                parts.append(b)
                n += len(b)
                if max_wait <= 0:
                    break  # no latency budget: every poll is a batch
                if deadline is None:
                    deadline = now + max_wait
            elif deadline is None:
                break
        if not parts:
            return None if self.finished else Batch()
        return self._stamp(Batch.concat(parts))

    def _stamp(self, batch: Batch) -> Batch:
        assert batch.ingest is not None
        if self.processing:
            times = batch.ingest // 1_000_000
        else:
            col = self.node.time
            assert col is not None
            unit = self.node.time_unit
            if col not in batch:
                ok = np.zeros(len(batch), dtype=bool)
                times = np.zeros(len(batch), dtype=np.int64)
            else:
                times, ok = event_time_ms(batch[col], unit)
            reasons: dict[int, str] = {}
            if not ok.all():
                values = batch[col] if col in batch else np.full(len(batch), None)
                for i in np.flatnonzero(~ok).tolist():
                    reasons[i] = unreadable_reason(values[i], col, unit)
            future_ms = self.node.watermark.max_future_ms if self.node.watermark else None
            if future_ms is not None:
                wall = time.time_ns() // 1_000_000
                ahead = future_rows(times, future_ms, wall) & ok
                if ahead.any():
                    ok = ok & ~ahead
                    for i in np.flatnonzero(ahead).tolist():
                        reasons[i] = future_reason(int(times[i]), future_ms, wall)
            if reasons:
                for i in sorted(reasons):
                    where, raw = position_of(batch, i), raw_of(batch, i)
                    self.dead(DeadLetter(self.node.name, reasons[i], where, raw))
                batch, times = batch.filter(ok), times[ok]
        batch.time = times
        batch.wm = self.tracker.assign(times, batch.partition, now=time.monotonic())
        return batch

    def watermark(self) -> int:
        """The source's watermark now."""
        if self.finished:
            return MAX_TIME
        return self.tracker.current(time.monotonic(), wall_ms=time.time_ns() // 1_000_000)
