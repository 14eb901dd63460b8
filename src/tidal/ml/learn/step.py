"""The ``learn`` pipeline step: prequential (test-then-train) online learning on a stream.

``stream.learn("model", "logistic", features=["x1", "x2"], target="y")`` adds a
:class:`LearnStep`. For each batch it

1. turns the feature columns into a matrix (:class:`~tidal.ml.learn.features.Features`:
   numeric columns standardized online; pass a ``Features`` for one-hot or hashing);
2. *predicts every row before it is learned*: with the built-in learners, each row gets the
   prediction of the model that had learned every earlier row (every earlier chunk of
   ``batch_size`` rows in mini-batch mode), so results do not depend on how the stream was
   batched; any other learner predicts the whole batch, then learns it;
3. learns the rows that carry a label (rows whose target is missing, e.g. whose label has
   not arrived yet, are only predicted), and updates the prequential metrics.

Columns added:

====================  =========================================================
``prediction``        the predicted label (classes as in the target column),
                      value, or cluster id (``output=`` renames it)
``prediction_score``  classifiers: P(class 1) for two classes, else the
                      probability of the predicted class
``<metric>``          the metric over every labeled row so far, per row
``<metric>_rolling``  the metric over the last ``window`` labeled rows
====================  =========================================================

Rows with a NaN/inf feature are neither predicted nor learned (counted as
``<step>.missing``). Class labels map to class ids in order of first appearance (integer
and boolean labels are their own ids; pass ``classes=`` to fix the order: for binary
metrics the second class is the positive one). The learner's state, the feature
statistics, the class list and the metrics are all in the step's snapshot, so they are in
the same checkpoints as everything else: after a crash no batch is learned twice or lost.

Example:
    >>> import numpy as np
    >>> from tidal.core.batch import Batch
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=2_000)
    >>> step = LearnStep("m", "logistic", features=["x"], target="y", metrics=["accuracy"])
    >>> out = step.process(Batch({"x": x, "y": np.where(x > 0, "up", "down")}), 0)[0][1]
    >>> out["prediction"][-3:].tolist(), x[-3:].round(2).tolist()
    (['down', 'down', 'up'], [-2.02, -0.91, 0.37])
    >>> round(float(out["accuracy"][-1]), 3), step.metrics.count
    (0.983, 2000)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.core.operator import Emit, Operator
from tidal.errors import ModelError, PipelineError, StateError
from tidal.ml.learn.base import Learner
from tidal.ml.learn.features import Features
from tidal.ml.learn.metrics import Prequential

__all__ = ["LearnStep", "Labels"]

_STATE_KIND = "learn/1"


class Labels:
    """Class labels <-> class ids: integers and booleans are their own ids, others in order.

    Example:
        >>> lab = Labels()
        >>> lab.ids(np.array(["b", "a", "b"], dtype=object)).tolist()
        [0, 1, 0]
        >>> lab.decode(np.array([1])).tolist()
        ['a']
    """

    def __init__(self, classes: Sequence[Any] | None = None) -> None:
        self.mode: str | None = None if classes is None else "vocab"
        self.classes: list[Any] = [] if classes is None else list(classes)
        self.index = {c: i for i, c in enumerate(self.classes)}

    def ids(self, y: Array) -> Array:
        """Class ids of the labels ``y`` (new labels get the next ids)."""
        if self.mode is None:
            integral = y.dtype.kind in "iub" or (
                y.dtype.kind == "f" and bool(np.all(np.floor(y) == y)) and bool((y >= 0).all())
            )
            self.mode = "int" if integral else "vocab"
        if self.mode == "int":
            if y.dtype.kind not in "iubf" or (y < 0).any() or (np.floor(y) != y).any():
                msg = (
                    f"class labels must be integers >= 0 like the first ones, got {y[:3].tolist()}"
                )
                raise ModelError(msg)
            return y.astype(np.int64)
        try:
            uniq, first, inverse = np.unique(y, return_index=True, return_inverse=True)
        except TypeError:  # mixed types that do not sort: one row at a time
            uniq, first, inverse = _unique_unsorted(y)
        ids = np.empty(len(uniq), dtype=np.int64)
        for i in np.argsort(first, kind="stable").tolist():  # new labels in row order
            v = uniq[i]
            key = v.item() if isinstance(v, np.generic) else v
            if key not in self.index:
                self.index[key] = len(self.classes)
                self.classes.append(key)
            ids[i] = self.index[key]
        out: Array = ids[inverse.reshape(-1)]
        return out

    def decode(self, ids: Array) -> Any:
        """The labels of class ids ``ids``."""
        if self.mode != "vocab":
            return ids
        table = np.empty(max(len(self.classes), int(ids.max(initial=0)) + 1), dtype=object)
        table[: len(self.classes)] = self.classes
        return table[ids]

    def snapshot(self) -> dict[str, Any]:
        """The mode and the class list (JSON)."""
        return {"mode": self.mode, "classes": list(self.classes)}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`snapshot` wrote."""
        self.mode, self.classes = state["mode"], list(state["classes"])
        self.index = {c: i for i, c in enumerate(self.classes)}


def _unique_unsorted(y: Array) -> tuple[Array, Array, Array]:
    seen: dict[Any, int] = {}
    inverse = np.array([seen.setdefault(v, len(seen)) for v in y.tolist()], dtype=np.int64)
    uniq = np.empty(len(seen), dtype=object)
    uniq[:] = list(seen)
    return uniq, np.arange(len(seen)), inverse


def _missing(y: Array) -> Array:
    if y.dtype.kind == "f":
        return ~np.isfinite(y)
    if y.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and v != v) for v in y.tolist()], bool)
    return np.zeros(len(y), dtype=bool)


class LearnStep(Operator):
    """Predict, then learn, every batch; prequential metrics as columns (see the module doc).

    Args:
        name: the step's name (keys its state).
        learner: a :class:`~tidal.ml.learn.base.Learner`, or a name from
            :data:`tidal.ml.learn.LEARNERS`.
        features: numeric feature columns, or a :class:`Features` spec.
        target: the label column (``None`` for clustering).
        output: the prediction column's name.
        metrics: metric names (default: all that fit the learner's task).
        window: rows in the rolling metrics' window.
        weight: a column of per-row sample weights.
        classes: class labels in id order (default: order of first appearance).
        class_weights: a weight per class label (for imbalanced classes: e.g.
            ``{"fraud": 20.0}``); classes not named weigh 1. Multiplies ``weight``.
        seed: seed for learners built by name.

    Raises:
        PipelineError: for a learner without a target, or unknown metrics.
    """

    def __init__(  # noqa: PLR0913 - keyword settings
        self,
        name: str,
        learner: Learner | str,
        *,
        features: Sequence[str] | Features,
        target: str | None,
        output: str = "prediction",
        metrics: Sequence[str] | None = None,
        window: int = 1000,
        weight: str | None = None,
        classes: Sequence[Any] | None = None,
        class_weights: Mapping[Any, float] | None = None,
        seed: int = 0,
    ) -> None:
        from tidal.ml.learn.catalog import make

        super().__init__(name)
        self.learner = make(learner, seed=seed) if isinstance(learner, str) else learner
        self.features = features if isinstance(features, Features) else Features(numeric=features)
        self.task = self.learner.task
        if target is None and self.task != "clustering":
            msg = f"step {name!r}: a {self.task} learner needs target='label column'"
            raise PipelineError(msg)
        self.target, self.output, self.weight = target, output, weight
        self.labels = Labels(classes)
        self.class_weights = dict(class_weights or {})
        if self.class_weights and self.task != "classification":
            msg = f"step {name!r}: class_weights are for classifiers, this learner is {self.task}"
            raise PipelineError(msg)
        binary = self.task == "classification" and getattr(self.learner, "n_classes", 0) == 2
        binary = binary and self.learner.kind != "softmax"
        self.metrics: Prequential | None = None
        if self.task != "clustering":
            try:
                self.metrics = Prequential(self.task, metrics, window=window, binary=binary)
            except Exception as exc:
                msg = f"step {name!r}: {exc}"
                raise PipelineError(msg) from exc

    def process(self, batch: Batch, port: int) -> Emit:
        """Predict then learn the batch; pass it on with the prediction and metric columns."""
        return [(0, self.learn(batch))]

    def _matrix(self, batch: Batch) -> tuple[Array, Array]:
        need = [*self.features.columns, *(c for c in (self.target, self.weight) if c)]
        missing = [c for c in need if c not in batch]
        if missing:
            msg = (
                f"step {self.name!r}: columns {missing} are needed to learn, "
                f"the batch has {batch.names}"
            )
            raise PipelineError(msg)
        try:
            return self.features.transform_rows(batch, update=True)
        except ModelError as exc:
            msg = f"step {self.name!r}: {exc}"
            raise PipelineError(msg) from exc

    def learn(self, batch: Batch) -> Batch:
        """The batch with the prediction and metric columns; the learner has learned it.

        Raises:
            PipelineError: if a column is missing, a feature is not numeric, or a label
                does not fit the learner.
        """
        n = len(batch)
        x, ok = self._matrix(batch)  # ok: the rows without NaN/inf features
        labeled = ok.copy()
        if self.target is not None:
            labeled &= ~_missing(batch[self.target])
        cls = self.task == "classification"
        width = max(getattr(self.learner, "n_classes", 1), 1) if cls else 1
        out = np.full((n, width), np.nan)
        every = bool(labeled.all())  # the common case: no copies through boolean masks
        yy: Array | None = None
        try:
            if self.target is not None and labeled.any():
                y = batch[self.target] if every else batch[self.target][labeled]
                yy = self.labels.ids(y) if cls else np.asarray(y, dtype=np.float64)
                w = batch[self.weight] if self.weight else None
                if w is not None and not every:
                    w = w[labeled]
                if self.class_weights:
                    w = self._class_weight(yy) * (1.0 if w is None else np.asarray(w, float))
                got = self._predict_learn(x if every else x[labeled], yy, w)
                if every and got.shape[1] >= width:
                    out = got
                else:
                    width = max(width, got.shape[1])
                    out = np.pad(out, ((0, 0), (0, width - out.shape[1])), constant_values=np.nan)
                    out[labeled, : got.shape[1]] = got
            rest = ok & ~labeled
            if rest.any():
                got = self._predict(x[rest])
                out[rest, : got.shape[1]] = got
            if self.task == "clustering" and self.target is None and ok.any():
                out[ok, 0] = np.asarray(self.learner.predict_learn(x[ok]), np.float64)  # type: ignore[attr-defined]
        except ModelError as exc:
            msg = f"step {self.name!r}: {exc}"
            raise PipelineError(msg) from exc
        self.ctx.count(f"{self.name}.learned", int(labeled.sum()))
        self.ctx.count(f"{self.name}.missing", int(n - ok.sum()))
        return batch.with_columns(**self._columns(batch, out, ok, labeled, yy))

    def _class_weight(self, ids: Array) -> Array:
        table = np.ones(max(len(self.labels.classes), int(ids.max(initial=0)) + 1))
        for label, weight in self.class_weights.items():
            key = self.labels.index.get(label) if self.labels.mode == "vocab" else label
            if isinstance(key, int | np.integer) and 0 <= key < len(table):
                table[int(key)] = weight
        out: Array = table[ids]
        return out

    def _predict_learn(self, x: Array, y: Array, w: Any) -> Array:
        learner: Any = self.learner
        if hasattr(learner, "predict_learn"):
            got = np.asarray(learner.predict_learn(x, y, w), dtype=np.float64)
        else:
            got = self._predict(x)
            learner.learn(x, y, w)
        return got.reshape(len(x), -1)

    def _predict(self, x: Array) -> Array:
        learner: Any = self.learner
        if self.task == "classification":
            return np.asarray(learner.predict_proba(x), dtype=np.float64)
        return np.asarray(learner.predict(x), dtype=np.float64).reshape(len(x), -1)

    def _columns(
        self, batch: Batch, out: Array, ok: Array, labeled: Array, yy: Array | None
    ) -> dict[str, Any]:
        n = len(batch)
        cols: dict[str, Any] = {}
        if self.task == "classification":
            ids = _class_ids(out)
            every = bool(ok.all())
            if self.labels.mode == "vocab":  # labels are values: an object column
                pred = np.empty(n, dtype=object)
                pred[ok] = self.labels.decode(ids[ok]) if ok.any() else pred[ok]
                cols[self.output] = pred
            else:  # labels are their own ids
                cols[self.output] = ids if every else np.where(ok, ids, -1)
            p = (
                out[:, 1]
                if out.shape[1] == 2 and self.metrics and self.metrics.binary
                else _top_probability(out)
            )
            score = np.ascontiguousarray(p) if every else np.where(ok, p, np.nan)
            cols[f"{self.output}_score"] = score
        elif self.task == "clustering":
            cols[self.output] = np.where(ok, np.nan_to_num(out[:, 0], nan=-1), -1).astype(np.int64)
        else:
            cols[self.output] = out[:, 0]
        if self.metrics is not None and yy is not None:
            every = len(yy) == n
            got = out if every else out[labeled]
            vals = self.metrics.update(yy, got if self.task == "classification" else got[:, 0])
            for k, v in vals.items():
                if every:
                    cols[k] = v
                else:
                    col = np.full(n, np.nan)
                    col[labeled] = v
                    cols[k] = col
            for k, value in self.metrics.values().items():
                self.ctx.gauge(f"{self.name}.{k}", value)
        return cols

    def snapshot(self) -> dict[str, Any]:
        """Learner, feature statistics, classes and metrics.

        Raises:
            StateError: if the learner cannot be checkpointed (River's models).
        """
        return {
            "kind": _STATE_KIND,
            "params": self._params(),
            "learner": self.learner.snapshot(),
            "features": self.features.snapshot(),
            "labels": self.labels.snapshot(),
            "metrics": self.metrics.snapshot() if self.metrics else {},
        }

    def _params(self) -> dict[str, Any]:
        return {
            "learner": self.learner.kind,
            "target": self.target,
            "output": self.output,
            "weight": self.weight,
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`.

        Raises:
            StateError: if the snapshot is another step's or of other settings.
        """
        if snap.get("kind") != _STATE_KIND or snap.get("params") != self._params():
            msg = (
                f"step {self.name!r}: the snapshot is of a learn step with {snap.get('params')}, "
                f"this one has {self._params()}; rename the step to start afresh"
            )
            raise StateError(msg)
        try:
            self.learner.restore(snap["learner"])
            self.features.restore(snap["features"])
            if self.metrics:
                self.metrics.restore(snap["metrics"])
        except StateError as exc:
            msg = f"step {self.name!r}: {exc}"
            raise StateError(msg) from exc
        self.labels.restore(snap["labels"])


def _class_ids(out: Array) -> Array:
    """Each row's most probable class id (NaN counts as -1; the first of equal ones).

    ``argmax``; for two classes one comparison of the two columns, which is the same.

    Example:
        >>> _class_ids(np.array([[0.4, 0.6], [0.5, 0.5], [np.nan, np.nan]])).tolist()
        [1, 0, 0]
    """
    if out.shape[1] == 2:  # noqa: PLR2004 - two classes
        a = np.nan_to_num(out[:, 0], nan=-1.0)
        b = np.nan_to_num(out[:, 1], nan=-1.0)
        return (b > a).astype(np.int64)
    ids: Array = np.nan_to_num(out, nan=-1.0).argmax(axis=1)
    return ids


def _top_probability(out: Array) -> Array:
    """Each row's highest class probability, ignoring NaN (NaN where the whole row is NaN)."""
    if out.shape[1] == 0:
        return np.full(len(out), np.nan)
    best: Array = np.where(np.isnan(out), -np.inf, out).max(axis=1)
    return np.where(np.isneginf(best), np.nan, best)
