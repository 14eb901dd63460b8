"""Drift in the distribution: KSWIN and the population stability index, per key.

**KSWIN** (Raab et al. 2020, River's ``KSWIN``) keeps each key's last ``window`` values. At
every value, once the window is full, it compares the newest ``stat_size`` values with
``stat_size`` values drawn without replacement from the older part of the window, by a
two-sample Kolmogorov-Smirnov test; a drift is a p-value at or below ``alpha``. The window
then keeps only its newest ``stat_size`` values. For two samples of equal size ``n`` the
exact p-value is a function of ``D = k / n`` alone (Gnedenko & Korolyuk)::

    P(D >= k/n) = 2 * sum_{j >= 1} (-1)**(j+1) * C(2n, n - j*k) / C(2n, n)

so the test is ``D >= D_crit``, with ``D_crit`` worked out once. All of a batch's tests are
one sorted ``(tests, 2 * stat_size)`` array. The draws come from a table of ``997`` seeded
rows, indexed by the key's test count, so a run does not depend on batch boundaries.
``score`` is ``D / D_crit``. The defaults differ from River's (``alpha=0.005``, 100 and 30
values): at ``alpha=0.005`` a test at every value gives several false alarms per 10,000
stationary values, and at ``alpha=1e-4`` samples of 30 miss most changes; 100-value samples
at ``alpha=1e-4`` keep false alarms under 1 per 10,000 and find a one-sigma shift.

**PSI** compares the histogram of each tumbling window of ``window`` values with the
histogram of a reference (the key's first ``reference`` values, and after every drift the
next ``reference`` values), over the reference's ``bins`` quantile bins::

    PSI = sum_i (p_i - q_i) * ln((p_i + eps) / (q_i + eps))

A drift is ``PSI > threshold``. The rule of thumb reads PSI < 0.1 as "no change" and > 0.25
as "a large change"; ``threshold=0.1`` with 1,000 reference and 500 window values gave no
false alarm in 200,000 stationary values of each of a Gaussian, a uniform and two Bernoulli
streams (the null PSI is about ``(bins - 1) * (1/1000 + 1/500) = 0.027``). ``score`` is ``PSI /
threshold`` at each window's last row (NaN at the others).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.r_[rng.normal(0, 1, 3000), rng.normal(0, 3, 1500)]   # the variance grows
    >>> keys = np.zeros(len(x), dtype=np.int64)
    >>> np.flatnonzero(PSI().update(x, keys).drift).tolist()    # at the end of its window
    [3499]
"""

from __future__ import annotations

from math import comb
from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError
from tidal.ml.detect.drift import CHUNK, SeriesDrift, first_true

__all__ = ["KSWIN", "PSI", "ks_pvalue"]

_TABLE_ROWS = 997


def ks_pvalue(k: int, n: int) -> float:
    """Exact two-sided p-value ``P(D >= k/n)`` of the two-sample KS test, both samples ``n``.

    Example:
        >>> round(ks_pvalue(14, 30), 5), ks_pvalue(0, 30)
        (0.00253, 1.0)
    """
    if k <= 0:
        return 1.0
    total = comb(2 * n, n)
    s = sum((-1) ** (j + 1) * comb(2 * n, n - j * k) for j in range(1, n // k + 1))
    return float(min(1.0, 2.0 * s / total))


class KSWIN(SeriesDrift):
    """Kolmogorov-Smirnov windowing drift detector, per key (see the module).

    Args:
        alpha: p-value at or below which a test signals a drift.
        window: values kept per key.
        stat_size: size of the newest sample and of the older sample compared with it.
        seed: seeds the table of older-sample draws.

    Example:
        >>> import numpy as np
        >>> x = np.r_[np.arange(100.0) % 7, np.full(40, 50.0)]
        >>> out = KSWIN(window=100, stat_size=30).update(x, np.zeros(140, dtype=np.int64))
        >>> np.flatnonzero(out.drift).tolist()
        [116]
    """

    kind = "kswin"

    def __init__(
        self, *, alpha: float = 0.0001, window: int = 300, stat_size: int = 100, seed: int = 0
    ) -> None:
        super().__init__()
        if not 0 < alpha < 1 or stat_size < 2 or window < 2 * stat_size:
            msg = (
                f"kswin: need 0 < alpha < 1, stat_size >= 2 and window >= 2 * stat_size, got "
                f"alpha={alpha}, window={window}, stat_size={stat_size}"
            )
            raise ConfigError(msg)
        self.alpha = float(alpha)
        self.window = int(window)
        self.stat_size = int(stat_size)
        self.seed = int(seed)
        n = self.stat_size
        k = next((k for k in range(1, n + 1) if ks_pvalue(k, n) <= self.alpha), n + 1)
        self.d_crit = k / n
        rng = np.random.default_rng(self.seed)
        pool = self.window - n
        self.draws = np.stack([rng.permutation(pool)[:n] for _ in range(_TABLE_ROWS)])
        self._labels = np.r_[np.ones(n), -np.ones(n)]

    def params(self) -> dict[str, Any]:
        """Parameters (JSON)."""
        return {
            "alpha": self.alpha,
            "window": self.window,
            "stat_size": self.stat_size,
            "seed": self.seed,
        }

    def initial(self) -> dict[str, Array]:
        """The window and the number of tests done."""
        return {"win": np.zeros(0), "tests": np.zeros(1)}

    def statistic(self, older: Array, newer: Array) -> Array:
        """KS statistic ``D`` of each row pair of ``older`` and ``newer`` (``(t, n)`` each)."""
        vals = np.concatenate((older, newer), axis=1)
        o = np.argsort(vals, axis=1, kind="stable")
        sv = np.take_along_axis(vals, o, axis=1)
        c = np.abs(np.cumsum(self._labels[o], axis=1)) / self.stat_size
        c[:, :-1] *= sv[:, 1:] != sv[:, :-1]  # only where a run of equal values ends
        out: Array = c.max(axis=1)
        return out

    def run(self, state: dict[str, Array], x: Array) -> tuple[Array, Array]:
        """Every full-window value is tested; the window shrinks to ``stat_size`` at a drift."""
        m, w, n = len(x), self.window, self.stat_size
        drift, score = np.zeros(m, dtype=bool), np.full(m, np.nan)
        pos = 0
        while pos < m:
            win = state["win"]
            buf = np.concatenate((win, x[pos : pos + max(CHUNK, 2 * w)]))
            first = max(w, len(win) + 1)  # the first full window that holds a new value
            if first > len(buf):
                state["win"] = buf
                break
            ends = np.arange(first, len(buf) + 1)  # window = buf[end - w : end]
            newer = buf[ends[:, None] - n + np.arange(n)]
            t0 = int(state["tests"][0])
            rows = self.draws[(t0 + np.arange(len(ends))) % _TABLE_ROWS]
            older = buf[(ends - w)[:, None] + rows]
            stat = self.statistic(older, newer) / self.d_crit
            hit = first_true(stat >= 1.0)
            last = len(ends) if hit < 0 else hit + 1
            rows_at = ends[:last] - len(win) - 1 + pos
            score[rows_at] = stat[:last]
            state["tests"][0] = t0 + last
            end = int(ends[last - 1])
            if hit >= 0:
                drift[rows_at[-1]] = True
                state["win"] = buf[end - n : end].copy()
            else:
                state["win"] = buf[max(0, len(buf) - w) :].copy()
            pos = int(rows_at[-1]) + 1
        return drift, score


class PSI(SeriesDrift):
    """Population stability index of tumbling windows against a reference, per key.

    Args:
        reference: values that make the reference (after each drift, too).
        window: values per compared window.
        bins: quantile bins of the reference (fewer where values repeat).
        threshold: PSI above which a window signals a drift.
        eps: added to both proportions of a bin, so empty bins stay finite.

    Example:
        >>> import numpy as np
        >>> x = np.r_[np.arange(1000.0) % 10, np.full(500, 3.0)]
        >>> out = PSI().update(x, np.zeros(1500, dtype=np.int64))
        >>> np.flatnonzero(out.drift).tolist(), round(float(out.score[1499]), 1)
        ([1499], 82.9)
    """

    kind = "psi"

    def __init__(
        self,
        *,
        reference: int = 1000,
        window: int = 500,
        bins: int = 10,
        threshold: float = 0.1,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        if reference < bins or window < 1 or bins < 2 or not threshold > 0 or not eps > 0:
            msg = (
                f"psi: need reference >= bins >= 2, window >= 1, threshold > 0 and eps > 0, "
                f"got reference={reference}, window={window}, bins={bins}, "
                f"threshold={threshold}, eps={eps}"
            )
            raise ConfigError(msg)
        self.reference = int(reference)
        self.window = int(window)
        self.bins = int(bins)
        self.threshold = float(threshold)
        self.eps = float(eps)

    def params(self) -> dict[str, Any]:
        """Parameters (JSON)."""
        return {
            "reference": self.reference,
            "window": self.window,
            "bins": self.bins,
            "threshold": self.threshold,
            "eps": self.eps,
        }

    def initial(self) -> dict[str, Array]:
        """Reference values being collected, bin edges and proportions, the open window."""
        return {"ref": np.zeros(0), "edges": np.zeros(0), "q": np.zeros(0), "cur": np.zeros(0)}

    def run(self, state: dict[str, Array], x: Array) -> tuple[Array, Array]:
        """Collect the reference, then test each completed window."""
        m = len(x)
        drift, score = np.zeros(m, dtype=bool), np.full(m, np.nan)
        pos = 0
        while pos < m:
            if len(state["q"]) == 0:
                take = min(self.reference - len(state["ref"]), m - pos)
                state["ref"] = np.concatenate((state["ref"], x[pos : pos + take]))
                pos += take
                if len(state["ref"]) == self.reference:
                    self._build(state)
                continue
            edges, q = state["edges"], state["q"]
            nbin = len(q)
            cur = state["cur"] if len(state["cur"]) else np.zeros(nbin + 1)
            b = np.searchsorted(edges, x[pos : pos + max(CHUNK, 2 * self.window)], side="right")
            need = self.window - int(cur[-1])
            if len(b) < need:
                cur[:nbin] += np.bincount(b, minlength=nbin)
                cur[-1] += len(b)
                state["cur"] = cur
                break
            nw = 1 + (len(b) - need) // self.window
            wid = np.zeros(need + (nw - 1) * self.window, dtype=np.int64)
            wid[need:] = 1 + np.arange((nw - 1) * self.window) // self.window
            counts = np.bincount(wid * nbin + b[: len(wid)], minlength=nw * nbin)
            counts = counts.reshape(nw, nbin).astype(np.float64)
            counts[0] += cur[:nbin]
            p = counts / self.window
            psi = ((p - q) * np.log((p + self.eps) / (q + self.eps))).sum(axis=1)
            stat = psi / self.threshold
            ends = pos + need - 1 + self.window * np.arange(nw)
            hit = first_true(stat > 1.0)
            last = nw if hit < 0 else hit + 1
            score[ends[:last]] = stat[:last]
            state["cur"] = np.zeros(0)
            if hit >= 0:
                drift[ends[hit]] = True
                for f in ("ref", "edges", "q"):
                    state[f] = np.zeros(0)
            pos = int(ends[last - 1]) + 1
        return drift, score

    def _build(self, state: dict[str, Array]) -> None:
        ref = state["ref"]
        inner = np.quantile(ref, np.arange(1, self.bins) / self.bins)
        edges = np.unique(inner)
        b = np.searchsorted(edges, ref, side="right")
        state["edges"] = edges
        state["q"] = np.bincount(b, minlength=len(edges) + 1) / len(ref)
        state["ref"] = np.zeros(0)
