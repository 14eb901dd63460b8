"""Model handlers: the plug point between a model and the ``predict`` step.

A :class:`ModelHandler` needs two methods:

``load()``
    read the model (once per worker, when the step opens; never per batch);
``predict(X)``
    score ``X``, a C-contiguous float32 array of shape ``(rows, features)``, and return the
    outputs as named columns: ``{"score": array of rows}``. A column is 1-D (a score, a
    class) or 2-D (class probabilities, an embedding: one row per event).

Everything else is an optional hook with a default in :class:`BaseHandler`; the functions of
this module (:func:`version_of`, :func:`signature_of`, ...) apply the same defaults to a
handler that implements only the protocol, so subclassing is never required:

``version``
    a string recorded on every output row and in checkpoints (default ``"unversioned"``);
``warmup(n_features, batch_sizes)``
    run the model before the first event so that lazy initialisation (memory arenas, kernel
    selection) does not land on an event (default: score zeros at each size);
``signature``
    a :class:`Signature`: input columns, feature count, input dtype, output columns;
``describe()``
    a JSON-ready description for errors, logs and the registry;
``use_version(version)``
    serve the given version (a checkpoint is being restored); a handler that has only one
    version accepts its own and refuses any other;
``refresh()``
    called between batches, never inside one: a handler that can swap models (a registry
    watching for promotions) swaps here, so one batch is scored by one version;
``bind(features)``
    told once, before ``load``, the feature column names the step selects (a model that
    takes named features, such as River's dict-per-record models, keys them by these).

Pre- and post-processing compose without subclassing: :func:`with_preprocess` and
:func:`with_postprocess` return a new handler. There is one composite class whose chains are
flat (composing twice extends the chains, it never wraps a wrapper), and it forwards every
hook explicitly; a test checks that no hook of :class:`BaseHandler` is left to the default,
which is how Beam's hand-written delegating handlers drifted.

Example:
    >>> import numpy as np
    >>> class Doubler(BaseHandler):
    ...     def load(self) -> None:
    ...         pass
    ...     def predict(self, X):
    ...         return {"y": X.sum(axis=1) * 2}
    >>> h = with_postprocess(with_preprocess(Doubler(), lambda X: X + 1),
    ...                      lambda out: {"y": out["y"], "big": out["y"] > 10})
    >>> h.load()
    >>> out = h.predict(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32))
    >>> out["y"].tolist(), out["big"].tolist()
    ([10.0, 18.0], [False, True])
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.errors import ModelError, PipelineError, where

__all__ = [
    "DEFAULT_VERSION",
    "BaseHandler",
    "Composed",
    "ModelHandler",
    "Postprocess",
    "Preprocess",
    "Signature",
    "bind",
    "describe",
    "feature_matrix",
    "missing_extra",
    "output_column",
    "refresh",
    "signature_of",
    "split_columns",
    "use_version",
    "version_of",
    "warmup",
    "with_postprocess",
    "with_preprocess",
]

DEFAULT_VERSION = "unversioned"
"""The version recorded for a handler that has no ``version`` attribute."""

Outputs = dict[str, Array]
Preprocess = Callable[[Array], Array]
"""``fn(X) -> X``: features in, features out (float32 2-D, any width)."""
Postprocess = Callable[[Outputs], Mapping[str, Array]]
"""``fn(outputs) -> outputs``: named output columns in, named output columns out."""


@runtime_checkable
class ModelHandler(Protocol):
    """What the ``predict`` step needs from a model (see the module docs for the hooks)."""

    def load(self) -> None:
        """Load the model; called once, when the step opens."""
        ...

    def predict(self, X: Array) -> dict[str, Array]:
        """Score a float32 ``(rows, features)`` array; return named output columns."""
        ...


@dataclass(frozen=True)
class Signature:
    """What a model takes and gives, as far as the handler knows it.

    Args:
        inputs: the feature columns, in order (empty when the model does not know them; the
            ``predict`` step fills them in from its ``features``).
        n_features: the width of the feature matrix (``None`` when not fixed by the model).
        dtype: the dtype the model takes (features are converted to it).
        outputs: the output column names (empty when known only after a call).

    Example:
        >>> s = Signature(n_features=2, outputs=("score",)).with_inputs(["a", "b"])
        >>> s.to_dict()
        {'inputs': ['a', 'b'], 'n_features': 2, 'dtype': 'float32', 'outputs': ['score']}
        >>> Signature.from_dict(s.to_dict()) == s
        True
    """

    inputs: tuple[str, ...] = ()
    n_features: int | None = None
    dtype: str = "float32"
    outputs: tuple[str, ...] = field(default=())

    def with_inputs(self, inputs: Sequence[str]) -> Signature:
        """The same signature with the input column names set."""
        return replace(self, inputs=tuple(inputs))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "inputs": list(self.inputs),
            "n_features": self.n_features,
            "dtype": self.dtype,
            "outputs": list(self.outputs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        """Read :meth:`to_dict`'s output."""
        n = data.get("n_features")
        return cls(
            inputs=tuple(data.get("inputs") or ()),
            n_features=None if n is None else int(n),
            dtype=str(data.get("dtype", "float32")),
            outputs=tuple(data.get("outputs") or ()),
        )


class BaseHandler(abc.ABC):
    """Defaults for the optional hooks; subclasses write ``load`` and ``predict``.

    Set ``version`` (a class or instance attribute) to have it recorded on every output row.
    """

    version: str = DEFAULT_VERSION

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model; called once, when the step opens."""

    @abc.abstractmethod
    def predict(self, X: Array) -> dict[str, Array]:
        """Score a float32 ``(rows, features)`` array; return named output columns."""

    def warmup(self, n_features: int, batch_sizes: Sequence[int] = (1, 64, 1024)) -> None:
        """Score zeros at each batch size, so that first-call costs are paid up front."""
        for size in batch_sizes:
            self.predict(np.zeros((int(size), int(n_features)), dtype=np.float32))

    @property
    def signature(self) -> Signature:
        """What the model takes and gives (default: nothing known)."""
        return Signature()

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description: the handler type and version."""
        return {"type": type(self).__name__, "version": self.version}

    def use_version(self, version: str) -> None:
        """Serve ``version``; a single-model handler accepts only its own.

        Raises:
            ModelError: if ``version`` is not this handler's version.
        """
        if version != self.version:
            msg = (
                f"{type(self).__name__} serves model version {self.version!r} only, and "
                f"version {version!r} was asked for"
            )
            raise ModelError(msg)

    def refresh(self) -> None:  # noqa: B027 - an optional hook, a no-op by default
        """Called between batches; a handler that swaps models does it here (default: no-op)."""

    def bind(self, features: Sequence[str]) -> None:  # noqa: B027 - an optional hook
        """Told the feature column names the step selects, before ``load`` (default: ignored)."""


# -- hooks with defaults, for handlers that implement only the protocol -------------------
def version_of(handler: ModelHandler) -> str:
    """The handler's ``version``, or ``"unversioned"``.

    Example:
        >>> class H:
        ...     def load(self): pass
        ...     def predict(self, X): return {}
        >>> version_of(H())
        'unversioned'
    """
    v = getattr(handler, "version", None)
    return DEFAULT_VERSION if v is None else str(v)


def signature_of(handler: ModelHandler) -> Signature:
    """The handler's ``signature``, or an empty one."""
    sig = getattr(handler, "signature", None)
    return sig if isinstance(sig, Signature) else Signature()


def describe(handler: ModelHandler) -> dict[str, Any]:
    """The handler's ``describe()``, or its type and version."""
    fn = getattr(handler, "describe", None)
    if callable(fn):
        out = fn()
        if isinstance(out, dict):
            return out
    return {"type": type(handler).__name__, "version": version_of(handler)}


def warmup(handler: ModelHandler, n_features: int, batch_sizes: Sequence[int]) -> None:
    """Call the handler's ``warmup``, or score zeros at each size."""
    fn = getattr(handler, "warmup", None)
    if callable(fn):
        fn(n_features, batch_sizes)
        return
    for size in batch_sizes:
        handler.predict(np.zeros((int(size), int(n_features)), dtype=np.float32))


def use_version(handler: ModelHandler, version: str) -> None:
    """Call the handler's ``use_version``, or accept only its own version.

    Raises:
        ModelError: if the handler cannot serve ``version``.
    """
    fn = getattr(handler, "use_version", None)
    if callable(fn):
        fn(version)
        return
    if version != version_of(handler):
        msg = f"{type(handler).__name__} serves version {version_of(handler)!r}, not {version!r}"
        raise ModelError(msg)


def refresh(handler: ModelHandler) -> None:
    """Call the handler's ``refresh`` if it has one."""
    fn = getattr(handler, "refresh", None)
    if callable(fn):
        fn()


def bind(handler: ModelHandler, features: Sequence[str]) -> None:
    """Call the handler's ``bind`` if it has one."""
    fn = getattr(handler, "bind", None)
    if callable(fn):
        fn(list(features))


# -- composition --------------------------------------------------------------------------
class Composed(BaseHandler):
    """A handler with pre-processing before and post-processing after another handler.

    Made by :func:`with_preprocess` and :func:`with_postprocess`; the chains are flat, and
    every hook is forwarded to the inner handler (``warmup`` runs through the whole chain).
    Attributes the inner handler has and this class does not (``session``, ``model``) are
    read from the inner handler.

    Args:
        inner: the model's handler.
        pre: functions applied to the features, in order, before the model.
        post: functions applied to the outputs, in order, after the model.
    """

    def __init__(
        self,
        inner: ModelHandler,
        pre: Sequence[Preprocess] = (),
        post: Sequence[Postprocess] = (),
    ) -> None:
        self.inner = inner
        self.pre: tuple[Preprocess, ...] = tuple(pre)
        self.post: tuple[Postprocess, ...] = tuple(post)

    def load(self) -> None:
        """Load the inner handler."""
        self.inner.load()

    def predict(self, X: Array) -> dict[str, Array]:
        """Pre-process, score with the inner handler, post-process.

        Raises:
            ModelError: if a pre- or post-processing function fails or returns the wrong
                kind of value (naming the function, its file and line).
        """
        for pre in self.pre:
            X = _call_pre(pre, X)
        out = self.inner.predict(X)
        for post in self.post:
            out = _call_post(post, out)
        return out

    def warmup(self, n_features: int, batch_sizes: Sequence[int] = (1, 64, 1024)) -> None:
        """Warm up the whole chain (pre-processing, the model, post-processing)."""
        if self.pre:  # the width the model sees is known only after pre-processing
            for size in batch_sizes:
                self.predict(np.zeros((int(size), int(n_features)), dtype=np.float32))
            return
        warmup(self.inner, n_features, batch_sizes)  # the backend's own warm-up
        if self.post:
            self.predict(np.zeros((1, int(n_features)), dtype=np.float32))

    @property
    def version(self) -> str:  # type: ignore[override]
        """The inner handler's version."""
        return version_of(self.inner)

    @property
    def signature(self) -> Signature:
        """The inner signature, less what pre- and post-processing make unknown.

        After pre-processing the width is unknown; after post-processing, the outputs.
        """
        sig = signature_of(self.inner)
        if self.pre:
            sig = replace(sig, n_features=None, dtype="float32")
        if self.post:
            sig = replace(sig, outputs=())
        return sig

    def describe(self) -> dict[str, Any]:
        """The inner description and the functions of both chains."""
        return {
            "type": "Composed",
            "version": self.version,
            "model": describe(self.inner),
            "preprocess": [where(f) for f in self.pre],
            "postprocess": [where(f) for f in self.post],
        }

    def use_version(self, version: str) -> None:
        """Forwarded to the inner handler."""
        use_version(self.inner, version)

    def refresh(self) -> None:
        """Forwarded to the inner handler."""
        refresh(self.inner)

    def bind(self, features: Sequence[str]) -> None:
        """Forwarded to the inner handler (the names are the step's, before pre-processing)."""
        bind(self.inner, features)

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "pre", "post") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def with_preprocess(handler: ModelHandler, fn: Preprocess) -> Composed:
    """A handler that applies ``fn`` to the features before ``handler`` scores them.

    ``fn`` takes and returns a 2-D float array (it may change the width: scaling, a
    projection); its result is made float32 and C-contiguous.

    Example:
        >>> import numpy as np
        >>> class Sum(BaseHandler):
        ...     def load(self): pass
        ...     def predict(self, X): return {"s": X.sum(axis=1)}
        >>> h = with_preprocess(with_preprocess(Sum(), lambda X: X * 10), lambda X: X + 1)
        >>> len(h.pre), h.predict(np.ones((1, 2), dtype=np.float32))["s"].tolist()
        (2, [40.0])
    """
    if isinstance(handler, Composed):
        return Composed(handler.inner, (fn, *handler.pre), handler.post)
    return Composed(handler, (fn,))


def with_postprocess(handler: ModelHandler, fn: Postprocess) -> Composed:
    """A handler that applies ``fn`` to the named outputs after ``handler`` scored.

    ``fn`` takes the dict of output columns and returns a mapping of columns (add, drop,
    rename, threshold).

    Example:
        >>> import numpy as np
        >>> class Score(BaseHandler):
        ...     def load(self): pass
        ...     def predict(self, X): return {"p": X[:, 0]}
        >>> h = with_postprocess(Score(), lambda out: {**out, "flag": out["p"] > 0.5})
        >>> h.predict(np.array([[0.2], [0.9]], dtype=np.float32))["flag"].tolist()
        [False, True]
    """
    if isinstance(handler, Composed):
        return Composed(handler.inner, handler.pre, (*handler.post, fn))
    return Composed(handler, (), (fn,))


def split_columns(*names: str) -> Postprocess:
    """A post-processing function that splits 2-D outputs into ``<name>_<i>`` columns.

    Args:
        names: the outputs to split; none means every 2-D output.

    Example:
        >>> import numpy as np
        >>> fn = split_columns("p")
        >>> sorted(fn({"p": np.array([[0.1, 0.9]]), "label": np.array([1])}))
        ['label', 'p_0', 'p_1']
    """
    chosen = set(names)

    def split(outputs: Outputs) -> dict[str, Array]:
        res: dict[str, Array] = {}
        for name, arr in outputs.items():
            if arr.ndim == 2 and (not chosen or name in chosen):
                for i in range(arr.shape[1]):
                    res[f"{name}_{i}"] = arr[:, i]
            else:
                res[name] = arr
        return res

    split.__qualname__ = f"split_columns({', '.join(map(repr, names))})"
    return split


def _call_pre(fn: Preprocess, X: Array) -> Array:
    try:
        out = fn(X)
    except Exception as exc:
        msg = f"pre-processing {where(fn)} raised {type(exc).__name__}: {exc}"
        raise ModelError(msg) from exc
    arr = np.asarray(out)
    if arr.ndim != 2 or len(arr) != len(X):
        msg = (
            f"pre-processing {where(fn)} must return a 2-D array with one row per event "
            f"({len(X)} rows), got shape {arr.shape}"
        )
        raise ModelError(msg)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _call_post(fn: Postprocess, out: Outputs) -> Outputs:
    try:
        res = fn(out)
    except Exception as exc:
        msg = f"post-processing {where(fn)} raised {type(exc).__name__}: {exc}"
        raise ModelError(msg) from exc
    if not isinstance(res, Mapping):
        msg = (
            f"post-processing {where(fn)} must return a mapping of output columns, "
            f"got {type(res).__name__}"
        )
        raise ModelError(msg)
    return {str(k): np.asarray(v) for k, v in res.items()}


# -- features and outputs -----------------------------------------------------------------
def feature_matrix(batch: Batch, features: Sequence[str]) -> Array:
    """The feature columns of ``batch`` as one C-contiguous float32 ``(rows, width)`` array.

    Numeric 1-D columns become one feature each; a 2-D column (an image as 64 pixels, an
    embedding) contributes all its columns. A single float32 2-D column is used as it is
    (no copy). The result is what ``np.column_stack`` gives, written straight into one
    float32 array (one pass per column, no float64 intermediate).

    Raises:
        PipelineError: if a column is missing or not numeric.

    Example:
        >>> b = Batch({"a": [1, 2], "b": [0.5, 1.5], "img": np.ones((2, 3))})
        >>> feature_matrix(b, ["a", "b"]).tolist()
        [[1.0, 0.5], [2.0, 1.5]]
        >>> feature_matrix(b, ["img", "a"]).shape
        (2, 4)
    """
    n = len(batch)
    cols: list[Array] = []
    for name in features:
        if name not in batch:
            msg = f"feature column {name!r} is not in the batch; columns are {batch.names}"
            raise PipelineError(msg)
        col = batch[name]
        if col.dtype.kind not in "biuf":
            msg = (
                f"feature column {name!r} must be numeric (bool, int or float), got "
                f"{col.dtype}; cast or encode it in a map step before predict"
            )
            raise PipelineError(msg)
        cols.append(col)
    if len(cols) == 1:
        col = cols[0]
        return np.ascontiguousarray(col if col.ndim == 2 else col.reshape(n, 1), np.float32)
    widths = [1 if c.ndim == 1 else int(c.shape[1]) for c in cols]
    out = np.empty((n, sum(widths)), dtype=np.float32)
    j = 0
    for col, w in zip(cols, widths, strict=True):
        if col.ndim == 1:
            out[:, j] = col
        else:
            out[:, j : j + w] = col
        j += w
    return out


def output_column(arr: Any) -> Array:
    """One output as a column: ``(rows, 1)`` becomes 1-D, ``(rows, k)`` stays 2-D.

    Example:
        >>> output_column(np.zeros((3, 1))).shape, output_column(np.zeros((3, 2))).shape
        ((3,), (3, 2))
    """
    a = np.asarray(arr)
    if a.ndim == 2 and a.shape[1] == 1:
        return a.reshape(-1)
    if a.ndim > 2:
        return a.reshape(len(a), -1)
    return a


def missing_extra(backend: str, extra: str, exc: ImportError | None = None) -> ImportError:
    """The ImportError raised when an optional model library is not installed.

    Example:
        >>> print(missing_extra(backend="PyTorch", extra="torch"))
        the PyTorch model backend needs the 'torch' extra: pip install 'tidal-stream[torch]'
    """
    msg = (
        f"the {backend} model backend needs the {extra!r} extra: "
        f"pip install 'tidal-stream[{extra}]'"
    )
    if exc is not None and exc.name:
        msg += f" (module {exc.name!r} is missing)"
    err = ImportError(msg, name=exc.name if exc is not None else None)
    if exc is not None:
        err.__cause__ = exc
    return err
