"""SklearnHandler: methods, skops round trip, unsafe files refused, ONNX conversion."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
sio = pytest.importorskip("skops.io")

from sklearn.base import BaseEstimator, TransformerMixin  # noqa: E402
from sklearn.ensemble import GradientBoostingClassifier  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from tidal import ConfigError, ModelError, Pipeline  # noqa: E402
from tidal.ml.onnx import OnnxHandler  # noqa: E402
from tidal.ml.sklearn import SklearnHandler, to_onnx  # noqa: E402
from tidal.testing import MemorySource, collect, run  # noqa: E402

RNG = np.random.default_rng(11)
X = RNG.normal(size=(400, 3))
Y = (X[:, 0] - 0.5 * X[:, 2] > 0).astype(np.int64)
COLS = {"f0": X[:, 0], "f1": X[:, 1], "f2": X[:, 2]}
FEATURES = ["f0", "f1", "f2"]


def _clf() -> object:
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X.astype(np.float32), Y)


def _score(handler: SklearnHandler) -> list[dict[str, object]]:
    p = Pipeline("sk")
    out = collect(p.source("in", MemorySource(COLS)).predict("m", handler, features=FEATURES))
    run(p, max_batch=128)
    return out.records()


@pytest.mark.parametrize(
    ("method", "column", "width"),
    [("predict", "prediction", None), ("predict_proba", "probabilities", 2)],
)
def test_methods_become_columns(method: str, column: str, width: int | None) -> None:
    clf = _clf()
    rows = _score(SklearnHandler(clf, method=method, version="v1"))  # type: ignore[arg-type]
    got = np.array([r[column] for r in rows])
    want = getattr(clf, method)(X.astype(np.float32))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert (got.shape[1] if got.ndim == 2 else None) == width
    assert {r["model_version"] for r in rows} == {"v1"}


def test_decision_function_and_a_named_output() -> None:
    clf = _clf()
    h = SklearnHandler(clf, method="decision_function", output="margin")
    h.load()
    out = h.predict(X[:5].astype(np.float32))
    assert list(out) == ["margin"] and out["margin"].shape == (5,)
    assert h.signature.outputs == ("margin",) and h.signature.n_features == 3


def test_a_missing_method_is_a_model_error() -> None:
    reg = LinearRegression().fit(X, X[:, 1])
    with pytest.raises(ModelError, match=r"has no method 'predict_proba'; it has \['predict'\]"):
        SklearnHandler(reg, method="predict_proba").load()
    with pytest.raises(ConfigError, match="method must be one of"):
        SklearnHandler(reg, method="transform")  # type: ignore[arg-type]


def test_skops_round_trip(tmp_path: Path) -> None:
    clf = _clf()
    path = tmp_path / "clf.skops"
    sio.dump(clf, path)
    rows = _score(SklearnHandler(path, method="predict_proba", version="skops-1"))
    np.testing.assert_allclose(
        [r["probabilities"] for r in rows], clf.predict_proba(X.astype(np.float32)), atol=1e-6
    )
    assert SklearnHandler(path).describe()["model"] == str(path)


def test_skops_untrusted_types_are_refused_unless_trusted(tmp_path: Path) -> None:
    gb = GradientBoostingClassifier(n_estimators=5, random_state=0).fit(X, Y)
    path = tmp_path / "gb.skops"
    sio.dump(gb, path)
    with pytest.raises(ModelError, match=r"types that skops does not trust.*sklearn\.tree"):
        SklearnHandler(path).load()
    for trusted in (True, ["sklearn.tree._tree.Tree"]):
        h = SklearnHandler(path, trusted=trusted)
        h.load()
        assert (
            h.predict(X[:4].astype(np.float32))["prediction"].tolist() == gb.predict(X[:4]).tolist()
        )


@pytest.mark.parametrize("name", ["model.pkl", "model.joblib", "model.bin"])
def test_pickle_files_are_refused_unless_allowed(tmp_path: Path, name: str) -> None:
    import joblib

    clf = _clf()
    path = tmp_path / name
    if name.endswith(".pkl"):
        path.write_bytes(pickle.dumps(clf))
    else:
        joblib.dump(clf, path)
    with pytest.raises(ModelError, match="refusing to load.*runs whatever code the file names"):
        SklearnHandler(path).load()
    h = SklearnHandler(path, allow_pickle=True)
    h.load()
    want = clf.predict(X[:3].astype(np.float32))  # type: ignore[attr-defined]
    assert h.predict(X[:3].astype(np.float32))["prediction"].tolist() == want.tolist()


def test_a_refused_file_stops_the_pipeline_before_any_event(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_clf()))
    p = Pipeline("unsafe")
    out = collect(
        p.source("in", MemorySource(COLS)).predict("m", SklearnHandler(path), features=FEATURES)
    )
    with pytest.raises(ModelError, match="step 'm'.*could not be loaded.*allow_pickle=True"):
        run(p)
    assert out.records() == []


def test_an_onnx_path_points_to_the_onnx_handler(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(to_onnx(_clf(), 3))
    with pytest.raises(ModelError, match="serve it with tidal.ml.onnx.OnnxHandler"):
        SklearnHandler(path).load()
    h = OnnxHandler(path)
    h.load()
    assert set(h.predict(X[:2].astype(np.float32))) == {"label", "probabilities"}


def test_to_onnx_matches_scikit_learn() -> None:
    clf = _clf()
    h = OnnxHandler(to_onnx(clf, 3))
    h.load()
    out = h.predict(X.astype(np.float32))
    np.testing.assert_allclose(
        out["probabilities"], clf.predict_proba(X.astype(np.float32)), atol=1e-5
    )
    reg = LinearRegression().fit(X, X @ np.array([1.0, 2.0, 3.0]))
    hr = OnnxHandler(to_onnx(reg, 3))
    hr.load()
    np.testing.assert_allclose(
        hr.predict(X.astype(np.float32))["variable"], reg.predict(X), atol=1e-4
    )
    with pytest.raises(ModelError, match="skl2onnx cannot convert"):
        to_onnx(object(), 3)


class _Custom(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """A transformer skl2onnx has no converter for."""

    def fit(self, X: object, y: object = None) -> _Custom:
        return self

    def transform(self, X: object) -> object:
        return X


def test_to_onnx_errors_are_short_and_chained(monkeypatch: pytest.MonkeyPatch) -> None:
    est = make_pipeline(StandardScaler(), _Custom(), LogisticRegression()).fit(X, Y)
    with pytest.raises(ModelError) as info:
        to_onnx(est, 3)
    msg = str(info.value)
    assert msg.startswith("skl2onnx cannot convert Pipeline to ONNX: Unable to find a shape")
    assert "\n" not in msg and "see __cause__" in msg and "update_registered_converter" in msg
    assert "_Custom" in str(info.value.__cause__) and len(str(info.value.__cause__)) > len(msg)

    import skl2onnx

    def dump(*args: object, **kwargs: object) -> None:
        raise RuntimeError("registered converters: " + ", ".join(["Sklearn" + "X" * 30] * 2000))

    monkeypatch.setattr(skl2onnx, "to_onnx", dump)
    with pytest.raises(ModelError) as info:
        to_onnx(LinearRegression().fit(X, X[:, 0]), 3)
    assert len(str(info.value)) < 800 and "more characters, see __cause__" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)
