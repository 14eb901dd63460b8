"""Robust baselines: rolling z-score, EWMA and median/MAD over block-granular windows.

All three score a value against a window of the key's recent values, but a window made of
*blocks*: each key's values are cut into consecutive blocks of ``block`` values (by the
key's own count, so batch boundaries do not matter), and each complete block is summarised
once (mean, standard deviation, median, MAD). A value is scored against the ``blocks``
complete blocks before its own block::

    values  | b0 b0 b0 b0 | b1 b1 b1 b1 | b2 b2 b2 b2 | b3 b3 x  .
    window                  <------ blocks=2 ------>     ^ scored against b1, b2

The window therefore lags by at most ``block - 1`` values, which buys two things: the
statistics of a block are computed once for ``block`` values (numpy over ``(n/block,
block)`` arrays, no per-row median), and an outlier never sits in the window of its own
neighbours (a burst of anomalies does not mask itself). A value is not scored (deviation
0) until the key has ``blocks`` complete blocks.

* :class:`RollingZ`: mean and pooled standard deviation of the window.
* :class:`EWMA`: exponentially weighted mean/variance of the block means (half-life in
  blocks), truncated to the window.
* :class:`MedianMAD`: median of the block medians; scale ``1.4826 * sqrt(median(block
  MAD)^2 + MAD(block medians)^2)`` (noise within blocks plus movement between them). The
  most robust of the three: the default robust baseline.

Example:
    >>> import numpy as np
    >>> det = MedianMAD(block=4, blocks=4)
    >>> x = np.r_[np.sin(np.arange(40) / 3.0), 9.0]
    >>> out = det.score(x[:, None], np.zeros(41, dtype=np.int64))
    >>> float(out.deviation[:16].max()), bool(out.deviation[-1] > 4)
    (0.0, True)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError
from tidal.ml.detect.base import Layout, Scored, check_params, grow, layout

__all__ = ["EWMA", "BlockWindow", "MedianMAD", "RollingZ", "Windows"]

_MEAN, _STD, _MED, _MAD = range(4)
_MAD_SIGMA = 1.4826


@dataclass
class Windows:
    """The block windows of one batch, as :meth:`BlockWindow.advance` returns them.

    ``ext`` holds, statistic-major, each key's ring of older blocks followed by its blocks
    of this batch; a block's window is the run of ``size`` columns before it. With one key
    the windows are consecutive (``at`` is ``None``): :meth:`stat` is then a view, and the
    rows of block ``i`` are a run, so :meth:`rows` repeats instead of gathering.
    """

    ext: Array
    at: Array | None
    n: int
    size: int
    block: int
    row_block: Array | None
    cell0: int
    rows_n: int

    def stat(self, s: int) -> Array:
        """Statistic ``s`` (mean, std, median, MAD) of each block's window, ``(n, size)``.

        Oldest block first; a read-only view for one key, a gather for several.
        """
        slide = np.lib.stride_tricks.sliding_window_view(self.ext[s], self.size)
        if self.at is None:
            out: Array = slide[: self.n]
            return out
        gathered: Array = slide[self.at]
        return gathered

    def warm(self) -> Array:
        """True for each block whose window is not full yet (holds a NaN mean)."""
        nan = np.concatenate(([0], np.cumsum(np.isnan(self.ext[_MEAN]))))
        starts = np.arange(self.n) if self.at is None else self.at
        out: Array = nan[starts + self.size] > nan[starts]
        return out

    def rows(self, per_block: Array) -> Array:
        """Each sorted row's block's value of ``per_block``."""
        if self.row_block is None:
            run: Array = np.repeat(per_block, self.block)[self.cell0 : self.cell0 + self.rows_n]
            return run
        out: Array = per_block[self.row_block]
        return out


class BlockWindow:
    """Per-key state of the last ``blocks`` complete blocks' statistics, and the open block.

    :meth:`advance` takes a batch's values grouped by key and returns, for every block the
    batch touches, the statistics of the ``blocks`` complete blocks before it (NaN where the
    key has fewer), and for every row the index of its block. ``stats`` names the
    statistics the detector reads (the mean is always kept: it marks warm-up); the others
    are stored as NaN rather than computed.
    """

    def __init__(self, block: int, blocks: int, stats: tuple[int, ...] = (0, 1, 2, 3)) -> None:
        if block < 2 or blocks < 1:
            msg = f"block must be >= 2 and blocks >= 1, got block={block}, blocks={blocks}"
            raise ConfigError(msg)
        self.block = int(block)
        self.blocks = int(blocks)
        self.stats = tuple(stats)
        self.seen: Array = np.zeros(0, dtype=np.int64)
        self.open: Array = np.zeros((0, block), dtype=np.float64)
        self.ring: Array = np.full((0, blocks, 4), np.nan)

    def advance(self, x: Array, lay: Layout) -> Windows:
        """The windows of every block the batch touches (see :class:`Windows`); then learn."""
        b, kb = self.block, self.blocks
        cap = int(lay.ukeys.max()) + 1 if len(lay.ukeys) else 0
        self.seen = grow(self.seen, cap)
        self.open = grow(self.open, cap)
        self.ring = grow(self.ring, cap, np.nan)
        k = lay.ukeys
        u = len(k)
        seen = self.seen[k]
        first = seen // b
        end = seen + lay.counts
        nblk = (end - 1) // b - first + 1
        boff = np.concatenate(([0], np.cumsum(nblk)[:-1])).astype(np.int64)
        n_b = int(nblk.sum())
        vals = np.full((n_b, b), np.nan)
        filled = (seen % b)[:, None] > np.arange(b)[None, :]
        vals[boff] = np.where(filled, self.open[k], np.nan)
        # each key's rows are consecutive cells of `vals` from its open block's first gap
        flat_start = boff * b + seen % b
        row_block: Array | None = None
        cell0 = 0
        if u == 1:
            cell0 = int(flat_start[0])
            vals.reshape(-1)[cell0 : cell0 + len(x)] = x
        else:
            cell = flat_start[lay.seg] + lay.rank
            vals.reshape(-1)[cell] = x
            row_block = cell // b
        closed_last = end % b == 0
        stats = block_stats(vals, self.stats)
        stats[:, (boff + nblk - 1)[~closed_last]] = np.nan  # open blocks are not summarised
        # per key: its ring of `blocks` older blocks, then its blocks in this batch
        # (statistic-major, so a block's window is a run of one row: a sliding view)
        ext_first = boff + kb * (np.arange(u) + 1)
        ext = np.empty((4, n_b + u * kb))
        last_ext = ext_first + nblk - 1 - (~closed_last)
        at: Array | None = None
        if u == 1:  # one key: slices, no index arrays
            ext[:, :kb] = self.ring[k[0]].T
            ext[:, kb:] = stats
            newest = int(last_ext[0]) - kb + 1
            self.ring[k[0]] = ext[:, newest : newest + kb].T
        else:
            ring_pos = (ext_first - kb)[:, None] + np.arange(kb)[None, :]
            ext[:, ring_pos] = np.moveaxis(self.ring[k], 2, 0)
            block_key = np.repeat(np.arange(u), nblk)
            ext_pos = ext_first[block_key] + np.arange(n_b) - boff[block_key]
            ext[:, ext_pos] = stats
            at = ext_pos - kb
            # learn: the newest `blocks` complete blocks
            newest_pos = last_ext[:, None] - kb + 1 + np.arange(kb)[None, :]
            self.ring[k] = np.moveaxis(ext[:, newest_pos], 0, 2)
        # learn: the open block's values
        last_vals = vals[boff + nblk - 1]
        self.open[k] = np.where(closed_last[:, None], 0.0, np.nan_to_num(last_vals))
        self.seen[k] = end
        return Windows(ext, at, n_b, kb, b, row_block, cell0, len(x))

    def forget(self, ids: Array) -> None:
        """Clear the state of keys ``ids``."""
        ids = ids[ids < len(self.seen)]
        self.seen[ids], self.open[ids], self.ring[ids] = 0, 0.0, np.nan

    def snapshot(self) -> dict[str, Any]:
        """Arrays of the per-key state."""
        return {"seen": self.seen.copy(), "open": self.open.copy(), "ring": self.ring.copy()}

    def restore(self, snap: dict[str, Any]) -> None:
        """Load :meth:`snapshot`."""
        self.seen = np.asarray(snap["seen"], dtype=np.int64).copy()
        self.open = np.asarray(snap["open"], dtype=np.float64).reshape(-1, self.block).copy()
        self.ring = np.asarray(snap["ring"], dtype=np.float64).reshape(-1, self.blocks, 4).copy()


def block_stats(vals: Array, stats: tuple[int, ...] = (0, 1, 2, 3)) -> Array:
    """Mean, standard deviation, median and MAD of each row of ``vals``, ``(4, rows)``.

    Only the statistics in ``stats`` and the mean are computed; the others are NaN (as is
    any statistic of a row holding NaN).
    """
    out = np.full((4, len(vals)), np.nan)
    if len(vals) == 0:
        return out
    out[_MEAN] = vals.mean(axis=1)
    if _STD in stats:
        out[_STD] = vals.std(axis=1)
    if _MED in stats or _MAD in stats:
        med = _median_cols(vals)
        out[_MED] = med
        if _MAD in stats:
            out[_MAD] = _median_cols(np.abs(vals - med[:, None]))
    return out


_NETWORK_MAX = 32
"""Rows up to this long are sorted by a sorting network over columns (numpy sorts each
short row in its own call, which costs more than the comparisons)."""


def _median_cols(a: Array, *, network: bool = True) -> Array:
    """Median of each row (the mean of the two middle values when the row length is even).

    The row's order statistics come from a sorting network applied to whole columns
    (``minimum``/``maximum`` of two columns per comparator) when rows are short, else from
    ``np.sort``: the same values, bit for bit, for rows without NaN (a row with a NaN has
    no meaningful median in either; callers mask those rows).
    """
    k = a.shape[1]
    if network and 1 < k <= _NETWORK_MAX:
        cols = [a[:, j] for j in range(k)]
        for i, j in _sorting_network(k):
            cols[i], cols[j] = np.minimum(cols[i], cols[j]), np.maximum(cols[i], cols[j])
        lo, hi = cols[(k - 1) // 2], cols[k // 2]
    else:
        s = np.sort(a, axis=1)
        lo, hi = s[:, (k - 1) // 2], s[:, k // 2]
    out: Array = 0.5 * (lo + hi)
    return out


@functools.cache
def _sorting_network(n: int) -> tuple[tuple[int, int], ...]:
    """Comparators ``(i, j)``, ``i < j``, of Batcher's odd-even merge sort of ``n`` values.

    Built for the next power of two; comparators touching a position ``>= n`` are dropped
    (as if those positions held +inf, which never move).
    """
    size = 1 << max(n - 1, 0).bit_length()
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        pairs.append((a, b))
            k //= 2
        p *= 2
    return tuple(pairs)


class _BlockDetector:
    """Shared body of the block-window detectors: subclasses turn windows into level/scale."""

    kind = "block"
    multivariate = False
    stats: tuple[int, ...] = (_MEAN, _STD, _MED, _MAD)
    """The block statistics :meth:`level_scale` reads (the others are not computed)."""

    def __init__(self, *, block: int, blocks: int, range_: float, min_scale: float) -> None:
        if not range_ > 0:
            msg = f"{self.kind}: range must be > 0 standard deviations, got {range_!r}"
            raise ConfigError(msg)
        if not min_scale > 0:
            msg = f"{self.kind}: min_scale must be > 0, got {min_scale!r}"
            raise ConfigError(msg)
        self.win = BlockWindow(block, blocks, self.stats)
        self.range = float(range_)
        self.min_scale = float(min_scale)

    def level_scale(self, window: Windows) -> tuple[Array, Array]:
        """Expected level and scale per block from its window (NaN in warm-up)."""
        raise NotImplementedError

    def _blocks(self, x: Array, keys: Array) -> tuple[Layout, Array, Windows, Array, Array]:
        """Group rows; the sorted values, the windows, and level and scale per block."""
        lay = layout(keys)
        xs = x[:, 0] if len(lay.ukeys) == 1 else x[lay.order, 0]
        win = self.win.advance(xs, lay)
        with np.errstate(invalid="ignore"):
            level, scale = self.level_scale(win)
        level[win.warm()] = np.nan
        scale = np.maximum(scale, self.min_scale + 1e-9 * np.abs(level))
        return lay, xs, win, level, scale

    def baseline(self, x: Array, keys: Array) -> tuple[Layout, Array, Array]:
        """Group rows; per sorted row: expected level and scale (NaN during warm-up)."""
        lay, _, win, level, scale = self._blocks(x, keys)
        return lay, win.rows(level), win.rows(scale)

    def score(self, x: Array, keys: Array) -> Scored:
        """Deviation ``|x - level| / scale`` per row; expected range ``level +- range*scale``."""
        _check_univariate(self.kind, x)
        n = len(keys)
        if not n:
            return Scored(np.zeros(0), np.zeros(0), np.zeros(0))
        lay, xs, win, level, scale = self._blocks(x, keys)
        d = np.abs(xs - win.rows(level))
        d /= win.rows(scale)
        dev = np.nan_to_num(d, copy=False, nan=0.0)
        # the range per block, then per row (the same arithmetic as per row)
        low, high = win.rows(level - self.range * scale), win.rows(level + self.range * scale)
        if len(lay.ukeys) == 1:  # rows in arrival order already
            return Scored(dev, np.ascontiguousarray(low), np.ascontiguousarray(high))
        out = np.empty((3, n))
        out[0, lay.order], out[1, lay.order], out[2, lay.order] = dev, low, high
        return Scored(out[0], out[1], out[2])

    def forget(self, ids: Array) -> None:
        """Clear the state of keys ``ids`` (they warm up again when they come back)."""
        self.win.forget(ids)

    def params(self) -> dict[str, Any]:
        """Parameters (JSON)."""
        return {
            "block": self.win.block,
            "blocks": self.win.blocks,
            "range": self.range,
            "min_scale": self.min_scale,
        }

    def snapshot(self) -> dict[str, Any]:
        """State arrays and parameters."""
        return {"kind": self.kind, "params": self.params(), **self.win.snapshot()}

    def restore(self, snap: dict[str, Any]) -> None:
        """Load :meth:`snapshot` (raises :class:`~tidal.errors.StateError` on a mismatch)."""
        check_params(self.kind, snap, self.params())
        self.win.restore(snap)


def _check_univariate(kind: str, x: Array) -> None:
    if x.ndim != 2 or x.shape[1] != 1:
        got = x.shape[1] if x.ndim == 2 else x.ndim
        msg = (
            f"detector {kind!r} scores one value column, got {got}; use 'hst' or 'iforest' "
            "for several columns, or one detect step per column"
        )
        raise ConfigError(msg)


def _weighted(a: Array, w: Array) -> Array:
    """``a @ w`` column by column: the same bits whatever the number of rows (BLAS is not)."""
    out: Array = a[:, 0] * w[0]
    for j in range(1, len(w)):
        out = out + a[:, j] * w[j]
    return out


class RollingZ(_BlockDetector):
    """Rolling z-score: mean and standard deviation of the last ``block * blocks`` values.

    The variance is pooled over blocks (within-block variance plus the variance of the
    block means), so it equals the variance of all values in the window.

    Example:
        >>> det = RollingZ(block=4, blocks=2)
        >>> out = det.score(np.array([[1.0], [2.0]] * 6 + [[9.0]]), np.zeros(13, np.int64))
        >>> round(float(out.deviation[-1]), 1), float(out.low[-1]), float(out.high[-1])
        (15.0, -0.5, 3.5)
    """

    kind = "rolling_z"

    def __init__(
        self, *, block: int = 8, blocks: int = 16, range: float = 4.0, min_scale: float = 1e-9
    ) -> None:
        super().__init__(block=block, blocks=blocks, range_=range, min_scale=min_scale)

    stats = (_MEAN, _STD)

    def level_scale(self, window: Windows) -> tuple[Array, Array]:
        """Pooled mean and standard deviation."""
        means = window.stat(_MEAN)
        level = means.mean(axis=1)
        var = (window.stat(_STD) ** 2).mean(axis=1) + means.var(axis=1)
        return level, np.sqrt(var)


class EWMA(_BlockDetector):
    """Exponentially weighted mean and variance of the recent blocks (newest weighs most).

    Block ``j`` blocks back has weight ``0.5 ** (j / half_life)``; the variance is the
    weighted within-block variance plus the weighted spread of block means.

    Example:
        >>> det = EWMA(block=4, blocks=4, half_life=1.0)
        >>> out = det.score(np.arange(20.0)[:, None], np.zeros(20, np.int64))
        >>> round(float(out.low[-1] + out.high[-1]) / 2, 2)     # plain mean 7.5: leans new
        10.57
    """

    kind = "ewma"
    stats = (_MEAN, _STD)

    def __init__(
        self,
        *,
        block: int = 8,
        blocks: int = 16,
        half_life: float = 4.0,
        range: float = 4.0,
        min_scale: float = 1e-9,
    ) -> None:
        if not half_life > 0:
            msg = f"ewma: half_life must be > 0 blocks, got {half_life!r}"
            raise ConfigError(msg)
        super().__init__(block=block, blocks=blocks, range_=range, min_scale=min_scale)
        self.half_life = float(half_life)
        ages = np.arange(blocks)[::-1]
        w = 0.5 ** (ages / self.half_life)
        self.weights: Array = w / w.sum()

    def level_scale(self, window: Windows) -> tuple[Array, Array]:
        """Weighted mean and variance."""
        means = window.stat(_MEAN)
        level = _weighted(means, self.weights)
        spread = (means - level[:, None]) ** 2 + window.stat(_STD) ** 2
        return level, np.sqrt(_weighted(spread, self.weights))

    def params(self) -> dict[str, Any]:
        """Parameters (JSON)."""
        return {**super().params(), "half_life": self.half_life}


class MedianMAD(_BlockDetector):
    """Median of the block medians, with a MAD-based scale: robust to outliers in the window.

    Example:
        >>> det = MedianMAD(block=4, blocks=3)
        >>> x = np.array([10.0, 11, 9, 10, 50, 10, 11, 9, 10, 10, 11, 9, 10, 10, 12])
        >>> out = det.score(x[:, None], np.zeros(15, np.int64))
        >>> round(float(out.low[-1] + out.high[-1]) / 2, 1)   # the 50 does not move it
        10.0
        >>> bool(out.deviation[-1] > 1.0), bool(out.deviation[-2] < 1.0)
        (True, True)
    """

    kind = "median_mad"
    stats = (_MEAN, _MED, _MAD)

    def __init__(
        self, *, block: int = 8, blocks: int = 16, range: float = 4.0, min_scale: float = 1e-9
    ) -> None:
        super().__init__(block=block, blocks=blocks, range_=range, min_scale=min_scale)
        self.small_sample = block / (block - 0.8)  # Croux & Rousseeuw's MAD correction

    def level_scale(self, window: Windows) -> tuple[Array, Array]:
        """Median of medians; combined within/between-block MAD scale."""
        meds = window.stat(_MED)
        level = _median_cols(meds)
        within = _median_cols(window.stat(_MAD)) * self.small_sample
        between = _median_cols(np.abs(meds - level[:, None]))
        return level, _MAD_SIGMA * np.sqrt(within**2 + between**2)
