"""Per-row loops of detectors with recurrences, compiled with numba where it is installed.

Two detectors carry a recurrence that the numpy engines vectorize only at a cost:
Half-Space Trees (:func:`hst_pass`) and the gated z-score (:func:`gated_pass`, whose numpy
engine runs one round per row of the busiest key: one Python round per row on one series).

:class:`~tidal.ml.detect.trees.HalfSpaceTrees` has two engines that give the same scores
bit for bit (``tests/ml/detect/test_kernels.py``; decision 0053):

* ``"numpy"``: whole batches at once (group rows by key and window, one ``bincount`` for
  the counts of all new windows, score tables level by level). Always available.
* ``"numba"``: :func:`hst_pass`, one loop over the rows (grouped by key with a counting
  sort), scoring each row against its key's score table, counting it into the key's
  latest window and, when a key's window closes, building the key's next table in place.
  The numpy engine spends most of its time in gathers, ``bincount`` and per-window tables
  for whole batches; the loop touches only the ``trees`` cells of a row, in cache. It
  needs numba (the ``learn`` extra); ``"auto"`` picks it where numba imports.

Why the two agree bit for bit: every number in the loop is computed with the same IEEE
operations in the same order as the numpy engine (the scaling ``(f - start) / span``, the
grid cell, the leaf bits as int32 sums); counts and masses are whole numbers (exact in
float32); a row's raw score is summed over trees in tree order in float32, as numpy's
reduction over the tree axis does; the mean raw score is a float64 sum of whole numbers.
The loop returns ``raw / mean`` per row and the caller takes ``-log2`` with numpy on a
contiguous array, as the numpy engine does, so no libm function stands between the two.
A grid cell is located as numpy's ``astype(int64)`` then ``clip`` does it on x86-64:
NaN, infinities and values past ``2**63`` land in cell 0.

Example:
    >>> import numpy as np
    >>> from tidal.ml.detect.trees import HalfSpaceTrees
    >>> x = np.sin(np.arange(400) / 7.0)[:, None]
    >>> keys = np.zeros(400, dtype=np.int64)
    >>> a = HalfSpaceTrees(window=64, engine="numpy").score(x, keys).deviation
    >>> b = HalfSpaceTrees(window=64, engine="python").score(x, keys).deviation  # uncompiled
    >>> a.tobytes() == b.tobytes()
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.core.jit import compiled, has_numba
from tidal.errors import ConfigError

__all__ = ["ENGINES", "gated_pass", "has_numba", "hst_pass", "warm_up"]

ENGINES = ("auto", "numba", "numpy", "python")
"""``python`` runs :func:`hst_pass` uncompiled (slow: for tests and machines without numba)."""

_INT64_LIMIT = 9223372036854775808.0  # 2**63: numpy's float -> int64 cast is undefined past it


def _kernel(  # noqa: PLR0913, PLR0912, PLR0915, C901 - one tight loop, compiled by numba
    x: Any,
    keys: Any,
    univariate: bool,
    cell_leaf: Any,
    window: int,
    depth: int,
    size_limit: Any,
    grid_lo: float,
    grid_scale: float,
    cells: int,
    seen: Any,
    last: Any,
    lo: Any,
    hi: Any,
    latest: Any,
    table: Any,
    mean: Any,
    ratio: Any,
    scored: Any,
) -> None:
    n = len(keys)
    dims, _, trees = cell_leaf.shape
    leaves = 1 << depth
    f = np.empty(dims)
    leaf = np.empty(trees, dtype=np.int64)
    mass = np.empty(2 * leaves, dtype=np.float32)
    value = np.empty(2 * leaves, dtype=np.float32)
    # rows grouped by key, arrival order within a key (a stable counting sort): a key's
    # rows then work on its state while it is in cache
    kmin, kmax = keys[0], keys[0]
    for i in range(n):
        kmin = min(kmin, keys[i])
        kmax = max(kmax, keys[i])
    order = np.arange(n)
    if kmax > kmin:
        nk = kmax - kmin + 1
        at = np.zeros(nk + 1, dtype=np.int64)
        for i in range(n):
            at[keys[i] - kmin + 1] += 1
        for j in range(nk):
            at[j + 1] += at[j]
        for i in range(n):
            j = keys[i] - kmin
            order[at[j]] = i
            at[j] += 1
    for r in range(n):
        i = order[r]
        k = keys[i]
        pos = seen[k]
        # features: the value and its change, or the value columns
        if univariate:
            v = x[i, 0]
            prev = last[k] if pos > 0 else v
            f[0] = v
            f[1] = v - prev
            last[k] = v
        else:
            for j in range(dims):
                f[j] = x[i, j]
        seen[k] = pos + 1
        if pos < window:  # the first window learns each feature's range (np.minimum's NaN)
            for j in range(dims):
                if pos == 0:
                    lo[k, j] = np.inf
                    hi[k, j] = -np.inf
                a = f[j]
                if lo[k, j] == lo[k, j] and (a != a or a < lo[k, j]):
                    lo[k, j] = a
                if hi[k, j] == hi[k, j] and (a != a or a > hi[k, j]):
                    hi[k, j] = a
            continue
        # the leaf of every tree: sum over features of the cell's leaf bits (int32)
        for t in range(trees):
            leaf[t] = 0
        for j in range(dims):
            width = hi[k, j] - lo[k, j]
            if width < 1e-12:
                width = 1e-12
            pad = 0.1 * width
            u = (f[j] - (lo[k, j] - pad)) / (width + 2.0 * pad)
            c = (u - grid_lo) * grid_scale
            cell = 0
            if c >= 1.0 and c < _INT64_LIMIT:
                cell = min(int(c), cells - 1)
            for t in range(trees):
                leaf[t] += cell_leaf[j, cell, t]
        if pos % window == 0:  # a window closed: its counts become the score table
            total = 0.0
            for t in range(trees):
                base = t * leaves
                for m in range(leaves):
                    mass[leaves + m] = np.float32(latest[k, base + m])
                for m in range(leaves - 1, 0, -1):
                    mass[m] = mass[2 * m] + mass[2 * m + 1]
                # top down: the shallowest node below the limit ends the walk (-1: go on)
                value[1] = mass[1] if mass[1] < size_limit else np.float32(-1.0)
                level = 0
                for m in range(2, 2 * leaves):
                    if (m & (m - 1)) == 0:  # the first node of the next level
                        level += 1
                    val = value[m >> 1]
                    if val < 0 and (mass[m] < size_limit or m >= leaves):
                        val = mass[m] * np.float32(1 << level)
                    value[m] = val
                for m in range(leaves):
                    table[k, base + m] = value[leaves + m]
                    total += float(latest[k, base + m]) * float(value[leaves + m])
                    latest[k, base + m] = 0
            mean[k] = total / window
        raw = np.float32(0.0)
        for t in range(trees):
            raw += table[k, leaf[t]]
            latest[k, leaf[t]] += 1
        ratio[i] = float(raw) / max(mean[k], 1e-12)
        scored[i] = pos // window >= 2


def _gated_kernel(  # noqa: PLR0913 - the recurrence's settings and per-key state
    x: Any,
    keys: Any,
    alpha: float,
    warmup: int,
    gate: float,
    patience: int,
    range_: float,
    min_scale: float,
    count: Any,
    mean: Any,
    var: Any,
    streak: Any,
    dev: Any,
    low: Any,
    high: Any,
) -> None:
    for i in range(len(keys)):
        k = keys[i]
        v = x[i]
        n = count[k]
        m = mean[k]
        s2 = var[k]
        std = np.sqrt(s2)
        if std < min_scale:  # np.maximum: NaN stays
            std = min_scale
        warm = n >= warmup
        d = 0.0
        if warm:
            d = np.abs(v - m) / std
            dev[i] = d
            low[i] = m - range_ * std
            high[i] = m + range_ * std
        gated = warm and d >= gate
        w = 1.0 / (n + 1)
        if alpha >= w:
            w = alpha
        step = v - m
        new_n, new_mean, new_var = n + 1, m + w * step, (1.0 - w) * (s2 + step * w * step)
        run = streak[k] + 1 if gated else 0
        learn = not gated
        if patience > 0 and run >= patience:  # a lasting change: restart from this value
            new_n, new_mean, new_var, run, learn = 1, v, 0.0, 0, True
        streak[k] = run
        if learn:
            count[k] = new_n
            mean[k] = new_mean
            var[k] = new_var


def _jit() -> Any:
    return compiled(_kernel)


def _key_ids(keys: Array) -> Array:
    """``keys`` as C-contiguous int64, checked non-negative (the loops index state by them)."""
    ids = np.ascontiguousarray(keys, dtype=np.int64)
    if len(ids) and int(ids.min()) < 0:
        msg = f"detector key ids must be >= 0 (dense ids from a KeyIndex), got {int(ids.min())}"
        raise ConfigError(msg)
    return ids


def _jit_gated() -> Any:
    return compiled(_gated_kernel)


def gated_pass(  # noqa: PLR0913 - the recurrence's settings and per-key state
    x: Array,
    keys: Array,
    *,
    alpha: float,
    warmup: int,
    gate: float,
    patience: int | None,
    range_: float,
    min_scale: float,
    state: tuple[Array, Array, Array, Array],
    compiled: bool = True,
) -> tuple[Array, Array, Array]:
    """:class:`~tidal.ml.detect.gated.GatedZ` over the rows in arrival order, in place.

    ``x``: the values ``(n,)``; ``state``: ``count, mean, var, streak`` per key. Returns
    ``deviation, low, high``. The same scalar operations, in the same order per key, as
    the numpy engine's rounds: the same bits.
    """
    n = len(keys)
    dev, low, high = np.zeros(n), np.full(n, np.nan), np.full(n, np.nan)
    args = (
        np.ascontiguousarray(x, dtype=np.float64),
        _key_ids(keys),
        float(alpha),
        int(warmup),
        float(gate),
        -1 if patience is None else int(patience),
        float(range_),
        float(min_scale),
        *state,
        dev,
        low,
        high,
    )
    if compiled:
        _jit_gated()(*args)
    else:
        with np.errstate(all="ignore"):
            _gated_kernel(*args)
    return dev, low, high


def hst_pass(  # noqa: PLR0913 - the detector's tables and per-key state
    x: Array,
    keys: Array,
    *,
    univariate: bool,
    cell_leaf: Array,
    window: int,
    depth: int,
    size_limit: float,
    grid: tuple[float, float, int],
    state: tuple[Array, Array, Array, Array, Array, Array, Array],
    compiled: bool = True,
) -> tuple[Array, Array]:
    """Score and count every row; the state arrays are updated in place.

    ``x``: ``(n, features)`` float64, ``keys``: ``(n,)`` int64 ids below the state's length.
    ``cell_leaf``: ``(dims, cells, trees)`` int32 leaf bits per grid cell (the first
    feature's with each tree's offset). ``grid``: ``(low edge, cells per unit, cells)``.
    ``state``: ``seen, last, lo, hi, latest (keys, trees * leaves) int32, table (same,
    float32), mean``, all C-contiguous. Returns ``raw / mean`` per row and whether the row
    is scored (its key is past two windows).
    """
    n = len(keys)
    ratio = np.ones(n)
    scored = np.zeros(n, dtype=bool)
    if n == 0:
        return ratio, scored
    args = (
        np.ascontiguousarray(x, dtype=np.float64),
        _key_ids(keys),
        bool(univariate),
        cell_leaf,
        int(window),
        int(depth),
        np.float32(size_limit),
        float(grid[0]),
        float(grid[1]),
        int(grid[2]),
        *state,
        ratio,
        scored,
    )
    if compiled:
        _jit()(*args)
    else:
        with np.errstate(all="ignore"):  # numpy scalars warn where the compiled loop is silent
            _kernel(*args)
    return ratio, scored


def warm_up() -> None:
    """Compile (or load from numba's cache) the loops now, not in the first batch."""
    if has_numba():
        keys = np.r_[np.zeros(10), np.ones(10)].astype(np.int64)
        i64, f32, i32 = np.int64, np.float32, np.int32
        z2 = np.zeros((2, 2))
        hst_state = (np.zeros(2, i64), np.zeros(2), z2, z2.copy(), np.zeros((2, 2), i32),
                     np.zeros((2, 2), f32), np.zeros(2))  # fmt: skip
        hst_pass(np.zeros((20, 1)), keys, univariate=True,
                 cell_leaf=np.zeros((2, 4, 1), i32), window=8, depth=1, size_limit=0.8,
                 grid=(-2.0, 0.8, 4), state=hst_state)  # fmt: skip
        gated_state = (np.zeros(2, np.int64), np.zeros(2), np.zeros(2), np.zeros(2, np.int64))
        gated_pass(np.zeros(20), keys, alpha=0.1, warmup=2, gate=4.0, patience=3, range_=4.0,
                   min_scale=1e-9, state=gated_state)  # fmt: skip
