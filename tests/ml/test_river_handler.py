"""RiverHandler: per-record River models behind the batch protocol."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("river")

from river import compose, linear_model, preprocessing  # noqa: E402

from tidal import ConfigError, ModelError, Pipeline  # noqa: E402
from tidal.ml.river import RiverHandler  # noqa: E402
from tidal.testing import MemorySource, collect, run  # noqa: E402

RNG = np.random.default_rng(9)
N = 200
COLS = {"amount": RNG.normal(50, 10, N), "age": RNG.integers(18, 80, N).astype(np.float64)}


def _trained_classifier() -> Any:
    model = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression())
    for a, g in zip(COLS["amount"], COLS["age"], strict=True):
        model.learn_one({"amount": float(a), "age": float(g)}, bool(a > 50))
    return model


def _records(handler: RiverHandler) -> list[dict[str, Any]]:
    p = Pipeline("river")
    src = p.source("in", MemorySource(COLS))
    out = collect(src.predict("m", handler, features=["amount", "age"]))
    run(p, max_batch=64)
    return out.records()


def test_predict_one_keys_rows_by_the_step_feature_names() -> None:
    model = _trained_classifier()
    rows = _records(RiverHandler(model, version="r1"))
    want = [
        model.predict_one({"amount": float(np.float32(a)), "age": float(np.float32(g))})
        for a, g in zip(COLS["amount"], COLS["age"], strict=True)
    ]
    assert [r["prediction"] for r in rows] == want
    assert {r["model_version"] for r in rows} == {"r1"}


def test_predict_proba_one_columns_follow_classes() -> None:
    model = _trained_classifier()
    rows = _records(RiverHandler(model, method="predict_proba_one", classes=[False, True]))
    probs = np.array([r["probabilities"] for r in rows])
    assert probs.shape == (N, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    first = model.predict_proba_one(
        {"amount": float(np.float32(COLS["amount"][0])), "age": float(np.float32(COLS["age"][0]))}
    )
    np.testing.assert_allclose(probs[0], [first[False], first[True]])
    with pytest.raises(ConfigError, match="needs classes="):
        RiverHandler(model, method="predict_proba_one")


def test_a_regressor_and_explicit_keys() -> None:
    reg = linear_model.LinearRegression()
    for i in range(50):
        reg.learn_one({"x": float(i)}, 3.0 * i)
    h = RiverHandler(reg, features=["x"])
    h.bind(["ignored"])  # explicit features win over the step's names
    h.load()
    out = h.predict(np.array([[1.0], [2.0]], dtype=np.float32))["prediction"]
    assert out.dtype == np.float64 and out.shape == (2,)
    img = RiverHandler(reg)
    img.bind(["img"])
    img.load()
    assert img._names(3) == ["img_0", "img_1", "img_2"]


def test_model_errors_name_the_row() -> None:
    class Broken:
        def predict_one(self, x: dict[str, float]) -> float:
            if x["amount"] > 1000:
                raise ValueError("too big")
            return 0.0

    h = RiverHandler(Broken())
    h.bind(["amount"])
    h.load()
    with pytest.raises(ModelError, match="failed on row 1 of 2: ValueError: too big"):
        h.predict(np.array([[1.0], [5000.0]], dtype=np.float32))
    with pytest.raises(ModelError, match="has no method 'predict_proba_one'"):
        RiverHandler(Broken(), method="predict_proba_one", classes=[0, 1]).load()
