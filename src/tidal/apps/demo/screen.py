"""What the demo shows: alert lines naming the injected fault, and the closing scorecard.

The ``screen`` sink of the demo is an :class:`AlertPrinter` (or, with checkpoints, a
:class:`CommittedAlertPrinter`, which shows an alert once its checkpoint commits). Both
print at most a few lines a second and keep a :class:`Scorecard`: the generator knows what
it injected (:meth:`~tidal.apps.demo.fleet.SensorFleet.fault_behind`), so every alert is
either put down to a fault (a spike, a sensor stuck at zero, a level shift) or counted as
a false alarm, and at the end the scorecard says how many faults went in and how many were
found.

Example:
    >>> from tidal.apps.demo.fleet import SensorFleet
    >>> fleet = SensorFleet(100)
    >>> f = fleet.faults(fleet.seq_at(40.0))[2]
    >>> at = EPOCH_MS + int(fleet.seconds(f.start) * 1000)
    >>> row = {"sensor": f.sensor, "window_start": at, "window_end": at + 10_000,
    ...        "mean": 31.234, "score": -9.31}
    >>> format_alert(row, fleet)
    'ALERT sensor 59  00:00:25-00:00:35  mean 31.23  z=-9.3  level shift +3.2'
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from tidal.apps.demo.fleet import EPOCH_MS, SensorFleet  # noqa: F401 (the examples use EPOCH_MS)
from tidal.core.batch import Batch
from tidal.io.base import BaseSink

__all__ = ["AlertPrinter", "CommittedAlertPrinter", "Scorecard", "format_alert"]

DUE_S = 12.0
"""Seconds of event time after its start by which a fault counts as due to be found: its
first windows (10 s long, every 2 s) have fired by then."""


def _hms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%S")


def format_alert(row: dict[str, Any], fleet: SensorFleet | None = None) -> str:
    """One screen line (under 80 characters) for an alert row, naming the fault behind it.

    Without a ``fleet`` the line names no fault.

    Example:
        >>> format_alert({"sensor": 42, "window_start": EPOCH_MS,
        ...               "window_end": EPOCH_MS + 10_000, "mean": 1.5, "score": 9.31})
        'ALERT sensor 42  00:00:00-00:00:10  mean 1.50  z=+9.3'
    """
    line = (
        f"ALERT sensor {row['sensor']}  {_hms(row['window_start'])}-{_hms(row['window_end'])}"
        f"  mean {row['mean']:.2f}  z={row['score']:+.1f}"
    )
    if fleet is None:
        return line
    fault = fleet.fault_behind(int(row["sensor"]), row["window_start"], row["window_end"])
    return f"{line}  {'false alarm' if fault is None else fault.describe()}"


class Scorecard:
    """Faults injected into the readings a run read, how many its alerts found, false alarms.

    A fault counts once it is *due* (its start lies :data:`DUE_S` or more before the end of
    what was read) or found; it is *found* if an alert of this run is put down to it. An alert that
    no injected fault explains is a false alarm. Only this run's readings count: a resumed
    run starts a new scorecard at the position it resumed from.

    Args:
        fleet: the sensor model (the ground truth).
        start: the sequence number this run started reading at.

    Example:
        >>> from tidal.apps.demo.fleet import SensorFleet
        >>> fleet = SensorFleet(100)
        >>> card = Scorecard(fleet)
        >>> for f in fleet.faults(fleet.seq_at(100.0))[:-1]:  # the last one is not found yet
        ...     at = EPOCH_MS + int(fleet.seconds(f.start) * 1000)
        ...     card.add({"sensor": f.sensor, "window_start": at, "window_end": at + 10_000})
        >>> card.add({"sensor": 3, "window_start": EPOCH_MS, "window_end": EPOCH_MS + 10_000})
        >>> card.result(fleet.seq_at(100.0))
        {'injected': 12, 'due': 11, 'found': 11, 'false_alarms': 1}
        >>> print(card.line(fleet.seq_at(100.0)))
        scorecard: 11 of 11 faults found, 1 false alarm
          12 injected: 4 spike, 4 stuck, 4 shift (1 too recent to judge)
    """

    def __init__(self, fleet: SensorFleet, start: int = 0) -> None:
        self.fleet = fleet
        self.start = start
        self.found: set[tuple[int, int]] = set()  # (sensor, start) of faults found
        self.false_alarms = 0

    def add(self, row: dict[str, Any]) -> None:
        """Count one alert."""
        fault = self.fleet.fault_behind(int(row["sensor"]), row["window_start"], row["window_end"])
        if fault is None:
            self.false_alarms += 1
        else:
            self.found.add((fault.sensor, fault.start))

    def _injected(self, position: int) -> tuple[list[Any], list[Any]]:
        injected = [f for f in self.fleet.faults(position) if f.start >= self.start]
        due_by = self.fleet.seq_at(max(0.0, self.fleet.seconds(position) - DUE_S))
        due = [f for f in injected if f.start < due_by or (f.sensor, f.start) in self.found]
        return injected, due

    def result(self, position: int) -> dict[str, int]:
        """The figures once the run has read up to sequence number ``position``."""
        injected, due = self._injected(position)
        found = sum((f.sensor, f.start) in self.found for f in due)
        return {
            "injected": len(injected),
            "due": len(due),
            "found": found,
            "false_alarms": self.false_alarms,
        }

    def line(self, position: int) -> str:
        """The scorecard as two lines of text."""
        injected, _ = self._injected(position)
        r = self.result(position)
        kinds = ", ".join(f"{sum(f.kind == k for f in injected)} {k}" for k in _KINDS)
        alarms = "false alarm" if r["false_alarms"] == 1 else "false alarms"
        pending = r["injected"] - r["due"]
        wait = f" ({pending} too recent to judge)" if pending else ""
        return (
            f"scorecard: {r['found']} of {r['due']} faults found, {r['false_alarms']} {alarms}"
            f"\n  {r['injected']} injected: {kinds}{wait}"
        )


_KINDS = ("spike", "stuck", "shift")


class AlertPrinter(BaseSink):
    """Prints alerts as lines, at most ``per_second`` lines a second (the rest are counted).

    Every alert, shown or not, goes on the :attr:`scorecard` when there is one.

    Args:
        print_fn: where lines go (``print``, or a status line's ``print``); ``None`` prints
            nothing (the scorecard is still kept).
        fleet: names the fault behind each alert and keeps the scorecard.
        start: the sequence number the run started reading at (for the scorecard).
        per_second: the most lines shown per wall-clock second.
        clock: a ``time.monotonic``-like function.

    Example:
        >>> lines = []
        >>> printer = AlertPrinter(lines.append, per_second=1, clock=lambda: 0.0)
        >>> rows = [{"sensor": s, "window_start": EPOCH_MS, "window_end": EPOCH_MS + 10_000,
        ...          "mean": 1.0, "max": 2.0, "score": 5.0} for s in (1, 2)]
        >>> printer.write(Batch.from_records(rows)); printer.close()
        >>> lines[1]
        '... 1 more alert not shown'
    """

    def __init__(
        self,
        print_fn: Callable[[str], None] | None,
        *,
        fleet: SensorFleet | None = None,
        start: int = 0,
        per_second: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.print_fn = print_fn
        self.fleet = fleet
        self.scorecard = None if fleet is None else Scorecard(fleet, start)
        self.per_second = per_second
        self.clock = clock
        self.shown = 0
        self.hidden = 0
        self._second = -1

    def write(self, batch: Batch) -> None:
        """Score every alert and print up to the second's budget of lines."""
        if not len(batch):
            return
        rows = batch.to_records()
        if self.scorecard is not None:
            for row in rows:
                self.scorecard.add(row)
        if self.print_fn is None:
            return
        now = int(self.clock())
        if now != self._second:
            self._second, self.shown = now, 0
            self._report_hidden()
        room = max(self.per_second - self.shown, 0)
        for row in rows[:room]:
            self.print_fn(format_alert(row, self.fleet))
        self.shown += min(room, len(rows))
        self.hidden += len(rows) - min(room, len(rows))

    def _report_hidden(self) -> None:
        if self.hidden and self.print_fn is not None:
            s = "" if self.hidden == 1 else "s"
            self.print_fn(f"... {self.hidden} more alert{s} not shown")
            self.hidden = 0

    def flush(self) -> None:
        """Report the alerts that were not shown."""
        self._report_hidden()


class CommittedAlertPrinter(AlertPrinter):
    """An :class:`AlertPrinter` that shows alerts when their checkpoint commits.

    It is a transactional sink (:class:`~tidal.io.base.TransactionalSink`): alerts written
    since the last checkpoint are held back, and printed (and scored) when the checkpoint
    that covers them commits, so the screen shows what the exactly-once alerts file holds
    and a restart after a crash does not show an alert twice. Alerts lag by up to a
    checkpoint interval. A crash between a checkpoint's write and its commit skips that
    checkpoint's lines on screen (they are in the alerts file).

    Example:
        >>> lines = []
        >>> printer = CommittedAlertPrinter(lines.append, clock=lambda: 0.0)
        >>> printer.recover([])
        >>> row = {"sensor": 7, "window_start": EPOCH_MS, "window_end": EPOCH_MS + 10_000,
        ...        "mean": 1.0, "max": 2.0, "score": 5.0}
        >>> printer.write(Batch.from_records([row]))
        >>> lines, printer.prepare(1)
        ([], {'checkpoint': 1, 'alerts': 1})
        >>> printer.commit(1, {"checkpoint": 1, "alerts": 1}); len(lines)
        1
    """

    def __init__(
        self,
        print_fn: Callable[[str], None] | None,
        *,
        fleet: SensorFleet | None = None,
        start: int = 0,
        per_second: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(print_fn, fleet=fleet, start=start, per_second=per_second, clock=clock)
        self._staged: list[Batch] = []
        self._prepared: dict[int, list[Batch]] = {}

    def write(self, batch: Batch) -> None:
        """Hold the alerts until their checkpoint commits."""
        if len(batch):
            self._staged.append(batch)

    def prepare(self, checkpoint_id: int) -> dict[str, Any]:
        """Set aside what was written since the last checkpoint."""
        staged, self._staged = self._staged, []
        self._prepared[checkpoint_id] = staged
        return {"checkpoint": checkpoint_id, "alerts": sum(len(b) for b in staged)}

    def commit(self, checkpoint_id: int, pending: dict[str, Any]) -> None:
        """Print the checkpoint's alerts (once: a repeated call prints nothing)."""
        for batch in self._prepared.pop(checkpoint_id, []):
            super().write(batch)

    def recover(self, pending: Sequence[dict[str, Any]]) -> None:
        """Forget everything held: a new process has nothing to show yet."""
        self._staged.clear()
        self._prepared.clear()
