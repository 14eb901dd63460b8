"""River backend: an adapter over River's per-record models (the slow path).

River models score one record at a time: ``model.predict_one({"amount": 12.0, ...})``.
:class:`RiverHandler` turns each row of the feature batch into such a dict (keyed by the
feature column names the ``predict`` step selects) and calls the model once per row. That
is a Python call and a dict per event — about a microsecond or more each, where ONNX Runtime
scores a whole batch in a few microseconds — so use it for models only River has, and
prefer Tidal's batch-first learners (``learn``) or an exported model where speed matters.

The handler only scores: it never calls ``learn_one``. Learning from the stream (test then
train, delayed labels) is the ``learn`` step's job.

Outputs:

* ``method="predict_one"``: the column ``prediction`` (a label or a value per row);
* ``method="predict_proba_one"``: the 2-D column ``probabilities``, one column per class
  in the order of ``classes`` (required: an online model may not have seen every class
  yet, and columns must not change meaning from one batch to the next; a class the model
  does not know has probability 0).

Needs the ``river`` extra: ``pip install 'tidal-stream[river]'``.

Example:
    >>> import numpy as np
    >>> from river import linear_model
    >>> model = linear_model.LinearRegression()
    >>> for x in range(20):
    ...     model.learn_one({"x": float(x)}, 2.0 * x)
    >>> h = RiverHandler(model)
    >>> h.bind(["x"])
    >>> h.load()
    >>> h.predict(np.array([[1.0], [2.0]], dtype=np.float32))["prediction"].shape
    (2,)
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError, ModelError
from tidal.ml.handler import BaseHandler, Signature, missing_extra

__all__ = ["RiverHandler"]

RiverMethod = Literal["predict_one", "predict_proba_one"]


class RiverHandler(BaseHandler):
    """Score a River model record by record.

    Args:
        model: a River estimator or pipeline (already trained, or learning elsewhere).
        method: ``"predict_one"`` or ``"predict_proba_one"``.
        classes: the class labels, in column order, for ``predict_proba_one``.
        features: the dict keys, in column order (default: the feature column names the
            ``predict`` step selects; a single 2-D column ``img`` gives ``img_0``,
            ``img_1``, ...).
        output: the output column's name (default ``prediction`` or ``probabilities``).
        version: the model version recorded on every output row.

    Raises:
        ConfigError: for an unknown method, or ``predict_proba_one`` without ``classes``.
    """

    def __init__(
        self,
        model: Any,
        *,
        method: RiverMethod = "predict_one",
        classes: Sequence[Any] | None = None,
        features: Sequence[str] | None = None,
        output: str | None = None,
        version: str | None = None,
    ) -> None:
        if method not in ("predict_one", "predict_proba_one"):
            msg = (
                f"RiverHandler: method must be 'predict_one' or 'predict_proba_one', got {method!r}"
            )
            raise ConfigError(msg)
        if method == "predict_proba_one" and not classes:
            msg = (
                "RiverHandler: predict_proba_one needs classes=[...] (the labels in column "
                "order), so that the probability columns mean the same in every batch"
            )
            raise ConfigError(msg)
        self.model = model
        self.method: RiverMethod = method
        self.classes = list(classes) if classes is not None else None
        self.features = list(features) if features is not None else None
        default = "prediction" if method == "predict_one" else "probabilities"
        self.output = output or default
        if version is not None:
            self.version = str(version)
        self._fn: Any = None
        self._keys: dict[int, list[str]] = {}

    def bind(self, features: Sequence[str]) -> None:
        """Use the step's feature column names as dict keys (unless ``features`` was given)."""
        if self.features is None:
            self.features = list(features)
            self._keys.clear()

    def load(self) -> None:
        """Check that River is installed and the model has the method.

        Raises:
            ModelError: if the model has no ``method``.
        """
        try:
            importlib.import_module("river")
        except ImportError as exc:
            raise missing_extra(backend="River", extra="river", exc=exc) from exc
        fn = getattr(self.model, self.method, None)
        if not callable(fn):
            msg = f"the River model {type(self.model).__name__} has no method {self.method!r}"
            raise ModelError(msg)
        self._fn = fn

    def _names(self, width: int) -> list[str]:
        keys = self._keys.get(width)
        if keys is None:
            given = self.features or []
            if len(given) == width:
                keys = [str(f) for f in given]
            elif len(given) == 1:
                keys = [f"{given[0]}_{i}" for i in range(width)]
            else:
                keys = [f"x{i}" for i in range(width)]
            self._keys[width] = keys
        return keys

    def predict(self, X: Array) -> dict[str, Array]:
        """Call the model once per row, with the row as a dict.

        Raises:
            ModelError: if the handler is not loaded or the model fails on a row.
        """
        fn = self._fn
        if fn is None:
            msg = "RiverHandler is not loaded; call load() first"
            raise ModelError(msg)
        keys = self._names(X.shape[1])
        results: list[Any] = []
        try:
            for row in X.tolist():
                results.append(fn(dict(zip(keys, row, strict=True))))
        except Exception as exc:
            msg = (
                f"{type(self.model).__name__}.{self.method} failed on row {len(results)} of "
                f"{len(X)}: {type(exc).__name__}: {exc}"
            )
            raise ModelError(msg) from exc
        if self.classes is None:
            out = np.empty(len(results), dtype=object)
            out[:] = results
            if results and all(isinstance(r, bool | int | float) for r in results):
                out = np.asarray(results)
            return {self.output: out}
        probs = np.zeros((len(results), len(self.classes)), dtype=np.float64)
        for j, c in enumerate(self.classes):
            probs[:, j] = [r.get(c, 0.0) for r in results]
        return {self.output: probs}

    @property
    def signature(self) -> Signature:
        """The output column (River models take dicts of any keys)."""
        return Signature(outputs=(self.output,))

    def describe(self) -> dict[str, Any]:
        """Type, version, model class and method."""
        return {
            "type": "RiverHandler",
            "version": self.version,
            "model": type(self.model).__name__,
            "method": self.method,
            "classes": self.classes,
        }
