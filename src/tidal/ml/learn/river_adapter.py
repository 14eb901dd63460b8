"""River's per-record models as a :class:`~tidal.ml.learn.base.Learner` (the slow path).

:class:`RiverLearner` turns each row into a dict (``{"x0": ..., "x1": ...}``, or the names
given) and calls ``learn_one`` / ``predict_one`` / ``predict_proba_one`` once per row: a
Python call per row, tens of thousands of rows per second. Use it for models only River has
(trees, bagging, ALMA...); Tidal's linear learners do the same work at numpy speed.

Classifiers get class ids ``0..k-1`` as labels (the ``learn`` step maps the stream's labels
to ids). River models have no state that is arrays, so a :class:`RiverLearner` is not
``checkpointable``: a pipeline with checkpoints refuses it, and :meth:`RiverLearner.snapshot`
raises. Needs the ``river`` extra: ``pip install 'tidal-stream[river]'``.

Example:
    >>> import numpy as np
    >>> from river import linear_model
    >>> m = RiverLearner(linear_model.LogisticRegression())
    >>> X = np.array([[-1.0], [1.0]] * 200)
    >>> m.learn(X, np.array([0, 1] * 200))
    >>> m.task, m.predict(np.array([[-2.0], [2.0]])).tolist()
    ('classification', [0, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError, StateError
from tidal.ml.learn.base import Task, check_xy

__all__ = ["RiverLearner"]


def _river_base() -> Any:
    try:
        from river import base
    except ImportError as exc:
        msg = "River models need River: pip install 'tidal-stream[river]'"
        raise ImportError(msg) from exc
    return base


class RiverLearner:
    """A River model behind the batch-first learner protocol (see the module doc).

    Args:
        model: a River classifier, regressor or clusterer (``learn_one``/``predict_one``).
        names: the feature names River sees (default ``x0, x1, ...``).

    Raises:
        ConfigError: if ``model`` is not a River classifier, regressor or clusterer.
    """

    checkpointable = False

    def __init__(self, model: Any, *, names: Sequence[str] | None = None) -> None:
        base = _river_base()
        if isinstance(model, base.Classifier):
            self.task: Task = "classification"
        elif isinstance(model, base.Regressor):
            self.task = "regression"
        elif isinstance(model, base.Clusterer):
            self.task = "clustering"
        else:
            msg = f"RiverLearner: {type(model).__name__} is not a River classifier or regressor"
            raise ConfigError(msg)
        self.model = model
        self.kind = f"river.{type(model).__name__}"
        self.names = list(names) if names is not None else None
        self.n_classes = 2

    def _rows(self, x: Array) -> list[dict[str, float]]:
        names = self.names or [f"x{i}" for i in range(x.shape[1])]
        return [dict(zip(names, row, strict=True)) for row in x.tolist()]

    def learn(self, X: Array, y: Array | None = None, weight: Array | None = None) -> None:
        """``learn_one`` per row, in order (``weight`` is not passed: River takes none)."""
        x, yy, _ = check_xy(self.kind, X, y)
        rows = self._rows(x)
        if self.task == "clustering" or yy is None:
            for r in rows:
                self.model.learn_one(r)
            return
        labels: list[Any] = (
            yy.astype(np.int64).tolist() if self.task == "classification" else yy.tolist()
        )
        if self.task == "classification" and labels:
            self.n_classes = max(self.n_classes, max(labels) + 1)
        for r, label in zip(rows, labels, strict=True):
            self.model.learn_one(r, label)

    def predict_learn(self, X: Array, y: Array | None = None, weight: Array | None = None) -> Array:
        """Per row: predict (probabilities for a classifier), then learn it."""
        x, yy, _ = check_xy(self.kind, X, y)
        n = len(x)
        cls = self.task == "classification"
        if cls and yy is not None and n:
            self.n_classes = max(self.n_classes, int(yy.max()) + 1)
        out = np.zeros((n, self.n_classes)) if cls else np.zeros(n)
        rows = self._rows(x)
        for i, r in enumerate(rows):
            if cls:
                for c, p in self.model.predict_proba_one(r).items():
                    if 0 <= int(c) < self.n_classes:
                        out[i, int(c)] = p
            else:
                out[i] = self.model.predict_one(r) or 0.0
            if yy is None or self.task == "clustering":
                self.model.learn_one(r)
            else:
                self.model.learn_one(r, int(yy[i]) if cls else float(yy[i]))
        return out

    def predict(self, X: Array) -> Array:
        """``predict_one`` per row (a missing prediction: class 0 or 0.0)."""
        x = check_xy(self.kind, X)[0]
        preds = [self.model.predict_one(r) for r in self._rows(x)]
        if self.task == "regression":
            return np.array([0.0 if p is None else p for p in preds], dtype=np.float64)
        return np.array([0 if p is None else int(p) for p in preds], dtype=np.int64)

    def predict_proba(self, X: Array) -> Array:
        """``(n, k)`` class probabilities (classifiers)."""
        x = check_xy(self.kind, X)[0]
        out = np.zeros((len(x), self.n_classes))
        for i, r in enumerate(self._rows(x)):
            for c, p in self.model.predict_proba_one(r).items():
                if 0 <= int(c) < self.n_classes:
                    out[i, int(c)] = p
        return out

    def snapshot(self) -> dict[str, Any]:
        """Always raises: River models have no array state (and Tidal pickles nothing).

        Raises:
            StateError: always.
        """
        msg = (
            f"{self.kind} cannot be checkpointed: River models have no array state and Tidal "
            "does not pickle; use a built-in learner (tidal.ml.learn) or run without checkpoints"
        )
        raise StateError(msg)

    def restore(self, state: dict[str, Any]) -> None:
        """Always raises (see :meth:`snapshot`).

        Raises:
            StateError: always.
        """
        self.snapshot()
