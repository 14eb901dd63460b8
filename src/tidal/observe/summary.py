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
    """What a run did: the JSON summary of ``tidal run --json``."""

    events: int
    seconds: float
    latency_ms: dict[str, Any]
    late: int
    dead_letters: int
    counts: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    restored_events: int = 0
    """Of ``events``, those counted by the runs before a restored checkpoint."""

    @property
    def events_per_s(self) -> float:
        """Throughput of this run (events since the restored checkpoint, if any)."""
        done = self.events - self.restored_events
        return done / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict."""
        return {
            "events": self.events,
            "seconds": round(self.seconds, 4),
            "events_per_s": round(self.events_per_s, 1),
            "latency_ms": self.latency_ms,
            "late": self.late,
            "dead_letters": self.dead_letters,
            "counts": self.counts,
            "outputs": self.outputs,
            **self.extra,
        }
