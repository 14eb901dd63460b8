"""OnnxHandler: models built with onnx.helper and converted from scikit-learn, in pipelines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tidal import ConfigError, ModelError, Pipeline
from tidal.ml.handler import ModelHandler, split_columns, with_postprocess
from tidal.ml.onnx import OnnxHandler
from tidal.testing import MemorySource, collect, run

RNG = np.random.default_rng(3)
W1 = RNG.normal(size=(3, 8)).astype(np.float32)
B1 = RNG.normal(size=8).astype(np.float32)
W2 = RNG.normal(size=(8, 1)).astype(np.float32)
B2 = RNG.normal(size=1).astype(np.float32)


def mlp_bytes(batch: int | None = None) -> bytes:
    """A 3 -> 8 -> 1 ReLU MLP as an ONNX model."""
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "w2", "b2"], ["score"]),
    ]
    inits = [
        numpy_helper.from_array(a, n) for a, n in ((W1, "w1"), (B1, "b1"), (W2, "w2"), (B2, "b2"))
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch, 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data


def reference(X: np.ndarray) -> np.ndarray:
    h = np.maximum(X.astype(np.float32) @ W1 + B1, 0.0)
    return (h @ W2 + B2)[:, 0]


def _data(n: int = 50) -> dict[str, np.ndarray]:
    X = RNG.normal(size=(n, 3))
    return {"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "id": np.arange(n)}


def test_onnx_mlp_from_a_file_scores_a_pipeline(tmp_path: Path) -> None:
    path = tmp_path / "mlp.onnx"
    path.write_bytes(mlp_bytes())
    h = OnnxHandler(path, version="2024-06-01")
    assert isinstance(h, ModelHandler)
    data = _data()
    p = Pipeline("onnx")
    out = collect(p.source("in", MemorySource(data)).predict("score", h, features=["a", "b", "c"]))
    summary = run(p, max_batch=16)
    rows = out.records()
    assert len(rows) == 50 and summary.counts["score.model_calls"] == 4
    X = np.column_stack([data["a"], data["b"], data["c"]])
    np.testing.assert_allclose([r["score"] for r in rows], reference(X), rtol=1e-5, atol=1e-5)
    assert {r["model_version"] for r in rows} == {"2024-06-01"}
    assert [r["id"] for r in rows] == list(range(50))
    assert h.signature.n_features == 3 and h.signature.outputs == ("score",)
    assert h.describe()["model"] == str(path)


def test_thread_settings_are_applied_and_default_to_one() -> None:
    h = OnnxHandler(mlp_bytes())
    h.load()
    opts = h.session.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (1, 1)
    h4 = OnnxHandler(mlp_bytes(), intra_op_threads=4, inter_op_threads=2)
    h4.load()
    opts = h4.session.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (4, 2)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(ConfigError, match="thread counts must be >= 1"):
        OnnxHandler(mlp_bytes(), intra_op_threads=0)


def test_sklearn_classifier_via_to_onnx_keeps_probabilities_2d() -> None:
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression

    from tidal.ml.sklearn import to_onnx

    X = RNG.normal(size=(300, 4)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    clf = LogisticRegression().fit(X, y)
    h = OnnxHandler(to_onnx(clf, 4))
    p = Pipeline("clf")
    src = p.source("in", MemorySource({"x": X}))
    out = collect(src.predict("clf", h, features="x"))
    run(p)
    rows = out.records()
    probs = np.array([r["probabilities"] for r in rows])
    assert probs.shape == (300, 2)
    np.testing.assert_allclose(probs, clf.predict_proba(X), atol=1e-5)
    assert [r["label"] for r in rows] == clf.predict(X).tolist()
    # split into columns by composition
    split = with_postprocess(OnnxHandler(to_onnx(clf, 4)), split_columns("probabilities"))
    split.load()
    res = split.predict(X[:3])
    assert sorted(res) == ["label", "probabilities_0", "probabilities_1"]


def test_zipmap_outputs_are_refused_with_a_fix() -> None:
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx as skl_to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    X = RNG.normal(size=(100, 2)).astype(np.float32)
    clf = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    zipmap = skl_to_onnx(clf, initial_types=[("input", FloatTensorType([None, 2]))])
    data = zipmap.SerializeToString()
    with pytest.raises(ModelError, match="not tensors; convert scikit-learn classifiers with"):
        OnnxHandler(data).load()
    h = OnnxHandler(data, outputs={"output_label": "label"})
    h.load()
    assert h.predict(X[:5])["label"].tolist() == clf.predict(X[:5]).tolist()
    with pytest.raises(ModelError, match=r"has no outputs \['nope'\]"):
        OnnxHandler(data, outputs=["nope"]).load()


def test_bad_files_and_wrong_shapes_are_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        OnnxHandler(tmp_path / "missing.onnx").load()
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load the ONNX model"):
        OnnxHandler(junk).load()
    with pytest.raises(ModelError, match="not loaded"):
        OnnxHandler(mlp_bytes()).predict(np.zeros((1, 3), dtype=np.float32))

    p = Pipeline("wrong")
    src = p.source("in", MemorySource({"a": [1.0], "b": [2.0]}))
    collect(src.predict("score", OnnxHandler(mlp_bytes(), version="v3"), features=["a", "b"]))
    with pytest.raises(
        ModelError, match=r"(?s)step .score.: the model OnnxHandler v3.*takes 3 features"
    ):
        run(p)


def test_a_fixed_batch_axis_is_explained() -> None:
    h = OnnxHandler(mlp_bytes(batch=1))
    h.load()
    assert h.predict(np.zeros((1, 3), dtype=np.float32))["score"].shape == (1,)
    with pytest.raises(ModelError, match="fixed batch size of 1"):
        h.predict(np.zeros((4, 3), dtype=np.float32))


def test_float64_models_get_float64_input() -> None:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "x"], ["sq"])],
        "square",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 2])],
        [helper.make_tensor_value_info("sq", TensorProto.DOUBLE, [None, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    h = OnnxHandler(model.SerializeToString())
    h.load()
    out = h.predict(np.array([[1.5, 2.0]], dtype=np.float32))["sq"]
    assert out.dtype == np.float64 and out.shape == (1, 2)
    assert h.signature.dtype == "float64"
