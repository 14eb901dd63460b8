"""scikit-learn backend: score an estimator in process, or convert it to ONNX.

:class:`SklearnHandler` calls one of the estimator's scoring methods on each feature batch:

=====================  ===================  =========================================
``method``             output column        shape
=====================  ===================  =========================================
``predict``            ``prediction``       1-D (a label or a value)
``predict_proba``      ``probabilities``    2-D, one column per class (``classes_``)
``decision_function``  ``score``            1-D (binary) or 2-D (one per class)
=====================  ===================  =========================================

Loading is safe by default. A ``.skops`` file is read with :mod:`skops.io`, which builds
only the types it trusts (scikit-learn's, numpy's) and refuses others with the list of what
it found; pass ``trusted=["module.Type", ...]`` for types you reviewed, or ``trusted=True``
to accept every type in a file you made yourself. Pickle and joblib files are *refused*:
unpickling runs whatever code the file names, so a model file from elsewhere (a shared
drive, a download, a registry others write to) is a way into the process. Convert such a
model once, where it was trained, with ``skops.io.dump`` or :func:`to_onnx`; or pass
``allow_pickle=True`` for a file you trust.

For the fastest scoring convert the estimator with :func:`to_onnx` and serve it with
:class:`~tidal.ml.onnx.OnnxHandler`: ONNX Runtime is several times faster than
scikit-learn's Python-level ``predict`` on small batches, and needs no scikit-learn at
serving time.

Needs the ``sklearn`` extra: ``pip install 'tidal-stream[sklearn]'``.

Example:
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float32)
    >>> clf = LogisticRegression().fit(X, [0, 0, 1, 1])
    >>> h = SklearnHandler(clf, method="predict_proba")
    >>> h.load()
    >>> h.predict(X)["probabilities"].shape, h.signature.outputs
    ((4, 2), ('probabilities',))
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from tidal.core.batch import Array
from tidal.errors import ConfigError, ModelError
from tidal.ml.handler import BaseHandler, Signature, missing_extra, output_column

__all__ = ["SklearnHandler", "to_onnx"]

Method = Literal["predict", "predict_proba", "decision_function"]

_COLUMN: dict[str, str] = {
    "predict": "prediction",
    "predict_proba": "probabilities",
    "decision_function": "score",
}
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".jbl", ".sav", ".p")
_MESSAGE_LIMIT = 500  # characters of a converter's error message shown in ours


def _skops_io() -> Any:
    try:
        import skops.io as sio  # type: ignore[import-untyped]
    except ImportError as exc:
        raise missing_extra(backend="scikit-learn", extra="sklearn", exc=exc) from exc
    return sio


class SklearnHandler(BaseHandler):
    """Score a scikit-learn estimator (or pipeline) with one of its methods.

    Args:
        model: a fitted estimator, or a path to a ``.skops`` file (or, with
            ``allow_pickle=True``, a pickle/joblib file).
        method: ``"predict"``, ``"predict_proba"`` or ``"decision_function"``.
        output: the output column's name (default: see the module docs).
        trusted: for ``.skops`` files: ``False`` trusts only skops' default types, a list
            trusts those types too, ``True`` trusts every type in the file.
        allow_pickle: load pickle/joblib files (this runs code from the file: only for
            files you trust).
        version: the model version recorded on every output row.

    Raises:
        ConfigError: for an unknown ``method``.
    """

    def __init__(
        self,
        model: Any,
        *,
        method: Method = "predict",
        output: str | None = None,
        trusted: bool | Sequence[str] = False,
        allow_pickle: bool = False,
        version: str | None = None,
    ) -> None:
        if method not in _COLUMN:
            msg = f"SklearnHandler: method must be one of {list(_COLUMN)}, got {method!r}"
            raise ConfigError(msg)
        self.path: Path | None = (
            Path(model) if isinstance(model, str | os.PathLike) else None  # type: ignore[arg-type]
        )
        self.estimator: Any = None if self.path is not None else model
        self.method: Method = method
        self.output = output or _COLUMN[method]
        self.trusted = trusted
        self.allow_pickle = allow_pickle
        if version is not None:
            self.version = str(version)
        self._fn: Any = None
        self._named = False

    @property
    def source(self) -> str:
        """Where the model comes from, for messages."""
        if self.path is not None:
            return str(self.path)
        return f"<in-memory {type(self.estimator).__name__}>"

    def load(self) -> None:
        """Read the file (if the model is a path) and find the scoring method.

        Raises:
            ModelError: for a missing file, a pickle file without ``allow_pickle``, a skops
                file with untrusted types, or an estimator without ``method``.
        """
        if self.path is not None:
            self.estimator = self._load_file(self.path)
        fn = getattr(self.estimator, self.method, None)
        if not callable(fn):
            have = [m for m in _COLUMN if callable(getattr(self.estimator, m, None))]
            msg = (
                f"the scikit-learn model {self.source} has no method {self.method!r}; it has {have}"
            )
            raise ModelError(msg)
        self._fn = fn
        self._named = getattr(self.estimator, "feature_names_in_", None) is not None

    def _load_file(self, path: Path) -> Any:
        if not path.is_file():
            msg = f"scikit-learn model file {str(path)!r} does not exist"
            raise ModelError(msg)
        suffix = path.suffix.lower()
        if suffix == ".skops":
            return self._load_skops(path)
        if suffix == ".onnx":
            msg = (
                f"{str(path)!r} is an ONNX model; serve it with "
                "tidal.ml.onnx.OnnxHandler (faster, and needs no scikit-learn)"
            )
            raise ModelError(msg)
        if not self.allow_pickle:
            kind = "a pickle/joblib file" if suffix in _PICKLE_SUFFIXES else "not a .skops file"
            msg = (
                f"refusing to load {str(path)!r}: it is {kind}, and loading a pickle runs "
                "whatever code the file names, so a model file from anyone else can take over "
                "this process. Convert it once where it was trained, with "
                "skops.io.dump(model, 'model.skops') or tidal.ml.sklearn.to_onnx(model, "
                "n_features); or, for a file you made and trust, pass allow_pickle=True"
            )
            raise ModelError(msg)
        try:
            import joblib  # type: ignore[import-untyped]
        except ImportError as exc:
            raise missing_extra(backend="scikit-learn", extra="sklearn", exc=exc) from exc
        try:
            return joblib.load(path)
        except Exception as exc:
            msg = f"cannot unpickle the scikit-learn model {str(path)!r}: {exc}"
            raise ModelError(msg) from exc

    def _load_skops(self, path: Path) -> Any:
        sio = _skops_io()
        trusted: list[str] | None
        if self.trusted is True:
            trusted = list(sio.get_untrusted_types(file=path))
        elif self.trusted is False:
            trusted = None
        else:
            trusted = [str(t) for t in self.trusted]
        try:
            return sio.load(path, trusted=trusted)
        except Exception as exc:
            untrusted: list[str] = []
            try:
                untrusted = [
                    t for t in sio.get_untrusted_types(file=path) if t not in (trusted or [])
                ]
            except Exception:  # noqa: S110 - the original error is what matters
                pass
            if untrusted:
                msg = (
                    f"refusing to load {str(path)!r}: it holds types that skops does not "
                    f"trust by default: {untrusted}. Review them, then pass "
                    f"trusted={untrusted!r} (or trusted=True for a file you made yourself)"
                )
            else:
                msg = f"cannot load the skops file {str(path)!r}: {exc}"
            raise ModelError(msg) from exc

    def predict(self, X: Array) -> dict[str, Array]:
        """Call the estimator's method on ``X``.

        Raises:
            ModelError: if the handler is not loaded or the estimator fails.
        """
        if self._fn is None:
            msg = f"SklearnHandler for {self.source} is not loaded; call load() first"
            raise ModelError(msg)
        try:
            if self._named:
                # fitted on a DataFrame: the step already selected the columns by name
                with warnings.catch_warnings():
                    warnings.filterwarnings(
                        "ignore",
                        message="X does not have valid feature names",
                        category=UserWarning,
                    )
                    out = self._fn(X)
            else:
                out = self._fn(X)
        except Exception as exc:
            msg = (
                f"{type(self.estimator).__name__}.{self.method} failed on {X.shape[0]} rows x "
                f"{X.shape[1]} features: {type(exc).__name__}: {exc}"
            )
            raise ModelError(msg) from exc
        return {self.output: output_column(out)}

    @property
    def signature(self) -> Signature:
        """Feature names and count the estimator was fitted with, and the output column."""
        est = self.estimator
        names = getattr(est, "feature_names_in_", None)
        n = getattr(est, "n_features_in_", None)
        return Signature(
            inputs=() if names is None else tuple(str(x) for x in names),
            n_features=None if n is None else int(n),
            outputs=(self.output,),
        )

    def describe(self) -> dict[str, Any]:
        """Type, version, estimator class, method and source."""
        return {
            "type": "SklearnHandler",
            "version": self.version,
            "estimator": type(self.estimator).__name__ if self.estimator is not None else None,
            "method": self.method,
            "model": self.source,
        }


def to_onnx(estimator: Any, n_features: int, *, target_opset: int | None = None) -> bytes:
    """Convert a fitted estimator (or pipeline) to ONNX bytes with skl2onnx.

    The input is a float32 ``(rows, n_features)`` tensor named ``input``; classifiers get
    tensor outputs ``label`` and ``probabilities`` (no ZipMap), which
    :class:`~tidal.ml.onnx.OnnxHandler` turns into a 1-D and a 2-D column.

    Args:
        estimator: a fitted scikit-learn estimator or pipeline.
        n_features: the number of input features.
        target_opset: the ONNX opset to target (default: skl2onnx's choice).

    Raises:
        ModelError: if skl2onnx cannot convert the estimator.

    Example:
        >>> import numpy as np
        >>> from sklearn.linear_model import LinearRegression
        >>> from tidal.ml.onnx import OnnxHandler
        >>> X = np.arange(6, dtype=np.float32).reshape(3, 2)
        >>> h = OnnxHandler(to_onnx(LinearRegression().fit(X, [1.0, 2.0, 3.0]), 2))
        >>> h.load()
        >>> np.round(h.predict(X)["variable"], 3).tolist()
        [1.0, 2.0, 3.0]
    """
    try:
        from skl2onnx import to_onnx as convert  # type: ignore[import-untyped]
        from skl2onnx.common.data_types import FloatTensorType  # type: ignore[import-untyped]
        from sklearn.base import is_classifier  # type: ignore[import-untyped]
    except ImportError as exc:
        raise missing_extra(backend="scikit-learn", extra="sklearn", exc=exc) from exc
    try:
        options = {"zipmap": False} if is_classifier(estimator) else None
        model = convert(
            estimator,
            initial_types=[("input", FloatTensorType([None, int(n_features)]))],
            options=options,
            target_opset=target_opset,
        )
    except Exception as exc:
        msg = (
            f"skl2onnx cannot convert {type(estimator).__name__} to ONNX: "
            f"{_first_line(str(exc) or type(exc).__name__)} An estimator skl2onnx does not "
            "know needs a converter (skl2onnx.update_registered_converter); or serve it "
            "unconverted with SklearnHandler"
        )
        raise ModelError(msg) from exc
    data: bytes = model.SerializeToString()
    return data


def _first_line(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    r"""The first line of a third-party message, at most ``limit`` characters.

    skl2onnx's messages can run to pages (whole pipelines, converter registries); the full
    text stays on the chained exception (``__cause__``).

    Example:
        >>> _first_line("Unable to convert X.\nIt usually means...\n" + "x" * 9000, 60)
        'Unable to convert X. [... 9,021 more characters, see __cause__]'
        >>> _first_line("a" * 100, 20)
        'aaaaaaaaaaaaaaaaaaaa [... 80 more characters, see __cause__]'
        >>> _first_line("no converter for T")
        'no converter for T.'
    """
    text = text.strip()
    first = text.split("\n", 1)[0][:limit].rstrip()
    rest = len(text) - len(first)
    if rest > 0:
        return f"{first} [... {rest:,} more characters, see __cause__]"
    return first if first.endswith(".") else first + "."
