"""Latency-SLO batching: chunk sizes that keep model calls within a latency budget.

An event scored in a model call waits for the whole call, so the model's share of an event's
latency is the duration of the call it was in. A call's duration grows with its size, about
linearly: ``t(n) ≈ a + b·n`` (``a``: the fixed cost of a call — Python, the runtime's
dispatch; ``b``: the cost per row). Throughput ``n / t(n)`` grows with ``n``, so the best
chunk size under a budget ``L`` is the largest ``n`` whose call time stays under ``L`` — not
on average, but at the chosen quantile (p99) of the call-time noise.

:class:`LatencyBatcher` fits that model to the calls it has measured and picks the size::

    samples (n_i, t_i), the last ``window`` calls
    a, b   = least squares fit of t on n            (while the slope is clear; else the
                                                     last fit, scaled to the window)
    q      = p99 of t_i / (a + b·n_i)               (the noise, relative to the fit)
    target = floor((L / q - a) / b)                 clamped to [1, max_batch] and to at
                                                     most ``growth`` × the largest n seen

The growth cap explores upwards step by step instead of trusting the straight line far
beyond the sizes measured (caches and memory bandwidth bend it). A call over the budget
refits at once, and three calls in a row above the fitted p99 line restart the window from
them, so the size comes down within a few calls when the model or the machine gets slower;
the caller asks for the size again before every chunk, so this happens within a batch.
Measuring real calls, rather than assuming a cost, is the point: the same model costs
twice as much on a busy machine.

A fitted model was chosen over AIMD (additive increase, multiplicative decrease, as in
TCP): AIMD finds the budget by crossing it, once per saw-tooth, so the share of calls over
the budget is fixed by the step sizes, and keeping it under 1 % makes convergence slow.

Example:
    >>> b = LatencyBatcher(0.001)                     # a 1 ms budget
    >>> for n in (1, 4, 16, 64, 256, 1024):           # calls cost 20 µs + 1 µs per row
    ...     b.record(n, 20e-6 + 1e-6 * n)
    >>> b.target
    980
    >>> b.split(2000)
    [667, 667, 666]
"""

from __future__ import annotations

import math

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError

__all__ = ["LatencyBatcher", "split_rows"]

_CHANGED = 3
"""Calls in a row above the fitted p99 line that mean the cost has changed."""


def _quantile(x: Array, q: float) -> float:
    """The order statistic at ``q`` (np.quantile interpolates and is ten times slower)."""
    k = min(len(x) - 1, max(math.ceil(q * len(x)) - 1, 0))
    return float(np.partition(x, k)[k])


def split_rows(total: int, size: int) -> list[int]:
    """Sizes of the fewest chunks of at most ``size`` rows, as equal as possible.

    Example:
        >>> split_rows(10, 4), split_rows(3, 4), split_rows(0, 4)
        ([4, 3, 3], [3], [])
    """
    if total <= 0:
        return []
    k = -(-total // max(size, 1))
    base, extra = divmod(total, k)
    return [base + 1] * extra + [base] * (k - extra)


class LatencyBatcher:
    """Chooses chunk sizes so that a model call's duration stays under ``budget`` seconds.

    Args:
        budget: the latency budget of one model call, in seconds.
        max_batch: the largest chunk (``None``: no limit but the growth cap).
        quantile: the quantile of call durations that must stay under the budget.
        window: how many recent calls the fit uses.
        min_samples: calls needed before the noise quantile is estimated (until then the
            largest ratio seen is used, which is more careful).
        growth: the most the target may exceed the largest chunk measured, as a factor.
        refit_every: refit after this many calls (and at once after a call over budget).

    Raises:
        ConfigError: for a budget or parameters out of range.
    """

    def __init__(
        self,
        budget: float,
        *,
        max_batch: int | None = None,
        quantile: float = 0.99,
        window: int = 256,
        min_samples: int = 32,
        growth: float = 2.0,
        refit_every: int = 8,
    ) -> None:
        if not budget > 0:
            msg = f"the latency budget must be > 0 seconds, got {budget!r}"
            raise ConfigError(msg)
        if max_batch is not None and max_batch < 1:
            msg = f"max_batch must be >= 1, got {max_batch!r}"
            raise ConfigError(msg)
        if not 0.5 <= quantile < 1.0:
            msg = f"quantile must be in [0.5, 1), got {quantile!r}"
            raise ConfigError(msg)
        if window < 8 or growth <= 1.0 or refit_every < 1 or min_samples < 1:
            msg = "window must be >= 8, growth > 1, refit_every and min_samples >= 1"
            raise ConfigError(msg)
        self.budget = float(budget)
        self.max_batch = max_batch
        self.quantile = quantile
        self.min_samples = min_samples
        self.growth = growth
        self.refit_every = refit_every
        self._n = np.zeros(window, dtype=np.float64)  # a ring of the last calls
        self._t = np.zeros(window, dtype=np.float64)
        self._size = 0
        self._pos = 0
        self.a = 0.0
        """Fitted fixed cost of a call (seconds)."""
        self.b = 0.0
        """Fitted cost per row (seconds)."""
        self.noise = 1.0
        """The ``quantile`` of measured / fitted call time."""
        self.target = 1
        """The chunk size in force: the largest that keeps calls under the budget."""
        self.calls = 0
        self.over_budget = 0
        self.changes = 0
        """How many times a change of cost was detected (and the window restarted)."""
        self._since_fit = 0
        self._high = 0
        self._capped = False

    # -- measurements ---------------------------------------------------------------------
    def record(self, n: int, seconds: float) -> None:
        """Add the measured duration of a call on ``n`` rows; refit when due.

        Three calls in a row above the fitted p99 line (about one in a million while the
        cost stays the same) mean the cost changed: the older calls are dropped from the
        window, so that the fit follows at once instead of after a window's worth of calls.
        """
        if n <= 0:
            return
        seconds = max(float(seconds), 0.0)
        fitted = self.b > 0 and self._size >= self.refit_every
        self._high = self._high + 1 if fitted and seconds > self.predicted(n) else 0
        window = len(self._n)
        self._n[self._pos] = n
        self._t[self._pos] = seconds
        self._pos = (self._pos + 1) % window
        self._size = min(self._size + 1, window)
        self.calls += 1
        self._since_fit += 1
        over = seconds > self.budget
        self.over_budget += over
        if self._high >= _CHANGED:
            last = [(self._pos - k - 1) % window for k in range(_CHANGED)][::-1]
            self._n[:_CHANGED], self._t[:_CHANGED] = self._n[last], self._t[last]
            self._size = self._pos = _CHANGED
            self._high = 0
            self.changes += 1
            self.refit()
        elif (
            over
            or (self._capped and 4 * n >= 3 * self.target)  # exploring upwards
            or self._since_fit >= self.refit_every
            or self._size <= self.refit_every
        ):
            self.refit()

    def refit(self) -> None:
        """Fit ``a`` and ``b`` to the window and choose the target size."""
        self._since_fit = 0
        if not self._size:
            return
        n, t = self._n[: self._size], self._t[: self._size]
        a, b = self._fit(n, t)
        ratio = t / (a + b * n)
        if len(ratio) >= self.min_samples:
            noise = _quantile(ratio, self.quantile)
        else:
            noise = float(ratio.max())
        self.a, self.b, self.noise = a, b, max(noise, 1e-3)
        room = self.budget / self.noise - a
        size = math.floor(room / b + 1e-6) if room > 0 else 1
        explore = int(self.growth * float(n.max()))
        cap = explore if self.max_batch is None else min(explore, self.max_batch)
        self.target = max(1, min(size, cap))
        self._capped = size > explore and cap == explore

    def _fit(self, n: Array, t: Array) -> tuple[float, float]:
        """Least squares when the slope is clear; otherwise rescale the previous fit.

        The slope is clear when it is positive and at least four standard errors from zero.
        With sizes too alike (a low rate: every call scores a row or two; a steady stream
        cut into equal chunks) a line through the points is noise, so the last good fit is
        scaled by the median of measured / fitted: "everything got 20 % slower".
        """
        count = len(n)
        n_mean, t_mean = float(n.mean()), float(t.mean())
        dn = n - n_mean
        sxx = float(np.dot(dn, dn))
        if count >= 4 and sxx > 0:
            b = float(np.dot(dn, t - t_mean)) / sxx
            a = t_mean - b * n_mean
            resid = t - (a + b * n)
            se_b = math.sqrt(float(np.dot(resid, resid)) / (count - 2) / sxx)
            if b > 0 and se_b <= 0.25 * b:
                return max(a, 0.0), b
        if self.b > 0:
            f = _quantile(t / (self.a + self.b * n), 0.5)
            return self.a * f, self.b * f
        return 0.0, max(float(np.mean(t / n)), 1e-12)  # no fit yet: all cost per row

    # -- chunking -------------------------------------------------------------------------
    def split(self, total: int) -> list[int]:
        """Chunk sizes for ``total`` rows: as few chunks as the target allows, equal sizes."""
        return split_rows(total, self.target)

    def predicted(self, n: int) -> float:
        """The fitted p-quantile duration of a call on ``n`` rows (seconds)."""
        return (self.a + self.b * n) * self.noise
