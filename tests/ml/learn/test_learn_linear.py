"""Linear learners: exact mode = plain per-sample SGD, engines agree, convergence to sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tidal.errors import ConfigError, ModelError, StateError
from tidal.ml.learn import LinearRegression, LogisticRegression, Softmax
from tidal.ml.learn.kernels import has_numba


def _data(n: int = 3_000, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    return X, w, X @ w + 0.3


def _plain_sgd(X: np.ndarray, y: np.ndarray, lr: float, l2: float, logistic: bool):
    """Per-sample SGD in plain Python: the reference the exact mode must match."""
    d = len(X[0])
    w, b = [0.0] * d, 0.0
    preds = []
    for row, target in zip(X.tolist(), y.tolist(), strict=True):
        z = b + sum(wi * xi for wi, xi in zip(w, row, strict=True))
        p = 1.0 / (1.0 + math.exp(-z)) if logistic else z
        preds.append(p)
        g = p - target
        w = [wi - lr * (g * xi + l2 * wi) for wi, xi in zip(w, row, strict=True)]
        b -= lr * g
    return np.array(w), b, np.array(preds)


@pytest.mark.parametrize("engine", ["numba", "numpy"])
@pytest.mark.parametrize("logistic", [False, True])
def test_exact_mode_matches_plain_python_per_sample_sgd(engine: str, logistic: bool) -> None:
    if engine == "numba" and not has_numba():
        pytest.skip("numba is not installed")
    X, _, z = _data(n=1_500)
    y = (z > 0).astype(float) if logistic else z
    cls = LogisticRegression if logistic else LinearRegression
    model = cls(optimizer="sgd", lr=0.05, l2=0.01, mode="exact", engine=engine)  # type: ignore[arg-type]
    before = []
    for part in np.array_split(np.arange(len(X)), 7):  # batch boundaries must not matter
        got = model.predict_learn(X[part], y[part])
        before.append(got[:, 1] if logistic else got[:, 0])
    w, b, preds = _plain_sgd(X, y, 0.05, 0.01, logistic)
    np.testing.assert_allclose(model.weights[:, 0], w, rtol=0, atol=1e-9)
    assert abs(model.intercept[0] - b) < 1e-9
    np.testing.assert_allclose(np.concatenate(before), preds, rtol=0, atol=1e-9)


@pytest.mark.skipif(not has_numba(), reason="numba is not installed")
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "ftrl"])
@pytest.mark.parametrize("cls", [LinearRegression, LogisticRegression, Softmax])
@pytest.mark.parametrize("mode", ["exact", "minibatch"])
def test_numba_and_numpy_engines_agree(optimizer: str, cls: type, mode: str) -> None:
    X, _, z = _data(n=600)
    if cls is LinearRegression:
        y = z
    elif cls is LogisticRegression:
        y = (z > 0).astype(float)
    else:
        y = np.digitize(z, [-1.0, 0.0, 1.0]).astype(float)
    kw = {"optimizer": optimizer, "l1": 0.001, "l2": 0.01, "mode": mode, "batch_size": 16}
    a, b = cls(engine="numba", **kw), cls(engine="numpy", **kw)
    out_a, out_b = a.predict_learn(X, y), b.predict_learn(X, y)
    np.testing.assert_allclose(out_a, out_b, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.W, b.W, rtol=0, atol=1e-9)


def test_logistic_converges_to_sklearns_batch_solution() -> None:
    from sklearn.linear_model import LogisticRegression as SkLogistic

    rng = np.random.default_rng(4)
    X = rng.normal(size=(20_000, 4))
    p = 1 / (1 + np.exp(-(X @ [1.5, -1.0, 0.5, 0.0] + 0.25)))
    y = (rng.random(len(X)) < p).astype(float)
    sk = SkLogistic(C=1e6, max_iter=1_000).fit(X, y)
    model = LogisticRegression(optimizer="sgd", lr=0.1, batch_size=256)
    for _epoch in range(10):  # a stationary stream seen a few times over
        model.learn(X, y)
    np.testing.assert_allclose(model.weights[:, 0], sk.coef_[0], atol=0.03)
    assert abs(model.intercept[0] - sk.intercept_[0]) < 0.03


def test_linear_regression_converges_to_least_squares() -> None:
    from sklearn.linear_model import LinearRegression as SkLinear

    X, _, z = _data(n=20_000, d=4, seed=2)
    y = z + np.random.default_rng(3).normal(0, 0.5, len(z))
    sk = SkLinear().fit(X, y)
    model = LinearRegression(optimizer="sgd", lr=0.05, batch_size=256)
    for _epoch in range(10):
        model.learn(X, y)
    np.testing.assert_allclose(model.weights[:, 0], sk.coef_, atol=0.03)
    assert abs(model.intercept[0] - sk.intercept_) < 0.03


def test_ftrl_l1_zeroes_useless_weights() -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(10_000, 10))
    y = (X[:, 0] - X[:, 1] > 0).astype(float)
    model = LogisticRegression(optimizer="ftrl", lr=0.1, l1=5.0)
    model.learn(X, y)
    w = model.weights[:, 0]
    assert abs(w[0]) > 0.5 and abs(w[1]) > 0.5
    assert (w[2:] == 0).sum() >= 6


@pytest.mark.parametrize("cls", [LinearRegression, LogisticRegression, Softmax])
def test_snapshot_restore_mid_stream_gives_identical_predictions(cls: type) -> None:
    from tidal.runtime.snapshot import decode, encode

    X, _, z = _data(n=2_000)
    y = z if cls is LinearRegression else (z > 0).astype(float)
    a = cls(optimizer="adam")
    a.learn(X[:1_000], y[:1_000])
    b = cls(optimizer="adam")
    b.restore(decode(encode(a.snapshot())))
    out_a, out_b = a.predict_learn(X[1_000:], y[1_000:]), b.predict_learn(X[1_000:], y[1_000:])
    np.testing.assert_array_equal(out_a, out_b)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


def test_restore_refuses_other_settings() -> None:
    a = LogisticRegression(lr=0.1)
    a.learn(np.ones((3, 2)), np.ones(3))
    with pytest.raises(StateError, match="same arguments"):
        LogisticRegression(lr=0.2).restore(a.snapshot())


def test_softmax_adds_classes_as_they_come() -> None:
    m = Softmax(optimizer="adam", lr=0.1)
    m.learn(np.eye(3)[:2], np.array([0, 1]))
    assert m.n_classes == 2
    X = np.eye(3)[np.arange(600) % 3]
    m.learn(X, np.arange(600) % 3)
    assert m.n_classes == 3
    assert m.predict(np.eye(3)).tolist() == [0, 1, 2]


def test_bad_inputs_have_clear_errors() -> None:
    with pytest.raises(ConfigError, match="optimizer"):
        LogisticRegression(optimizer="rmsprop")  # type: ignore[arg-type]
    m = LogisticRegression()
    with pytest.raises(ModelError, match="0 or 1"):
        m.learn(np.ones((2, 1)), np.array([0.0, 2.0]))
    m.learn(np.ones((2, 1)), np.array([0.0, 1.0]))
    with pytest.raises(ModelError, match="built for 1"):
        m.predict(np.ones((2, 3)))
    with pytest.raises(ModelError, match="NaN"):
        m.learn(np.array([[np.nan]]), np.array([1.0]))
