"""Keras 3 models as online learners, trained in mini-batches on PyTorch.

:class:`KerasLearner` takes a ``.keras`` file the user saved with Keras (or a model object,
or nothing: then a small dense network is built on the first batch, like
:class:`~tidal.ml.learn.mlp.MLP`) and makes it a batch-first
:class:`~tidal.ml.learn.base.Learner`: ``predict``/``predict_proba`` call the model once per
batch, ``learn`` takes one optimizer step per ``batch_size`` rows, in row order, ``epochs``
times. Keras runs on the PyTorch backend (:func:`tidal.ml.keras.import_keras` sets it).

Loss and optimizer: those the file was compiled with (its ``compile_config``: the optimizer's
type and settings start afresh, its saved slots are not read), else ``loss=`` /
``optimizer=`` given here, else the loss that fits the output (binary cross-entropy for one
output unit, sparse categorical cross-entropy for ``k > 1`` units, squared error for
regression) and Adam at ``lr``. Outputs are taken as probabilities (a sigmoid or softmax last
layer); ``logits=True`` for a model that outputs logits.

Snapshots hold every weight of the model (trainable or not) and every optimizer variable
(step count, moments) as numpy arrays, and the weight shapes and optimizer as settings:
restoring into a learner built from the same file continues exactly, and a checkpoint never
holds the architecture or code, only numbers. Layers that draw random numbers while
training (dropout) use Keras' global seed; seed it (``keras.utils.set_random_seed``) for
repeatable runs.

Example:
    >>> import numpy as np, os, tempfile
    >>> from tidal.ml.keras import import_keras, save_model
    >>> keras = import_keras()
    >>> net = keras.Sequential([keras.Input(shape=(2,)),
    ...     keras.layers.Dense(8, activation="relu",
    ...                        kernel_initializer=keras.initializers.GlorotUniform(seed=1)),
    ...     keras.layers.Dense(1, activation="sigmoid",
    ...                        kernel_initializer=keras.initializers.GlorotUniform(seed=2))])
    >>> net.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    >>> path = os.path.join(tempfile.mkdtemp(), "net.keras")
    >>> save_model(net, path)
    >>> learner = KerasLearner(path)
    >>> X = np.random.default_rng(0).normal(size=(2_000, 2)); y = (X.sum(axis=1) > 0) * 1.0
    >>> learner.learn(X, y)
    >>> learner.task, bool((learner.predict(X) == y).mean() > 0.9)
    ('classification', True)
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import orjson

from tidal.core.batch import Array
from tidal.errors import ConfigError, ModelError, StateError
from tidal.ml.keras import import_keras, load_keras, to_numpy
from tidal.ml.learn.base import Task, check_state, check_xy, json_state

__all__ = ["KerasLearner"]


def _compile_config(path: Path) -> dict[str, Any] | None:
    """The ``compile_config`` of a ``.keras`` file's ``config.json`` (JSON: nothing runs)."""
    try:
        with zipfile.ZipFile(path) as zf:
            config = orjson.loads(zf.read("config.json"))
    except (OSError, KeyError, zipfile.BadZipFile, orjson.JSONDecodeError):
        return None
    got = config.get("compile_config") if isinstance(config, dict) else None
    return got if isinstance(got, dict) and got.get("optimizer") else None


class KerasLearner:
    """A Keras 3 model learned online in mini-batches (see the module doc).

    Args:
        model: a path to a ``.keras`` file, a ``keras.Model``, or ``None`` (a dense network
            of ``hidden`` units, built on the first batch).
        task: ``"classification"`` or ``"regression"``.
        n_classes: classes when the model is built here (a loaded model's output width
            says: one unit is two classes).
        hidden: hidden units of the network built when ``model`` is None.
        lr: the learning rate of the default optimizer (Adam).
        batch_size: rows per optimizer step.
        epochs: passes over each learned batch.
        loss: a Keras loss (name or object) instead of the file's or the default.
        optimizer: a Keras optimizer (name or object) instead of the file's or the default.
        logits: the model outputs logits, not probabilities.
        seed: seeds the initial weights of a network built here.

    Raises:
        ConfigError: for an unknown task, non-positive sizes, or Keras on another backend.
        ModelError: for a file that cannot be loaded, or an output that does not fit the
            task.
    """

    kind: ClassVar[str] = "keras"
    checkpointable: ClassVar[bool] = True

    def __init__(  # noqa: PLR0913 - keyword settings
        self,
        model: Any = None,
        *,
        task: Literal["classification", "regression"] = "classification",
        n_classes: int = 2,
        hidden: Sequence[int] = (32,),
        lr: float = 1e-3,
        batch_size: int = 32,
        epochs: int = 1,
        loss: Any = None,
        optimizer: Any = None,
        logits: bool = False,
        seed: int = 0,
    ) -> None:
        if task not in ("classification", "regression"):
            msg = f"keras: task must be 'classification' or 'regression', got {task!r}"
            raise ConfigError(msg)
        if min([*hidden, n_classes - 1, batch_size, epochs]) < 1 or lr <= 0:
            msg = "keras: hidden units, batch_size, epochs >= 1, n_classes >= 2, lr > 0"
            raise ConfigError(msg)
        self.keras = import_keras()
        import torch

        self.torch = torch
        self.task: Task = task
        self.n_classes = n_classes
        self.hidden = list(hidden)
        self.lr, self.batch_size, self.epochs = lr, batch_size, epochs
        self.logits, self.seed = logits, seed
        self._loss, self._optimizer = loss, optimizer
        self.source = "built here"
        self.compiled: dict[str, Any] | None = None
        self.model: Any = None
        if isinstance(model, str | os.PathLike):
            path = Path(model)
            self.source = str(path)
            self.compiled = _compile_config(path) if loss is None and optimizer is None else None
            self._setup(load_keras(path))
        elif model is not None:
            self.source = f"<in-memory {type(model).__name__}>"
            self._setup(model)

    # -- building -----------------------------------------------------------------------
    def _build(self, d: int) -> Any:
        keras = self.keras
        layers: list[Any] = [keras.Input(shape=(d,))]
        for i, units in enumerate([*self.hidden, self._out_units()]):
            last = i == len(self.hidden)
            act = "relu" if not last else self._out_activation()
            init = keras.initializers.GlorotUniform(seed=self.seed + i)
            layers.append(keras.layers.Dense(units, activation=act, kernel_initializer=init))
        return keras.Sequential(layers)

    def _out_units(self) -> int:
        return 1 if self.task == "regression" or self.n_classes == 2 else self.n_classes  # noqa: PLR2004

    def _out_activation(self) -> str | None:
        if self.task == "regression" or self.logits:
            return None
        return "sigmoid" if self._out_units() == 1 else "softmax"

    def _setup(self, model: Any) -> None:
        """Check the model's output against the task; compile it; build the optimizer."""
        keras = self.keras
        if not isinstance(model, keras.Model):
            msg = f"keras: expected a keras.Model or a .keras path, got {type(model).__name__}"
            raise ModelError(msg)
        shape = model.output_shape
        if not (isinstance(shape, tuple) and len(shape) == 2 and isinstance(shape[1], int)):  # noqa: PLR2004
            msg = f"keras: {self.source} must have one (rows, k) output, it has {shape}"
            raise ModelError(msg)
        width = shape[1]
        if self.task == "regression" and width != 1:
            msg = f"keras: a regression model needs 1 output unit, {self.source} has {width}"
            raise ModelError(msg)
        if self.task == "classification":
            self.n_classes = 2 if width == 1 else width
        if self.compiled is not None:
            model.compile_from_config(self.compiled)
        else:
            opt = self._optimizer
            if opt is None:
                opt = keras.optimizers.Adam(learning_rate=self.lr)
            model.compile(optimizer=opt, loss=self._loss or self._default_loss(width))
        model.optimizer.build(model.trainable_variables)
        self.model = model

    def _default_loss(self, width: int) -> Any:
        losses = self.keras.losses
        if self.task == "regression":
            return losses.MeanSquaredError()
        if width == 1:
            return losses.BinaryCrossentropy(from_logits=self.logits)
        return losses.SparseCategoricalCrossentropy(from_logits=self.logits)

    @property
    def dim(self) -> int | None:
        """The input width (None before a network built here has seen a batch)."""
        if self.model is None:
            return None
        shape = self.model.input_shape
        return shape[1] if isinstance(shape, tuple) and isinstance(shape[1], int) else None

    @property
    def params(self) -> dict[str, Any]:
        """The settings a snapshot must match: sizes, task, weight shapes, optimizer."""
        out: dict[str, Any] = {
            "task": self.task,
            "n_classes": self.n_classes,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
        }
        if self.model is not None:
            out["weights"] = [list(w.shape) for w in self.model.weights]
            out["optimizer"] = type(self.model.optimizer).__name__
        return out

    # -- predict and learn --------------------------------------------------------------
    def _forward(self, x: Array) -> Array:
        """Class probabilities ``(n, n_classes)``, or values ``(n,)``."""
        if self.model is None:
            if self.task == "classification":
                return np.full((len(x), self.n_classes), 1.0 / self.n_classes)
            return np.zeros(len(x))
        with self.torch.no_grad():
            z = to_numpy(self.model(x.astype(np.float32), training=False)).astype(np.float64)
        if self.task == "regression":
            return z[:, 0]
        if z.shape[1] == 1:
            p = 1.0 / (1.0 + np.exp(-z[:, 0])) if self.logits else z[:, 0]
            return np.stack([1.0 - p, p], axis=1)
        if self.logits:
            e = np.exp(z - z.max(axis=1, keepdims=True))
            probs: Array = e / e.sum(axis=1, keepdims=True)
            return probs
        return z

    def learn(self, X: Array, y: Array, weight: Array | None = None) -> None:
        """Optimizer steps over ``X`` in order, ``batch_size`` rows each, ``epochs`` times.

        Raises:
            ModelError: for a bad matrix, or class ids beyond the model's classes.
        """
        x, yy, ww = check_xy(self.kind, X, y, weight, dim=self.dim)
        assert yy is not None
        if self.task == "classification" and len(yy):
            if yy.min() < 0 or yy.max() >= self.n_classes:
                msg = f"keras: class ids must be 0..{self.n_classes - 1}, got {int(yy.max())}"
                raise ModelError(msg)
        if self.model is None:
            self._setup(self._build(x.shape[1]))
        torch = self.torch
        model = self.model
        xt = torch.from_numpy(x.astype(np.float32))
        wide = self.task == "regression" or self.n_classes == 2  # noqa: PLR2004 - one output unit
        yt = torch.from_numpy(yy.astype(np.float32).reshape(-1, 1) if wide else yy.astype(np.int64))
        wt = torch.from_numpy((np.ones(len(x)) if ww is None else ww).astype(np.float32))
        bs = self.batch_size
        for _ in range(self.epochs):
            for start in range(0, len(x), bs):
                xb, yb, wb = xt[start : start + bs], yt[start : start + bs], wt[start : start + bs]
                pred = model(xb, training=True)
                loss = model.compute_loss(x=xb, y=yb, y_pred=pred, sample_weight=wb)
                model.zero_grad()
                loss.backward()
                trainable = model.trainable_weights
                grads = [v.value.grad for v in trainable]
                with torch.no_grad():
                    model.optimizer.apply(grads, trainable)

    def predict_learn(self, X: Array, y: Array, weight: Array | None = None) -> Array:
        """The batch's predictions (probabilities or values) before learning it; then learn."""
        out = self._forward(check_xy(self.kind, X, dim=self.dim)[0])
        self.learn(X, y, weight)
        return out

    def predict_proba(self, X: Array) -> Array:
        """``(n, n_classes)`` class probabilities."""
        return self._forward(check_xy(self.kind, X, dim=self.dim)[0])

    def predict(self, X: Array) -> Array:
        """Class ids, or values for regression."""
        out = self._forward(check_xy(self.kind, X, dim=self.dim)[0])
        if self.task == "classification":
            ids: Array = out.argmax(axis=1).astype(np.int64)
            return ids
        return out

    # -- state --------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Every model weight and optimizer variable as a numpy array."""
        state: dict[str, Any] = {"kind": self.kind, "params": json_state(self.params)}
        state["dim"] = self.dim
        if self.model is None:
            return state
        for i, w in enumerate(self.model.weights):
            state[f"w.{i}"] = to_numpy(w)
        for i, v in enumerate(self.model.optimizer.variables):
            state[f"opt.{i}"] = to_numpy(v)
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`snapshot` wrote (on a learner built with the same model).

        Raises:
            StateError: if the snapshot is of another learner, model or optimizer.
        """
        if self.model is None and state.get("dim") is not None:
            self._setup(self._build(int(state["dim"])))
        check_state(self.kind, state, self.params)
        if self.model is None:
            return
        try:
            for i, w in enumerate(self.model.weights):
                w.assign(np.asarray(state[f"w.{i}"]))
            for i, v in enumerate(self.model.optimizer.variables):
                v.assign(np.asarray(state[f"opt.{i}"]))
        except KeyError as exc:
            msg = f"keras: the snapshot lacks {exc.args[0]!r}; it is not a full Keras snapshot"
            raise StateError(msg) from exc
