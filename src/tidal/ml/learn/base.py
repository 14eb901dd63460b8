"""The :class:`Learner` protocol and the checks every learner shares.

A learner is *batch-first*: it learns from a 2-D ``float64`` feature matrix ``X`` and a label
vector ``y`` (class ids ``0..k-1`` for classifiers, numbers for regressors), and predicts for
a whole matrix at once. Its state is a flat dict of numpy arrays and JSON values
(:meth:`Learner.snapshot`), so it goes into a pipeline's checkpoints beside every other
operator's state, and nothing is pickled.

================  =================================================================
``learn``         update from ``X, y`` (optional per-row ``weight``)
``predict``       labels (classifiers: class ids) or values (regressors)
``predict_proba`` classifiers: ``(n, k)`` class probabilities
``predict_learn`` optional: each row's prediction *before* it was learned, then learn
``snapshot``      state as arrays and JSON values; ``restore`` reads it back
================  =================================================================

Example:
    >>> import numpy as np
    >>> from tidal.ml.learn import LinearRegression
    >>> model = LinearRegression(optimizer="sgd", lr=0.1, mode="exact")
    >>> X = np.random.default_rng(0).normal(size=(2_000, 2)); y = X @ [2.0, -1.0] + 0.5
    >>> model.learn(X, y)
    >>> np.round(model.predict(np.array([[1.0, 1.0]])), 3).tolist()
    [1.5]
    >>> isinstance(model, Learner)
    True
"""

from __future__ import annotations

import json
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ModelError, StateError

__all__ = ["Learner", "Task", "check_state", "check_xy", "json_state"]

Task = Literal["regression", "classification", "clustering"]
"""What a learner predicts: a number, a class id, or a cluster id."""


@runtime_checkable
class Learner(Protocol):
    """What :meth:`tidal.pipeline.Stream.learn` needs of a model that learns online.

    ``task`` says what :meth:`predict` returns; classifiers also have :meth:`predict_proba`
    (probabilities over ``n_classes`` classes). ``checkpointable`` is False for learners
    whose state cannot be written as arrays (River's models): a pipeline with checkpoints
    refuses them.
    """

    @property
    def kind(self) -> str:
        """A name for messages and snapshots (``"logistic_regression"``)."""

    @property
    def task(self) -> Task:
        """What :meth:`predict` returns."""

    @property
    def checkpointable(self) -> bool:
        """Whether :meth:`snapshot` works."""

    def learn(self, X: Array, y: Array, weight: Array | None = None) -> None:
        """Update from the rows of ``X`` with labels ``y`` (and per-row ``weight``)."""

    def predict(self, X: Array) -> Array:
        """One prediction per row of ``X``."""

    def snapshot(self) -> dict[str, Any]:
        """State as numpy arrays and JSON values."""

    def restore(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`snapshot` wrote (on a learner built with the same arguments)."""


def check_xy(
    kind: str, X: Any, y: Any | None = None, weight: Any | None = None, dim: int | None = None
) -> tuple[Array, Array | None, Array | None]:
    """``X`` as a C-contiguous 2-D float64 matrix (and ``y``, ``weight`` as float64 vectors).

    Raises:
        ModelError: for a matrix that is not 2-D, of another width than ``dim``, with
            NaN/inf values, or labels of another length.

    Example:
        >>> check_xy("m", [[1, 2]], [0])[0].dtype.name
        'float64'
        >>> check_xy("m", [[1, 2]], dim=3)
        Traceback (most recent call last):
        ...
        tidal.errors.ModelError: learner 'm': X has 2 columns, the model was built for 3
    """
    x = np.ascontiguousarray(X, dtype=np.float64)
    if x.ndim != 2:
        msg = f"learner {kind!r}: X must be 2-D (rows x features), got shape {x.shape}"
        raise ModelError(msg)
    if dim is not None and x.shape[1] != dim:
        msg = f"learner {kind!r}: X has {x.shape[1]} columns, the model was built for {dim}"
        raise ModelError(msg)
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        msg = f"learner {kind!r}: X row {bad} has NaN or inf; impute or drop such rows first"
        raise ModelError(msg)
    yy = ww = None
    if y is not None:
        yy = np.ascontiguousarray(y, dtype=np.float64).reshape(-1)
        if len(yy) != len(x):
            msg = f"learner {kind!r}: {len(x)} rows in X but {len(yy)} labels"
            raise ModelError(msg)
        if not np.isfinite(yy).all():
            msg = (
                f"learner {kind!r}: the labels have NaN or inf (row {np.argmax(~np.isfinite(yy))})"
            )
            raise ModelError(msg)
    if weight is not None:
        ww = np.ascontiguousarray(weight, dtype=np.float64).reshape(-1)
        if len(ww) != len(x) or (ww < 0).any():
            msg = f"learner {kind!r}: weight must be {len(x)} values >= 0"
            raise ModelError(msg)
    return x, yy, ww


def json_state(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` after a JSON round trip (what a snapshot stores and compares).

    Example:
        >>> json_state({"lr": 0.1, "hidden": (8, 8)})
        {'lr': 0.1, 'hidden': [8, 8]}
    """
    out: dict[str, Any] = json.loads(json.dumps(params))
    return out


def check_state(kind: str, state: dict[str, Any], params: dict[str, Any]) -> None:
    """Raise :class:`StateError` unless ``state`` was written by a ``kind`` with ``params``."""
    if state.get("kind") != kind or state.get("params") != json_state(params):
        msg = (
            f"the snapshot is of a {state.get('kind')!r} learner with {state.get('params')}, "
            f"this is a {kind!r} learner with {json_state(params)}; build the learner with the "
            "same arguments (or start it afresh under a new step name)"
        )
        raise StateError(msg)
