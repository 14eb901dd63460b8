"""Linear, logistic and softmax regression learned online, vectorized (and exact per sample).

All three share :class:`Linear`: weights ``(d + 1, k)`` (the last row is the intercept), an
optimizer (``"sgd"``, ``"adam"`` or ``"ftrl"``, FTRL-proximal being the choice of Flink ML's
online logistic regression), L1 and L2 penalties, and two update modes:

``mode="minibatch"``
    one optimizer step per ``batch_size`` rows, on their mean gradient;
``mode="exact"``
    one step per row, in row order: the same weights as learning one sample at a time
    (River's ``learn_one``), whatever the size of the batches the stream delivers.

The input width ``d`` is fixed by the first batch learned; :class:`Softmax` adds a class
when it first sees its id. :meth:`Linear.predict_learn` gives every row the prediction of
the model that had learned all the rows before its chunk (its row, in exact mode), then
learns it: prequential evaluation at row granularity inside one call.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> X = rng.normal(size=(4_000, 3)); y = (X @ [1.0, -2.0, 0.5] > 0).astype(float)
    >>> clf = LogisticRegression(optimizer="adam", lr=0.05)
    >>> before = clf.predict_learn(X, y)  # P(y = 1) of each row before it was learned
    >>> round(float(((before[:, 1] > 0.5) == y)[2_000:].mean()), 2)
    0.98
    >>> clf.predict_proba(X[:2]).shape, clf.predict(X[:2]).dtype.name
    ((2, 2), 'int64')
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError, ModelError
from tidal.ml.learn import kernels
from tidal.ml.learn.base import Task, check_state, check_xy, json_state

__all__ = ["Linear", "LinearRegression", "LogisticRegression", "Softmax"]

Optimizer = Literal["sgd", "adam", "ftrl"]
Mode = Literal["minibatch", "exact"]
_OPT = {"sgd": kernels.SGD, "adam": kernels.ADAM, "ftrl": kernels.FTRL}
_LR = {"sgd": 0.01, "adam": 0.01, "ftrl": 0.1}


class Linear:
    """A generalized linear model learned by :func:`tidal.ml.learn.kernels.fit`.

    Args:
        optimizer: ``"sgd"``, ``"adam"`` or ``"ftrl"``.
        lr: learning rate (FTRL's alpha); default 0.01 (SGD, Adam) or 0.1 (FTRL).
        l1: L1 penalty (on the weights, not the intercept).
        l2: L2 penalty.
        mode: ``"minibatch"`` (a step per ``batch_size`` rows) or ``"exact"`` (per row).
        batch_size: rows per step in mini-batch mode.
        engine: ``"auto"`` (numba if installed), ``"numba"`` or ``"numpy"``.
        beta1: Adam's first-moment decay.
        beta2: Adam's second-moment decay.
        ftrl_beta: FTRL's beta (smooths the per-coordinate learning rate).

    Raises:
        ConfigError: for an unknown optimizer, mode or engine, or a non-positive rate.
    """

    kind: ClassVar[str] = "linear"
    task: ClassVar[Task] = "regression"
    checkpointable: ClassVar[bool] = True
    _loss: ClassVar[int] = kernels.SQUARED

    def __init__(  # noqa: PLR0913 - keyword-only settings
        self,
        *,
        optimizer: Optimizer = "sgd",
        lr: float | None = None,
        l1: float = 0.0,
        l2: float = 0.0,
        mode: Mode = "minibatch",
        batch_size: int = 32,
        engine: Literal["auto", "numba", "numpy"] = "auto",
        beta1: float = 0.9,
        beta2: float = 0.999,
        ftrl_beta: float = 1.0,
    ) -> None:
        if optimizer not in _OPT:
            msg = f"{self.kind}: optimizer must be one of {sorted(_OPT)}, got {optimizer!r}"
            raise ConfigError(msg)
        if mode not in ("minibatch", "exact"):
            msg = f"{self.kind}: mode must be 'minibatch' or 'exact', got {mode!r}"
            raise ConfigError(msg)
        if engine not in ("auto", "numba", "numpy"):
            msg = f"{self.kind}: engine must be 'auto', 'numba' or 'numpy', got {engine!r}"
            raise ConfigError(msg)
        lr = _LR[optimizer] if lr is None else float(lr)
        if lr <= 0 or l1 < 0 or l2 < 0 or batch_size < 1:
            msg = f"{self.kind}: lr must be > 0, l1 and l2 >= 0, batch_size >= 1"
            raise ConfigError(msg)
        self.params: dict[str, Any] = {
            "optimizer": optimizer,
            "lr": lr,
            "l1": float(l1),
            "l2": float(l2),
            "mode": mode,
            "batch_size": int(batch_size),
            "beta1": float(beta1),
            "beta2": float(beta2),
            "ftrl_beta": float(ftrl_beta),
        }
        self.engine = engine
        self.W = np.zeros((0, self._classes0()))
        self.A = np.zeros_like(self.W)
        self.B = np.zeros_like(self.W)
        self.t = np.zeros(1, dtype=np.int64)

    @classmethod
    def _classes0(cls) -> int:
        return 1

    @property
    def dim(self) -> int | None:
        """The input width, once the first batch was learned."""
        return self.W.shape[0] - 1 if self.W.shape[0] else None

    @property
    def weights(self) -> Array:
        """The ``(d, k)`` weights (a copy)."""
        return self.W[:-1].copy()

    @property
    def intercept(self) -> Array:
        """The ``k`` intercepts (a copy)."""
        out: Array = self.W[-1].copy()
        return out

    def _grow(self, d: int, y: Array | None) -> None:
        if self.W.shape[0] == 0:
            k = self.W.shape[1]
            self.W, self.A, self.B = (np.zeros((d + 1, k)) for _ in range(3))

    def _labels(self, y: Array) -> Array:
        return y

    def _raw(self, X: Array) -> Array:
        x = check_xy(self.kind, X, dim=self.dim)[0]
        if self.dim is None:
            return np.zeros((len(x), self.W.shape[1]))
        z: Array = x @ self.W[:-1] + self.W[-1]
        return z

    def predict_learn(self, X: Array, y: Array, weight: Array | None = None) -> Array:
        """Each row's prediction before it was learned (``(n, k)``), then learn the rows."""
        x, yy, ww = check_xy(self.kind, X, y, weight, dim=self.dim)
        assert yy is not None
        yy = self._labels(yy)
        self._grow(x.shape[1], yy)
        out = np.zeros((len(x), self.W.shape[1]))
        if len(x) == 0:
            return out
        p = self.params
        kernels.fit(
            x,
            yy,
            np.ones(len(x)) if ww is None else ww,
            self.W,
            self.A,
            self.B,
            self.t,
            loss=self._loss,
            opt=_OPT[p["optimizer"]],
            lr=p["lr"],
            l1=p["l1"],
            l2=p["l2"],
            beta1=p["beta1"],
            beta2=p["beta2"],
            ftrl_beta=p["ftrl_beta"],
            out=out,
            chunk=1 if p["mode"] == "exact" else p["batch_size"],
            engine=self.engine,
        )
        return out

    def learn(self, X: Array, y: Array, weight: Array | None = None) -> None:
        """Learn the rows of ``X`` (in order) with labels ``y``."""
        self.predict_learn(X, y, weight)

    def predict(self, X: Array) -> Array:
        """The predicted value of each row (0 before anything was learned)."""
        out: Array = self._raw(X)[:, 0]
        return out

    def snapshot(self) -> dict[str, Any]:
        """Weights, optimizer state and step count, as arrays."""
        return {
            "kind": self.kind,
            "params": json_state(self.params),
            "W": self.W.copy(),
            "A": self.A.copy(),
            "B": self.B.copy(),
            "t": self.t.copy(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`snapshot` wrote.

        Raises:
            StateError: if the snapshot is of another kind of learner or other settings.
        """
        check_state(self.kind, state, self.params)
        self.W, self.A, self.B = (np.array(state[n], dtype=np.float64) for n in "WAB")
        self.t = np.array(state["t"], dtype=np.int64).reshape(1)


class LinearRegression(Linear):
    """Least squares, learned online; ``predict`` gives the value.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(3_000, 1))
        >>> m = LinearRegression(lr=0.05, mode="exact"); m.learn(X, 3 * X[:, 0] + 1)
        >>> np.round(m.predict(np.array([[0.0], [1.0]])), 2).tolist()
        [1.0, 4.0]
    """

    kind = "linear_regression"


class LogisticRegression(Linear):
    """Binary logistic regression; labels are 0 and 1.

    Example:
        >>> import numpy as np
        >>> X = np.array([[-2.0], [2.0]] * 500)
        >>> m = LogisticRegression(optimizer="sgd", lr=0.5); m.learn(X, [0.0, 1.0] * 500)
        >>> m.predict(np.array([[-1.0], [1.0]])).tolist()
        [0, 1]
    """

    kind = "logistic_regression"
    task = "classification"
    _loss = kernels.LOGISTIC
    n_classes = 2

    def _labels(self, y: Array) -> Array:
        if ((y != 0) & (y != 1)).any():
            bad = y[(y != 0) & (y != 1)][0]
            msg = f"learner {self.kind!r}: labels must be 0 or 1, got {bad}; use 'softmax'"
            raise ModelError(msg)
        return y

    def predict_proba(self, X: Array) -> Array:
        """``(n, 2)``: P(y = 0), P(y = 1)."""
        z = self._raw(X)[:, 0]
        p = np.empty_like(z)
        pos = z >= 0
        p[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
        e = np.exp(z[~pos])
        p[~pos] = e / (1.0 + e)
        return np.stack([1.0 - p, p], axis=1)

    def predict_learn(self, X: Array, y: Array, weight: Array | None = None) -> Array:
        """``(n, 2)`` class probabilities of each row before it was learned; then learn."""
        p = super().predict_learn(X, y, weight)[:, 0]
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, X: Array) -> Array:
        """Class ids (1 where P(y = 1) >= 0.5)."""
        out: Array = (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)
        return out


class Softmax(Linear):
    """Multinomial logistic regression over class ids ``0..k-1`` (a class is added when seen).

    Example:
        >>> import numpy as np
        >>> X = np.eye(3)[np.arange(900) % 3]
        >>> m = Softmax(optimizer="adam", lr=0.1); m.learn(X, np.arange(900) % 3)
        >>> m.predict(np.eye(3)).tolist(), m.n_classes
        ([0, 1, 2], 3)
    """

    kind = "softmax"
    task = "classification"
    _loss = kernels.SOFTMAX

    @classmethod
    def _classes0(cls) -> int:
        return 2

    @property
    def n_classes(self) -> int:
        """Classes seen so far (at least 2)."""
        return int(self.W.shape[1])

    def _labels(self, y: Array) -> Array:
        if (y < 0).any() or (y != np.floor(y)).any():
            msg = f"learner {self.kind!r}: labels must be class ids 0, 1, 2, ..."
            raise ModelError(msg)
        return y

    def _grow(self, d: int, y: Array | None) -> None:
        super()._grow(d, y)
        k = int(y.max()) + 1 if y is not None and len(y) else 0
        if k > self.W.shape[1]:
            pad = ((0, 0), (0, k - self.W.shape[1]))
            self.W, self.A, self.B = (np.pad(a, pad) for a in (self.W, self.A, self.B))

    def predict_proba(self, X: Array) -> Array:
        """``(n, k)`` class probabilities."""
        z = self._raw(X)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        out: Array = e / e.sum(axis=1, keepdims=True)
        return out

    def predict(self, X: Array) -> Array:
        """The most probable class id of each row."""
        out: Array = self.predict_proba(X).argmax(axis=1).astype(np.int64)
        return out
