"""Change points: CUSUM charts of level and variance against a short robust baseline.

A point detector sees a level shift of 1.5 standard deviations as noise, point by point;
a CUSUM chart (Page 1954) adds the evidence up. For each key this detector takes the
robust z-score ``z`` of every value against a short :class:`~tidal.ml.detect.MedianMAD`
window, winsorizes it to ``[-clip, clip]`` (so one spike cannot raise the alarm alone),
and runs three one-sided charts::

    up    S+ = max(0, S+ + z - drift)
    down  S- = max(0, S- - z - drift)
    var   Sv = max(0, Sv + min(z*z, clip*clip) - 1 - drift_var)

The score is ``range * max(S+, S-, Sv) / threshold``: a chart at ``threshold`` is a value
at the edge of the expected range. After a shift the baseline window *re-baselines* on the
new level within about ``block * blocks / 2`` values; the charts then drain at ``drift``
per value, so one shift is one incident, not an alarm for ever.

The recursion ``S = max(0, S + a)`` is solved for a whole batch at once with the Lindley
form ``S_t = C_t - min(0, min_{j <= t} C_j)`` on the cumulative sums ``C`` of ``a``
(started from the carried-in ``S``), per key, so the charts cost a cumulative sum and a
running minimum. The chart steps are rounded to multiples of ``2**-20`` first, which makes
every sum exact in float64, so the charts are bit-identical however the rows are batched.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.r_[rng.normal(0, 1, 300), rng.normal(2.0, 1, 100)]
    >>> out = ChangePoint().score(x[:, None], np.zeros(400, dtype=np.int64))
    >>> int(np.argmax(out.deviation >= 4.0))      # fires a few values after the shift at 300
    310
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError
from tidal.ml.detect.base import Layout, Scored, check_params, grow, seg_cumsum, seg_running_min
from tidal.ml.detect.baseline import MedianMAD, _check_univariate

__all__ = ["GRID", "ChangePoint", "cusum_path"]

_GRID = 2.0**20
GRID = _GRID
"""Chart steps are rounded to multiples of ``1 / GRID``, so their running sums are exact."""


class ChangePoint:
    """Two-sided level CUSUM plus a variance CUSUM on robust z-scores, per key.

    Args:
        block: values per block of the baseline window.
        blocks: blocks in the baseline window (short, so it re-baselines quickly).
        drift: allowance per value of the level charts, in standard deviations (shifts
            smaller than about ``2 * drift`` are ignored).
        drift_var: allowance per value of the variance chart.
        threshold: chart value that counts as "at the edge of the expected range".
        clip: z-scores are clipped to ``[-clip, clip]`` before entering the charts.
        range: deviation (standard deviations) of the expected range's edge.
    """

    kind = "changepoint"
    multivariate = False

    def __init__(
        self,
        *,
        block: int = 8,
        blocks: int = 12,
        drift: float = 0.75,
        drift_var: float = 3.0,
        threshold: float = 12.0,
        clip: float = 3.0,
        range: float = 4.0,
    ) -> None:
        for label, v in (("drift", drift), ("drift_var", drift_var), ("threshold", threshold)):
            if not v > 0:
                msg = f"changepoint: {label} must be > 0, got {v!r}"
                raise ConfigError(msg)
        if not clip > 1:
            msg = f"changepoint: clip must be > 1, got {clip!r}"
            raise ConfigError(msg)
        self.base = MedianMAD(block=block, blocks=blocks, range=range)
        self.drift = float(drift)
        self.drift_var = float(drift_var)
        self.threshold = float(threshold)
        self.clip = float(clip)
        self.range = float(range)
        self.charts: Array = np.zeros((0, 3))

    def score(self, x: Array, keys: Array) -> Scored:
        """Chart every row, then carry the charts to the next batch."""
        _check_univariate(self.kind, x)
        n = len(keys)
        dev, low, high = np.zeros(n), np.full(n, np.nan), np.full(n, np.nan)
        if n == 0:
            return Scored(dev, low, high)
        lay, level, scale = self.base.baseline(x, keys)
        self.charts = grow(self.charts, int(lay.ukeys.max()) + 1)
        xs = x[lay.order, 0]
        z = np.nan_to_num((xs - level) / scale, nan=0.0)
        zc = np.clip(z, -self.clip, self.clip)
        warm = np.isnan(level)
        steps = np.stack(
            (zc - self.drift, -zc - self.drift, zc * zc - 1.0 - self.drift_var), axis=1
        )
        steps[warm] = 0.0
        # on a grid of 2**-20 the sums below are exact, so no batch cut changes a bit
        steps = np.round(steps * _GRID) / _GRID
        start = self.charts[lay.ukeys]
        charts = np.empty_like(steps)
        for c in range(3):
            charts[:, c] = _lindley(start[:, c], steps[:, c], lay)
        self.charts[lay.ukeys] = charts[lay.starts + lay.counts - 1]
        d = self.range * charts.max(axis=1) / self.threshold
        dev[lay.order] = d
        low[lay.order] = level - self.range * scale
        high[lay.order] = level + self.range * scale
        return Scored(dev, low, high)

    def params(self) -> dict[str, Any]:
        """Parameters (JSON)."""
        return {
            **self.base.params(),
            "drift": self.drift,
            "drift_var": self.drift_var,
            "threshold": self.threshold,
            "clip": self.clip,
        }

    def snapshot(self) -> dict[str, Any]:
        """Baseline state and the three charts per key."""
        base = self.base.snapshot()
        base.pop("kind")
        base.pop("params")
        return {
            "kind": self.kind,
            "params": self.params(),
            "base": base,
            "charts": self.charts.copy(),
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Load :meth:`snapshot`."""
        check_params(self.kind, snap, self.params())
        self.base.win.restore(snap["base"])
        self.charts = np.asarray(snap["charts"], dtype=np.float64).reshape(-1, 3).copy()


def _lindley(start: Array, steps: Array, lay: Layout) -> Array:
    """``S_t = max(0, S_{t-1} + a_t)`` per key, from ``start`` per key, for sorted rows."""
    c = start[lay.seg] + seg_cumsum(steps, lay)
    low = np.minimum(seg_running_min(c, lay), 0.0)
    out: Array = c - low
    return out


def cusum_path(start: float, steps: Array) -> Array:
    """``S_t = max(0, S_{t-1} + a_t)`` for one series from ``S_0 = start`` (Lindley form).

    Example:
        >>> cusum_path(1.0, np.array([-2.0, 3.0, -1.0, -5.0])).tolist()
        [0.0, 3.0, 2.0, 0.0]
    """
    c = start + np.cumsum(steps)
    out: Array = c - np.minimum(np.minimum.accumulate(c), 0.0)
    return out
