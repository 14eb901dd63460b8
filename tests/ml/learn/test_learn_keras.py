"""Keras 3 models on PyTorch: a ``.keras`` file the test saves itself learns on the stream,
snapshots as arrays, restores exactly, scores through ``stream.predict``; a wrong backend is
a clear error."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
if importlib.util.find_spec("keras") is None:  # not importorskip: it would pick Keras' backend
    pytest.skip("needs Keras: pip install 'tidal-stream[torch]'", allow_module_level=True)

from tidal import Pipeline  # noqa: E402
from tidal.errors import ConfigError, ModelError, PipelineError  # noqa: E402
from tidal.ml import keras as tk  # noqa: E402
from tidal.ml.learn.keras_adapter import KerasLearner  # noqa: E402
from tidal.runtime.executor import Executor  # noqa: E402
from tidal.runtime.snapshot import decode, encode  # noqa: E402
from tidal.testing import MemorySink, MemorySource, collect, run  # noqa: E402

keras = tk.import_keras()


def _net(units: int, activation: str | None, d: int = 2, *, optimizer: Any = None) -> Any:
    init = keras.initializers.GlorotUniform
    net = keras.Sequential(
        [
            keras.Input(shape=(d,)),
            keras.layers.Dense(16, activation="relu", kernel_initializer=init(seed=3)),
            keras.layers.Dense(units, activation=activation, kernel_initializer=init(seed=4)),
        ]
    )
    if optimizer is not None:
        loss = "binary_crossentropy" if units == 1 else "sparse_categorical_crossentropy"
        net.compile(optimizer=optimizer, loss=loss)
    return net


def _save(net: Any, tmp_path: Path, name: str = "m.keras") -> Path:
    path = tmp_path / name
    tk.save_model(net, path)
    return path


def _data(n: int = 1_200, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(5).normal(size=(n, 2))
    z = X[:, 0] - X[:, 1]
    y = (z > 0) * 1.0 if classes == 2 else np.digitize(z, [-0.7, 0.7]).astype(float)
    return X, y


def test_a_saved_compiled_model_learns_and_restores_exactly(tmp_path: Path) -> None:
    path = _save(_net(1, "sigmoid", optimizer=keras.optimizers.Adam(0.02)), tmp_path)
    X, y = _data()
    a = KerasLearner(path, batch_size=16)
    assert type(a.model.optimizer).__name__ == "Adam"  # the file's compile config
    assert float(tk.to_numpy(a.model.optimizer.learning_rate)) == pytest.approx(0.02)
    a.learn(X[:600], y[:600])
    b = KerasLearner(path, batch_size=16)
    b.restore(decode(encode(a.snapshot())))  # through bytes: arrays and JSON only
    np.testing.assert_array_equal(a.predict_proba(X[600:]), b.predict_proba(X[600:]))
    got_a, got_b = a.predict_learn(X[600:], y[600:]), b.predict_learn(X[600:], y[600:])
    np.testing.assert_array_equal(got_a, got_b)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert (a.predict(X) == y).mean() > 0.9


def test_softmax_classes_and_logits(tmp_path: Path) -> None:
    X, y = _data(classes=3)
    probs = KerasLearner(_save(_net(3, "softmax"), tmp_path, "p.keras"), lr=0.02, batch_size=8)
    logits = KerasLearner(
        _save(_net(3, None), tmp_path, "l.keras"), lr=0.02, batch_size=8, logits=True
    )
    for learner in (probs, logits):
        assert learner.n_classes == 3
        learner.learn(X, y)
        p = learner.predict_proba(X)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
        assert (learner.predict(X) == y).mean() > 0.85


def test_learn_step_through_a_pipeline_with_a_snapshot_mid_stream(tmp_path: Path) -> None:
    path = _save(_net(1, "sigmoid", optimizer=keras.optimizers.Adam(0.02)), tmp_path)
    X, y = _data(900)
    label = np.where(y > 0, "up", "down").astype(object)
    batches = [
        {"a": X[i : i + 150, 0], "b": X[i : i + 150, 1], "label": label[i : i + 150]}
        for i in range(0, 900, 150)
    ]

    def build() -> tuple[Pipeline, MemorySink]:
        p = Pipeline("keras")
        s = p.source("in", MemorySource([__import__("tidal").Batch(b) for b in batches]))
        learner = KerasLearner(path, batch_size=16)
        return p, collect(s.learn("net", learner, features=["a", "b"], target="label"))

    p, out = build()
    run(p, max_wait="0ms")
    whole = out.records()
    assert whole[-1]["accuracy"] > 0.75 and whole[-1]["prediction"] in ("up", "down")

    p1, out1 = build()
    ex = Executor(p1, max_wait="0ms", handle_signals=False)
    ex.open()
    for _ in range(3):
        ex.step()
    snap = decode(encode(ex.snapshot()))
    p2, out2 = build()
    Executor(p2, max_wait="0ms", handle_signals=False).run(snapshot=snap)
    resumed = out1.records() + out2.records()
    assert [r["prediction_score"] for r in resumed] == [r["prediction_score"] for r in whole]


def test_predict_step_scores_a_keras_file(tmp_path: Path) -> None:
    net = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1)])
    net.set_weights([np.array([[2.0], [-1.0]]), np.array([0.25])])
    handler = tk.KerasHandler(_save(net, tmp_path), outputs=("score",), version="k1")
    p = Pipeline("serve")
    s = p.source("in", MemorySource({"a": [1.0, 0.0], "b": [0.0, 4.0]}))
    out = collect(s.predict("score", handler, features=["a", "b"]))
    run(p)
    assert [(r["score"], r["model_version"]) for r in out.records()] == [
        (2.25, "k1"),
        (-3.75, "k1"),
    ]
    assert handler.signature.n_features == 2


def test_bad_files_and_models_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        KerasLearner(tmp_path / "nope.keras")
    (tmp_path / "m.h5").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"not a \.keras file"):
        KerasLearner(tmp_path / "m.h5")
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="cannot load"):
        KerasLearner(tmp_path / "junk.keras")
    with pytest.raises(ModelError, match="regression model needs 1 output unit"):
        KerasLearner(_net(3, None), task="regression")
    learner = KerasLearner(_net(1, "sigmoid"))
    with pytest.raises(ModelError, match="class ids must be 0..1"):
        learner.learn(np.zeros((2, 2)), np.array([0.0, 2.0]))
    with pytest.raises(ModelError, match="built for 2"):
        learner.learn(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(PipelineError, match="step 'net'"):
        p = Pipeline("bad")
        s = p.source("in", MemorySource({"a": [1.0], "b": [2.0], "c": [1.0], "y": [1]}))
        collect(s.learn("net", learner, features=["a", "b", "c"], target="y"))
        run(p)


def test_keras_on_another_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("keras")
    fake.backend = types.SimpleNamespace(backend=lambda: "jax")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keras", fake)
    with pytest.raises(ConfigError, match="imported with the 'jax' backend"):
        tk.import_keras()


def test_a_keras_backend_variable_naming_another_backend_is_refused() -> None:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    code = (
        "from tidal.errors import ConfigError\n"
        "from tidal.ml.keras import import_keras\n"
        "try:\n    import_keras()\nexcept ConfigError as e:\n    print(e)\n"
        "import sys; print('keras' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "KERAS_BACKEND is 'tensorflow'" in done.stdout
    assert done.stdout.strip().endswith("False")  # refused before importing Keras
