"""A labelled evaluation set for stream anomaly detectors, and an early-detection score.

:func:`evaluation_set` generates, deterministically from a seed, series of 4,000 values
with labelled anomaly windows: spikes, dips, level shifts, a variance change, a trend
change, seasonal series with values that are normal at another time of the season,
seasonal spikes, heavy-tailed noise, missing values, irregular timestamps with dropped
rows, and two series whose slow drift is *not* an anomaly (any alert on them is false).

:func:`score_alerts` scores a detector's alerts the way the Numenta Anomaly Benchmark
(NAB, Lavin & Ahmad 2015) does, because a stream detector is judged by *when* it alerts,
not by a ranking of points after the fact:

* the first alert inside a labelled window earns ``2 / (1 + exp(5 y)) - 1`` where ``y``
  runs from -1 at the window's start to 0 at its end: 0.99 for an alert on the first
  value, 0.46 a quarter of the way in, 0 at the end (early detection is what gives an
  operator time to act); later alerts in the same window count for nothing;
* a window without an alert costs 1;
* an alert outside every window costs 0.11 (NAB's standard profile: about nine false
  alerts weigh as much as one missed incident);
* (the "low false positive" profile of NAB charges 0.22 per false alert instead; both
  are reported);
* the total is normalized over the whole set: 0 is a detector that never alerts, 100 one
  that alerts on the first value of every window and nowhere else.

It also gives alert precision (alerts inside a window / all alerts) and recall (windows
with an alert / windows), which do not care about timing.

Example:
    >>> series = evaluation_set()
    >>> len(series), sorted({s.name for s in series})[:3]
    (14, ['dips', 'drift', 'drift_seasonal'])
    >>> s = series[0]
    >>> perfect = np.zeros(len(s.x), dtype=bool)
    >>> perfect[[w[0] for w in s.windows]] = True
    >>> r = score_alerts([(s, perfect)])
    >>> round(r.nab, 1), r.precision, r.recall
    (100.0, 1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from tidal.core.batch import Array

__all__ = ["Result", "Series", "evaluation_set", "score_alerts"]

N = 4000
_MINUTE = 60_000


@dataclass
class Series:
    """One labelled series: times (ms), values (NaN = missing) and anomaly windows."""

    name: str
    time: Array
    x: Array
    windows: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Result:
    """Scores of a detector over a set of series."""

    nab: float
    nab_low_fp: float
    precision: float
    recall: float
    alerts: int
    false_alerts: int
    windows: int
    detected: int
    mean_delay: float


def _noise(rng: np.random.Generator, n: int = N, phi: float = 0.5) -> Array:
    """AR(1) noise with unit variance."""
    e = rng.normal(0, np.sqrt(1 - phi * phi), n)
    out = np.empty(n)
    out[0] = rng.normal()
    for i in range(1, n):
        out[i] = phi * out[i - 1] + e[i]
    return out


def _positions(rng: np.random.Generator, k: int, lo: int = 700, gap: int = 250) -> list[int]:
    """``k`` sorted positions after ``lo``, at least ``gap`` apart."""
    slots = np.arange(lo, N - gap, gap)
    return sorted(
        int(p) + int(rng.integers(0, gap // 3)) for p in rng.choice(slots, k, replace=False)
    )


def _regular(n: int = N) -> Array:
    return np.arange(n, dtype=np.int64) * _MINUTE + 1_700_000_000_000


def evaluation_set(seed: int = 12) -> list[Series]:
    """The labelled series (see the module docstring); the same for the same ``seed``."""
    rng = np.random.default_rng(seed)
    t = np.arange(N, dtype=np.float64)
    out: list[Series] = []

    def spiky(name: str, sign: float, base: Array, scale: float = 1.0) -> Series:
        x = base.copy()
        wins = []
        for p in _positions(rng, 8):
            x[p] += sign * scale * rng.uniform(6, 10)
            wins.append((p, p + 20))
        return Series(name, _regular(), x, wins)

    out.append(spiky("spikes", 1.0, 50 + _noise(rng)))
    out.append(spiky("dips", -1.0, 50 + _noise(rng)))
    # level shifts: the new level is the new normal
    x = 20 + _noise(rng)
    x[1500:] += 3.0
    x[2800:] -= 7.0
    out.append(Series("level_shift", _regular(), x, [(1500, 1550), (2800, 2850)]))
    # small shift: 1.5 sigma, invisible point by point
    x = 5 + _noise(rng, phi=0.0)
    x[2000:] += 1.5
    out.append(Series("small_shift", _regular(), x, [(2000, 2100)]))
    # variance change
    x = _noise(rng)
    x[2000:2400] *= 4.0
    out.append(Series("variance", _regular(), x, [(2000, 2050)]))
    # trend change: flat, then climbing
    x = 100 + _noise(rng)
    x[2000:] += 0.08 * (t[2000:] - 2000)
    out.append(Series("trend_change", _regular(), x, [(2000, 2150)]))
    # seasonal: values that are normal at another phase (shifted by half a period)
    period = 96
    clean = 10 + 5 * np.sin(2 * np.pi * t / period) + 2 * np.sin(4 * np.pi * t / period)
    x = clean + 0.3 * _noise(rng)
    wins = []
    for p in _positions(rng, 4, lo=1200, gap=600):
        x[p : p + 24] = clean[p + period // 2 : p + period // 2 + 24] + 0.3 * rng.normal(size=24)
        wins.append((p, p + 30))
    out.append(Series("seasonal_wrong_time", _regular(), x, wins))
    # seasonal with spikes that stay inside the seasonal range
    period = 144
    clean = 50 + 10 * np.sin(2 * np.pi * t / period)
    x = clean + _noise(rng)
    wins = []
    for p in _positions(rng, 6, lo=1200):
        x[p] += 8.0 * (1 if clean[p] < 50 else -1)
        wins.append((p, p + 20))
    out.append(Series("seasonal_spikes", _regular(), x, wins))
    # heavy-tailed noise (Student t, 3 dof): big but normal excursions, and real spikes
    x = 10 + rng.standard_t(3, N)
    wins = []
    for p in _positions(rng, 5):
        x[p] += rng.choice([-1.0, 1.0]) * rng.uniform(25, 35)
        wins.append((p, p + 20))
    out.append(Series("heavy_tails", _regular(), x, wins))
    # slow drifts: not anomalies
    out.append(Series("drift", _regular(), 30 + _noise(rng) + 0.004 * t))
    x = 10 + 3 * np.sin(2 * np.pi * t / 96) + 0.5 * _noise(rng) - 0.002 * t
    out.append(Series("drift_seasonal", _regular(), x))
    # missing values: spikes in a series with 5% NaN and a 100-value outage
    s = spiky("missing", 1.0, 40 + _noise(rng))
    s.x[rng.random(N) < 0.05] = np.nan
    s.x[1200:1300] = np.nan
    s.windows = [w for w in s.windows if np.isfinite(s.x[w[0]])]
    out.append(s)
    # seasonal with missing values (NaN keeps its slot)
    period = 96
    clean = 20 + 4 * np.sin(2 * np.pi * t / period)
    x = clean + 0.4 * _noise(rng)
    wins = []
    for p in _positions(rng, 4, lo=1200, gap=600):
        x[p : p + 12] = clean[p + period // 2 : p + period // 2 + 12]
        wins.append((p, p + 20))
    x[rng.random(N) < 0.05] = np.nan
    out.append(Series("seasonal_missing", _regular(), x, wins))
    # irregular timestamps (exponential gaps) with 10% of the rows dropped, spikes and a shift
    base = 70 + _noise(rng)
    base[2500:] += 6.0
    s = spiky("irregular", 1.0, base)
    s.windows.append((2500, 2550))
    s.windows.sort()
    gaps = rng.exponential(_MINUTE, N).astype(np.int64) + 1
    s.time = 1_700_000_000_000 + np.cumsum(gaps)
    keep = rng.random(N) >= 0.1
    for a, _b in s.windows:
        keep[a] = True
    new_index = np.cumsum(keep) - 1
    s.windows = [(int(new_index[a]), int(new_index[min(b, N - 1)])) for a, b in s.windows]
    s.time, s.x = s.time[keep], s.x[keep]
    out.append(s)
    return out


def score_alerts(runs: Iterable[tuple[Series, Array]]) -> Result:
    """NAB-style score, precision and recall of alerts (bool per row) over series."""
    raw = null = perfect = 0.0
    alerts = false = windows = detected = 0
    delays: list[int] = []
    for series, alert in runs:
        idx = np.flatnonzero(alert)
        alerts += len(idx)
        inside = np.zeros(len(idx), dtype=bool)
        for a, b in series.windows:
            windows += 1
            null -= 1.0
            perfect += _reward(a, a, b)
            hit = (idx >= a) & (idx < b)
            inside |= hit
            if hit.any():
                first = int(idx[hit][0])
                raw += _reward(first, a, b)
                detected += 1
                delays.append(first - a)
            else:
                raw -= 1.0
        false += int((~inside).sum())
        raw -= 0.11 * int((~inside).sum())
    span = perfect - null
    nab = 100.0 * (raw - null) / span if span > 0 else 0.0
    nab_low_fp = 100.0 * (raw - 0.11 * false - null) / span if span > 0 else 0.0
    return Result(
        nab=nab,
        nab_low_fp=nab_low_fp,
        precision=(alerts - false) / alerts if alerts else 0.0,
        recall=detected / windows if windows else 0.0,
        alerts=alerts,
        false_alerts=false,
        windows=windows,
        detected=detected,
        mean_delay=float(np.mean(delays)) if delays else float("nan"),
    )


def _reward(i: int, a: int, b: int) -> float:
    y = (i - (b - 1)) / max(b - a, 1)
    return float(2.0 / (1.0 + np.exp(5.0 * y)) - 1.0)
