"""The Flink-free half of tidal.flink (runs in both environments)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from tidal.core.batch import Batch
from tidal.errors import ConfigError, ModelError, StateError
from tidal.flink.core import KeyedDetector, Scorer, logistic_onnx, registry_model
from tidal.ml.onnx import OnnxHandler
from tidal.ml.predict import Predict
from tidal.ml.registry import Registry


def _series(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.sin(np.arange(n) / 7.0) + rng.normal(0, 0.1, n)
    x[n // 2] += 9.0
    return x


def test_scorer_matches_the_predict_step() -> None:
    model = logistic_onnx([0.5, -1.0, 2.0], 0.25)
    rng = np.random.default_rng(1)
    cols = [rng.normal(size=500) for _ in range(3)]
    s = Scorer(OnnxHandler(model, version="v7"), max_batch=64)
    s.open()
    out = s.score(cols)
    step = Predict("p", OnnxHandler(model, version="v7"), features=["a", "b", "c"])
    step.open(step.ctx)
    ref = step.process(Batch({"a": cols[0], "b": cols[1], "c": cols[2]}), 0)[0][1]
    np.testing.assert_array_equal(out["score"], ref["score"].astype(np.float64))
    assert set(out["model_version"]) == {"v7"}


def test_scorer_errors_say_what_to_do() -> None:
    s = Scorer(OnnxHandler(logistic_onnx([1.0], 0.0)), output="nope")
    with pytest.raises(ModelError, match="open"):
        s.score([np.zeros(2)])
    s.open()
    with pytest.raises(ModelError, match="no output 'nope'"):
        s.score([np.zeros(2)])
    with pytest.raises(ConfigError):
        Scorer(OnnxHandler(logistic_onnx([1.0], 0.0)), max_batch=0)


def test_scorer_serves_a_registry_model_with_its_version(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(logistic_onnx([1.0, 1.0], 0.0))
    reg = Registry(tmp_path / "reg")
    reg.register(path, name="m")
    reg.promote("m", 1)
    factory = registry_model(tmp_path / "reg", "m")
    s = Scorer(pickle.loads(pickle.dumps(factory)))  # Flink ships it to its workers
    s.open()
    out = s.score([np.zeros(3), np.ones(3)])
    assert out["model_version"].tolist() == ["v1"] * 3
    assert out["score"][0] == pytest.approx(1 / (1 + np.exp(-1.0)))


def test_keyed_detector_in_pieces_equals_one_pass() -> None:
    x = _series(700)
    whole, _ = KeyedDetector("ensemble").score(None, x)
    d = KeyedDetector("ensemble")
    state, parts = None, []
    for lo, hi in [(0, 1), (1, 200), (200, 201), (201, 555), (555, 700)]:
        cols, state = d.score(state, x[lo:hi])
        parts.append(cols)
    for name in ("deviation", "anomaly_score", "alert"):
        np.testing.assert_array_equal(np.concatenate([p[name] for p in parts]), whole[name])
    assert whole["alert"][350]


def test_keyed_detector_state_is_bytes_without_pickle_and_travels() -> None:
    d = KeyedDetector("median_mad")
    _, state = d.score(None, _series(300))
    assert isinstance(state, bytes) and state[:2] == b"PK"  # an npz (zip), not a pickle
    d2 = pickle.loads(pickle.dumps(d))  # as Flink ships functions to workers
    a, _ = d.score(state, np.array([0.1, 12.0]))
    b, _ = d2.score(state, np.array([0.1, 12.0]))
    np.testing.assert_array_equal(a["deviation"], b["deviation"])


def test_keyed_detector_refuses_foreign_state() -> None:
    with pytest.raises(StateError, match="not a Tidal state"):
        KeyedDetector("median_mad").score(b"garbage", np.zeros(2))
    _, state = KeyedDetector("median_mad", alert_on=4.0).score(None, np.zeros(3))
    with pytest.raises(StateError):
        KeyedDetector("median_mad").score(state, np.zeros(2))
    with pytest.raises(ConfigError, match="unknown detector"):
        KeyedDetector("nope")
