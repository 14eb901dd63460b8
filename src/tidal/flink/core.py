"""The Flink-free half of :mod:`tidal.flink`: a model scorer and a keyed detector over columns.

PyFlink's vectorized functions hand Python a batch of rows as pandas Series; its DataStream
functions hand it one row, or the rows of one key's window. Both end here, in two small
classes that know nothing of Flink (so the main environment, without PyFlink, tests them):

* :class:`Scorer` runs a Tidal :class:`~tidal.ml.handler.ModelHandler` on feature columns:
  it loads the model once (:meth:`Scorer.open`, from Flink's ``open``), stacks the columns
  into one float32 matrix, calls the model once per batch (cut into ``max_batch`` chunks),
  and returns the output column with the ``model_version`` that scored each row — what the
  ``predict`` step does (:class:`~tidal.ml.predict.Predict`).
* :class:`KeyedDetector` runs one series' :class:`~tidal.ml.detect.step.DetectStep`
  (detector, alert hysteresis) from a state held as **bytes**: :meth:`KeyedDetector.score`
  takes the key's state (``None`` for a new key) and the key's new values, and returns the
  detection columns and the new state. The bytes are :func:`tidal.runtime.snapshot.encode`'s
  (an ``.npz`` of numeric arrays with a JSON manifest, read with ``allow_pickle=False``), so
  Flink's keyed state holds them as a plain ``byte[]`` (no pickle anywhere) and Flink's
  checkpoints and savepoints cover the detector.
* :class:`KeyedLearner` does the same for one key's online learner: a
  :class:`~tidal.ml.learn.step.LearnStep` (learner, feature statistics, class labels,
  prequential metrics) whose :meth:`KeyedLearner.learn` predicts each new row of the key
  before learning it (test-then-train) and returns the predictions and the new state,
  again as :func:`~tidal.runtime.snapshot.encode`'s bytes.

A model is given as a handler (not yet loaded: Flink ships the function to its Python
workers by value, and a loaded ONNX session does not travel) or as a zero-argument factory
returning one (:func:`registry_model` makes one for a registry model, so every worker reads
the registry itself).

Example:
    >>> import numpy as np
    >>> from tidal.ml.onnx import OnnxHandler
    >>> model = logistic_onnx([1.0, -1.0], 0.0, output="p")
    >>> s = Scorer(OnnxHandler(model, version="v1"), output="p")
    >>> s.open()
    >>> out = s.score([np.array([0.0, 2.0]), np.array([0.0, 0.0])])
    >>> [round(float(v), 3) for v in out["p"]], out["model_version"].tolist()
    ([0.5, 0.881], ['v1', 'v1'])
    >>> d = KeyedDetector("median_mad")
    >>> cols, state = d.score(None, np.sin(np.arange(300) / 5.0))
    >>> cols, state = d.score(state, np.array([8.0, 0.5]))
    >>> cols["alert"].tolist(), bool(cols["anomaly_score"][0] > 0.99)
    ([True, False], True)
    >>> lr = KeyedLearner("logistic", features=["x"], lr=0.5)
    >>> x = np.array([-2.0, 2.0] * 200)
    >>> cols, state = lr.learn(None, [x], np.where(x > 0, "up", "down"))
    >>> cols, state = lr.learn(state, [np.array([-1.0, 1.0])], [None, None])
    >>> cols["prediction"].tolist(), lr.outputs
    (['down', 'up'], ['prediction', 'prediction_score'])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.errors import ConfigError, ModelError, StateError
from tidal.ml import handler as hooks
from tidal.ml.batcher import split_rows
from tidal.ml.detect.base import Detector
from tidal.ml.detect.step import OUTPUTS, DetectStep
from tidal.ml.handler import ModelHandler
from tidal.ml.learn.base import Learner
from tidal.ml.learn.features import Features
from tidal.ml.learn.step import LearnStep
from tidal.runtime.snapshot import decode, encode

__all__ = [
    "DETECT_OUTPUTS",
    "VERSION_COLUMN",
    "KeyedDetector",
    "KeyedLearner",
    "ModelSource",
    "Scorer",
    "logistic_onnx",
    "registry_model",
]

VERSION_COLUMN = "model_version"
"""The output column naming the model version that scored a row (as the predict step's)."""

DETECT_OUTPUTS = OUTPUTS
"""The detection columns, in order: ``anomaly_score``, ``deviation``, ``expected_low``,
``expected_high``, ``detector``, ``alert``."""

ModelSource = ModelHandler | Callable[[], ModelHandler]
"""A handler (not loaded yet) or a zero-argument factory that returns one."""


class _RegistryModel:
    """A picklable factory: ``Registry(root).serving(name)`` on the worker that calls it."""

    def __init__(self, root: str, name: str, threads: int) -> None:
        self.root, self.name, self.threads = root, name, threads

    def __call__(self) -> ModelHandler:
        from tidal.ml.registry import Registry

        return Registry(self.root).serving(self.name, threads=self.threads)

    def __repr__(self) -> str:
        return f"registry_model({self.root!r}, {self.name!r})"


def registry_model(
    root: str | os.PathLike[str], name: str, *, threads: int = 1
) -> Callable[[], ModelHandler]:
    """A model source that serves ``name`` from the registry at ``root`` as its stages say.

    Each Flink worker opens the registry itself (the production version; promotions and
    rollbacks are picked up between batches, as in a Tidal pipeline), and every row carries
    the version that scored it (``"v3"``).

    Example:
        >>> registry_model("/tmp/models", "fraud")
        registry_model('/tmp/models', 'fraud')
    """
    return _RegistryModel(str(Path(root)), name, threads)


class Scorer:
    """Score feature columns with a model handler, once per batch; see the module docs.

    Args:
        model: a handler (not loaded) or a factory returning one.
        output: which model output to return (``None``: the model's first output).
        features: the feature names, told to the handler (``bind``) before it loads.
        max_batch: the largest chunk passed to the model in one call.
    """

    def __init__(
        self,
        model: ModelSource,
        *,
        output: str | None = None,
        features: Sequence[str] = (),
        max_batch: int = 65_536,
    ) -> None:
        if max_batch < 1:
            msg = f"Scorer: max_batch must be >= 1, got {max_batch!r}"
            raise ConfigError(msg)
        self.model = model
        self.output = output
        self.features = [str(f) for f in features]
        self.max_batch = int(max_batch)
        self.handler: ModelHandler | None = None

    def open(self) -> None:
        """Build (for a factory), bind and load the model: once per Flink worker."""
        model = self.model
        handler = model if isinstance(model, ModelHandler) else model()
        if self.features:
            hooks.bind(handler, self.features)
        handler.load()
        self.handler = handler

    @property
    def version(self) -> str:
        """The version the model serves now (``"unversioned"`` when it has none)."""
        if self.handler is None:
            return hooks.version_of(self.model) if isinstance(self.model, ModelHandler) else ""
        return hooks.version_of(self.handler)

    def score(self, columns: Sequence[Any]) -> dict[str, Array]:
        """Score rows given as feature columns (numpy arrays or pandas Series).

        Returns:
            ``{output: float64 scores, "model_version": versions}``, one value per row.

        Raises:
            ModelError: if the model fails or has no such output; ``open`` was not called.
        """
        if self.handler is None:
            msg = "Scorer.score before open(): call open() once in the Flink function's open"
            raise ModelError(msg)
        hooks.refresh(self.handler)  # a registry model swaps between batches, never inside
        X = np.ascontiguousarray(np.column_stack([np.asarray(c) for c in columns]), np.float32)
        n = X.shape[0]
        parts, lo = [], 0
        for size in split_rows(n, self.max_batch):
            parts.append(self._call(X[lo : lo + size]))
            lo += size
        scores = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
        version = np.full(n, hooks.version_of(self.handler), dtype=object)
        return {self.output or "score": scores, VERSION_COLUMN: version}

    def _call(self, X: Array) -> Array:
        assert self.handler is not None  # noqa: S101 - checked by score
        out = self.handler.predict(X)
        name = self.output or next(iter(out), None)
        if name is None or name not in out:
            msg = f"model {hooks.describe(self.handler)} has no output {name!r}; it has {list(out)}"
            raise ModelError(msg)
        col = np.asarray(out[name], dtype=np.float64)
        return col.reshape(len(X), -1)[:, 0] if col.ndim > 1 else col


class _ShippedStep:
    """Shipped to Flink's workers by value: the parameters only; the step is rebuilt there."""

    _step: Any
    _fresh: dict[str, Any] | None

    def _new_step(self) -> Any:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_step", "_fresh")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._step = self._new_step()
        self._fresh = self._step.snapshot()

    def _load(self, state: bytes | None, what: str) -> Any:
        """The step, restored to a key's ``state`` (a fresh one for ``None``)."""
        step = self._step
        assert step is not None and self._fresh is not None  # noqa: S101 - set in __init__
        if state is None:
            step.restore(self._fresh)
            return step
        try:
            snap = decode(bytes(state))
        except StateError as exc:
            msg = f"the Flink keyed state of the {what} is not a Tidal state: {exc}"
            raise StateError(msg) from exc
        step.restore(snap)
        return step


class KeyedDetector(_ShippedStep):
    """One key's detector with its state as bytes; see the module docs.

    Args:
        detector: a detector name (``"auto"``, ``"median_mad"``, ...; see
            :data:`tidal.ml.detect.DETECTORS`) or a factory returning a fresh detector.
        alert_on: deviation that opens an incident.
        alert_off: deviation under which a row is quiet.
        quiet: quiet rows in a row that close an incident.
        seed: seed for detectors built by name.
    """

    def __init__(
        self,
        detector: str | Callable[[], Detector] = "auto",
        *,
        alert_on: float = 5.0,
        alert_off: float = 3.0,
        quiet: int = 16,
        seed: int = 0,
    ) -> None:
        self.detector = detector
        self.alert_on, self.alert_off, self.quiet, self.seed = alert_on, alert_off, quiet, seed
        self._step: DetectStep | None = None
        self._fresh: dict[str, Any] | None = None
        self._step = self._new_step()  # validates the name now, not on the worker
        self._fresh = self._step.snapshot()

    def _new_step(self) -> DetectStep:
        det = self.detector if isinstance(self.detector, str) else self.detector()
        return DetectStep(
            "flink",
            det,
            value="value",
            alert_on=self.alert_on,
            alert_off=self.alert_off,
            quiet=self.quiet,
            seed=self.seed,
        )

    def score(
        self, state: bytes | None, values: Array | Sequence[float]
    ) -> tuple[dict[str, Array], bytes]:
        """Score one key's new values in order, from the key's state; return the new state.

        Args:
            state: what the previous call returned for this key (``None``: a new key).
            values: the key's new values, oldest first (NaN: missing, scored NaN).

        Returns:
            The :data:`DETECT_OUTPUTS` columns for the values, and the key's new state.

        Raises:
            StateError: if ``state`` is not a state of a detector with these parameters.
        """
        step: DetectStep = self._load(state, "detector")
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        out = step.detect(Batch({"value": x}))
        cols = {name: out[name] for name in DETECT_OUTPUTS}
        return cols, encode(step.snapshot())


_LABEL = "__tidal_label__"


class KeyedLearner(_ShippedStep):
    """One key's online learner with its state as bytes; see the module docs.

    Args:
        learner: a learner name (``"logistic"``, ``"linear"``, ...; see
            :data:`tidal.ml.learn.LEARNERS`) or a factory returning a fresh learner.
        features: the feature names (numeric, standardized online), or a
            :class:`~tidal.ml.learn.features.Features` spec over these names.
        metrics: prequential metrics to add as columns (default none: a key's
            ``accuracy`` is rarely what a Flink job emits per row).
        window: rows in the rolling metrics' window.
        classes: class labels in id order (default: order of first appearance).
        seed: seed for learners built by name.
        **settings: the learner's settings when built by name (``optimizer``, ``lr``,
            ``mode``, ...).

    Raises:
        ConfigError: for an unknown learner name or settings it does not take.
        PipelineError: for metrics that do not fit the learner.
    """

    def __init__(  # noqa: PLR0913 - keyword settings
        self,
        learner: str | Callable[[], Learner] = "logistic",
        *,
        features: Sequence[str] | Features,
        metrics: Sequence[str] = (),
        window: int = 1000,
        classes: Sequence[Any] | None = None,
        seed: int = 0,
        **settings: Any,
    ) -> None:
        self.learner, self.settings = learner, dict(settings)
        self.features = features if isinstance(features, Features) else [str(f) for f in features]
        self.metrics, self.window, self.seed = list(metrics), int(window), seed
        self.classes = None if classes is None else list(classes)
        self._step: LearnStep | None = None
        self._fresh: dict[str, Any] | None = None
        self._step = self._new_step()  # validates the name and settings now, not on a worker
        self._fresh = self._step.snapshot()

    def _new_step(self) -> LearnStep:
        from tidal.ml.learn.catalog import make

        if isinstance(self.learner, str):
            model = make(self.learner, seed=self.seed, **self.settings)
        else:
            model = self.learner()
        features = self.features
        spec = Features(numeric=features) if isinstance(features, list) else features
        return LearnStep(
            "flink",
            model,
            features=spec,
            target=None if model.task == "clustering" else _LABEL,
            metrics=self.metrics,
            window=self.window,
            classes=self.classes,
            seed=self.seed,
        )

    @property
    def task(self) -> str:
        """What the learner predicts: ``"classification"``, ``"regression"``, ``"clustering"``."""
        assert self._step is not None  # noqa: S101 - set in __init__
        return str(self._step.task)

    @property
    def feature_names(self) -> list[str]:
        """The feature columns :meth:`learn` takes, in order."""
        assert self._step is not None  # noqa: S101 - set in __init__
        return list(self._step.features.columns)

    @property
    def outputs(self) -> list[str]:
        """The columns :meth:`learn` returns, in order.

        ``prediction``, then ``prediction_score`` (classifiers), then each metric and its
        rolling value.
        """
        assert self._step is not None  # noqa: S101 - set in __init__
        step = self._step
        out = [step.output]
        if step.task == "classification":
            out.append(f"{step.output}_score")
        return out + (step.metrics.columns() if step.metrics else [])

    def learn(
        self, state: bytes | None, columns: Sequence[Any], labels: Any = None
    ) -> tuple[dict[str, Any], bytes]:
        """Predict one key's new rows, each before it is learned; return the new state.

        Args:
            state: what the previous call returned for this key (``None``: a new key).
            columns: the feature columns (:attr:`feature_names`, in order), oldest row first.
            labels: the rows' labels (``None``/NaN: not labeled yet, only predicted);
                not given for clustering.

        Returns:
            The :attr:`outputs` columns for the rows (as the ``learn`` step's), and the
            key's new state.

        Raises:
            StateError: if ``state`` is not a state of a learner with these parameters.
            PipelineError: if a feature is not numeric or a label does not fit the learner.
        """
        step: LearnStep = self._load(state, "learner")
        names = step.features.columns
        if len(columns) != len(names):
            msg = f"KeyedLearner.learn: {len(columns)} feature columns given, it takes {names}"
            raise ConfigError(msg)
        data: dict[str, Any] = {n: np.asarray(c) for n, c in zip(names, columns, strict=True)}
        if step.target is not None:
            data[_LABEL] = _label_column(labels, len(data[names[0]]) if names else 0)
        out = step.learn(Batch(data))
        return {name: out[name] for name in self.outputs}, encode(step.snapshot())


def _label_column(labels: Any, n: int) -> Array:
    """Labels as float64 (NaN: missing) when they are numbers or None, else an object array."""
    if labels is None:
        return np.full(n, np.nan)
    arr = np.asarray(labels)
    if arr.dtype.kind != "O":
        return arr
    values = arr.tolist()
    if all(v is None or isinstance(v, int | float) for v in values):
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return arr


def logistic_onnx(weights: Sequence[float], bias: float, *, output: str = "score") -> bytes:
    """An ONNX logistic-regression model, ``sigmoid(X @ weights + bias)``, as bytes.

    A tiny real model for examples, tests and benchmarks (it runs through the same
    :class:`~tidal.ml.onnx.OnnxHandler` as any exported model); Flink SQL can express it
    too, which is what the Flink benchmark compares against.

    Example:
        >>> from tidal.ml.onnx import OnnxHandler
        >>> h = OnnxHandler(logistic_onnx([2.0], -1.0))
        >>> h.load()
        >>> round(float(h.predict(np.array([[0.5]], dtype=np.float32))["score"][0]), 3)
        0.5
    """
    from onnx import TensorProto, helper, numpy_helper

    w = np.asarray(weights, dtype=np.float32).reshape(-1, 1)
    b = np.array([bias], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["z0"]),
            helper.make_node("Add", ["z0", "b"], ["z"]),
            helper.make_node("Sigmoid", ["z"], [output]),
        ],
        "logistic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, len(w)])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return bytes(model.SerializeToString())
