"""Conformance: every built-in online learner keeps the contract of ``tidal.ml.learn``.

A learner joins by being registered in ``tidal.ml.learn.catalog.LEARNERS``; the first test
fails for a learner class the package exports but the catalog does not build. Each check
runs on a small stream that fits the learner's task:

* snapshot mid-stream, through the runtime's snapshot encoding (numeric arrays + JSON, no
  pickle), restore into a fresh learner, continue: the same predictions as an uninterrupted
  learner (learners that are not ``checkpointable`` must refuse with a StateError);
* ``learn`` and ``predict`` do not modify their inputs;
* two learners built with the same seed give the same predictions;
* the snapshot's non-array part is JSON.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
from typing import Any

import numpy as np
import pytest

import tidal.ml.learn as learn
from tidal.errors import StateError
from tidal.ml.learn import LEARNERS, Learner, make
from tidal.runtime.snapshot import decode, encode

NAMES = sorted(LEARNERS)


def _build(name: str, seed: int = 7) -> Learner:
    extra = LEARNERS[name].extra
    if extra is not None and importlib.util.find_spec(extra) is None:
        pytest.skip(f"{name} needs the {extra} extra")
    return make(name, seed=seed)


def _stream(learner: Learner, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    X = rng.normal(size=(n, 3))
    z = X @ [1.0, -1.0, 0.5]
    if learner.task == "regression":
        return X, z
    if learner.kind == "softmax":
        return X, np.digitize(z, [-0.5, 0.5]).astype(float)
    return X, (z > 0).astype(float)


def _predict(learner: Learner, X: np.ndarray) -> np.ndarray:
    got: Any = learner
    if learner.task == "classification":
        return np.asarray(got.predict_proba(X))
    return np.asarray(learner.predict(X))


def test_every_exported_learner_is_in_the_catalog() -> None:
    built = {type(make(n)).__name__ for n in NAMES if LEARNERS[n].extra is None}
    built |= {"MLP", "RiverLearner", "KerasLearner"}  # built by entries that need an extra
    exported = {
        name
        for name in learn.__all__
        if inspect.isclass(obj := getattr(learn, name))
        and hasattr(obj, "learn")
        and name != "Linear"  # the base of the linear learners
        and not getattr(obj, "_is_protocol", False)
    }
    assert exported <= built, f"not in the catalog: {exported - built}"


@pytest.mark.parametrize("name", NAMES)
def test_snapshot_restore_round_trip(name: str) -> None:
    a = _build(name)
    X, y = _stream(a)
    a.learn(X[:300], y[:300])
    if not a.checkpointable:
        with pytest.raises(StateError, match="cannot be checkpointed"):
            a.snapshot()
        return
    state = a.snapshot()
    b = _build(name)
    b.restore(decode(encode(state)))
    np.testing.assert_array_equal(_predict(a, X[300:]), _predict(b, X[300:]))
    a.learn(X[300:], y[300:])
    b.learn(X[300:], y[300:])
    np.testing.assert_array_equal(_predict(a, X), _predict(b, X))


@pytest.mark.parametrize("name", NAMES)
def test_inputs_are_not_modified(name: str) -> None:
    model = _build(name)
    X, y = _stream(model)
    X0, y0 = X.copy(), y.copy()
    model.learn(X, y)
    model.predict(X)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, y0)


@pytest.mark.parametrize("name", NAMES)
def test_seeded_runs_are_deterministic(name: str) -> None:
    a, b = _build(name, seed=3), _build(name, seed=3)
    X, y = _stream(a)
    a.learn(X, y)
    b.learn(X, y)
    np.testing.assert_array_equal(_predict(a, X), _predict(b, X))


@pytest.mark.parametrize("name", NAMES)
def test_snapshot_is_arrays_and_json(name: str) -> None:
    model = _build(name)
    if not model.checkpointable:
        pytest.skip("not checkpointable (checked above)")
    X, y = _stream(model)
    model.learn(X, y)

    def plain(node: Any) -> Any:
        if isinstance(node, np.ndarray):
            assert node.dtype.kind in "iufb", node.dtype
            return None
        if isinstance(node, dict):
            return {k: plain(v) for k, v in node.items()}
        return node

    json.dumps(plain(model.snapshot()))
