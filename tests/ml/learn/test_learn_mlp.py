"""The MLP learner: learns a non-linear concept, snapshots as arrays, runs on a GPU if any."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tidal.errors import ConfigError  # noqa: E402
from tidal.ml.learn.mlp import MLP  # noqa: E402
from tidal.runtime.snapshot import decode, encode  # noqa: E402


def _xor(n: int = 3_000) -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(0).normal(size=(n, 2))
    return X, ((X[:, 0] * X[:, 1]) > 0).astype(float)


def test_regression_and_snapshot_mid_stream() -> None:
    X, _ = _xor()
    y = np.sin(X[:, 0]) + X[:, 1] ** 2
    a = MLP(task="regression", hidden=(16, 16), lr=0.01, seed=2)
    a.learn(X[:1_500], y[:1_500])
    b = MLP(task="regression", hidden=(16, 16), lr=0.01, seed=2)
    b.restore(decode(encode(a.snapshot())))
    np.testing.assert_array_equal(
        a.predict_learn(X[1_500:], y[1_500:]), b.predict_learn(X[1_500:], y[1_500:])
    )
    assert np.mean((a.predict(X) - y) ** 2) < 0.5 * np.var(y)


def test_bad_settings() -> None:
    with pytest.raises(ConfigError, match="device"):
        MLP(device="tpu")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="class ids"):
        MLP(n_classes=2).learn(np.ones((2, 1)), np.array([0.0, 3.0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_gpu_mixed_precision_learns_and_restores_on_the_cpu() -> None:
    X, y = _xor()
    gpu = MLP(hidden=(16,), lr=0.01, epochs=3, seed=1, device="cuda")
    gpu.learn(X, y)
    assert (gpu.predict(X) == y).mean() > 0.9
    cpu = MLP(hidden=(16,), lr=0.01, epochs=3, seed=1, device="cpu")
    cpu.restore(decode(encode(gpu.snapshot())))
    assert (cpu.predict(X) == gpu.predict(X)).mean() > 0.98
