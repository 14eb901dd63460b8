"""The executor's observer hook: what a run tells whoever watches it, once per batch.

The executor (:mod:`tidal.runtime.executor`) takes one optional ``observer``. It calls

* :meth:`RunObserver.on_open` once the run is open (sources positioned, state restored),
  handing over itself as an :class:`ObservedRun`;
* :meth:`RunObserver.on_batch` once per source micro-batch (and once per empty poll), with
  the batch's end-to-end latencies and a :class:`StepTally` of what every step did with it;
* :meth:`RunObserver.on_checkpoint` after each checkpoint (or its failure);
* :meth:`RunObserver.on_close` when the run has ended.

Never once per row: the per-step figures are summed by :class:`StepTally` (a few dict and
list operations per step per batch) and the latencies arrive as one array. Without an
observer the executor does none of this.

This module sits in ``observe``, below the runtime, so it names the executor only through
the :class:`ObservedRun` protocol.

Example:
    >>> from tidal.core.batch import Batch
    >>> tally = StepTally()
    >>> tally.add("double", 3, [(0, Batch({"x": [1, 2, 3]}))], 0.002)
    >>> tally.steps["double"]
    [1, 3, 3, 0.002, 0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from tidal.core.batch import Array, Batch
from tidal.observe.summary import RunSummary

__all__ = ["ObservedRun", "RunObserver", "StepTally"]

BATCHES, ROWS_IN, ROWS_OUT, SECONDS, LATE = range(5)
"""Indexes of a step's figures in :attr:`StepTally.steps`."""


class StepTally:
    """What each step did since the tally was last read: batches, rows in and out, time.

    Attributes:
        steps: per step name, ``[batches, rows in, rows out, seconds, rows to "late"]``.
        late_ports: per step name, the index of its ``"late"`` output port, if any.
        sink_rows: per sink name, the last batch it wrote (for alert previews), when asked
            for with :attr:`keep_sinks`.
        keep_sinks: sink names whose last written batch is kept in :attr:`sink_rows`.
    """

    __slots__ = ("keep_sinks", "late_ports", "sink_rows", "steps")

    def __init__(self) -> None:
        self.steps: dict[str, list[Any]] = {}
        self.late_ports: dict[str, int] = {}
        self.sink_rows: dict[str, list[Batch]] = {}
        self.keep_sinks: frozenset[str] = frozenset()

    def add(
        self,
        step: str,
        rows_in: int,
        outs: Sequence[tuple[int, Batch]] | None,
        seconds: float,
    ) -> None:
        """Count one call of ``step``: ``rows_in`` rows in (0 for a watermark), ``outs`` out.

        ``outs`` is ``None`` for a sink (it writes what it receives).
        """
        row = self.steps.get(step)
        if row is None:
            row = self.steps[step] = [0, 0, 0, 0.0, 0]
        if rows_in:
            row[BATCHES] += 1
            row[ROWS_IN] += rows_in
        row[SECONDS] += seconds
        if outs:
            late = self.late_ports.get(step, -1)
            for port, out in outs:
                n = len(out)
                row[ROWS_OUT] += n
                if port == late:
                    row[LATE] += n

    def sink(self, step: str, batch: Batch, seconds: float) -> None:
        """Count one write of sink ``step``."""
        self.add(step, len(batch), None, seconds)
        if step in self.keep_sinks:
            self.sink_rows.setdefault(step, []).append(batch)

    def take(self) -> dict[str, list[Any]]:
        """The figures so far; the tally starts again from zero."""
        steps, self.steps = self.steps, {}
        return steps


class ObservedRun(Protocol):
    """What an observer may read from the executor (between batches, in its thread).

    Attributes:
        pipeline: the graph (``name``, ``nodes`` by name, ``dead_letters``).
        sources: the sources at run time (``node``, ``source``, ``tracker``, ``finished``).
        counters: the operators' counters (``"late"``, ``"<step>.alerts"``, ...).
        dead_count: dead letters so far.
        dead_kept: the last dead letters.
        events: events read by the job (with the restored ones).
        restored_events: events counted by the restored checkpoint.
        restored_from: the checkpoint id the run started from, if any.
        tally: the executor's step tally.
        hist: the executor's :class:`~tidal.observe.metrics.LatencyHistogram` (its counts
            are regrouped into the Prometheus latency buckets, batch by batch).
    """

    @property
    def pipeline(self) -> Any: ...  # noqa: D102
    @property
    def sources(self) -> Sequence[Any]: ...  # noqa: D102
    @property
    def counters(self) -> dict[str, int]: ...  # noqa: D102
    @property
    def dead_count(self) -> int: ...  # noqa: D102
    @property
    def dead_kept(self) -> Any: ...  # noqa: D102
    @property
    def events(self) -> int: ...  # noqa: D102
    @property
    def restored_events(self) -> int: ...  # noqa: D102
    @property
    def restored_from(self) -> int | None: ...  # noqa: D102
    @property
    def tally(self) -> StepTally | None: ...  # noqa: D102

    @property
    def hist(self) -> Any: ...  # noqa: D102

    def summary(self) -> RunSummary:
        """The run's figures so far."""
        ...


class RunObserver(Protocol):
    """Receives a run's figures from the executor, batch by batch."""

    def on_open(self, run: ObservedRun) -> None:
        """The run is open; ``run`` stays valid until :meth:`on_close`."""
        ...

    def on_batch(self, source: str, latency_ns: Array | None, tally: StepTally) -> None:
        """A source's micro-batch went through (``latency_ns`` is ``None`` when empty)."""
        ...

    def on_checkpoint(self, checkpoint_id: int, seconds: float, size: int) -> None:
        """Checkpoint ``checkpoint_id`` took ``seconds``; ``size`` bytes, or -1 if it failed."""
        ...

    def on_close(self, summary: RunSummary) -> None:
        """The run ended with ``summary``."""
        ...
