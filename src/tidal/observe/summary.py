"""What a run did: :class:`RunSummary`, the figures of ``tidal run --json``.

The executor (:mod:`tidal.runtime.executor`) fills it in; the status line and the summary
table (:mod:`tidal.observe.status`) show it. It lives here, below the runtime, so that
what shows a run need not import what runs it.

Example:
    >>> s = RunSummary(events=2_000, seconds=0.5, latency_ms={}, late=0, dead_letters=1)
    >>> s.events_per_s, s.to_json()["events"]
    (4000.0, 2000)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunSummary"]


@dataclass
class RunSummary:
    """What a run did: the JSON summary of ``tidal run --json``.

    Every figure is this run's (since it started or restored a checkpoint): ``events``,
    ``seconds``, ``events_per_s``, the latencies, ``late``, ``dead_letters``, the counts
    and outputs. A job resumed from a checkpoint also read ``restored_events`` before;
    :attr:`events_total` is the job's count since it began, which is what ``max_events``
    (``--events``) bounds.

    Example:
        >>> s = RunSummary(30_000, 2.0, {}, 0, 0, restored_events=60_000)
        >>> s.events_per_s, s.events_total
        (15000.0, 90000)
    """

    events: int
    seconds: float
    latency_ms: dict[str, Any]
    late: int
    dead_letters: int
    counts: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    restored_events: int = 0
    """Events the job read before this run (counted by the restored checkpoint)."""

    @property
    def events_total(self) -> int:
        """Events the job has read since it began: the runs before this one, and this one."""
        return self.restored_events + self.events

    @property
    def events_per_s(self) -> float:
        """Throughput of this run."""
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict."""
        return {
            "events": self.events,
            "events_total": self.events_total,
            "seconds": round(self.seconds, 4),
            "events_per_s": round(self.events_per_s, 1),
            "latency_ms": self.latency_ms,
            "late": self.late,
            "dead_letters": self.dead_letters,
            "counts": self.counts,
            "outputs": self.outputs,
            **self.extra,
        }
