"""Conformance: every recommender and decision policy keeps the shared contract.

A recommender joins by being registered in ``tidal.ml.reco.RECOMMENDERS``, a bandit or
Q-learner in ``tidal.ml.bandits.POLICIES``; the first tests fail for an exported class
that no registry entry builds. Each check runs a stream of batches:

* snapshot mid-stream, through the runtime's encoding (arrays + JSON, no pickle), restore
  into a fresh instance, continue: the same outputs as an uninterrupted run;
* the snapshot's non-array part is plain JSON (``json.dumps``), its arrays numeric;
* the inputs are not modified;
* two instances built with the same seed give the same outputs.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tidal.ml.bandits as bandits
import tidal.ml.reco as reco
from tidal.ml.bandits import POLICIES
from tidal.ml.bandits import make as make_policy
from tidal.ml.reco import RECOMMENDERS
from tidal.ml.reco import make as make_reco
from tidal.runtime.snapshot import decode, encode

ARMS, FEATURES = 3, 4


def _exported(module: Any, method: str) -> set[str]:
    return {
        obj.kind
        for name in module.__all__
        if inspect.isclass(obj := getattr(module, name))
        and isinstance(getattr(obj, "kind", None), str)
        and hasattr(obj, method)
        and obj.kind not in ("linear", "q")
    }


def test_every_exported_policy_and_recommender_is_registered() -> None:
    policies = {make_policy(n, n_arms=ARMS, n_features=FEATURES).kind for n in POLICIES}
    assert _exported(bandits, "choose") <= policies
    assert _exported(reco, "recommend") <= {make_reco(n).kind for n in RECOMMENDERS}


# -- the streams ------------------------------------------------------------------------
def _policy_batches(name: str) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(12):
        x = rng.normal(0, 1, (40, FEATURES))
        if name == "tabular_q":
            x[:, 0] = rng.integers(0, 16, 40)
        out.append({"x": x, "r": rng.normal(0, 1, 40), "x2": x[::-1].copy(),
                    "done": rng.random(40) < 0.1})  # fmt: skip
    return out


def _policy_step(policy: Any, b: dict[str, np.ndarray]) -> np.ndarray:
    d = policy.choose(b["x"])
    if hasattr(policy, "n_actions"):  # Q-learners learn transitions
        policy.update(b["x"], d.actions, b["r"], b["x2"], b["done"])
    else:
        policy.update(b["x"], d.actions, b["r"])
    return np.c_[d.actions, d.propensity, policy.probabilities(b["x"])]


def _reco_batches() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [
        {
            "u": rng.integers(0, 50, 60),
            "i": rng.integers(0, 30, 60),
            "r": rng.normal(3, 1, 60),
            "t": np.full(60, 10.0 * k),
        }  # fmt: skip
        for k in range(12)
    ]


def _features(keys: np.ndarray, dim: int) -> np.ndarray:
    return np.sin(np.outer(keys, np.arange(1, dim + 1)))  # a fixed vector per key


def _reco_step(model: Any, b: dict[str, np.ndarray]) -> np.ndarray:
    ufeat = getattr(model, "ufeat", None)
    xu = None if ufeat is None else _features(b["u"], ufeat.dim)
    ranks = model.rank_of(b["u"], b["i"], 5, xu)
    if getattr(model, "ifeat", None) is not None:  # content features (cold start)
        model.add_items(b["i"], _features(b["i"], model.ifeat.dim))
    if xu is not None:
        model.add_users(b["u"], xu)
    model.learn(b["u"], b["i"], b["r"], b["t"])
    asks = np.arange(55)
    xa = None if ufeat is None else _features(asks, ufeat.dim)
    items, scores = model.recommend_many(asks, 5, xa)
    ids = np.array([-1 if v is None else v for v in items.ravel().tolist()], dtype=float)
    return np.r_[ranks, ids, np.nan_to_num(scores.ravel(), nan=-1.0)]


Case = tuple[Callable[[], Any], list[dict[str, np.ndarray]], Callable[[Any, Any], np.ndarray]]


def _case(kind: str, name: str) -> Case:
    if kind == "policy":
        return (
            lambda: make_policy(name, n_arms=ARMS, n_features=FEATURES, seed=5),
            _policy_batches(name),
            _policy_step,
        )
    base, _, optimizer = name.partition("+")  # "mf+adagrad": the option's own state too
    extra = {"optimizer": optimizer} if optimizer else {}
    return (
        lambda: make_reco(base, factors=3, max_users=30, max_items=20, seed=5, **extra),
        _reco_batches(),
        _reco_step,
    )


CASES = [("policy", n) for n in sorted(POLICIES)] + [("reco", n) for n in sorted(RECOMMENDERS)]
CASES += [("reco", f"{n}+adagrad") for n in sorted(RECOMMENDERS)]
IDS = [f"{k}-{n}" for k, n in CASES]


@pytest.mark.parametrize(("kind", "name"), CASES, ids=IDS)
def test_snapshot_mid_stream_restores_to_the_same_outputs(kind: str, name: str) -> None:
    build, batches, step = _case(kind, name)
    whole = build()
    want = [step(whole, b) for b in batches]
    first = build()
    got = [step(first, b) for b in batches[:5]]
    snap = first.snapshot()
    second = build()
    second.restore(decode(encode(snap)))
    got += [step(second, b) for b in batches[5:]]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("kind", "name"), CASES, ids=IDS)
def test_snapshot_is_json_and_numeric_arrays(kind: str, name: str) -> None:
    build, batches, step = _case(kind, name)
    model = build()
    for b in batches[:3]:
        step(model, b)
    arrays: list[np.ndarray] = []

    def plain(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            arrays.append(v)
            return None
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    json.dumps(plain(model.snapshot()))
    assert arrays and all(a.dtype.kind in "biuf" for a in arrays)


@pytest.mark.parametrize(("kind", "name"), CASES, ids=IDS)
def test_inputs_are_not_modified(kind: str, name: str) -> None:
    build, batches, step = _case(kind, name)
    model = build()
    copies = [{k: v.copy() for k, v in b.items()} for b in batches]
    for b in batches:
        step(model, b)
    for b, c in zip(batches, copies, strict=True):
        for k in b:
            np.testing.assert_array_equal(b[k], c[k])


@pytest.mark.parametrize(("kind", "name"), CASES, ids=IDS)
def test_same_seed_same_outputs(kind: str, name: str) -> None:
    build, batches, step = _case(kind, name)
    a, b = build(), build()
    for batch in batches:
        np.testing.assert_array_equal(step(a, batch), step(b, batch))
