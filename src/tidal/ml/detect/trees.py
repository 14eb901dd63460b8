"""Half-Space Trees (Tan, Ting & Liu 2011), vectorized over rows, trees and keys.

An ensemble of random trees, each halving a random feature's range at every level, counts
how many recent values fall in each region; a value landing where little mass was seen in
the previous window is anomalous. Masses are kept in two windows: the *reference* window
(the last complete one, used to score) and the *latest* (being counted); every ``window``
values of a key the latest becomes the reference.

What makes it fast here:

* **Level-wise splits.** All nodes of a level split the same feature (chosen at random per
  tree and level), so the leaf a value reaches is a bit pattern of its quantized features:
  ``leaf = sum_j spread[t, j, floor(u_j * 2**c_tj)]`` with ``c_tj`` the number of levels
  of tree ``t`` splitting feature ``j``. A batch finds its leaves with a few array
  operations per feature instead of a walk per tree level.
* **Leaf counts only.** Only leaves are counted; the mass of an inner node is the sum of
  its leaves, and it is needed only when a window closes: then a score table ``leaf ->
  r * 2**depth`` (the mass ``r`` of the first node on the path below ``size_limit``) is
  built per tree, and scoring a value is one lookup per tree.
* **Whole windows at once.** A batch is cut into (key, window) groups; the counts of all
  groups are one ``bincount`` and their tables one pass per level.

* **A compiled loop where numba is installed.** The whole-batch numpy work above is still
  bound by its gathers and per-window tables; the ``numba`` engine
  (:mod:`~tidal.ml.detect.kernels`) does the same arithmetic row by row in one compiled
  loop, with the same scores bit for bit. ``numpy`` stays the engine without numba.

Features are scaled per key with the range seen in the key's first window (the warm-up:
no score for the first two windows). A univariate series is scored on ``(value, change
from the previous value)``, so a spike inside the normal range still stands out.

The raw score of a value (summed over trees) is compared with the mean raw score of the
reference window's own values under the same tables: the deviation is ``-log2(raw /
mean)``, the number of halvings of mass below a typical value (4 = a sixteenth).

Example:
    >>> import numpy as np
    >>> t = np.arange(3000)
    >>> x = np.sin(t / 20.0) + np.random.default_rng(0).normal(0, 0.05, 3000)
    >>> x[2500] += 3.0
    >>> out = HalfSpaceTrees(seed=1).score(x[:, None], np.zeros(3000, dtype=np.int64))
    >>> int(np.argmax(out.deviation)), float(out.deviation[:511].max())
    (2500, 0.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError
from tidal.ml.detect.base import Layout, Scored, array_state, grow, layout, load_arrays
from tidal.ml.detect.kernels import ENGINES, has_numba, hst_pass

__all__ = ["HalfSpaceTrees"]

_FLOOR = 2.0**-16
_GRID_LO, _GRID_SPAN, _CELLS = -2.0, 5.0, 4096
"""Scaled features are located on a grid of 4096 cells over [-2, 3], which holds every
tree's work space; a split falls at a cell's centre at worst 0.06% of the range away."""


class HalfSpaceTrees:
    """Streaming Half-Space Trees with level-wise splits; one set of masses per key.

    Args:
        trees: trees in the ensemble.
        depth: levels per tree (``2**depth`` leaves).
        window: values per mass window.
        size_limit: a node with less reference mass than this stops the walk (default
            ``window / 10``, as in the paper).
        features: value columns (1: the value and its change are used).
        seed: seed of the random tree structure.
        range: deviation of the expected range's edge (the range itself is not known to
            a tree ensemble: ``low``/``high`` are NaN).
        engine: ``"numba"`` (a compiled loop over the rows; needs the ``learn`` extra),
            ``"numpy"`` (whole batches at once), ``"python"`` (the loop uncompiled: slow,
            for tests) or ``"auto"`` (numba where it imports). All give the same scores bit
            for bit and share snapshots, so the engine is not a parameter of the state
            (:mod:`tidal.ml.detect.kernels`, decision 0053).

    Raises:
        ConfigError: for parameters out of range, an unknown engine, or ``"numba"``
            without numba.
    """

    kind = "hst"
    multivariate = True

    def __init__(
        self,
        *,
        trees: int = 16,
        depth: int = 6,
        window: int = 256,
        size_limit: float | None = None,
        features: int = 1,
        seed: int = 0,
        range: float = 4.0,
        engine: str = "auto",
    ) -> None:
        if engine not in ENGINES:
            msg = f"hst: engine must be one of {', '.join(ENGINES)}, got {engine!r}"
            raise ConfigError(msg)
        if engine == "numba" and not has_numba():
            msg = "hst: engine 'numba' needs numba: pip install 'tidal-stream[learn]'"
            raise ConfigError(msg)
        self.engine = ("numba" if has_numba() else "numpy") if engine == "auto" else engine
        if trees < 1 or not 1 <= depth <= 15 or window < 8 or features < 1:
            msg = (
                "hst: need trees >= 1, 1 <= depth <= 15, window >= 8, features >= 1; got "
                f"trees={trees}, depth={depth}, window={window}, features={features}"
            )
            raise ConfigError(msg)
        self.trees, self.depth, self.window = int(trees), int(depth), int(window)
        self.size_limit = float(size_limit if size_limit is not None else window / 10)
        self.features = int(features)
        self.seed = int(seed)
        self.range = float(range)
        self.dims = self.features + 1 if self.features == 1 else self.features
        rng = np.random.default_rng(self.seed)
        split = rng.integers(0, self.dims, size=(self.trees, self.depth))
        centre = rng.uniform(0.0, 1.0, size=(self.trees, self.dims))
        half = 2.0 * np.maximum(centre, 1.0 - centre)
        self.ws_lo: Array = centre - half
        self.ws_width: Array = 2.0 * half
        self.splits: Array = (split[:, :, None] == np.arange(self.dims)).sum(axis=1)
        spread = _spread_tables(split, self.dims, self.depth)
        self.cell_leaf = _cell_tables(spread, self.splits, self.ws_lo, self.ws_width)
        self.cell_leaf_t = [np.ascontiguousarray(t.T) for t in self.cell_leaf]
        self.cell_leaf_all: Array = np.ascontiguousarray(np.stack(self.cell_leaf))
        leaves = 1 << self.depth
        self.leaves = leaves
        # per key state
        self.seen: Array = np.zeros(0, dtype=np.int64)
        self.last: Array = np.zeros(0)
        self.lo: Array = np.zeros((0, self.dims))
        self.hi: Array = np.zeros((0, self.dims))
        self.latest: Array = np.zeros((0, self.trees, leaves), dtype=np.int32)
        self.table: Array = np.zeros((0, self.trees, leaves), dtype=np.float32)
        self.mean: Array = np.zeros(0)

    # -- scoring -----------------------------------------------------------------------
    def score(self, x: Array, keys: Array) -> Scored:
        """Score every row against its key's reference window, then count it."""
        if x.ndim != 2 or x.shape[1] != self.features:
            msg = f"hst was built for {self.features} value column(s), got {x.shape[1:]}"
            raise ConfigError(msg)
        n = len(keys)
        dev = np.zeros(n)
        nan = np.full(n, np.nan)
        if n == 0:
            return Scored(dev, nan, nan.copy())
        if self.engine != "numpy":
            return self._score_loop(x, keys)
        lay = layout(keys)
        self._grow(int(lay.ukeys.max()) + 1)
        k = lay.ukeys
        seen = self.seen[k]
        pos = seen[lay.seg] + lay.rank
        feats = self._features(x[lay.order], lay)
        self._learn_ranges(feats, pos, lay)
        live = pos >= self.window
        if live.any():
            d = self._score_live(feats[live], pos[live], lay, live, seen)
            dev[lay.order[live]] = d
        self.seen[k] = seen + lay.counts
        return Scored(dev, nan, nan.copy())

    def _score_loop(self, x: Array, keys: Array) -> Scored:
        """The ``numba``/``python`` engines: :func:`~tidal.ml.detect.kernels.hst_pass`."""
        n = len(keys)
        self._grow(int(keys.max()) + 1)
        for name in ("lo", "hi", "latest", "table"):  # the loop writes through 2-D views
            if not getattr(self, name).flags.c_contiguous:
                setattr(self, name, np.ascontiguousarray(getattr(self, name)))
        size = self.trees * self.leaves
        state = (self.seen, self.last, self.lo, self.hi, self.latest.reshape(-1, size),
                 self.table.reshape(-1, size), self.mean)  # fmt: skip
        ratio, scored = hst_pass(
            x,
            keys,
            univariate=self.features == 1,
            cell_leaf=self.cell_leaf_all,
            window=self.window,
            depth=self.depth,
            size_limit=self.size_limit,
            grid=(_GRID_LO, _CELLS / _GRID_SPAN, _CELLS),
            state=state,
            compiled=self.engine == "numba",
        )
        # -log2 in numpy, on a contiguous array, as the numpy engine takes it
        d = -np.log2(np.maximum(ratio, _FLOOR))
        dev: Array = np.where(scored, np.maximum(d, 0.0), 0.0)
        nan = np.full(n, np.nan)
        return Scored(dev, nan, nan.copy())

    def _features(self, xs: Array, lay: Layout) -> Array:
        if self.features > 1:
            return xs
        v = xs[:, 0]
        prev = np.empty_like(v)
        prev[1:] = v[:-1]
        first = lay.starts
        had = self.seen[lay.ukeys] > 0
        prev[first] = np.where(had, self.last[lay.ukeys], v[first])
        self.last[lay.ukeys] = v[first + lay.counts - 1]
        return np.stack((v, v - prev), axis=1)

    def _learn_ranges(self, feats: Array, pos: Array, lay: Layout) -> None:
        warm = pos < self.window
        if not warm.any():
            return
        kw = lay.keys[warm]
        fw = feats[warm]
        fresh = kw[pos[warm] == 0]
        self.lo[fresh] = np.inf
        self.hi[fresh] = -np.inf
        np.minimum.at(self.lo, kw, fw)
        np.maximum.at(self.hi, kw, fw)

    def _score_live(self, f: Array, pos: Array, lay: Layout, live: Array, seen: Array) -> Array:
        t_n, leaves = self.trees, self.leaves
        size = t_n * leaves
        kl = lay.keys[live]
        seg = lay.seg[live]
        # the scaling per key, then per row (one key: broadcast, no per-row gather)
        lo, hi = self.lo[lay.ukeys], self.hi[lay.ukeys]
        width = np.maximum(hi - lo, 1e-12)
        pad = 0.1 * width
        start, span = lo - pad, width + 2 * pad
        if len(lay.ukeys) == 1:
            u = (f - start[0]) / span[0]
        else:
            u = (f - start[seg]) / span[seg]
        leaf = self._leaves_by_tree(u)  # tree * leaves + leaf, (trees, n)
        # (key, window) groups, in sorted order; a key's first group may continue the
        # window its state is counting ("same"), every other group opens a new window
        epoch = pos // self.window
        head = np.ones(len(f), dtype=bool)
        head[1:] = (seg[1:] != seg[:-1]) | (epoch[1:] != epoch[:-1])
        gid = np.cumsum(head) - 1
        heads = np.flatnonzero(head)
        g_key, g_epoch = kl[heads], epoch[heads]
        first_of_key = np.ones(len(heads), dtype=bool)
        first_of_key[1:] = g_key[1:] != g_key[:-1]
        state_epoch = np.maximum(seen[seg[heads]] - 1, 0) // self.window
        same = first_of_key & (g_epoch == state_epoch)
        raw = np.empty(len(f))
        means = np.empty(len(heads))
        # continuing rows: score with the key's table, count into its state (sparse);
        # table entries are whole numbers below 2**24 / trees, so float32 sums are exact
        cont = same[gid]
        n_cont = int(cont.sum())
        # one key: the continuing rows are a prefix, the rest a suffix (slices, no masks)
        prefix = len(g_key) == 1 or bool(g_key[0] == g_key[-1])
        cont_sel: Array | slice = slice(0, n_cont) if prefix else cont
        fresh_sel: Array | slice = slice(n_cont, None) if prefix else ~cont
        if n_cont:
            kc = kl[cont_sel]
            at = leaf[:, cont_sel] + kc * size
            raw[cont_sel] = np.take(self.table.reshape(-1), at).sum(axis=0)
            means[same] = self.mean[g_key[same]]
            np.add.at(self.latest.reshape(-1), at.ravel(), np.int32(1))  # same dtype: fast path
        # rows of new windows: dense counts and tables for those groups only
        if n_cont < len(f):
            gsel = np.flatnonzero(~same)
            local = np.cumsum(~same) - 1  # group -> index among the new groups
            g_n = len(gsel)
            flat = leaf[:, fresh_sel] + local[gid[fresh_sel]] * size
            counts = np.bincount(flat.ravel(), minlength=g_n * size)
            counts = counts.reshape(g_n, t_n, leaves).astype(np.int32)
            # the window before each new group: the previous new group of the key, or the
            # key's state (complete by now: it holds the continuing rows too)
            first_new = np.ones(g_n, dtype=bool)
            first_new[1:] = g_key[gsel][1:] != g_key[gsel][:-1]
            prev = np.empty_like(counts)
            prev[1:] = counts[:-1]
            prev[first_new] = self.latest[g_key[gsel][first_new]]
            tables, g_means = self._tables(prev)
            raw[fresh_sel] = np.take(tables.reshape(-1), flat).sum(axis=0)
            means[gsel] = g_means
            last_new = np.ones(g_n, dtype=bool)
            last_new[:-1] = g_key[gsel][:-1] != g_key[gsel][1:]
            lk = g_key[gsel][last_new]
            self.latest[lk] = counts[last_new]
            self.table[lk] = tables[last_new]
            self.mean[lk] = g_means[last_new]
        ratio = raw / np.maximum(means[gid], 1e-12)
        d = -np.log2(np.maximum(ratio, _FLOOR))
        out: Array = np.where(g_epoch[gid] >= 2, np.maximum(d, 0.0), 0.0)
        return out

    def _leaves(self, u: Array) -> Array:
        """``tree * leaves + leaf`` of every row in every tree, ``(n, trees)``."""
        out: Array = self._leaves_by_tree(u).T
        return out

    def _leaves_by_tree(self, u: Array) -> Array:
        """:meth:`_leaves` transposed, ``(trees, n)``.

        A tree's leaves are contiguous, so the per-row sums over trees are whole-row adds,
        not short strided reductions.
        """
        cell = ((u - _GRID_LO) * (_CELLS / _GRID_SPAN)).astype(np.int64)
        np.clip(cell, 0, _CELLS - 1, out=cell)
        leaf: Array = np.take(self.cell_leaf_t[0], cell[:, 0], axis=1)
        for j in range(1, self.dims):
            leaf += np.take(self.cell_leaf_t[j], cell[:, j], axis=1)
        return leaf

    def _tables(self, counts: Array) -> tuple[Array, Array]:
        """Score tables ``(g, trees, leaves)`` and in-sample mean raw score per group."""
        g_n, t_n, leaves = counts.shape
        depth = self.depth
        levels = [counts.astype(np.float32)]
        for _ in range(depth):
            m = levels[-1]
            levels.append(m[:, :, 0::2] + m[:, :, 1::2])  # exact: whole numbers < 2**24
        levels.reverse()  # levels[k]: masses of the 2**k nodes at depth k
        # top down, node by node: the shallowest node below the limit ends the walk
        # (-1: the walk goes on); children inherit their parent's value
        value = np.where(levels[0] < self.size_limit, levels[0], np.float32(-1.0))
        for k in range(1, depth + 1):
            value = np.repeat(value, 2, axis=2)
            stop = (value < 0) & ((levels[k] < self.size_limit) | (k == depth))
            value = np.where(stop, levels[k] * np.float32(1 << k), value)
        table = value
        mean = (counts * table).sum(axis=(1, 2), dtype=np.float64) / self.window
        return table, mean

    def _grow(self, cap: int) -> None:
        self.seen = grow(self.seen, cap)
        self.last = grow(self.last, cap)
        self.lo = grow(self.lo, cap)
        self.hi = grow(self.hi, cap)
        self.latest = grow(self.latest, cap)
        self.table = grow(self.table, cap)
        self.mean = grow(self.mean, cap)

    # -- state -------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Parameters (JSON)."""
        return {
            "trees": self.trees,
            "depth": self.depth,
            "window": self.window,
            "size_limit": self.size_limit,
            "features": self.features,
            "seed": self.seed,
            "range": self.range,
        }

    def snapshot(self) -> dict[str, Any]:
        """Per-key counts, tables, scaling ranges and positions."""
        return array_state(self, "seen", "last", "lo", "hi", "latest", "table", "mean")

    def restore(self, snap: dict[str, Any]) -> None:
        """Load :meth:`snapshot`."""
        grid = (self.trees, self.leaves)
        load_arrays(
            self,
            snap,
            seen=(np.int64, ()),
            last=(np.float64, ()),
            lo=(np.float64, (self.dims,)),
            hi=(np.float64, (self.dims,)),
            latest=(np.int32, grid),
            table=(np.float32, grid),
            mean=(np.float64, ()),
        )


def _cell_tables(spread: Array, splits: Array, ws_lo: Array, ws_width: Array) -> list[Array]:
    """Leaf bits per grid cell of each feature: ``tables[j][cell, tree]`` (int32)."""
    trees, dims = splits.shape
    depth = int(np.log2(spread.shape[2]))
    centres = _GRID_LO + (np.arange(_CELLS) + 0.5) * (_GRID_SPAN / _CELLS)
    tables = []
    for j in range(dims):
        c = splits[:, j]
        scaled = (centres[:, None] - ws_lo[None, :, j]) / ws_width[None, :, j]
        v = np.clip(np.floor(scaled * (1 << c)[None, :]), 0, (1 << c)[None, :] - 1)
        bits = spread[np.arange(trees)[None, :], j, v.astype(np.int64)]
        if j == 0:  # the first feature's table also holds each tree's offset
            bits = bits + (np.arange(trees) << depth)[None, :]
        tables.append(bits.astype(np.int32))
    return tables


def _spread_tables(split: Array, dims: int, depth: int) -> Array:
    """``spread[t, j, v]``: leaf bits of tree ``t`` for value ``v`` of feature ``j``."""
    trees = split.shape[0]
    out = np.zeros((trees, dims, 1 << depth), dtype=np.int64)
    for t in range(trees):
        for j in range(dims):
            levels = np.flatnonzero(split[t] == j)
            c = len(levels)
            for v in range(1 << c):
                bits = 0
                for i, lvl in enumerate(levels.tolist()):
                    if (v >> (c - 1 - i)) & 1:
                        bits |= 1 << (depth - 1 - lvl)
                out[t, j, v] = bits
    return out
