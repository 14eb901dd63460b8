"""Compression of PyTorch models: dynamic int8, pruning, export to ONNX, safe loading.

The PyTorch half of :func:`tidal.ml.compress.compress`, which picks it for a
``torch.nn.Module`` or a state dict file (anything that is not ``.onnx``):

``int8-dynamic``
    ``torch.ao.quantization.quantize_dynamic`` of the ``Linear`` layers (convolutions stay
    fp32 in PyTorch's dynamic mode); the result is saved as a state dict.
``prune``
    Global magnitude pruning (``torch.nn.utils.prune.global_unstructured`` with L1 norms)
    of the ``Linear`` and ``Conv`` weights, made permanent (``prune.remove``). Zeros are
    still stored densely, so a pruned model is neither smaller on disk nor faster on a CPU;
    the report shows that rather than promising otherwise.
``torch-to-onnx``
    ``torch.onnx.export`` with a dynamic batch axis (input ``"input"``, output
    ``"output"``), so the model serves through ONNX Runtime (and ``int8-static`` applies).

Model files are loaded without running code from them: state dicts are read with
``torch.load(weights_only=True)`` into an architecture the caller names
(``arch="package.module:factory"`` or ``"file.py:Class"``). A state dict written by
``int8-dynamic`` is recognised (its packed int8 weights) and loaded into a dynamically
quantized copy of the architecture. PyTorch is imported only when one of these runs.

Example:
    >>> factory = resolve_arch("collections:OrderedDict")
    >>> factory()
    OrderedDict()
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import io
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tidal.core.batch import Array
from tidal.errors import ConfigError, ModelError
from tidal.ml.compress_measure import Method, _onnx_scorer, _Scorer
from tidal.ml.handler import missing_extra
from tidal.ml.torch import load_state_dict

if TYPE_CHECKING:
    from tidal.ml.evalset import EvalSet

__all__ = ["load_torch", "resolve_arch"]


# -- loading ------------------------------------------------------------------------------
def load_torch(path: str | os.PathLike[str], arch: str | Callable[[], Any]) -> Any:
    """Load a PyTorch state dict into a fresh ``arch()``, without running pickled code.

    The state dict is read with :func:`tidal.ml.torch.load_state_dict`
    (``torch.load(weights_only=True)``, refused with a PyTorch older than 2.10). A state
    dict written by the ``int8-dynamic`` method (it holds packed int8 weights) is loaded into
    a dynamically quantized copy of the architecture.

    Args:
        path: the ``.pt`` file (``torch.save(model.state_dict(), path)``).
        arch: a callable returning the untrained module, or its import path
            (``"package.module:factory"``, or ``"file.py:Class"``: that file is run, so
            name only code you trust; serving from the registry accepts only callables and
            module paths the serving process gives, see :func:`tidal.ml.swap.default_loader`).

    Raises:
        ModelError: if the file cannot be read or does not fit the architecture.
        ConfigError: if the architecture cannot be found.
    """
    module = resolve_arch(arch)()
    with _torch_quiet():  # reading int8 tensors touches the deprecated TypedStorage
        state = load_state_dict(path, map_location="cpu")
    if any(str(k).endswith("_packed_params._packed_params") for k in state):
        module = _quantize_dynamic(module)
    try:
        module.load_state_dict(state)
    except Exception as exc:
        msg = f"the state dict {str(path)!r} does not fit architecture {arch!r}: {exc}"
        raise ModelError(msg) from exc
    return module.eval()


def resolve_arch(arch: str | Callable[[], Any]) -> Callable[[], Any]:
    """``"package.module:name"`` or ``"path/file.py:name"`` -> the object it names.

    Raises:
        ConfigError: if the module or the name cannot be found.
    """
    if callable(arch):
        return arch
    mod_name, _, attr = str(arch).partition(":")
    if not mod_name or not attr:
        msg = f"an architecture is 'package.module:factory' or 'file.py:Class', got {arch!r}"
        raise ConfigError(msg)
    try:
        if mod_name.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(mod_name).stem, mod_name)
            if spec is None or spec.loader is None:
                msg = f"cannot import {mod_name!r}"
                raise ConfigError(msg)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = _import_here(mod_name)
    except (ImportError, OSError) as exc:
        msg = f"cannot import the architecture module {mod_name!r}: {exc}"
        raise ConfigError(msg) from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        msg = f"{mod_name!r} has no callable {attr!r} (from arch {arch!r})"
        raise ConfigError(msg)
    return cast(Callable[[], Any], factory)


def _import_here(name: str) -> Any:
    """Import ``name``, also from the working directory (as ``python -m`` would)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        cwd = os.getcwd()
        if cwd in sys.path:
            raise
        sys.path.insert(0, cwd)
        try:
            return importlib.import_module(name)
        finally:
            sys.path.remove(cwd)


# -- the methods --------------------------------------------------------------------------
def _make_torch(
    model: Any,
    tmp: Path,
    method: Method,
    data: EvalSet,
    arch: str | Callable[[], Any] | None,
    amount: float,
    threads: int,
    notes: list[str],
) -> tuple[_Scorer, _Scorer, list[str]]:
    """Load a PyTorch original, write the compressed model to ``tmp``; both as scorers."""
    torch = _torch()
    path: Path | None = None
    if _is_torch_module(model):
        module = model.eval()
    else:
        path = Path(model)
        if arch is None:
            msg = (
                f"{path.name} is not an ONNX file: a PyTorch state dict needs its "
                "architecture, e.g. --arch mypackage.models:Net (a callable returning the module)"
            )
            raise ConfigError(msg)
        if not path.is_file():
            msg = f"model file {str(path)!r} does not exist"
            raise ModelError(msg)
        module = load_torch(path, arch)
    original = _torch_scorer(module, "original (fp32)", path)
    if method == "int8-dynamic":
        quantized = _quantize_dynamic(module)
        torch.save(quantized.state_dict(), tmp)
        notes.append("PyTorch dynamic quantization converts Linear layers; Conv layers stay fp32")
        return original, _torch_scorer(quantized, method, tmp), notes
    if method == "prune":
        pruned, sparsity = _prune(module, amount)
        torch.save(pruned.state_dict(), tmp)
        notes.append(
            f"{sparsity:.1%} of the Linear/Conv weights are zero; they are stored and computed "
            "densely, so size and speed do not change"
        )
        return original, _torch_scorer(pruned, method, tmp), notes
    if method == "torch-to-onnx":
        _torch_to_onnx(module, tmp, data.X[:1])
        return original, _onnx_scorer(tmp, method, threads), notes
    msg = f"{method} needs an ONNX model: convert first with --method torch-to-onnx"
    raise ConfigError(msg)


def _quantize_dynamic(module: Any) -> Any:
    torch = _torch()
    try:
        quantize = torch.ao.quantization.quantize_dynamic
    except AttributeError as exc:  # pragma: no cover - removed in a future PyTorch
        msg = (
            f"this PyTorch ({torch.__version__}) has no torch.ao.quantization.quantize_dynamic; "
            "export the model to ONNX (--method torch-to-onnx) and quantize that"
        )
        raise ModelError(msg) from exc
    with _torch_quiet():
        return quantize(copy.deepcopy(module).eval(), {torch.nn.Linear}, dtype=torch.qint8)


def _prune(module: Any, amount: float) -> tuple[Any, float]:
    torch = _torch()
    from torch.nn.utils import prune

    pruned = copy.deepcopy(module).eval()
    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    params = [(m, "weight") for m in pruned.modules() if isinstance(m, kinds)]
    if not params:
        msg = "prune found no Linear or Conv layers in the model"
        raise ModelError(msg)
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    for m, pname in params:
        prune.remove(m, pname)  # type: ignore[no-untyped-call]
    total = sum(int(getattr(m, p).numel()) for m, p in params)
    zeros = sum(int((getattr(m, p) == 0).sum()) for m, p in params)
    return pruned, zeros / max(1, total)


def _torch_to_onnx(module: Any, dst: Path, example: Array) -> None:
    torch = _torch()
    kwargs: dict[str, Any] = {
        "input_names": ["input"],
        "output_names": ["output"],
        "dynamic_axes": {"input": {0: "batch"}, "output": {0: "batch"}},
        "opset_version": 17,
    }
    # The dynamo exporter (the default since PyTorch 2.9) needs onnxscript, which is not a
    # Tidal dependency; the TorchScript-based exporter is used when it is missing.
    if importlib.util.find_spec("onnxscript") is None:
        kwargs["dynamo"] = False
    else:
        kwargs = {
            "input_names": ["input"],
            "output_names": ["output"],
            "dynamic_shapes": ({0: torch.export.Dim("batch")},),
        }
    with _torch_quiet():
        try:
            torch.onnx.export(module.eval(), (torch.from_numpy(example),), str(dst), **kwargs)
        except Exception as exc:
            msg = f"torch.onnx.export failed: {exc}"
            raise ModelError(msg) from exc


# -- helpers ------------------------------------------------------------------------------
def _torch_scorer(module: Any, name: str, path: Path | None = None) -> _Scorer:
    torch = _torch()

    def run(X: Array) -> dict[str, Array]:
        with torch.inference_mode():
            out = module(torch.from_numpy(X))
        if isinstance(out, tuple | list):
            out = out[0]
        return {"output": out.numpy()}

    if path is not None:
        size = path.stat().st_size
    else:
        buf = io.BytesIO()
        torch.save(module.state_dict(), buf)
        size = buf.tell()
    return _Scorer(name, "torch", run, size, None if path is None else str(path))


def _is_torch_module(model: Any) -> bool:
    mod = sys.modules.get("torch")
    return mod is not None and isinstance(model, mod.nn.Module)


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        backend = "PyTorch"
        raise missing_extra(backend, "torch", exc) from exc
    return torch


@contextlib.contextmanager
def _torch_quiet() -> Iterator[None]:
    """Silence the deprecation warnings of the PyTorch APIs this module relies on.

    ``torch.ao.quantization`` and the TorchScript-based ONNX exporter are deprecated in
    favour of torchao and the dynamo exporter (which needs onnxscript); both still work
    and are what the core install can use.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor")
        warnings.filterwarnings("ignore", message=r"You are using the legacy TorchScript")
        warnings.filterwarnings("ignore", message=r"The feature will be removed")
        warnings.filterwarnings("ignore", message=r"TypedStorage is deprecated")
        yield


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    mod = sys.modules.get("torch")
    if mod is None:
        yield
        return
    before = mod.get_num_threads()
    mod.set_num_threads(threads)
    try:
        yield
    finally:
        mod.set_num_threads(before)
