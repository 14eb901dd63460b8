"""A row with a NaN/inf feature is left out of the learning, and nothing else changes.

It updates neither the running feature statistics nor the one-hot vocabularies nor the
weights: the state after the stream is bit for bit the state after the same stream with
that row removed, and every later row is predicted and learned.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tidal.core.batch import Batch
from tidal.ml.learn import Features, LogisticRegression
from tidal.ml.learn.step import LearnStep

BAD = 700  # the row with the non-finite feature, in the first batch


def _data(n: int = 2_000, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(3, 2, n), rng.normal(-1, 0.5, n)
    colour = rng.choice(np.array(["red", "green", "blue"], dtype=object), n)
    colour[BAD] = "violet"  # a category first seen on the bad row: must not take a slot
    shade = rng.choice(np.array(["light", "dark"], dtype=object), n)
    y = np.where(a - 4 * b + (colour == "red") + rng.normal(0, 0.3, n) > 7, 1, 0)
    return {"a": a, "b": b, "colour": colour, "shade": shade, "y": y}


def _run(
    d: dict[str, np.ndarray], spec: Features, mode: str, half: int
) -> tuple[LearnStep, list[Any]]:
    step = LearnStep("m", LogisticRegression(lr=0.05, mode=mode, batch_size=16),
                     features=spec, target="y", metrics=["accuracy"])  # fmt: skip
    counters: dict[str, int] = {}
    step.ctx.counters = counters
    outs = [step.process(Batch({k: v[s] for k, v in d.items()}), 0)[0][1]
            for s in (slice(0, half), slice(half, None))]  # fmt: skip
    return step, [counters, *outs]


def _without(d: dict[str, np.ndarray], row: int) -> dict[str, np.ndarray]:
    return {k: np.delete(v, row) for k, v in d.items()}


def _spec(kind: str) -> Features:
    if kind == "numeric":
        return Features(numeric=["a", "b"])
    if kind == "one-numeric":  # a single column: moments take numpy's pairwise path
        return Features(numeric=["a"])
    std = kind == "categorical"
    return Features(numeric=["a", "b"], categorical=["colour"], hashed=["shade"],
                    max_categories=5, buckets=8, standardize=std)  # fmt: skip


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("mode", ["exact", "minibatch"])
@pytest.mark.parametrize("kind", ["numeric", "one-numeric", "categorical", "raw-categorical"])
def test_a_nonfinite_row_is_skipped_and_learning_goes_on(kind: str, mode: str, bad: float) -> None:
    d = _data()
    d["a"][BAD] = bad
    step, (counters, first, second) = _run(d, _spec(kind), mode, 1_000)
    ref, (ref_counters, ref_first, ref_second) = _run(_without(d, BAD), _spec(kind), mode, 999)
    assert counters == {"m.learned": 1_999, "m.missing": 1}
    assert ref_counters == {"m.learned": 1_999}
    got, want = step.snapshot(), ref.snapshot()
    for key in ("W", "A", "B", "t"):
        np.testing.assert_array_equal(got["learner"][key], want["learner"][key])
    assert got["features"]["count"] == want["features"]["count"]
    np.testing.assert_array_equal(got["features"]["mean"], want["features"]["mean"])
    np.testing.assert_array_equal(got["features"]["m2"], want["features"]["m2"])
    assert got["features"]["vocab"] == want["features"]["vocab"]
    assert "violet" not in str(got["features"]["vocab"])
    # the bad row is predicted as missing; every other row exactly as without it
    assert first["prediction"][BAD] == -1 and np.isnan(first["prediction_score"][BAD])
    np.testing.assert_array_equal(np.delete(first["prediction_score"], BAD),
                                  ref_first["prediction_score"])  # fmt: skip
    np.testing.assert_array_equal(second["prediction_score"], ref_second["prediction_score"])
    assert not np.isnan(second["prediction_score"]).any() and second["accuracy"][-1] > 0.6


def test_a_batch_of_only_nonfinite_rows_changes_nothing() -> None:
    spec = Features(numeric=["a", "b"], categorical=["colour"], max_categories=3)
    d = {k: v[:10] for k, v in _data().items()}
    spec.transform(d)
    before = spec.snapshot()
    X, ok = spec.transform_rows({**d, "a": np.full(10, np.nan), "colour": np.full(10, "x")})
    after = spec.snapshot()
    assert not ok.any() and after["count"] == before["count"] == 10
    np.testing.assert_array_equal(after["mean"], before["mean"])
    assert after["vocab"] == before["vocab"]
    assert X[:, 2:].sum() == 10  # the new value maps to "other", it takes no slot
