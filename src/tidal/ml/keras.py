"""Keras 3 models (``.keras`` files) on PyTorch: scoring with :class:`KerasHandler`.

Keras 3 runs on several backends; Tidal runs it on PyTorch, the one the ``torch`` extra
installs. Keras picks its backend once, when it is first imported, from the
``KERAS_BACKEND`` environment variable: :func:`import_keras` sets it to ``torch`` before
importing Keras, and raises a clear :class:`~tidal.errors.ConfigError` when Keras was
already imported with another backend, or the variable names another one (set
``KERAS_BACKEND=torch``, or import Tidal's Keras support before anything else imports
Keras).

A ``.keras`` file is a zip of a JSON architecture and the weights (HDF5). It is loaded with
``keras.saving.load_model(path, compile=False, safe_mode=True)``: safe mode refuses the
``Lambda`` layers whose Python code would otherwise be deserialized from the file. Custom
layers still run code the user's own program registers; load files you trust, as with any
model (``docs/decisions/0013-model-loading-trust.md``).

Needs ``pip install 'tidal-stream[torch]'`` (PyTorch and Keras).

Example:
    >>> import os, tempfile
    >>> keras = import_keras()
    >>> model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1)])
    >>> model.set_weights([np.array([[1.0], [2.0]]), np.array([0.5])])
    >>> path = os.path.join(tempfile.mkdtemp(), "m.keras")
    >>> save_model(model, path)
    >>> h = KerasHandler(path, outputs=("score",))
    >>> h.load()
    >>> h.predict(np.array([[1.0, 1.0], [0.0, 2.0]], dtype=np.float32))["score"].tolist()
    [3.5, 4.5]
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError, ModelError
from tidal.ml.handler import BaseHandler, Signature, missing_extra, output_column

__all__ = ["KerasHandler", "import_keras", "load_keras", "save_model", "to_numpy"]

_ARRAY_COPY = "__array__ implementation doesn't accept a copy keyword"
"""Keras 3's variables warn so under numpy 2 when they are turned into arrays."""


def import_keras() -> Any:
    """Keras, imported on the PyTorch backend (``KERAS_BACKEND=torch``).

    Raises:
        ConfigError: if Keras is already imported with another backend, or
            ``KERAS_BACKEND`` names another one.
        ImportError: without Keras or PyTorch (names the extra to install).
    """
    if "keras" not in sys.modules:
        chosen = os.environ.get("KERAS_BACKEND", "")
        if chosen not in ("", "torch"):
            msg = (
                f"KERAS_BACKEND is {chosen!r}, but Tidal runs Keras models on PyTorch; set "
                "KERAS_BACKEND=torch (or unset it) before starting Python"
            )
            raise ConfigError(msg)
        os.environ["KERAS_BACKEND"] = "torch"
    try:
        importlib.import_module("torch")
        keras = importlib.import_module("keras")
    except ImportError as exc:
        raise missing_extra(backend="Keras", extra="torch", exc=exc) from exc
    backend = keras.backend.backend()
    if backend != "torch":
        msg = (
            f"Keras was imported with the {backend!r} backend before Tidal's Keras support; "
            "Keras picks its backend once per process, and Tidal needs 'torch': set "
            "KERAS_BACKEND=torch in the environment (or import tidal.ml.keras before anything "
            "imports keras)"
        )
        raise ConfigError(msg)
    return keras


def to_numpy(value: Any) -> Array:
    """A Keras variable or torch tensor as a numpy array (a copy, on the CPU)."""
    v = getattr(value, "value", value)
    if hasattr(v, "detach"):
        out: Array = v.detach().cpu().numpy().copy()
        return out
    return np.array(v)


def load_keras(path: str | os.PathLike[str]) -> Any:
    """Read a ``.keras`` file: ``load_model(path, compile=False, safe_mode=True)``.

    Raises:
        ModelError: for a missing file, a file of another format, or one Keras refuses.
    """
    keras = import_keras()
    p = Path(path)
    if not p.is_file():
        msg = f"Keras model file {str(p)!r} does not exist"
        raise ModelError(msg)
    if p.suffix != ".keras":
        msg = (
            f"{str(p)!r} is not a .keras file; save the model with model.save('name.keras') "
            "(Keras 3's format; legacy .h5 files and SavedModel folders are not read)"
        )
        raise ModelError(msg)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", _ARRAY_COPY, DeprecationWarning)
            return keras.saving.load_model(str(p), compile=False, safe_mode=True)
    except Exception as exc:
        msg = f"cannot load {str(p)!r} as a Keras model: {type(exc).__name__}: {exc}"
        raise ModelError(msg) from exc


def save_model(model: Any, path: str | os.PathLike[str]) -> None:
    """``model.save(path)``, quiet about Keras' numpy 2 deprecation warning (for tests, docs)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _ARRAY_COPY, DeprecationWarning)
        model.save(str(path))


class KerasHandler(BaseHandler):
    """Score a Keras 3 model (a ``.keras`` file, or a model object) on PyTorch.

    Args:
        model: a path to a ``.keras`` file, or a ``keras.Model``.
        outputs: names for the output columns (default ``output``, or ``output_0``...
            for a model with several outputs).
        version: the model version recorded on every output row.
    """

    def __init__(
        self,
        model: Any,
        *,
        outputs: Sequence[str] | None = None,
        version: str | None = None,
    ) -> None:
        self.path: Path | None = Path(model) if isinstance(model, str | os.PathLike) else None
        self.model: Any = None if self.path is not None else model
        self.outputs = tuple(outputs) if outputs is not None else None
        if version is not None:
            self.version = str(version)
        self._torch: Any = None

    @property
    def source(self) -> str:
        """Where the model comes from, for messages."""
        return str(self.path) if self.path is not None else f"<in-memory {type(self.model)}>"

    def load(self) -> None:
        """Import Keras on PyTorch and read the file (see :func:`load_keras`).

        Raises:
            ModelError: for a file that cannot be read as a Keras model.
            ConfigError: if Keras runs on another backend.
        """
        import_keras()
        self._torch = importlib.import_module("torch")
        if self.path is not None:
            self.model = load_keras(self.path)

    def predict(self, X: Array) -> dict[str, Array]:
        """Run the model on ``X`` (inference mode, no gradients).

        Raises:
            ModelError: if the handler is not loaded or the model fails.
        """
        if self._torch is None:
            msg = f"KerasHandler for {self.source} is not loaded; call load() first"
            raise ModelError(msg)
        try:
            with self._torch.no_grad():
                out = self.model(np.ascontiguousarray(X, dtype=np.float32), training=False)
        except Exception as exc:
            msg = (
                f"the Keras model {self.source} failed on {X.shape[0]} rows x {X.shape[1]} "
                f"features: {type(exc).__name__}: {exc}"
            )
            raise ModelError(msg) from exc
        items = list(out.items()) if isinstance(out, dict) else None
        if items is None:
            many = isinstance(out, list | tuple)
            values = list(out) if many else [out]
            names = [f"output_{i}" for i in range(len(values))] if many else ["output"]
            items = list(zip(names, values, strict=True))
        if self.outputs is not None:
            if len(self.outputs) != len(items):
                msg = (
                    f"the Keras model {self.source} returned {len(items)} outputs, and "
                    f"outputs= names {len(self.outputs)}: {list(self.outputs)}"
                )
                raise ModelError(msg)
            items = [(n, v) for n, (_, v) in zip(self.outputs, items, strict=True)]
        return {name: output_column(to_numpy(v)) for name, v in items}

    @property
    def signature(self) -> Signature:
        """Input width from the model's input shape, where it has one; the output names."""
        n = None
        shape = getattr(self.model, "input_shape", None) if self.model is not None else None
        if isinstance(shape, tuple) and len(shape) == 2 and isinstance(shape[1], int):  # noqa: PLR2004
            n = shape[1]
        return Signature(n_features=n, outputs=self.outputs or ())

    def describe(self) -> dict[str, Any]:
        """Type, version and source."""
        return {"type": "KerasHandler", "version": self.version, "model": self.source}
