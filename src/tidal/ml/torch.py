"""PyTorch backend: an eager ``nn.Module``, a TorchScript file, or a ``weights_only`` state dict.

:class:`TorchHandler` scores a module under ``torch.inference_mode()`` (no autograd
bookkeeping) after ``module.eval()``. Where the model comes from decides how it loads:

* an ``nn.Module`` object: used as it is (eager mode);
* a path and ``module=factory``: the file is a *state dict* (``torch.save(model.state_dict(),
  path)``), read with ``torch.load(path, weights_only=True)`` (:func:`load_state_dict`) —
  tensors and plain containers only — into the module ``factory()`` builds. This is the way
  to load a file you did not make yourself;
* a path alone: a *TorchScript* archive (``torch.jit.save``), read with ``torch.jit.load``.
  TorchScript is a program, and ``torch.jit.load`` has no safe mode: PyTorch's security
  policy says to treat a TorchScript file like code from its author, and to load only files
  you trust. PyTorch also deprecates TorchScript (``torch.jit.load`` warns
  ``FutureWarning``); for a long-lived deployment export to ONNX and use
  :class:`~tidal.ml.onnx.OnnxHandler`.

Whole pickled modules (``torch.save(model)``) and ``torch.export`` archives are loaded with
pickle; they are not accepted from a path.

**PyTorch versions.** ``torch.load(weights_only=True)`` could still run code from a crafted
file before PyTorch 2.6 (CVE-2025-32434, GHSA-53q9-r3pm-6pq6) and could corrupt memory, up to
running code, before 2.10 (CVE-2026-24747, GHSA-63cw-57p8-fm3p). The ``torch`` extra requires
2.10 or newer, and :func:`load_state_dict` refuses to read a file with an older PyTorch
(:data:`SAFE_TORCH`).

Outputs: a tensor becomes the column ``output`` (or ``outputs=("name",)``); a tuple of tensors
becomes ``output_0``, ``output_1``, ... (or the names given); a dict keeps its keys. A
``(rows, 1)`` output becomes a 1-D column, ``(rows, k)`` stays 2-D.

Threads: PyTorch's intra-op thread count is *per process* (``torch.set_num_threads``); the
handler sets it to ``threads`` (default 1, for a shared machine; see
:mod:`tidal.ml.onnx`) when it loads, and so does every later handler in the process.

Needs the ``torch`` extra: ``pip install 'tidal-stream[torch]'``.

Example:
    >>> import numpy as np, torch
    >>> h = TorchHandler(torch.nn.Linear(3, 1), outputs=("score",))
    >>> h.load()
    >>> h.predict(np.zeros((4, 3), dtype=np.float32))["score"].shape
    (4,)
"""

from __future__ import annotations

import importlib
import os
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError, ModelError
from tidal.ml.handler import BaseHandler, Signature, missing_extra, output_column

__all__ = [
    "SAFE_TORCH",
    "TorchHandler",
    "check_torch_version",
    "is_torchscript",
    "load_state_dict",
]

SAFE_TORCH = (2, 10)
"""The oldest PyTorch whose ``torch.load(weights_only=True)`` no advisory calls unsafe."""

_ADVISORIES = (
    "CVE-2025-32434: code execution through torch.load(weights_only=True) below 2.6; "
    "CVE-2026-24747: memory corruption up to code execution through the weights_only "
    "unpickler below 2.10"
)


def _torch() -> Any:
    try:  # imported by name: type checkers need not load all of PyTorch
        return importlib.import_module("torch")
    except ImportError as exc:
        raise missing_extra(backend="PyTorch", extra="torch", exc=exc) from exc


def check_torch_version(version: str) -> None:
    """Refuse a PyTorch whose ``torch.load(weights_only=True)`` can run code from a file.

    Args:
        version: ``torch.__version__`` (``"2.10.0+cpu"``...).

    Raises:
        ModelError: below :data:`SAFE_TORCH`, naming the version and the advisories.

    Example:
        >>> check_torch_version("2.10.0+cpu")
        >>> try:
        ...     check_torch_version("2.5.1")
        ... except ModelError as exc:
        ...     print(str(exc)[:58])
        PyTorch 2.5.1 is installed: reading model files with it is
    """
    m = re.match(r"(\d+)\.(\d+)", version)
    if m is not None and (int(m.group(1)), int(m.group(2))) >= SAFE_TORCH:
        return
    need = ".".join(map(str, SAFE_TORCH))
    msg = (
        f"PyTorch {version} is installed: reading model files with it is unsafe even with "
        f"torch.load(weights_only=True) ({_ADVISORIES}). Tidal reads PyTorch files only with "
        f"PyTorch >= {need}: pip install 'torch>={need}'"
    )
    raise ModelError(msg)


def load_state_dict(path: str | os.PathLike[str], *, map_location: Any = "cpu") -> Any:
    """Read a state dict with ``torch.load(weights_only=True)``: tensors and containers only.

    Args:
        path: the file (``torch.save(model.state_dict(), path)``).
        map_location: where tensors go (``"cpu"``, ``"cuda:0"``...).

    Returns:
        The state dict (a mapping of names to tensors).

    Raises:
        ModelError: with a PyTorch older than :data:`SAFE_TORCH` (nothing is read), or for
            a file that is not a weights-only state dict (a TorchScript archive or a
            pickled module among them).
    """
    torch = _torch()
    check_torch_version(str(torch.__version__))
    if is_torchscript(path):
        msg = (
            f"{str(path)!r} is a TorchScript archive (a program), not a state dict; load it "
            "with TorchHandler(path) and no module=, and only if you trust its author"
        )
        raise ModelError(msg)
    try:
        state = torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as exc:
        msg = (
            f"cannot load {str(path)!r} as a weights-only state dict (tensors only, no code): "
            f"{exc}; save models with torch.save(model.state_dict(), path)"
        )
        raise ModelError(msg) from exc
    if not isinstance(state, Mapping):
        msg = f"{str(path)!r} holds a {type(state).__name__}, not a state dict"
        raise ModelError(msg)
    return state


def is_torchscript(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is laid out as a TorchScript archive, by PyTorch's own rule.

    PyTorch's zip archives keep every record under one top folder; ``torch.load`` takes an
    archive for TorchScript when that folder holds ``constants.pkl`` (what ``torch.jit.save``
    writes, and a state dict never has). This answers the same without importing PyTorch.
    It is a layout check, not a verdict: ``torch.jit.load`` still decides whether the
    archive is valid TorchScript.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    if not names or "/" not in names[0]:
        return False
    top = names[0].split("/", 1)[0]
    inside = all(n.startswith(top + "/") for n in names)
    return inside and f"{top}/constants.pkl" in names


class TorchHandler(BaseHandler):
    """Score a PyTorch module.

    Args:
        model: an ``nn.Module``, or a path to a state dict (with ``module``) or to a
            TorchScript file (without it; a program: only files you trust).
        module: builds the (untrained) module a state dict is loaded into.
        device: where to run, e.g. ``"cpu"`` or ``"cuda:0"``.
        threads: PyTorch intra-op threads for the process (``None`` leaves it as it is).
        outputs: names for the output columns (one per returned tensor).
        version: the model version recorded on every output row.

    Raises:
        ConfigError: for ``threads`` below 1.
    """

    def __init__(
        self,
        model: Any,
        *,
        module: Callable[[], Any] | None = None,
        device: str = "cpu",
        threads: int | None = 1,
        outputs: Sequence[str] | None = None,
        version: str | None = None,
    ) -> None:
        if threads is not None and threads < 1:
            msg = f"TorchHandler: threads must be >= 1 or None, got {threads}"
            raise ConfigError(msg)
        self.path: Path | None = Path(model) if isinstance(model, str | os.PathLike) else None
        self.model: Any = None if self.path is not None else model
        self.factory = module
        self.device = device
        self.threads = threads
        self.outputs = tuple(outputs) if outputs is not None else None
        if version is not None:
            self.version = str(version)
        self._torch: Any = None
        self._kind = "eager" if self.path is None else "file"
        self._loaded = False

    @property
    def source(self) -> str:
        """Where the model comes from, for messages."""
        if self.path is not None:
            return str(self.path)
        return f"<in-memory {type(self.model).__name__}>"

    def load(self) -> None:
        """Load the module (see the module docs), set threads, move it to ``device``.

        Raises:
            ModelError: for a missing or unreadable file, a state dict without ``module``,
                or a state dict that does not fit the module.
        """
        torch = _torch()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        self._torch = torch
        if self.path is not None:
            self.model = self._load_file(torch, self.path)
        if not isinstance(self.model, torch.nn.Module) and not callable(self.model):
            msg = f"TorchHandler needs a torch.nn.Module, got {type(self.model).__name__}"
            raise ModelError(msg)
        if isinstance(self.model, torch.nn.Module):
            self.model = self.model.to(self.device).eval()
        self._loaded = True

    def _load_file(self, torch: Any, path: Path) -> Any:
        if not path.is_file():
            msg = f"PyTorch model file {str(path)!r} does not exist"
            raise ModelError(msg)
        if self.factory is not None:
            self._kind = "state_dict"
            return self._load_state_dict(path, self.factory)
        if not is_torchscript(path):
            msg = (
                f"{str(path)!r} is not a TorchScript archive. If it holds a state dict "
                "(torch.save(model.state_dict(), path)), pass module=<a function that builds "
                "the module>; whole pickled modules (torch.save(model)) are refused because "
                "unpickling runs code from the file: save the state dict or export to ONNX"
            )
            raise ModelError(msg)
        self._kind = "torchscript"
        try:
            return torch.jit.load(str(path), map_location=self.device)
        except Exception as exc:
            msg = (
                f"cannot load {str(path)!r} as TorchScript (it is laid out like a "
                f"torch.jit.save archive, but torch.jit.load refused it): {exc}"
            )
            raise ModelError(msg) from exc

    def _load_state_dict(self, path: Path, factory: Callable[[], Any]) -> Any:
        state = load_state_dict(path, map_location=self.device)
        module = factory()
        try:
            module.load_state_dict(state)
        except Exception as exc:
            msg = f"the state dict {str(path)!r} does not fit the module built by module=: {exc}"
            raise ModelError(msg) from exc
        return module

    def predict(self, X: Array) -> dict[str, Array]:
        """Run the module on ``X`` under ``torch.inference_mode()``.

        Raises:
            ModelError: if the handler is not loaded or the module fails.
        """
        if not self._loaded:
            msg = f"TorchHandler for {self.source} is not loaded; call load() first"
            raise ModelError(msg)
        torch = self._torch
        if not X.flags.writeable:  # torch.from_numpy warns on read-only arrays
            X = X.copy()
        try:
            with torch.inference_mode():
                x = torch.from_numpy(X)
                if self.device != "cpu":
                    x = x.to(self.device)
                out = self.model(x)
        except Exception as exc:
            msg = (
                f"the PyTorch model {self.source} failed on {X.shape[0]} rows x {X.shape[1]} "
                f"features: {type(exc).__name__}: {exc}"
            )
            raise ModelError(msg) from exc
        return self._columns(torch, out)

    def _columns(self, torch: Any, out: Any) -> dict[str, Array]:
        if isinstance(out, torch.Tensor):
            items: list[tuple[str, Any]] = [("output", out)]
        elif isinstance(out, Mapping):
            items = [(str(k), v) for k, v in out.items()]
        elif isinstance(out, tuple | list):
            items = [(f"output_{i}", v) for i, v in enumerate(out)]
        else:
            msg = (
                f"the PyTorch model {self.source} returned a {type(out).__name__}; "
                "return a tensor, a tuple of tensors or a dict of tensors"
            )
            raise ModelError(msg)
        if self.outputs is not None:
            if len(self.outputs) != len(items):
                msg = (
                    f"the PyTorch model {self.source} returned {len(items)} outputs, and "
                    f"outputs= names {len(self.outputs)}: {list(self.outputs)}"
                )
                raise ModelError(msg)
            items = [(name, v) for name, (_, v) in zip(self.outputs, items, strict=True)]
        res: dict[str, Array] = {}
        for name, v in items:
            arr = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            res[name] = output_column(arr)
        return res

    @property
    def signature(self) -> Signature:
        """Input width from a leading ``nn.Linear`` when there is one; the output names."""
        n = None
        torch = self._torch
        if torch is not None and isinstance(self.model, torch.nn.Module):
            for m in self.model.modules():
                if isinstance(m, torch.nn.Linear):
                    n = int(m.in_features)
                    break
                if len(list(m.children())) == 0 and any(True for _ in m.parameters()):
                    break  # the first layer with weights is not linear: width unknown
        return Signature(n_features=n, outputs=self.outputs or ())

    def describe(self) -> dict[str, Any]:
        """Type, version, how it was loaded, device and threads."""
        return {
            "type": "TorchHandler",
            "version": self.version,
            "model": self.source,
            "kind": self._kind,
            "device": self.device,
            "threads": self.threads,
        }
