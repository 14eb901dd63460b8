"""Drift in the mean: Page-Hinkley, CUSUM and ADWIN, vectorized over each key's rows.

**Page-Hinkley and CUSUM** standardize a key's values by the mean and standard deviation of
its first ``warmup`` values (after every drift, the next ``warmup`` values), then run two
one-sided charts in those warm-up sigmas::

    up    S+ = max(0, S+ + z - delta)          z = (x - reference) / sigma
    down  S- = max(0, S- - z - delta)          drift when max(S+, S-) > threshold

CUSUM (Page 1954) takes the warm-up mean as the reference; Page-Hinkley takes the running
mean of all values since the reset (River's ``PageHinkley`` with ``alpha=1``, in sigmas
instead of raw units, so one threshold fits any scale). The charts are solved for a whole
run of rows with the Lindley form (:func:`~tidal.ml.detect.changepoint.cusum_path`, shared
with the ``changepoint`` anomaly detector), steps rounded to a grid of ``2**-20``. After a
drift the key starts a new warm-up. A key whose warm-up values are all equal has
``sigma = 0`` and reports a drift at its first different value.

**ADWIN** (Bifet & Gavaldà 2007) keeps a window of recent values and drops its older part
when two sub-windows' means differ by more than
``eps = sqrt(2 m var ln(2 ln(n) / delta)) + 2/3 m ln(2 ln(n) / delta)`` with
``m = 1/n0 + 1/n1`` (River's bound, without its ``min_window_length`` offsets). Like
River's, it tests every ``clock`` values. Here the window is a list of *blocks* of ``clock``
values (count, sum, sum of squares), and each test tries the cuts at block boundaries
``1..8`` blocks from the newest end and then every ~15% further (the resolution of ADWIN's
exponential histogram); the window holds at most ``max_blocks`` blocks. With prefix sums
over the blocks, all the tests of a batch are one ``(block ends, cuts)`` numpy array. At a
drift the window drops its oldest blocks up to the oldest cut that still tests positive,
until none does. ``score`` is the largest ``|mean0 - mean1| / eps`` of a test, at the rows
that end a block (NaN at the others).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.r_[rng.normal(0, 1, 4000), rng.normal(0.8, 1, 2000)]
    >>> keys = np.zeros(len(x), dtype=np.int64)
    >>> [np.flatnonzero(d.update(x, keys).drift).tolist() for d in (CUSUM(), ADWIN())]
    [[4016], [4031]]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError
from tidal.ml.detect.changepoint import GRID, cusum_path
from tidal.ml.detect.drift import CHUNK, SeriesDrift, first_true

__all__ = ["ADWIN", "CUSUM", "PageHinkley"]

_N, _S1, _S2, _X0 = range(4)


class _Charts(SeriesDrift):
    """Two one-sided charts in warm-up sigmas around a reference mean (see the module)."""

    running_mean = False

    def __init__(self, *, warmup: int, delta: float, threshold: float) -> None:
        super().__init__()
        if warmup < 2:
            msg = f"{self.kind}: warmup must be >= 2 values, got {warmup}"
            raise ConfigError(msg)
        if not (delta >= 0 and threshold > 0):
            msg = f"{self.kind}: need delta >= 0 and threshold > 0, got {delta}, {threshold}"
            raise ConfigError(msg)
        self.warmup = int(warmup)
        self.delta = float(delta)
        self.threshold = float(threshold)

    def params(self) -> dict[str, Any]:
        """Parameters (JSON)."""
        return {"warmup": self.warmup, "delta": self.delta, "threshold": self.threshold}

    def initial(self) -> dict[str, Array]:
        """Counters since the reset, the reference (mean, sigma) and the two charts."""
        return {"acc": np.zeros(4), "ref": np.full(2, np.nan), "chart": np.zeros(2)}

    def run(self, state: dict[str, Array], x: Array) -> tuple[Array, Array]:
        """Warm up, chart, and start afresh after every drift."""
        m = len(x)
        drift, score = np.zeros(m, dtype=bool), np.full(m, np.nan)
        acc, pos = state["acc"], 0
        while pos < m:
            if acc[_N] == 0:
                acc[_X0] = x[pos]
            n = int(acc[_N])
            if n < self.warmup:
                take = min(self.warmup - n, m - pos)
                seg = x[pos : pos + take] - acc[_X0]
                acc[_N] += take
                acc[_S1] += float(seg.sum())
                acc[_S2] += float((seg * seg).sum())
                pos += take
                if acc[_N] == self.warmup:
                    mu = acc[_S1] / self.warmup
                    var = max(acc[_S2] / self.warmup - mu * mu, 0.0) * self.warmup
                    state["ref"][:] = (mu, np.sqrt(var / (self.warmup - 1)))
                continue
            seg = x[pos : pos + CHUNK] - acc[_X0]
            csum = acc[_S1] + np.cumsum(seg)
            if self.running_mean:
                mean: Array | float = csum / (acc[_N] + np.arange(1, len(seg) + 1))
            else:
                mean = float(state["ref"][0])
            sigma = float(state["ref"][1])
            with np.errstate(divide="ignore", invalid="ignore"):
                z = (seg - mean) / sigma
            z = np.nan_to_num(z, nan=0.0, posinf=1e12, neginf=-1e12)
            up = np.round((z - self.delta) * GRID) / GRID
            down = np.round((-z - self.delta) * GRID) / GRID
            s_up = cusum_path(float(state["chart"][0]), up)
            s_dn = cusum_path(float(state["chart"][1]), down)
            stat = np.maximum(s_up, s_dn) / self.threshold
            hit = first_true(stat > 1.0)
            end = len(seg) if hit < 0 else hit + 1
            score[pos : pos + end] = stat[:end]
            if hit >= 0:
                drift[pos + hit] = True
                acc[:] = 0.0
                state["ref"][:] = np.nan
                state["chart"][:] = 0.0
            else:
                acc[_N] += end
                acc[_S1] = float(csum[-1])
                acc[_S2] += float((seg * seg).sum())
                state["chart"][:] = (s_up[-1], s_dn[-1])
            pos += end
        return drift, score


class PageHinkley(_Charts):
    """Page-Hinkley test around the running mean, in warm-up sigmas, per key.

    Args:
        warmup: values that estimate sigma after each reset (no test during them).
        delta: allowance per value, in sigmas (changes smaller than ``delta`` are ignored).
        threshold: chart value (in sigmas) that signals a drift.

    Example:
        >>> import numpy as np
        >>> x = np.r_[np.tile([0.0, 1.0], 100), np.full(20, 3.0)]
        >>> out = PageHinkley(warmup=10, threshold=5).update(x, np.zeros(220, dtype=np.int64))
        >>> np.flatnonzero(out.drift).tolist()
        [200]
    """

    kind = "ph"
    running_mean = True

    def __init__(self, *, warmup: int = 100, delta: float = 0.1, threshold: float = 35.0) -> None:
        super().__init__(warmup=warmup, delta=delta, threshold=threshold)


class CUSUM(_Charts):
    """Page's two-sided CUSUM around the warm-up mean, in warm-up sigmas, per key.

    Args:
        warmup: values that estimate the reference mean and sigma after each reset.
        delta: allowance ``k`` per value, in sigmas (half the shift to detect fastest).
        threshold: decision interval ``h``, in sigmas.

    Example:
        >>> import numpy as np
        >>> x = np.r_[np.tile([0.0, 1.0], 100), np.full(20, 3.0)]
        >>> out = CUSUM(warmup=10, threshold=5).update(x, np.zeros(220, dtype=np.int64))
        >>> np.flatnonzero(out.drift).tolist()
        [201]
    """

    kind = "cusum"

    def __init__(self, *, warmup: int = 100, delta: float = 0.5, threshold: float = 12.0) -> None:
        super().__init__(warmup=warmup, delta=delta, threshold=threshold)


def _cut_grid(max_blocks: int) -> Array:
    """Cut distances (in blocks from the newest end): 1..8, then about 15% apart."""
    d = list(range(1, 9))
    while d[-1] < max_blocks:
        d.append(max(d[-1] + 1, round(d[-1] * 1.15)))
    return np.asarray([v for v in d if v < max_blocks], dtype=np.int64)


class ADWIN(SeriesDrift):
    """ADWIN over blocks of ``clock`` values, per key (see the module).

    Args:
        delta: confidence of the cut test (smaller: fewer false alarms, later detection).
        clock: values per block; the window is tested once per block.
        max_blocks: the most blocks the window holds (``clock * max_blocks`` values).

    Example:
        >>> import numpy as np
        >>> x = np.r_[np.zeros(640), np.ones(64)]
        >>> out = ADWIN().update(x, np.zeros(704, dtype=np.int64))
        >>> np.flatnonzero(out.drift).tolist(), float(out.score[639])
        ([671], 0.0)
    """

    kind = "adwin"

    def __init__(self, *, delta: float = 0.002, clock: int = 32, max_blocks: int = 1024) -> None:
        super().__init__()
        if not 0 < delta < 1 or clock < 1 or max_blocks < 2:
            msg = (
                f"adwin: need 0 < delta < 1, clock >= 1 and max_blocks >= 2, got {delta}, "
                f"{clock}, {max_blocks}"
            )
            raise ConfigError(msg)
        self.delta = float(delta)
        self.clock = int(clock)
        self.max_blocks = int(max_blocks)
        self.cuts = _cut_grid(self.max_blocks)

    def params(self) -> dict[str, Any]:
        """Parameters (JSON)."""
        return {"delta": self.delta, "clock": self.clock, "max_blocks": self.max_blocks}

    def initial(self) -> dict[str, Array]:
        """The window's blocks (count, sum, sum of squares), the open block, the centre."""
        return {"blocks": np.zeros(0), "open": np.zeros(3), "x0": np.full(1, np.nan)}

    def run(self, state: dict[str, Array], x: Array) -> tuple[Array, Array]:
        """Close blocks, test every block end at once, shrink the window at drifts."""
        m = len(x)
        drift, score = np.zeros(m, dtype=bool), np.full(m, np.nan)
        if np.isnan(state["x0"][0]) and m:
            state["x0"][0] = x[0]
        xc = x - state["x0"][0]
        pos = 0
        while pos < m:
            opened = state["open"]
            need = self.clock - int(opened[0])
            if m - pos < need:
                seg = xc[pos:]
                opened += (len(seg), seg.sum(), (seg * seg).sum())
                break
            nb = min(1 + (m - pos - need) // self.clock, max(1, CHUNK // self.clock))
            stop = pos + need + (nb - 1) * self.clock
            new = self._blocks(opened, xc[pos:stop], need, nb)
            window = state["blocks"].reshape(-1, 3)
            blocks = np.concatenate((window, new))
            ratio = self._test(blocks, len(window))
            ends = pos + need - 1 + self.clock * np.arange(nb)
            hit = first_true(ratio >= 1.0)
            last = nb if hit < 0 else hit + 1
            score[ends[:last]] = ratio[:last]
            end = len(window) + last
            keep = blocks[max(0, end - self.max_blocks) : end]
            if hit >= 0:
                drift[ends[hit]] = True
                keep = self._shrink(keep)
            state["blocks"] = keep.reshape(-1)
            state["open"] = np.zeros(3)
            pos = int(ends[last - 1]) + 1
        return drift, score

    def _blocks(self, opened: Array, vals: Array, need: int, nb: int) -> Array:
        out = np.empty((nb, 3))
        head = vals[:need]
        out[0] = opened + (need, head.sum(), (head * head).sum())
        if nb > 1:
            rest = vals[need:].reshape(nb - 1, self.clock)
            out[1:, 0] = self.clock
            out[1:, 1] = rest.sum(axis=1)
            out[1:, 2] = (rest * rest).sum(axis=1)
        return out

    def _ratios(self, pre: Array, start: Array, end: Array) -> Array:
        """``|mean0 - mean1| / eps`` for window ``[start, end)`` (blocks) and every cut."""
        d = self.cuts[None, :]
        cut = end[:, None] - d
        valid = cut > start[:, None]
        cut = np.where(valid, cut, end[:, None] - 1)
        tot = pre[end] - pre[start]
        new = pre[end][:, None, :] - pre[cut]
        old = tot[:, None, :] - new
        n0, n1, n = old[..., 0], new[..., 0], tot[:, 0:1]
        with np.errstate(divide="ignore", invalid="ignore"):
            var = np.maximum(tot[:, 2:3] / n - (tot[:, 1:2] / n) ** 2, 0.0)
            dd = np.log(2.0 * np.log(np.maximum(n, 3.0)) / self.delta)
            mrec = 1.0 / n0 + 1.0 / n1
            eps = np.sqrt(2.0 * mrec * var * dd) + 2.0 / 3.0 * dd * mrec
            r = np.abs(old[..., 1] / n0 - new[..., 1] / n1) / eps
        r = np.where(valid & (n0 > 0) & (n1 > 0), np.nan_to_num(r, nan=0.0, posinf=1e12), 0.0)
        return r

    def _test(self, blocks: Array, have: int) -> Array:
        """The largest ratio at each new block's end (windows capped at ``max_blocks``)."""
        pre = np.zeros((len(blocks) + 1, 3))
        np.cumsum(blocks, axis=0, out=pre[1:])
        end = np.arange(have + 1, len(blocks) + 1)
        start = np.maximum(end - self.max_blocks, 0)
        out: Array = self._ratios(pre, start, end).max(axis=1)
        return out

    def _shrink(self, blocks: Array) -> Array:
        """Drop the oldest blocks up to the oldest positive cut, until no cut is positive."""
        while len(blocks) > 1:
            pre = np.zeros((len(blocks) + 1, 3))
            np.cumsum(blocks, axis=0, out=pre[1:])
            end = np.array([len(blocks)])
            r = self._ratios(pre, np.zeros(1, dtype=np.int64), end)[0]
            pos = np.flatnonzero(r >= 1.0)
            if not len(pos):
                break
            blocks = blocks[len(blocks) - int(self.cuts[pos.max()]) :]
        return blocks
