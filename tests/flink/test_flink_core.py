"""The Flink-free half of tidal.flink (runs in both environments)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from tidal.core.batch import Batch
from tidal.errors import ConfigError, ModelError, StateError
from tidal.flink.core import KeyedDetector, KeyedLearner, Scorer, logistic_onnx, registry_model
from tidal.ml.learn.features import Features
from tidal.ml.learn.step import LearnStep
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


CHUNKS = [(0, 1), (1, 97), (97, 98), (98, 640), (640, 1000)]


def _labeled(n: int, seed: int = 3) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    cols = [rng.normal(2.0, 3.0, n), rng.normal(-1.0, 0.5, n)]
    y = ((cols[0] - 2.0) / 3.0 - 2.0 * (cols[1] + 1.0) + rng.normal(0, 0.3, n) > 0).astype(float)
    return cols, y


def _in_chunks(k: KeyedLearner, cols: list[np.ndarray], y: np.ndarray) -> dict[str, np.ndarray]:
    state, parts = None, []
    for lo, hi in CHUNKS:
        out, state = k.learn(state, [c[lo:hi] for c in cols], y[lo:hi])
        assert isinstance(state, bytes) and state[:2] == b"PK"  # an npz, not a pickle
        parts.append(out)
    return {n: np.concatenate([p[n] for p in parts]) for n in k.outputs}


def test_keyed_learner_in_chunks_equals_the_learn_step_over_the_same_rows() -> None:
    cols, y = _labeled(1000)
    k = KeyedLearner("logistic", features=["a", "b"], metrics=["accuracy"], lr=0.2)
    got = _in_chunks(pickle.loads(pickle.dumps(k)), cols, y)  # shipped as Flink ships it
    step = LearnStep("m", "logistic", features=["a", "b"], target="y", metrics=["accuracy"])
    step.learner.params["lr"] = 0.2
    want: dict[str, list[np.ndarray]] = {n: [] for n in k.outputs}
    for lo, hi in CHUNKS:  # one step kept in memory: no state round trip between chunks
        out = step.learn(Batch({"a": cols[0][lo:hi], "b": cols[1][lo:hi], "y": y[lo:hi]}))
        for n in k.outputs:
            want[n].append(out[n])
    for n in k.outputs:
        np.testing.assert_allclose(got[n], np.concatenate(want[n]), rtol=0, atol=1e-12)
    assert got["accuracy"][-1] > 0.85  # it did learn


@pytest.mark.parametrize("name", ["logistic", "adam-logistic", "linear"])
def test_keyed_learner_in_exact_mode_equals_one_pass(name: str) -> None:
    cols, y = _labeled(1000, seed=5)
    if name == "linear":
        y = 0.5 * cols[0] - cols[1] + 0.1
    spec = Features(numeric=["a", "b"], standardize=False)
    k = KeyedLearner(name, features=spec, mode="exact", lr=0.05)
    got = _in_chunks(k, cols, y)
    whole, _ = KeyedLearner(name, features=spec, mode="exact", lr=0.05).learn(None, cols, y)
    for n in k.outputs:
        np.testing.assert_allclose(got[n], whole[n], rtol=0, atol=1e-12)


def test_keyed_learner_predicts_unlabeled_rows_without_learning_them() -> None:
    cols, y = _labeled(400)  # (unlabeled rows still update the standardization statistics)
    k = KeyedLearner("logistic", features=Features(numeric=["a", "b"], standardize=False), lr=0.1)
    _, state = k.learn(None, cols, np.where(y > 0, "yes", "no"))
    probe = [np.array([9.0, -4.0]), np.array([-3.0, 1.0])]
    a, after = k.learn(state, probe, [None, None])
    b, _ = k.learn(after, probe, [None, None])  # nothing was learned: same predictions
    assert a["prediction"].tolist() == b["prediction"].tolist() == ["yes", "no"]
    np.testing.assert_array_equal(a["prediction_score"], b["prediction_score"])


def test_keyed_learner_refuses_foreign_state_and_bad_input() -> None:
    k = KeyedLearner("logistic", features=["a"])
    with pytest.raises(StateError, match="not a Tidal state"):
        k.learn(b"garbage", [np.zeros(2)], np.zeros(2))
    _, other = KeyedLearner("linear", features=["a"]).learn(None, [np.zeros(2)], np.zeros(2))
    with pytest.raises(StateError):
        k.learn(other, [np.zeros(2)], np.zeros(2))
    with pytest.raises(ConfigError, match="it takes"):
        k.learn(None, [np.zeros(2), np.zeros(2)], np.zeros(2))
    with pytest.raises(ConfigError, match="unknown learner"):
        KeyedLearner("nope", features=["a"])
