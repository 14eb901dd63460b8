"""Gated EWMA z-score: a baseline that does not learn what it flags (:class:`GatedZ`).

Per key, an exponentially weighted mean and variance; a row's deviation is
``|x - mean| / max(std, min_scale)`` against the state *before* it. Unlike
:class:`~tidal.ml.detect.baseline.EWMA`, a row at or above ``gate`` deviations is not
learned: a spike or a faulty episode neither drags the mean nor inflates the variance, so
the key is not blind after it (winsorizing into the baseline, the usual alternative, widens
the variance on every anomalous row). A lasting change of level is still accepted: after
``patience`` gated rows in a row the key's baseline restarts from the current value and
warms up again.

Learning weight ``w = max(alpha, 1 / (n + 1))``: the first rows give an exact running mean
and (population) variance, then a memory of about ``1 / alpha`` rows::

    d = x - mean;  mean += w * d;  var = (1 - w) * (var + w * d * d)

It suits smooth features (window means, rates) whose faults last several rows, as in
``tidal demo``, where it finds every injected fault with no false alarm; on raw, spiky
series the robust block baselines do better (see the README's evaluation table).

Where numba is installed, one compiled loop runs over the rows in arrival order. The numpy
engine processes a batch in rounds, round ``r`` holding every key's ``r``-th row, so its
Python loop runs as many times as the busiest key has rows in the batch (fast with many
keys, one round per row on one series). Both give the same bits.

Example:
    >>> det = GatedZ(alpha=0.1, warmup=2, gate=3.0)
    >>> out = det.score(np.array([[0.0], [2.0], [1.0], [9.0]]), np.zeros(4, np.int64))
    >>> [round(d, 2) for d in out.deviation.tolist()]
    [0.0, 0.0, 0.0, 9.8]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError
from tidal.ml.detect.base import Scored, array_state, grow, layout, load_arrays
from tidal.ml.detect.kernels import ENGINES, gated_pass, has_numba

__all__ = ["GatedZ"]


class GatedZ:
    """EWMA mean and variance per key, not learning rows at or above ``gate`` deviations.

    Args:
        alpha: EWMA weight of a new row, in ``(0, 1]``.
        warmup: rows a key must have learned before it is scored (deviation 0 before).
        gate: deviation at or above which a row is not learned.
        patience: gated rows in a row after which the key's baseline restarts from the
            current value; ``None`` never restarts.
        range: deviation at which a value leaves the expected range (``low``/``high``).
        min_scale: floor on the standard deviation.
        engine: ``"numba"`` (one compiled loop over the rows; the ``learn`` extra),
            ``"numpy"`` (rounds), ``"python"`` (the loop uncompiled, for tests) or
            ``"auto"`` (numba where it imports); the same scores bit for bit, and not a
            parameter of the state (:mod:`tidal.ml.detect.kernels`).

    Raises:
        ConfigError: for parameters out of range.
    """

    kind = "gated_z"
    multivariate = False

    def __init__(
        self,
        *,
        alpha: float = 0.05,
        warmup: int = 10,
        gate: float = 4.0,
        patience: int | None = 30,
        range: float = 4.0,
        min_scale: float = 1e-9,
        engine: str = "auto",
    ) -> None:
        if engine not in ENGINES:
            msg = f"gated_z: engine must be one of {', '.join(ENGINES)}, got {engine!r}"
            raise ConfigError(msg)
        if engine == "numba" and not has_numba():
            msg = "gated_z: engine 'numba' needs numba: pip install 'tidal-stream[learn]'"
            raise ConfigError(msg)
        self.engine = ("numba" if has_numba() else "numpy") if engine == "auto" else engine
        if not 0.0 < alpha <= 1.0:
            msg = f"gated_z: alpha must be in (0, 1], got {alpha!r}"
            raise ConfigError(msg)
        if warmup < 1:
            msg = f"gated_z: warmup must be >= 1 row, got {warmup!r}"
            raise ConfigError(msg)
        if patience is not None and patience < 1:
            msg = f"gated_z: patience must be >= 1 row or None, got {patience!r}"
            raise ConfigError(msg)
        if not (gate > 0 and range > 0 and min_scale > 0):
            msg = f"gated_z: gate, range, min_scale must be > 0, got {gate}, {range}, {min_scale}"
            raise ConfigError(msg)
        self.alpha = float(alpha)
        self.warmup = int(warmup)
        self.gate = float(gate)
        self.patience = None if patience is None else int(patience)
        self.range = float(range)
        self.min_scale = float(min_scale)
        self.n: Array = np.zeros(0, dtype=np.int64)
        self.mean: Array = np.zeros(0, dtype=np.float64)
        self.var: Array = np.zeros(0, dtype=np.float64)
        self.streak: Array = np.zeros(0, dtype=np.int64)

    def score(self, x: Array, keys: Array) -> Scored:
        """Deviation of every row from its key's state before it; then learn."""
        if x.ndim != 2 or x.shape[1] != 1:
            msg = f"gated_z scores one value column, got shape {x.shape}"
            raise ConfigError(msg)
        n = len(keys)
        dev, low, high = np.zeros(n), np.full(n, np.nan), np.full(n, np.nan)
        if n == 0:
            return Scored(dev, low, high)
        cap = int(keys.max()) + 1
        self.n, self.mean = grow(self.n, cap), grow(self.mean, cap)
        self.var, self.streak = grow(self.var, cap), grow(self.streak, cap)
        if self.engine != "numpy":
            dev, low, high = gated_pass(
                x[:, 0],
                keys,
                alpha=self.alpha,
                warmup=self.warmup,
                gate=self.gate,
                patience=self.patience,
                range_=self.range,
                min_scale=self.min_scale,
                state=(self.n, self.mean, self.var, self.streak),
                compiled=self.engine == "numba",
            )
            return Scored(dev, low, high)
        lay = layout(keys)
        sorted_rows = lay.order
        by_round = np.argsort(lay.rank, kind="stable")
        cuts = np.flatnonzero(np.diff(lay.rank[by_round])) + 1
        values = x[:, 0]
        with np.errstate(over="ignore", invalid="ignore"):
            for part in np.split(by_round, cuts):
                rows = sorted_rows[part]
                self._round(rows, keys[rows], values[rows], dev, low, high)
        return Scored(dev, low, high)

    def _round(
        self, rows: Array, k: Array, x: Array, dev: Array, low: Array, high: Array
    ) -> None:
        """Score and learn one row per key (the keys in ``k`` are distinct)."""
        n, mean, var = self.n[k], self.mean[k], self.var[k]
        std = np.maximum(np.sqrt(var), self.min_scale)
        warm = n >= self.warmup
        d = np.where(warm, np.abs(x - mean) / std, 0.0)
        dev[rows] = d
        low[rows] = np.where(warm, mean - self.range * std, np.nan)
        high[rows] = np.where(warm, mean + self.range * std, np.nan)
        gated = warm & (d >= self.gate)
        w = np.maximum(self.alpha, 1.0 / (n + 1))
        step = x - mean
        new_n, new_mean = n + 1, mean + w * step
        new_var = (1.0 - w) * (var + step * w * step)
        streak = np.where(gated, self.streak[k] + 1, 0)
        learn = ~gated
        if self.patience is not None:
            restart = streak >= self.patience
            new_n[restart], new_mean[restart], new_var[restart] = 1, x[restart], 0.0
            streak[restart] = 0
            learn |= restart
        self.streak[k] = streak
        kk = k[learn]
        self.n[kk], self.mean[kk], self.var[kk] = new_n[learn], new_mean[learn], new_var[learn]

    def forget(self, ids: Array) -> None:
        """Clear the state of keys ``ids`` (they warm up again when they come back)."""
        ids = ids[ids < len(self.n)]
        self.n[ids], self.mean[ids], self.var[ids], self.streak[ids] = 0, 0.0, 0.0, 0

    def params(self) -> dict[str, Any]:
        """Parameters (JSON)."""
        return {
            "alpha": self.alpha,
            "warmup": self.warmup,
            "gate": self.gate,
            "patience": self.patience,
            "range": self.range,
            "min_scale": self.min_scale,
        }

    def snapshot(self) -> dict[str, Any]:
        """State arrays and parameters."""
        return array_state(self, "n", "mean", "var", "streak")

    def restore(self, snap: dict[str, Any]) -> None:
        """Load :meth:`snapshot` (raises :class:`~tidal.errors.StateError` on a mismatch)."""
        one: tuple[int, ...] = ()
        load_arrays(
            self,
            snap,
            n=(np.int64, one),
            mean=(np.float64, one),
            var=(np.float64, one),
            streak=(np.int64, one),
        )
