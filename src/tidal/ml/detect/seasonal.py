"""Seasonality-aware residuals: each value against the same phase of earlier seasons.

A daily pattern makes 3 a.m. traffic at noon's level an anomaly even though the value is
perfectly ordinary for the series as a whole; a detector that only looks at recent values
cannot see it. :class:`Seasonal` forecasts each value as the median of the values at the
same phase of the last ``seasons`` seasons (and ``spread`` positions either side, which
absorbs jitter), and scores the residual against ``1.4826 * MAD`` of those same values::

    period P, seasons K=2, spread 1:
    ... [p-2P-1, p-2P, p-2P+1] ... [p-P-1, p-P, p-P+1] ... p
         season -2                  season -1             scored

The period is given, or learned per key: once a key has ``learn`` values, the period is the
first strong peak of their autocorrelation (computed with an FFT) between 2 and
``max_period``; a key without a peak of at least ``min_acf`` keeps the non-seasonal mode.
Until then, and for non-seasonal keys, the forecast is the median of the last
``(2 * spread + 1) * seasons`` values (a short robust baseline).

Seasons are counted in values, not in time: the detector assumes one value per sampling
slot. A missing value (NaN) keeps its slot, so it does not shift the phase; rows dropped
from the input do shift it. The values are kept per key in a ring of ``max(learn, seasons *
max_period + spread + 1)`` floats.

Example:
    >>> import numpy as np
    >>> t = np.arange(1000)
    >>> x = np.sin(2 * np.pi * t / 50) + 0.01 * np.cos(t)
    >>> x[900:910] = x[925:935]                  # a normal shape, half a period late
    >>> out = Seasonal(max_period=100).score(x[:, None], np.zeros(1000, dtype=np.int64))
    >>> bool(out.deviation[900:910].max() > 4), float(out.deviation[600:900].max()) < 4
    (True, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError
from tidal.ml.detect.base import Scored, array_state, grow, layout, load_arrays
from tidal.ml.detect.baseline import _check_univariate

__all__ = ["Seasonal", "learn_period"]

_MAD_SIGMA = 1.4826
_UNKNOWN = -1


class Seasonal:
    """Seasonal-median forecast with a MAD scale, period given or learned per key.

    Args:
        period: the season in values; ``None`` learns it per key.
        max_period: the longest season to look for.
        learn: values a key needs before its period is learned (default ``3 *
            max_period``).
        seasons: earlier seasons in the forecast.
        spread: positions either side of the same phase that also count.
        min_acf: autocorrelation a period needs to be used.
        range: deviation (standard deviations) of the expected range's edge.
        min_scale: floor of the scale.
    """

    kind = "seasonal"
    multivariate = False
    missing = True

    def __init__(
        self,
        *,
        period: int | None = None,
        max_period: int = 200,
        learn: int | None = None,
        seasons: int = 4,
        spread: int = 2,
        min_acf: float = 0.3,
        range: float = 4.0,
        min_scale: float = 1e-9,
    ) -> None:
        if period is not None and period < 2:
            msg = f"seasonal: period must be >= 2 values (or None to learn it), got {period!r}"
            raise ConfigError(msg)
        if max_period < 2 or seasons < 1 or spread < 0:
            msg = (
                f"seasonal: need max_period >= 2, seasons >= 1, spread >= 0; got {max_period}, "
                f"{seasons}, {spread}"
            )
            raise ConfigError(msg)
        self.period = None if period is None else int(period)
        self.max_period = int(period or max_period)
        self.learn = int(learn if learn is not None else 3 * self.max_period)
        if self.period is None and self.learn < 2 * self.max_period:
            msg = f"seasonal: learn must be >= 2 * max_period values, got {self.learn}"
            raise ConfigError(msg)
        self.seasons = int(seasons)
        self.spread = int(spread)
        self.min_acf = float(min_acf)
        self.range = float(range)
        self.min_scale = float(min_scale)
        self.size = max(self.learn, self.seasons * self.max_period + self.spread + 1)
        self.ring: Array = np.full((0, self.size), np.nan)
        self.seen: Array = np.zeros(0, dtype=np.int64)
        self.periods: Array = np.zeros(0, dtype=np.int64)

    def score(self, x: Array, keys: Array) -> Scored:
        """Forecast and score every row (NaN rows keep their slot, score 0), then learn."""
        _check_univariate(self.kind, x)
        n = len(keys)
        dev, low, high = np.zeros(n), np.full(n, np.nan), np.full(n, np.nan)
        if n == 0:
            return Scored(dev, low, high)
        lay = layout(keys)
        cap = int(lay.ukeys.max()) + 1
        self.ring = grow(self.ring, cap, np.nan)
        self.seen = grow(self.seen, cap)
        self.periods = grow(self.periods, cap, _UNKNOWN if self.period is None else self.period)
        k, xs = lay.ukeys, x[lay.order, 0]
        seen = self.seen[k]
        pos = seen[lay.seg] + lay.rank
        self._learn_periods(k, seen, xs, lay.starts, lay.counts)
        period = np.maximum(self.periods[k][lay.seg], 0)
        if self.period is None:
            period = np.where(pos >= self.learn, period, 0)
        width = 2 * self.spread + 1
        m = width * self.seasons
        seasonal = (period > self.spread) & (pos >= self.seasons * period + self.spread)
        back_s = (np.arange(1, self.seasons + 1)[:, None] * 1).repeat(width, 1).ravel()
        off_s = np.tile(np.arange(-self.spread, self.spread + 1), self.seasons)
        q_seasonal = pos[:, None] - back_s[None, :] * period[:, None] + off_s[None, :]
        q_recent = pos[:, None] - np.arange(1, m + 1)[None, :]
        q = np.where(seasonal[:, None], q_seasonal, q_recent)
        vals = self._values(q, lay.seg, seen, k, xs, lay.starts)
        level, scale = _nan_median_mad(vals, need=max(self.seasons, 3))
        scale = np.maximum(_MAD_SIGMA * scale, self.min_scale + 1e-9 * np.abs(level))
        with np.errstate(invalid="ignore"):
            d = np.abs(xs - level) / scale
        dev[lay.order] = np.nan_to_num(d, nan=0.0)
        low[lay.order] = level - self.range * scale
        high[lay.order] = level + self.range * scale
        # learn: the newest `size` values of each key go to its ring
        end = seen + lay.counts
        keep = pos >= end[lay.seg] - self.size
        self.ring[lay.keys[keep], pos[keep] % self.size] = xs[keep]
        self.seen[k] = end
        return Scored(dev, low, high)

    def _values(
        self, q: Array, seg: Array, seen: Array, k: Array, xs: Array, starts: Array
    ) -> Array:
        """Values at positions ``q`` of each row's key: from the batch or the ring."""
        s = seen[seg][:, None]
        in_batch = q >= s
        batch_idx = np.clip(starts[seg][:, None] + q - s, 0, len(xs) - 1)
        ring_vals = self.ring[k[seg][:, None], np.maximum(q, 0) % self.size]
        out = np.where(in_batch, xs[batch_idx], ring_vals)
        out[q < 0] = np.nan
        result: Array = out
        return result

    def _learn_periods(
        self, k: Array, seen: Array, xs: Array, starts: Array, counts: Array
    ) -> None:
        if self.period is not None:
            return
        due = np.flatnonzero((seen < self.learn) & (seen + counts >= self.learn))
        for i in due.tolist():
            key, s = int(k[i]), int(seen[i])
            old = self.ring[key, :s]
            new = xs[starts[i] : starts[i] + self.learn - s]
            self.periods[key] = learn_period(
                np.concatenate((old, new)), self.max_period, self.min_acf
            )

    def params(self) -> dict[str, Any]:
        """Parameters (JSON)."""
        return {
            "period": self.period,
            "max_period": self.max_period,
            "learn": self.learn,
            "seasons": self.seasons,
            "spread": self.spread,
            "min_acf": self.min_acf,
            "range": self.range,
            "min_scale": self.min_scale,
        }

    def snapshot(self) -> dict[str, Any]:
        """Rings, counts and learned periods per key."""
        return array_state(self, "ring", "seen", "periods")

    def restore(self, snap: dict[str, Any]) -> None:
        """Load :meth:`snapshot`."""
        load_arrays(
            self,
            snap,
            ring=(np.float64, (self.size,)),
            seen=(np.int64, ()),
            periods=(np.int64, ()),
        )


def learn_period(values: Array, max_period: int, min_acf: float = 0.3) -> int:
    """The season length of ``values`` from their autocorrelation, or 0 if there is none.

    The values are detrended (least-squares line); the period is the first local maximum
    of the autocorrelation, after it first drops below zero and up to ``max_period``, that
    reaches 90% of the highest such maximum, if that is at least ``min_acf``. NaN values
    are filled with the mean.

    Example:
        >>> t = np.arange(600)
        >>> learn_period(np.sin(2 * np.pi * t / 48) + 0.001 * t, 200)
        48
        >>> learn_period(np.random.default_rng(1).normal(size=600), 200)
        0
    """
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    if ok.sum() < 4 * 2:
        return 0
    v = np.where(ok, v, v[ok].mean())
    t = np.arange(len(v), dtype=np.float64)
    slope, icpt = np.polyfit(t, v, 1)
    v = v - (slope * t + icpt)
    n = len(v)
    nfft = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(v, nfft)
    acf = np.fft.irfft(f * np.conj(f), nfft)[: max_period + 2]
    if acf[0] <= 0:
        return 0
    acf = acf / acf[0] * n / (n - np.arange(len(acf)))
    top = min(max_period, n // 2)
    below = np.flatnonzero(acf[1 : top + 1] < 0)
    if len(below) == 0:  # never uncorrelated: a trend or noise, no season
        return 0
    lags = np.arange(max(2, int(below[0]) + 1), top + 1)
    if len(lags) == 0:
        return 0
    inner = acf[lags]
    peak = (inner > acf[lags - 1]) & (inner >= acf[np.minimum(lags + 1, len(acf) - 1)])
    if not peak.any():
        return 0
    best = float(inner[peak].max())
    if best < min_acf:
        return 0
    first = np.flatnonzero(peak & (inner >= 0.9 * best))[0]
    return int(lags[first])


def _nan_median_mad(vals: Array, need: int) -> tuple[Array, Array]:
    """Row-wise median and MAD ignoring NaN; NaN where a row has fewer than ``need``."""
    s = np.sort(vals, axis=1)
    cnt = np.isfinite(vals).sum(axis=1)
    rows = np.arange(len(vals))
    lo_i, hi_i = np.maximum((cnt - 1) // 2, 0), np.maximum(cnt // 2, 0)
    med = 0.5 * (s[rows, lo_i] + s[rows, hi_i])
    dev = np.sort(np.abs(vals - med[:, None]), axis=1)
    mad = 0.5 * (dev[rows, lo_i] + dev[rows, hi_i])
    few = cnt < need
    med[few] = np.nan
    mad[few] = np.nan
    return med, mad
