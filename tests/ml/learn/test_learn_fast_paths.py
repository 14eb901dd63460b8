"""The fused fast paths give numpy's values bit for bit (no timings: see bench/learn.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tidal.ml.learn import Features, LogisticRegression
from tidal.ml.learn.kernels import has_numba, moments, standardize
from tidal.ml.learn.metrics import Prequential

needs_numba = pytest.mark.skipif(not has_numba(), reason="numba is not installed")


@needs_numba
@pytest.mark.parametrize("k", [1, 2, 3, 20, 33])
@pytest.mark.parametrize("n", [1, 2, 9, 17, 1_000, 8_192])
def test_moments_equal_numpys_to_the_last_bit(k: int, n: int) -> None:
    rng = np.random.default_rng(k * 1_000 + n)
    x = rng.normal(size=(n, k)) * rng.uniform(0.1, 1e3, size=k) + rng.normal(size=k) * 100
    mean, m2 = moments(x, engine="numba")
    want = x.mean(axis=0)
    assert np.array_equal(mean, want)
    assert np.array_equal(m2, ((x - want) ** 2).sum(axis=0))


@needs_numba
def test_standardize_engines_agree_and_flag_rows_that_are_not_finite() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6))
    x[7, 2], x[9, 0], x[11, 5] = np.nan, np.inf, -np.inf
    mean, scale = rng.normal(size=6), rng.uniform(0.5, 2.0, size=6)
    a, b = x.copy(), x.copy()
    ok_a = standardize(a, mean, scale, engine="numba")
    ok_b = standardize(b, mean, scale, engine="numpy")
    assert np.array_equal(a, b, equal_nan=True)
    assert ok_a.tolist() == ok_b.tolist()
    assert np.flatnonzero(~ok_a).tolist() == [7, 9, 11]


def test_features_rows_mask_is_the_finite_rows_of_the_matrix() -> None:
    x = np.array([1.0, np.nan, 3.0, np.inf, 5.0])
    spec = Features(numeric=["x", "z"], categorical=["c"], max_categories=2)
    batch = {"x": x, "z": np.arange(5.0), "c": np.array(list("ababa"), dtype=object)}
    matrix, ok = spec.transform_rows(batch, update=False)
    assert ok.tolist() == np.isfinite(matrix).all(axis=1).tolist() == [1, 0, 1, 0, 1]


@pytest.mark.parametrize("window", [1, 7, 100])
def test_rolling_accuracy_equals_a_per_row_window(window: int) -> None:
    rng = np.random.default_rng(window)
    n = 700
    y = rng.integers(0, 2, size=n)
    p = rng.uniform(size=n)
    out = np.stack([1 - p, p], axis=1)
    m = Prequential("classification", ["accuracy"], window=window, binary=True)
    cuts = sorted({0, n, *rng.integers(1, n, size=12).tolist()})
    got = np.concatenate(
        [
            m.update(y[a:b], out[a:b])["accuracy_rolling"]
            for a, b in zip(cuts, cuts[1:], strict=False)
        ]
    )
    right = ((p > 0.5) == (y == 1)).astype(float)
    want = [right[max(0, i + 1 - window) : i + 1].sum() / min(i + 1, window) for i in range(n)]
    assert got.tolist() == want
    assert m.count == n and m.values()["accuracy"] == right.sum() / n


@needs_numba
def test_exact_sgd_fast_loop_equals_the_general_loop() -> None:
    """Plain SGD without L1 takes numba's branch-free loop; numpy's engine agrees."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(3_000, 8))
    y = (X @ rng.normal(size=8) > 0).astype(float)
    fast = LogisticRegression(optimizer="sgd", lr=0.05, l2=0.01, mode="exact")
    numpy = LogisticRegression(optimizer="sgd", lr=0.05, l2=0.01, mode="exact", engine="numpy")
    a, b = fast.predict_learn(X, y), numpy.predict_learn(X, y)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.W, numpy.W, rtol=0, atol=1e-12)
