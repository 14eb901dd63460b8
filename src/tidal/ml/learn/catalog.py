"""Every built-in learner by name: what ``tidal learn --model`` and the conformance suite use.

:data:`LEARNERS` maps a name to a factory taking keyword settings (``seed`` is accepted by
all, and used by those that draw random numbers) and to the task it serves. ``"auto"``
picks by task: ``logistic`` for two classes, ``softmax`` for more, ``linear`` for numbers.

Example:
    >>> sorted(LEARNERS)[:4]
    ['adam-logistic', 'ftrl-logistic', 'keras', 'kmeans']
    >>> make("logistic", mode="exact").params["mode"]
    'exact'
    >>> make("nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tidal.errors.ConfigError: unknown learner 'nope'; choose one of adam-logistic, ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tidal.errors import ConfigError
from tidal.ml.learn.base import Learner, Task
from tidal.ml.learn.kmeans import KMeans
from tidal.ml.learn.linear import LinearRegression, LogisticRegression, Softmax

__all__ = ["LEARNERS", "Entry", "make"]


@dataclass(frozen=True)
class Entry:
    """A catalog entry: how to build the learner, what it predicts, what it needs."""

    build: Callable[..., Learner]
    task: Task
    about: str
    extra: str | None = None
    """The module it needs (``torch``, ``river``, ``keras``), or None."""


def _mlp(**kw: Any) -> Learner:
    from tidal.ml.learn.mlp import MLP

    return MLP(**kw)


def _keras(**kw: Any) -> Learner:
    from tidal.ml.learn.keras_adapter import KerasLearner

    return KerasLearner(kw.pop("path", None), **kw)


def _river(name: str) -> Callable[..., Learner]:
    def build(**kw: Any) -> Learner:
        from tidal.ml.learn.river_adapter import RiverLearner, _river_base

        _river_base()
        from river import linear_model, optim, preprocessing

        kw.pop("seed", None)
        if name == "logistic":
            model = preprocessing.StandardScaler() | linear_model.LogisticRegression(
                optimizer=optim.SGD(kw.pop("lr", 0.01))
            )
        else:
            model = preprocessing.StandardScaler() | linear_model.ALMAClassifier()  # type: ignore[no-untyped-call]
        return RiverLearner(model, **kw)

    return build


def _strip_seed(cls: Callable[..., Any]) -> Callable[..., Learner]:
    def build(**kw: Any) -> Learner:
        kw.pop("seed", None)
        out: Learner = cls(**kw)
        return out

    return build


LEARNERS: dict[str, Entry] = {
    "linear": Entry(_strip_seed(LinearRegression), "regression", "least squares (SGD)"),
    "logistic": Entry(
        _strip_seed(LogisticRegression), "classification", "binary logistic regression (SGD)"
    ),
    "adam-logistic": Entry(
        lambda **kw: _strip_seed(LogisticRegression)(**{"optimizer": "adam", **kw}),
        "classification",
        "binary logistic regression (Adam)",
    ),
    "ftrl-logistic": Entry(
        lambda **kw: _strip_seed(LogisticRegression)(**{"optimizer": "ftrl", **kw}),
        "classification",
        "binary logistic regression (FTRL-proximal)",
    ),
    "softmax": Entry(_strip_seed(Softmax), "classification", "multinomial logistic (SGD)"),
    "kmeans": Entry(_strip_seed(KMeans), "clustering", "online k-means"),
    "mlp": Entry(_mlp, "classification", "MLP by backpropagation (PyTorch)", "torch"),
    "keras": Entry(
        _keras,
        "classification",
        "a Keras 3 model (path=FILE.keras, else a dense network) on PyTorch",
        "keras",
    ),
    "river-logistic": Entry(
        _river("logistic"), "classification", "River LogisticRegression (slow path)", "river"
    ),
    "river-alma": Entry(_river("alma"), "classification", "River ALMA (slow path)", "river"),
}
"""Built-in learners by name."""


def make(name: str, **settings: Any) -> Learner:
    """Build the learner ``name`` with keyword ``settings``.

    Raises:
        ConfigError: for an unknown name or settings the learner does not take.
    """
    entry = LEARNERS.get(name)
    if entry is None:
        msg = f"unknown learner {name!r}; choose one of {', '.join(sorted(LEARNERS))}"
        raise ConfigError(msg)
    try:
        return entry.build(**settings)
    except TypeError as exc:
        msg = f"learner {name!r}: {exc}"
        raise ConfigError(msg) from exc
