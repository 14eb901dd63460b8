"""The predict step: load once, warm up first, outputs and versions, errors, snapshots."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tidal import Batch, ConfigError, Executor, ModelError, Pipeline, PipelineError, StateError
from tidal.ml.handler import BaseHandler, Signature
from tidal.ml.predict import Predict
from tidal.runtime.snapshot import decode, encode
from tidal.testing import MemorySink, MemorySource, collect, run


class Journal(BaseHandler):
    """Logs every call, so tests can check what happened before the first event."""

    def __init__(self, version: str = "v1", width: int | None = 2) -> None:
        self.version = version
        self.width = width
        self.log: list[str] = []

    def load(self) -> None:
        self.log.append("load")

    def warmup(self, n_features: int, batch_sizes: Any = (1,)) -> None:
        self.log.append(f"warmup:{n_features}")
        super().warmup(n_features, batch_sizes)

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        self.log.append(f"predict:{len(X)}")
        return {"y": X.sum(axis=1), "emb": np.repeat(X[:, :1], 3, axis=1)}

    @property
    def signature(self) -> Signature:
        return Signature(n_features=self.width, outputs=("y", "emb"))


class Registry(BaseHandler):
    """A stand-in for a registry-backed handler: several versions, swaps between batches."""

    def __init__(self, versions: dict[str, float], current: str) -> None:
        self.versions = versions
        self.version = current
        self.promoted: str | None = None
        self.asked: list[str] = []

    def load(self) -> None:
        pass

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": X[:, 0] * self.versions[self.version]}

    def use_version(self, version: str) -> None:
        self.asked.append(version)
        if version not in self.versions:
            msg = f"version {version!r} is not in the registry (it has {sorted(self.versions)})"
            raise ModelError(msg)
        self.version = version

    def refresh(self) -> None:
        if self.promoted is not None:
            self.version, self.promoted = self.promoted, None


DATA = {"a": np.arange(10, dtype=np.float64), "b": np.ones(10), "key": np.arange(10) % 3}


def test_loaded_once_and_warmed_up_before_the_first_event() -> None:
    h = Journal()
    p = Pipeline("p")
    out = collect(p.source("in", MemorySource(DATA)).predict("m", h, features=["a", "b"]))
    run(p, max_batch=4)
    assert h.log[:5] == ["load", "warmup:2", "predict:1", "predict:64", "predict:1024"]
    first_real = h.log.index("predict:4")
    warm = h.log[:first_real]
    # every call before the first event was a warm-up call (the tuning's too)
    assert warm.count("load") == 1 and h.log.count("load") == 1
    assert warm.count("warmup:2") == len([c for c in warm if c.startswith("predict")]) - 2
    assert "predict:256" in warm and "predict:4" not in warm
    rows = out.records()
    assert [r["y"] for r in rows] == [float(i + 1) for i in range(10)]
    assert rows[3]["emb"] == [3.0, 3.0, 3.0]  # a 2-D output stays one column
    assert all(r["model_version"] == "v1" for r in rows)


def test_a_model_of_unknown_width_is_warmed_up_on_the_first_batch() -> None:
    h = Journal(width=None)
    p = Pipeline("p")
    img = np.arange(30, dtype=np.float32).reshape(10, 3)
    collect(p.source("in", MemorySource({"img": img})).predict("m", h, features="img"))
    run(p, max_batch=5)
    assert h.log[:3] == ["load", "warmup:3", "predict:1"]
    assert h.log[-2:] == ["predict:5", "predict:5"]


def test_outputs_select_and_rename() -> None:
    p = Pipeline("p")
    src = p.source("in", MemorySource(DATA))
    a = collect(src.predict("sel", Journal(), features=["a", "b"], outputs=["y"]))
    b = collect(src.predict("ren", Journal(), features=["a", "b"], outputs={"y": "total"}))
    run(p)
    assert "emb" not in a.records()[0] and "y" in a.records()[0]
    assert b.records()[0]["total"] == 1.0 and "y" not in b.records()[0]

    p2 = Pipeline("p2")
    src2 = p2.source("in", MemorySource(DATA))
    collect(src2.predict("m", Journal(version="v8"), features=["a", "b"], outputs=["score"]))
    with pytest.raises(
        ModelError, match=r"step 'm': the model Journal v8 has no outputs \['score'\]"
    ):
        run(p2)


def test_model_and_feature_errors_name_the_step_and_model() -> None:
    class Failing(Journal):
        def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
            if len(X) == 7:
                raise ZeroDivisionError("boom")
            return super().predict(X)

    p = Pipeline("p")
    src = p.source("in", MemorySource(DATA))
    collect(src.predict("scorer", Failing(version="v2"), features=["a", "b"]))
    with pytest.raises(
        ModelError,
        match=r"step 'scorer': the model Failing v2 failed on 7 rows x 2 features: "
        r"ZeroDivisionError: boom",
    ):
        run(p, max_batch=7)

    p2 = Pipeline("p2")
    collect(p2.source("in", MemorySource(DATA)).predict("m", Journal(), features=["a", "zz"]))
    with pytest.raises(PipelineError, match="step 'm': feature column 'zz' is not in the batch"):
        run(p2)

    class Short(Journal):
        def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
            return {"y": X[:1, 0]}

    p3 = Pipeline("p3")
    collect(p3.source("in", MemorySource(DATA)).predict("m", Short(), features=["a", "b"]))
    with pytest.raises(ModelError, match="returned output 'y' with shape"):
        run(p3)


def test_feature_names_the_model_was_fitted_on_are_checked() -> None:
    class Named(Journal):
        @property
        def signature(self) -> Signature:
            return Signature(inputs=("b", "a"), n_features=2)

    p = Pipeline("p")
    collect(p.source("in", MemorySource(DATA)).predict("m", Named(), features=["a", "b"]))
    with pytest.raises(ConfigError, match=r"fitted on the features \['b', 'a'\]"):
        run(p)


def test_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="give the feature columns"):
        Predict("m", Journal(), features=[])
    with pytest.raises(ConfigError, match="max_batch must be >= 1"):
        Predict("m", Journal(), features=["a"], max_batch=0)
    with pytest.raises(ConfigError, match="expected a duration"):
        Predict("m", Journal(), features=["a"], max_latency="fast")


def test_max_batch_alone_cuts_equal_chunks() -> None:
    h = Journal()
    op = Predict("m", h, features=["a", "b"], max_batch=4)
    op.open(op.ctx)
    out = op.process(Batch(DATA), 0)
    assert op.chosen_sizes() == [4, 3, 3]
    assert out[0][1]["y"].tolist() == [float(i + 1) for i in range(10)]
    assert op.ctx.counters["m.model_calls"] == 3


def test_the_key_and_event_time_survive() -> None:
    p = Pipeline("p")
    src = p.source("in", MemorySource({**DATA, "ts": np.arange(10) * 100}), time="ts")
    out = collect(src.key_by("key").predict("m", Journal(), features=["a", "b"]))
    run(p)
    assert out.batches[0].time is not None
    assert [r["key"] for r in out.records()] == DATA["key"].tolist()


# -- versions and snapshots ---------------------------------------------------------------
def _versioned(handler: Registry) -> tuple[Pipeline, MemorySink]:
    p = Pipeline("v")
    src = p.source("in", MemorySource({"a": np.arange(12, dtype=np.float64)}))
    out = collect(src.predict("m", handler, features=["a"]))
    return p, out


def test_snapshot_holds_the_version_and_a_restart_uses_it() -> None:
    reg = Registry({"v1": 1.0, "v2": 10.0}, current="v1")
    p, out = _versioned(reg)
    ex = Executor(p, max_batch=4, max_wait="0ms", handle_signals=False)
    ex.open()
    ex.step()
    snap = decode(encode(ex.snapshot()))  # through bytes: JSON and arrays only
    assert snap["operators"]["m"]["state"] == {"kind": "predict/1", "model_version": "v1"}

    # meanwhile v2 was promoted: a fresh handler would serve v2, the restart must use v1
    reg2 = Registry({"v1": 1.0, "v2": 10.0}, current="v2")
    p2, out2 = _versioned(reg2)
    Executor(p2, max_batch=4, max_wait="0ms", handle_signals=False).run(snapshot=snap)
    assert reg2.asked == ["v1"]
    rows = out.records() + out2.records()
    assert [r["y"] for r in rows] == [float(i) for i in range(12)]
    assert {r["model_version"] for r in rows} == {"v1"}


def test_restore_refuses_a_version_that_cannot_be_served() -> None:
    p, _ = _versioned(Registry({"v1": 1.0}, current="v1"))
    ex = Executor(p, max_batch=4, max_wait="0ms", handle_signals=False)
    ex.open()
    ex.step()
    snap = decode(encode(ex.snapshot()))
    p2, out2 = _versioned(Registry({"v2": 2.0}, current="v2"))
    with pytest.raises(StateError, match=r"scored with model version 'v1'.*not in the registry"):
        Executor(p2, handle_signals=False).open(snap)
    assert out2.records() == []
    # a single-model handler with another version refuses too, and says how to start afresh
    p3 = Pipeline("v")
    src = p3.source("in", MemorySource({"a": np.arange(12, dtype=np.float64)}))
    collect(src.predict("m", Journal(version="v9", width=1), features=["a"]))
    with pytest.raises(StateError, match=r"drop_state=\['m'\]"):
        Executor(p3, handle_signals=False).open(snap)


def test_restore_refuses_a_snapshot_without_a_version() -> None:
    op = Predict("m", Journal(), features=["a"])
    with pytest.raises(StateError, match="records no model version"):
        op.restore({"kind": "predict/1"})
    with pytest.raises(StateError, match="not a predict snapshot"):
        op.restore({"kind": "zscore/1"})


def test_a_swap_between_batches_scores_each_batch_with_one_version() -> None:
    reg = Registry({"v1": 1.0, "v2": 10.0}, current="v1")
    p, out = _versioned(reg)
    ex = Executor(p, max_batch=4, max_wait="0ms", handle_signals=False)
    ex.open()
    ex.step()
    reg.promoted = "v2"
    while ex.step():
        pass
    ex.finish(drain=True)
    per_batch = [set(b["model_version"].tolist()) for b in out.batches]
    assert per_batch == [{"v1"}, {"v2"}, {"v2"}]
    assert [r["y"] for r in out.records()][3:5] == [3.0, 40.0]
