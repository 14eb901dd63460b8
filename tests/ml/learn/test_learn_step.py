"""The learn step: prequential order, labels, metrics against scikit-learn, state, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from tidal import Pipeline
from tidal.core.batch import Batch
from tidal.errors import ConfigError, PipelineError, StateError
from tidal.ml.learn import Features, KMeans, LinearRegression, LogisticRegression, Prequential
from tidal.ml.learn.step import LearnStep
from tidal.runtime.snapshot import decode, encode
from tidal.testing import MemorySource, collect, run


def _data(n: int = 3_000, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    y = np.where(a - b + rng.normal(0, 0.3, n) > 0, "yes", "no").astype(object)
    return {"a": a, "b": b, "y": y}


def _pipeline_out(max_batch: int) -> list[dict[str, object]]:
    p = Pipeline("learn")
    s = p.source("in", MemorySource(_data()))
    learner = LogisticRegression(optimizer="adam", lr=0.05, mode="exact")
    spec = Features(numeric=["a", "b"], standardize=False)
    out = collect(s.learn("m", learner, features=spec, target="y", metrics=["accuracy"]))
    run(p, max_batch=max_batch)
    return out.records()


def test_exact_mode_results_do_not_depend_on_batching() -> None:
    small, large = _pipeline_out(7), _pipeline_out(1_000)
    assert [r["prediction"] for r in small] == [r["prediction"] for r in large]
    np.testing.assert_array_equal(
        [r["prediction_score"] for r in small], [r["prediction_score"] for r in large]
    )
    assert small[-1]["accuracy"] == large[-1]["accuracy"] > 0.9


def test_each_row_is_predicted_before_it_is_learned() -> None:
    # a row's own label cannot leak into its prediction: a label-copying feature starts unknown
    x = np.ones(4)
    step = LearnStep(
        "m",
        LinearRegression(lr=0.5, mode="exact"),
        features=Features(numeric=["x"], standardize=False),
        target="y",
        metrics=["mae"],
    )
    out = step.process(Batch({"x": x, "y": np.full(4, 10.0)}), 0)[0][1]
    assert out["prediction"][0] == 0.0  # nothing learned yet
    assert list(out["prediction"]) == sorted(out["prediction"])  # then it approaches 10


def test_rows_without_label_are_predicted_not_learned() -> None:
    d = _data(200)
    y = d["y"].copy()
    y[::2] = None
    step = LearnStep("m", "logistic", features=["a", "b"], target="y")
    counters: dict[str, int] = {}
    step.ctx.counters = counters
    out = step.process(Batch({**d, "y": y}), 0)[0][1]
    assert counters["m.learned"] == 100
    assert np.isnan(out["accuracy"][::2]).all() and not np.isnan(out["accuracy"][1::2]).any()
    assert all(v in ("yes", "no") for v in out["prediction"])


def test_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2_000)
    p1 = np.clip(y * 0.6 + rng.random(2_000) * 0.5, 0, 1)
    proba = np.stack([1 - p1, p1], axis=1)
    m = Prequential("classification", window=500, binary=True)
    for part in np.array_split(np.arange(2_000), 9):
        cols = m.update(y[part], proba[part])
    v = m.values()
    pred = (p1 >= 0.5).astype(int)
    assert v["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert v["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert v["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    assert v["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p1), abs=1e-3)  # 4,096 bins
    assert v["roc_auc_rolling"] == pytest.approx(skm.roc_auc_score(y[-500:], p1[-500:]))
    assert v["accuracy_rolling"] == pytest.approx(skm.accuracy_score(y[-500:], pred[-500:]))
    assert cols["f1_rolling"][-1] == pytest.approx(skm.f1_score(y[-500:], pred[-500:]))

    t = rng.normal(size=1_000)
    guess = t + rng.normal(0, 0.5, 1_000)
    r = Prequential("regression", window=100)
    head = r.update(t[:400], guess[:400])
    cols = r.update(t[400:], guess[400:])
    assert cols["mae"][-1] == pytest.approx(skm.mean_absolute_error(t, guess))
    assert cols["rmse"][-1] == pytest.approx(np.sqrt(skm.mean_squared_error(t, guess)))
    assert cols["r2"][-1] == pytest.approx(skm.r2_score(t, guess))
    assert cols["r2_rolling"][-1] == pytest.approx(skm.r2_score(t[-100:], guess[-100:]))
    assert head["mae"][10] == pytest.approx(skm.mean_absolute_error(t[:11], guess[:11]))


def test_metric_choices_are_checked() -> None:
    with pytest.raises(ConfigError, match="roc_auc"):
        Prequential("classification", ["roc_auc"], binary=False)
    with pytest.raises(PipelineError, match="mae"):
        LearnStep("m", "logistic", features=["a"], target="y", metrics=["mae"])


def test_snapshot_restore_mid_stream_gives_identical_output() -> None:
    d = _data()
    first, second = Batch(d).slice(0, 1_500), Batch(d).slice(1_500, 3_000)
    a = LearnStep("m", "adam-logistic", features=["a", "b"], target="y")
    a.process(first, 0)
    b = LearnStep("m", "adam-logistic", features=["a", "b"], target="y")
    b.restore(decode(encode(a.snapshot())))
    out_a, out_b = a.process(second, 0)[0][1], b.process(second, 0)[0][1]
    for col in ("prediction", "prediction_score", "accuracy", "log_loss_rolling", "roc_auc"):
        np.testing.assert_array_equal(out_a[col], out_b[col])
    c = LearnStep("m", "logistic", features=["a", "b"], target="y")
    with pytest.raises(StateError, match="same arguments"):
        c.restore(a.snapshot())


def test_bad_columns_have_clear_errors() -> None:
    step = LearnStep("m", "logistic", features=["a", "b"], target="label")
    with pytest.raises(PipelineError, match=r"columns \['label'\] are needed"):
        step.process(Batch(_data(10)), 0)
    step = LearnStep("m", "logistic", features=["a", "y"], target="y")
    with pytest.raises(PipelineError, match="'y' must be numeric.*categorical"):
        step.process(Batch(_data(10)), 0)
    with pytest.raises(PipelineError, match="needs target"):
        LearnStep("m", "logistic", features=["a"], target=None)


def test_rows_with_nan_features_are_skipped_and_counted() -> None:
    d = _data(50)
    d["a"][3] = np.nan
    step = LearnStep(
        "m", "logistic", features=Features(numeric=["a", "b"], standardize=False), target="y"
    )
    counters: dict[str, int] = {}
    step.ctx.counters = counters
    out = step.process(Batch(d), 0)[0][1]
    assert counters == {"m.learned": 49, "m.missing": 1}
    assert out["prediction"][3] is None and np.isnan(out["prediction_score"][3])


def test_regression_and_clustering_steps() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=2_000)
    step = LearnStep("r", LinearRegression(lr=0.05, mode="exact"), features=["x"], target="t")
    out = step.process(Batch({"x": x, "t": 2 * x + 1}), 0)[0][1]
    assert out["mae_rolling"][-1] < 0.05 and out["r2"][-1] > 0.9
    pts = np.concatenate([rng.normal(-4, 0.5, 500), rng.normal(4, 0.5, 500)])
    km = LearnStep(
        "k", KMeans(k=2), features=Features(numeric=["v"], standardize=False), target=None
    )
    got = km.process(Batch({"v": pts}), 0)[0][1]["prediction"]
    assert got.dtype == np.int64 and len(set(got[:500].tolist()) & set(got[500:].tolist())) == 0


def test_features_spec() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(5, 2, 1_000)
    whole = Features(numeric=["x"]).transform({"x": x})
    parts = Features(numeric=["x"])
    for part in np.array_split(x, 7):
        parts.transform({"x": part})
    np.testing.assert_allclose(parts.mean, [x.mean()])
    np.testing.assert_allclose(parts.m2 / parts.count, [x.var()])
    assert abs(whole.mean()) < 1e-9
    cat = Features(categorical=["c"], max_categories=3)
    got = cat.transform({"c": np.array(["a", "b", "c", "d", "a"], dtype=object)})
    assert got.argmax(axis=1).tolist() == [0, 1, 2, 2, 0]  # c and d share the "other" slot
    h1 = Features(hashed=["c"], buckets=16).transform({"c": np.array(["a", "b"], object)})
    h2 = Features(hashed=["c"], buckets=16).transform({"c": np.array(["b", "a"], object)})
    np.testing.assert_array_equal(h1, h2[::-1])
    assert h1.sum() == 2


def test_class_weights_shift_the_decision_towards_the_rare_class() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=20_000)
    y = np.where(x + rng.normal(0, 1.0, len(x)) > 2.0, "fraud", "ok").astype(object)
    recalls = []
    for weights in (None, {"fraud": 20.0}):
        step = LearnStep(
            "m",
            "logistic",
            features=["x"],
            target="y",
            class_weights=weights,
            classes=["ok", "fraud"],
            metrics=["f1"],
        )
        out = step.process(Batch({"x": x, "y": y}), 0)[0][1]
        fraud = y == "fraud"
        recalls.append((out["prediction"][fraud] == "fraud").mean())
    assert recalls[1] > recalls[0] + 0.2
    with pytest.raises(PipelineError, match="class_weights are for classifiers"):
        LearnStep("m", "linear", features=["x"], target="y", class_weights={1: 2.0})


def test_a_river_learner_refuses_checkpoints_loudly(tmp_path: Path) -> None:
    from river import linear_model

    from tidal import Executor
    from tidal.ml.learn import RiverLearner
    from tidal.runtime.checkpoint import CheckpointConfig

    p = Pipeline("river")
    s = p.source("in", MemorySource(_data(300)))
    collect(
        s.learn(
            "m", RiverLearner(linear_model.LogisticRegression()), features=["a", "b"], target="y"
        )
    )
    with pytest.raises(StateError, match="cannot be checkpointed"):
        Executor(p, checkpoint=CheckpointConfig(data_dir=tmp_path, every_events=100)).run()
    # without checkpoints it runs (the slow path)
    p2 = Pipeline("river2")
    s2 = p2.source("in", MemorySource(_data(300)))
    out = collect(
        s2.learn(
            "m",
            RiverLearner(linear_model.LogisticRegression()),
            features=["a", "b"],
            target="y",
            metrics=["accuracy"],
        )
    )
    run(p2)
    assert out.records()[-1]["accuracy"] > 0.7


def test_softmax_scores_are_the_top_probability_when_classes_appear() -> None:
    """A class first seen in a batch must not turn every row's score into NaN."""
    p = Pipeline("three")
    x = np.tile([[0.0], [1.0], [2.0]], (200, 1))[:, 0]
    src = p.source("in", MemorySource({"x": x, "y": (x.astype(int)).astype(object)}))
    out = collect(src.learn("m", "softmax", features=["x"], target="y"))
    run(p)
    scores = np.array([r["prediction_score"] for r in out.records()], dtype=float)
    assert np.isfinite(scores).all() and ((scores > 0) & (scores <= 1)).all()
