"""Ensembles of detectors, and alerting with hysteresis (one incident, one alert).

:class:`Ensemble` runs several detectors on the same rows and keeps, per row, the largest
deviation; the member that gave it is recorded, so an alert can say which detector fired
and show *that* detector's expected range. Every member's deviation is in its own standard
deviations, so the maximum compares like with like.

:class:`Hysteresis` turns deviations into alerts. An incident opens on the first row with
a deviation of at least ``on`` and closes after ``quiet`` rows in a row below ``off``; only
the row that opens an incident raises an alert::

    deviation   1  5  2  6  1  1  1  1  5
    on=4, off=3, quiet=3
    active      .  X  X  X  X  X  .  .  X
    alert          ^                    ^

Both are vectorized over keys and rows like the detectors: the state machine is solved with
running maxima over row indices (the last row that was not quiet, the last event).

Example:
    >>> h = Hysteresis(on=4.0, off=3.0, quiet=3)
    >>> dev = np.array([1.0, 5, 2, 6, 1, 1, 1, 1, 5])
    >>> alert, active = h.update(dev, np.zeros(9, dtype=np.int64))
    >>> np.flatnonzero(alert).tolist(), active.astype(int).tolist()
    ([1, 8], [0, 1, 1, 1, 1, 1, 0, 0, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError, StateError
from tidal.ml.detect.base import Detector, Scored, grow, layout

__all__ = ["Ensemble", "Hysteresis"]


class Ensemble:
    """The maximum (or mean) deviation of several detectors, and the member that led it.

    ``combine="max"`` alerts when any member is sure; ``"mean"`` needs the members to
    agree more, which trades a little sensitivity for fewer false alerts.

    Args:
        members: the detectors (all fed the same value columns).
        combine: ``"max"`` or ``"mean"`` of the members' deviations.

    Example:
        >>> from tidal.ml.detect import MedianMAD, Seasonal
        >>> ens = Ensemble([MedianMAD(), Seasonal(period=24)])
        >>> out = ens.score(np.sin(np.arange(500) / 3.8)[:, None], np.zeros(500, np.int64))
        >>> sorted(set(out.member[200:].tolist())) in ([0, 1], [1])
        True
    """

    kind = "ensemble"

    def __init__(
        self, members: Sequence[Detector], *, combine: Literal["max", "mean"] = "max"
    ) -> None:
        if not members:
            msg = "an Ensemble needs at least one member detector"
            raise ConfigError(msg)
        if combine not in ("max", "mean"):
            msg = f"an Ensemble combines by 'max' or 'mean', got {combine!r}"
            raise ConfigError(msg)
        self.combine = combine
        self.members = list(members)
        self.multivariate = all(m.multivariate for m in self.members)
        self.missing = any(getattr(m, "missing", False) for m in self.members)
        self.range = max(m.range for m in self.members)
        self.names = [m.kind for m in self.members]

    def score(self, x: Array, keys: Array) -> Scored:
        """Score with every member; per row the largest deviation wins."""
        n = len(keys)
        finite = np.isfinite(x).all(axis=1)
        devs = np.zeros((len(self.members), n))
        lows = np.full((len(self.members), n), np.nan)
        highs = np.full((len(self.members), n), np.nan)
        for i, m in enumerate(self.members):
            if getattr(m, "missing", False):
                out = m.score(x, keys)
                devs[i], lows[i], highs[i] = out.deviation, out.low, out.high
            else:
                out = m.score(x[finite], keys[finite])
                devs[i, finite], lows[i, finite], highs[i, finite] = (
                    out.deviation,
                    out.low,
                    out.high,
                )
        best = np.argmax(devs, axis=0)
        rows = np.arange(n)
        low, high = lows[best, rows], highs[best, rows]
        ranged = np.isfinite(lows)
        fallback = np.argmax(ranged, axis=0)
        missing = ~np.isfinite(low) & ranged.any(axis=0)
        low[missing] = lows[fallback, rows][missing]
        high[missing] = highs[fallback, rows][missing]
        dev = devs[best, rows] if self.combine == "max" else devs.mean(axis=0)
        return Scored(dev, low, high, best.astype(np.int64))

    def params(self) -> dict[str, Any]:
        """Members' kinds and parameters."""
        members = [{"kind": m.kind, **m.params()} for m in self.members]
        return {"combine": self.combine, "members": members}

    def snapshot(self) -> dict[str, Any]:
        """Every member's snapshot, in order."""
        members = [m.snapshot() for m in self.members]
        return {"kind": self.kind, "combine": self.combine, "members": members}

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore every member."""
        got = snap.get("members", [])
        if (
            snap.get("kind") != self.kind
            or len(got) != len(self.members)
            or snap.get("combine", "max") != self.combine
        ):
            msg = f"not a snapshot of this {len(self.members)}-member ensemble"
            raise StateError(msg)
        for m, s in zip(self.members, got, strict=True):
            m.restore(s)


class Hysteresis:
    """Per-key incidents: open at ``deviation >= on``, close after ``quiet`` rows below ``off``.

    Args:
        on: deviation that opens an incident (and raises its one alert).
        off: deviation below which a row counts as quiet.
        quiet: quiet rows in a row that close an incident.
    """

    def __init__(self, *, on: float = 5.0, off: float = 3.0, quiet: int = 16) -> None:
        if not 0 < off <= on or quiet < 1:
            msg = f"alerts need 0 < off <= on and quiet >= 1, got on={on}, off={off}, quiet={quiet}"
            raise ConfigError(msg)
        self.on, self.off, self.quiet = float(on), float(off), int(quiet)
        self.active: Array = np.zeros(0, dtype=bool)
        self.calm: Array = np.zeros(0, dtype=np.int64)

    def update(self, deviation: Array, keys: Array) -> tuple[Array, Array]:
        """``(alert, active)`` per row; NaN deviations count as quiet."""
        n = len(keys)
        alert, active = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        if n == 0:
            return alert, active
        lay = layout(keys)
        cap = int(lay.ukeys.max()) + 1
        self.active, self.calm = grow(self.active, cap), grow(self.calm, cap)
        k = lay.ukeys
        d = deviation[lay.order]
        hot = d >= self.on
        noisy = ~(d < self.off)  # NaN is quiet
        noisy &= np.isfinite(d)
        idx = np.arange(n)
        floor = -(self.quiet + 2)  # below any carried mark (calm runs are capped at quiet)
        big = n + self.quiet + 3
        # last noisy row at or before each row (carried calm run before the batch)
        mark = np.where(noisy, idx, floor)
        first = lay.starts
        carried = first - 1 - self.calm[k]
        mark[first] = np.where(noisy[first], first, carried)
        last_noisy = np.maximum.accumulate(mark + lay.seg * big) - lay.seg * big
        calm_run = idx - last_noisy
        closes = calm_run >= self.quiet
        # state: the latest event (open or close) wins; none yet -> carried state
        event = hot | closes
        ev_mark = np.where(event, idx, -1)
        ev_mark[first] = np.where(event[first], first, first - 1)
        last_ev = np.maximum.accumulate(ev_mark + lay.seg * big) - lay.seg * big
        own = last_ev >= first[lay.seg]
        state = np.where(own, hot[np.maximum(last_ev, 0)], self.active[k][lay.seg])
        before = np.empty(n, dtype=bool)
        before[1:] = state[:-1]
        before[first] = self.active[k]
        alert[lay.order] = state & ~before
        active[lay.order] = state
        last = first + lay.counts - 1
        self.active[k] = state[last]
        self.calm[k] = np.minimum(calm_run[last], self.quiet)
        return alert, active

    def forget(self, ids: Array) -> None:
        """Clear the incident state of keys ``ids``."""
        ids = ids[ids < len(self.active)]
        self.active[ids], self.calm[ids] = False, 0

    def params(self) -> dict[str, Any]:
        """Thresholds (JSON)."""
        return {"on": self.on, "off": self.off, "quiet": self.quiet}

    def snapshot(self) -> dict[str, Any]:
        """Per-key incident state."""
        return {"active": self.active.copy(), "calm": self.calm.copy()}

    def restore(self, snap: dict[str, Any]) -> None:
        """Load :meth:`snapshot`."""
        self.active = np.asarray(snap["active"], dtype=bool).copy()
        self.calm = np.asarray(snap["calm"], dtype=np.int64).copy()
