"""Half-Space Trees: the vectorized leaf lookup equals a walk down each tree; anomalies found."""

from __future__ import annotations

import numpy as np

from tidal.ml.detect import HalfSpaceTrees


def _walk(h: HalfSpaceTrees, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference: walk each tree level by level, halving the work space of the split feature.

    Also returns, per point and tree, the distance to the nearest split on its path.
    """
    rng = np.random.default_rng(h.seed)
    split = rng.integers(0, h.dims, size=(h.trees, h.depth))
    out = np.zeros((len(u), h.trees), dtype=np.int64)
    near = np.full((len(u), h.trees), np.inf)
    for t in range(h.trees):
        for i, point in enumerate(u):
            lo = h.ws_lo[t].copy()
            hi = lo + h.ws_width[t]
            node = 0
            for level in range(h.depth):
                j = split[t, level]
                mid = (lo[j] + hi[j]) / 2
                near[i, t] = min(near[i, t], abs(point[j] - mid))
                right = point[j] >= mid
                node = 2 * node + int(right)
                if right:
                    lo[j] = mid
                else:
                    hi[j] = mid
            out[i, t] = t * (1 << h.depth) + node
    return out, near


def test_leaves_match_a_walk_down_the_trees() -> None:
    h = HalfSpaceTrees(trees=6, depth=5, seed=3)
    u = np.random.default_rng(1).uniform(-0.5, 1.5, size=(2000, 2))
    want, near = _walk(h, u)
    got = h._leaves(u)  # noqa: SLF001
    # the grid locates values to 5/4096: only a point that close to a split may differ
    far = near > 5 / 4096
    assert far.mean() > 0.97
    np.testing.assert_array_equal(got[far], want[far])


def test_spike_in_a_seasonal_series() -> None:
    t = np.arange(4000)
    x = np.sin(t / 15.0) + np.random.default_rng(0).normal(0, 0.05, 4000)
    x[[2000, 3000, 3500]] += [1.5, -1.5, 2.0]
    d = HalfSpaceTrees().score(x[:, None], np.zeros(4000, dtype=np.int64)).deviation
    assert (d[[2000, 3000, 3500]] > 5).all()
    assert np.sort(d)[-3:].min() == d[[2000, 3000, 3500]].min()


def test_multivariate_broken_correlation() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, 3000)
    x = np.stack((a, a + rng.normal(0, 0.05, 3000)), axis=1)
    x[2500] = [2.0, -2.0]  # each value is ordinary, the pair is not
    d = HalfSpaceTrees(features=2).score(x, np.zeros(3000, dtype=np.int64)).deviation
    assert d[2500] > 5
    assert d[2500] > np.percentile(d[600:], 99)


def test_no_score_before_two_windows() -> None:
    x = np.random.default_rng(0).normal(size=(600, 1))
    d = HalfSpaceTrees(window=256).score(x, np.zeros(600, dtype=np.int64)).deviation
    assert (d[:512] == 0).all() and d[512:].max() > 0
