"""The ModelHandler protocol: hooks with defaults, composition, feature selection."""

from __future__ import annotations

import inspect
import sys
from typing import Any

import numpy as np
import pytest

from tidal import Batch, ModelError, Pipeline, PipelineError
from tidal.ml import handler as hooks
from tidal.ml.handler import (
    BaseHandler,
    Composed,
    ModelHandler,
    Signature,
    feature_matrix,
    split_columns,
    with_postprocess,
    with_preprocess,
)
from tidal.testing import MemorySource, collect, run


class ProtocolOnly:
    """Implements only the two required methods; no base class."""

    def __init__(self) -> None:
        self.loaded = 0

    def load(self) -> None:
        self.loaded += 1

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        return {"total": X.sum(axis=1)}


class Recorder(BaseHandler):
    """Counts calls and remembers the shapes it saw."""

    version = "r1"

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.refreshed = 0
        self.bound: list[str] = []
        self.asked: list[str] = []

    def load(self) -> None:
        pass

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        self.shapes.append(X.shape)
        return {"first": X[:, 0].copy(), "pair": X[:, :2].copy()}

    @property
    def signature(self) -> Signature:
        return Signature(n_features=3, outputs=("first", "pair"))

    def refresh(self) -> None:
        self.refreshed += 1

    def bind(self, features: Any) -> None:
        self.bound = list(features)

    def use_version(self, version: str) -> None:
        self.asked.append(version)


def test_a_protocol_only_handler_runs_in_a_pipeline_with_default_hooks() -> None:
    h = ProtocolOnly()
    assert isinstance(h, ModelHandler)
    p = Pipeline("proto")
    src = p.source("in", MemorySource({"a": [1.0, 2.0, 3.0], "b": [1, 1, 1]}))
    out = collect(src.predict("score", h, features=["a", "b"]))
    run(p)
    assert h.loaded == 1
    assert [r["total"] for r in out.records()] == [2.0, 3.0, 4.0]
    assert {r["model_version"] for r in out.records()} == {"unversioned"}
    assert hooks.describe(h) == {"type": "ProtocolOnly", "version": "unversioned"}
    assert hooks.signature_of(h) == Signature()
    hooks.use_version(h, "unversioned")
    with pytest.raises(ModelError, match="not 'v9'"):
        hooks.use_version(h, "v9")


def test_base_handler_defaults() -> None:
    class Plain(BaseHandler):
        def load(self) -> None:
            pass

        def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
            return {"n": np.full(len(X), X.shape[1])}

    h = Plain()
    assert h.version == "unversioned"
    assert h.describe() == {"type": "Plain", "version": "unversioned"}
    assert h.signature == Signature()
    h.warmup(4, (1, 8))
    h.use_version("unversioned")
    with pytest.raises(ModelError, match="serves model version 'unversioned' only"):
        h.use_version("v2")


def test_composition_is_flat_and_ordered() -> None:
    base = Recorder()
    h = with_preprocess(base, lambda X: X * 10)
    h = with_preprocess(h, lambda X: X + 1)  # runs first
    h = with_postprocess(h, lambda out: {"first": out["first"] + 0.5})
    h = with_postprocess(h, lambda out: {**out, "big": out["first"] > 30})
    assert isinstance(h, Composed) and h.inner is base
    assert (len(h.pre), len(h.post)) == (2, 2)
    out = h.predict(np.array([[1, 0, 0], [3, 0, 0]], dtype=np.float32))
    assert out["first"].tolist() == [20.5, 40.5]
    assert out["big"].tolist() == [False, True]
    assert h.version == "r1"
    assert h.signature == Signature(n_features=None, outputs=())
    d = h.describe()
    assert d["model"] == {"type": "Recorder", "version": "r1"} and len(d["preprocess"]) == 2


def test_composed_forwards_every_hook_of_the_base_class() -> None:
    """Guards against drift: a hook added to BaseHandler must be forwarded by Composed."""
    hook_names = {
        name
        for name, _ in inspect.getmembers(BaseHandler)
        if not name.startswith("_") and name not in ("load", "predict")
    }
    assert hook_names >= {"version", "warmup", "signature", "describe", "use_version"}
    not_forwarded = sorted(n for n in hook_names if n not in Composed.__dict__)
    assert not not_forwarded, f"Composed leaves these hooks to the default: {not_forwarded}"

    base = Recorder()
    h = with_postprocess(base, lambda out: out)
    h.refresh()
    h.bind(["a", "b", "c"])
    h.use_version("r7")
    assert (base.refreshed, base.bound, base.asked) == (1, ["a", "b", "c"], ["r7"])
    h.warmup(3, (1, 5))
    assert (5, 3) in base.shapes
    assert h.shapes is base.shapes  # backend attributes are read from the inner handler


def test_pre_and_post_errors_name_the_function() -> None:
    def broken(X: np.ndarray) -> np.ndarray:
        raise RuntimeError("no")

    h = with_preprocess(Recorder(), broken)
    with pytest.raises(
        ModelError,
        match=r"pre-processing .*broken \(.*test_model_handlers.py:\d+\) raised RuntimeError",
    ):
        h.predict(np.zeros((2, 3), dtype=np.float32))
    h2 = with_preprocess(Recorder(), lambda X: X[:1])
    with pytest.raises(ModelError, match="one row per event"):
        h2.predict(np.zeros((2, 3), dtype=np.float32))
    h3 = with_postprocess(Recorder(), lambda out: [1, 2])  # type: ignore[arg-type,return-value]
    with pytest.raises(ModelError, match="must return a mapping"):
        h3.predict(np.zeros((2, 3), dtype=np.float32))


def test_feature_matrix_from_named_and_2d_columns() -> None:
    img = np.arange(12, dtype=np.float64).reshape(3, 4)
    b = Batch({"a": [1, 2, 3], "ok": [True, False, True], "img": img})
    X = feature_matrix(b, ["a", "ok"])
    assert X.dtype == np.float32 and X.flags.c_contiguous
    assert X.tolist() == [[1, 1], [2, 0], [3, 1]]
    np.testing.assert_array_equal(feature_matrix(b, ["img"]), img.astype(np.float32))
    mixed = feature_matrix(b, ["a", "img"])
    assert mixed.shape == (3, 5)
    np.testing.assert_array_equal(mixed, np.column_stack([b["a"], img]).astype(np.float32))
    emb = np.ones((3, 8), dtype=np.float32)
    same = feature_matrix(Batch({"e": emb}), ["e"])
    assert np.shares_memory(same, Batch({"e": emb})["e"]) or np.array_equal(same, emb)


def test_feature_matrix_errors() -> None:
    b = Batch({"name": ["x", "y"], "v": [1.0, 2.0]})
    with pytest.raises(PipelineError, match="'name' must be numeric"):
        feature_matrix(b, ["v", "name"])
    with pytest.raises(PipelineError, match="'w' is not in the batch"):
        feature_matrix(b, ["w"])


def test_split_columns_makes_named_columns_in_a_pipeline() -> None:
    h = with_postprocess(Recorder(), split_columns("pair"))
    p = Pipeline("split")
    src = p.source("in", MemorySource({"a": [1.0, 2.0], "b": [3.0, 4.0], "c": [0.0, 0.0]}))
    out = collect(src.predict("s", h, features=["a", "b", "c"]))
    run(p)
    rec = out.records()
    assert rec[0]["pair_0"] == 1.0 and rec[1]["pair_1"] == 4.0 and "pair" not in rec[0]


@pytest.mark.parametrize(
    ("module", "make"),
    [
        ("torch", lambda: __import__("tidal.ml.torch", fromlist=["x"]).TorchHandler("m.pt")),
        ("river", lambda: __import__("tidal.ml.river", fromlist=["x"]).RiverHandler(object())),
        (
            "skops",
            lambda: __import__("tidal.ml.sklearn", fromlist=["x"]).SklearnHandler("m.skops"),
        ),
    ],
)
def test_a_missing_library_names_the_install_command(
    module: str, make: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.pt").write_bytes(b"x")
    (tmp_path / "m.skops").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, module, None)  # "import module" now fails
    extra = {"torch": "torch", "river": "river", "skops": "sklearn"}[module]
    with pytest.raises(ImportError, match=rf"pip install 'tidal-stream\[{extra}\]'"):
        make().load()
