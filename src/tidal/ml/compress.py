"""Model compression with an accuracy gate: quantize, prune, convert, measure, decide.

:func:`compress` turns a model into a smaller or faster one and *measures* both on the
user's evaluation set, in the same process, before anything is published:

``int8-dynamic``
    ONNX: ``onnxruntime.quantization.quantize_dynamic`` (int8 weights; activations quantized
    on the fly). PyTorch: ``torch.ao.quantization.quantize_dynamic`` of the ``Linear``
    layers (convolutions stay fp32 in PyTorch's dynamic mode).
``int8-static``
    ONNX: ``quantize_static`` in QDQ format, per-channel int8 weights and uint8
    activations whose ranges come from a calibration sample (``calibration``, or the first
    rows of the evaluation set). PyTorch models: export to ONNX first (``torch-to-onnx``).
``prune``
    PyTorch: global magnitude pruning (``torch.nn.utils.prune.global_unstructured`` with
    L1 norms) of the ``Linear`` and ``Conv`` weights, made permanent (``prune.remove``).
    Zeros are still stored densely, so a pruned model is neither smaller on disk nor
    faster on a CPU; the report shows that rather than promising otherwise.
``torch-to-onnx``
    ``torch.onnx.export`` with a dynamic batch axis (input ``"input"``, output
    ``"output"``), so the model serves through ONNX Runtime.

Every run returns a :class:`CompressionReport`: the metric (``accuracy``, or ``mae`` for
regressions) of the original and the compressed model, the drop, the size in bytes, and
batched samples/s (the two variants timed in alternation, best of three rounds, with the
same thread count), and which variant wins. On a tiny MLP int8 is *slower* than fp32 (the
quantize/dequantize steps cost more than the arithmetic they save), on a 1024-wide MLP it
is several times faster, and dynamic int8 convolutions are slower than fp32 ones in ONNX
Runtime: nothing here assumes which way it goes.

The gate: when the metric drops by more than ``max_accuracy_drop`` (for ``mae``: when the
error grows by more than it), :class:`CompressionRefused` is raised (its ``report`` says
by how much) and nothing is written to ``out``. ``tidal models compress`` prints the report
and exits with status 3.

Model files are loaded without running code from them: ONNX files, and PyTorch state dicts
through ``torch.load(weights_only=True)`` into an architecture the caller names
(``arch="package.module:factory"`` or ``"file.py:Class"``). A state dict written by
``int8-dynamic`` is recognised (its packed int8 weights) and loaded into a dynamically
quantized copy of the architecture.

Example:
    >>> import tempfile, numpy as np
    >>> from onnx import TensorProto, helper, numpy_helper
    >>> rng = np.random.default_rng(0)
    >>> w = rng.normal(size=(8, 3)).astype(np.float32)
    >>> graph = helper.make_graph(
    ...     [helper.make_node("MatMul", ["input", "w"], ["scores"])], "linear",
    ...     [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 8])],
    ...     [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 3])],
    ...     [numpy_helper.from_array(w, "w")])
    >>> tmp = tempfile.mkdtemp()
    >>> src = f"{tmp}/linear.onnx"
    >>> with open(src, "wb") as f:
    ...     _ = f.write(helper.make_model(
    ...         graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    >>> X = rng.normal(size=(500, 8)).astype(np.float32)
    >>> report = compress(src, f"{tmp}/linear.int8.onnx", method="int8-dynamic",
    ...                   eval_set=EvalSet(X, (X @ w).argmax(axis=1)), min_time=0.01)
    >>> report.passed, report.original.metric, report.compressed.path.endswith("int8.onnx")
    (True, 1.0, True)
    >>> sorted(report.to_json())[:6]
    ['batch_size', 'compressed', 'drop', 'max_drop', 'method', 'metric']
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.errors import ConfigError, ModelError
from tidal.ml.handler import feature_matrix, missing_extra

__all__ = [
    "METHODS",
    "CompressionRefused",
    "CompressionReport",
    "EvalSet",
    "Method",
    "Metric",
    "Variant",
    "compress",
    "load_torch",
]

Method = Literal["int8-dynamic", "int8-static", "prune", "torch-to-onnx"]
Metric = Literal["accuracy", "mae"]
METHODS: tuple[str, ...] = get_args(Method)
_METRICS: tuple[str, ...] = get_args(Metric)
_CALIBRATION_ROWS = 512
_SAME_SPEED = 0.05  # within 5%: no measurable difference in throughput


class CompressionRefused(ModelError):
    """The gate refused a compressed model: the metric dropped by more than allowed.

    Attributes:
        report: the measurements that made the decision.
    """

    def __init__(self, message: str, report: CompressionReport) -> None:
        super().__init__(message)
        self.report = report


# -- evaluation data ----------------------------------------------------------------------
@dataclass(frozen=True)
class EvalSet:
    """Features and true values to judge a model by.

    Args:
        X: features, ``(rows, width)`` (made float32 and C-contiguous).
        y: true classes (``accuracy``) or values (``mae``), one per row.

    Example:
        >>> s = EvalSet([[1, 2], [3, 4]], [0, 1])
        >>> s.X.dtype, len(s)
        (dtype('float32'), 2)
    """

    X: Array
    y: Array

    def __init__(self, X: Any, y: Any) -> None:
        feats = np.ascontiguousarray(np.asarray(X), dtype=np.float32)
        if feats.ndim == 1:
            feats = feats.reshape(-1, 1)
        truth = np.asarray(y).reshape(-1)
        if feats.ndim != 2 or len(feats) != len(truth) or not len(truth):
            msg = (
                f"an evaluation set needs a 2-D X and one y per row, got X of shape "
                f"{feats.shape} and {len(truth)} values of y"
            )
            raise ConfigError(msg)
        object.__setattr__(self, "X", feats)
        object.__setattr__(self, "y", truth)

    def __len__(self) -> int:
        return len(self.y)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, label: str = "label", features: Sequence[str] = ()
    ) -> EvalSet:
        """Read an ``.npz`` (arrays ``X`` and ``y``) or ``.parquet`` file.

        Args:
            path: the file.
            label: the Parquet column with the true values.
            features: the Parquet feature columns, in order (default: every other column).
                A list column (an image) contributes all its values.

        Raises:
            ConfigError: for a missing file, an unknown format or missing columns.
        """
        X, y = _read_table(path, label=label, features=features, need_label=True)
        assert y is not None
        return cls(X, y)


def read_features(
    path: str | os.PathLike[str], *, label: str = "label", features: Sequence[str] = ()
) -> Array:
    """The feature matrix of an ``.npz`` (array ``X``) or ``.parquet`` calibration file."""
    return _read_table(path, label=label, features=features, need_label=False)[0]


def _read_table(
    path: str | os.PathLike[str], *, label: str, features: Sequence[str], need_label: bool
) -> tuple[Array, Array | None]:
    p = Path(path)
    if not p.is_file():
        msg = f"evaluation/calibration file {str(p)!r} does not exist"
        raise ConfigError(msg)
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as data:
            names = list(data.keys())
            if "X" not in names or (need_label and "y" not in names):
                need = "X and y" if need_label else "X"
                msg = f"{p}: an .npz evaluation file needs arrays {need}; it has {names}"
                raise ConfigError(msg)
            return np.asarray(data["X"]), np.asarray(data["y"]) if "y" in names else None
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        batch = Batch.from_arrow(pq.read_table(p))
        if need_label and label not in batch:
            msg = f"{p}: no label column {label!r}; columns are {batch.names} (use --label)"
            raise ConfigError(msg)
        names = list(features) or [n for n in batch.names if n != label]
        cols = {n: _stack_lists(batch[n]) for n in names if n in batch}
        X = feature_matrix(batch.with_columns(**cols), names)
        return X, batch[label] if label in batch else None
    msg = f"{p}: evaluation and calibration files are .npz (X, y) or .parquet, not {p.suffix!r}"
    raise ConfigError(msg)


def _stack_lists(col: Array) -> Array:
    """A column of equal-length arrays (a Parquet list column) as a 2-D array."""
    if col.dtype == object and len(col) and isinstance(col[0], np.ndarray | list):
        return np.stack([np.asarray(v, dtype=np.float32) for v in col])
    return col


# -- the report ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One model as measured: its metric, size and batched throughput."""

    name: str
    format: Literal["onnx", "torch"]
    metric: float
    size_bytes: int
    samples_per_s: float
    path: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "format": self.format,
            "metric": round(self.metric, 6),
            "size_bytes": self.size_bytes,
            "samples_per_s": round(self.samples_per_s, 1),
            "path": self.path,
        }


@dataclass(frozen=True)
class CompressionReport:
    """The original and the compressed model side by side, and the gate's decision.

    ``drop`` is how much worse the compressed model is (accuracy lost, or error gained);
    negative when it is better. ``speedup`` is compressed over original samples/s.
    """

    method: Method
    metric: Metric
    original: Variant
    compressed: Variant
    max_drop: float
    rows: int
    batch_size: int
    threads: int
    rounds: int = 3
    notes: tuple[str, ...] = field(default=())

    @property
    def drop(self) -> float:
        """Accuracy lost (or error gained) by compressing."""
        diff = self.original.metric - self.compressed.metric
        return diff if self.metric == "accuracy" else -diff

    @property
    def passed(self) -> bool:
        """Whether the gate lets the compressed model through."""
        return self.drop <= self.max_drop + 1e-12

    @property
    def speedup(self) -> float:
        """Compressed samples/s over original samples/s."""
        base = self.original.samples_per_s
        return self.compressed.samples_per_s / base if base > 0 else float("inf")

    @property
    def size_ratio(self) -> float:
        """Original size over compressed size (> 1: the compressed model is smaller)."""
        return self.original.size_bytes / max(1, self.compressed.size_bytes)

    @property
    def winner(self) -> Literal["original", "compressed"]:
        """The variant to serve.

        The compressed one when it passed the gate and is faster, or as fast (within 5%)
        and smaller; otherwise the original.
        """
        if not self.passed:
            return "original"
        if self.speedup >= 1 + _SAME_SPEED:
            return "compressed"
        if self.speedup >= 1 - _SAME_SPEED and self.size_ratio > 1.0:
            return "compressed"
        return "original"

    def verdict(self) -> str:
        """One sentence: the decision and why."""
        c = self.compressed.name
        delta = f"{self.metric} {self._pts(self.compressed.metric - self.original.metric)}"
        if not self.passed:
            return (
                f"refused: {c} loses {self._pts(self.drop)} of {self.metric} "
                f"(allowed {self._pts(self.max_drop)}); keep the original"
            )
        if self.speedup >= 1 + _SAME_SPEED:
            speed = f"{self.speedup:.2f}x faster"
        elif self.speedup >= 1 - _SAME_SPEED:
            speed = "as fast (within 5%)"
        else:
            speed = f"{1 / self.speedup:.2f}x slower"
        if abs(self.size_ratio - 1) < 0.01:
            size = "the same size"
        elif self.size_ratio > 1:
            size = f"{self.size_ratio:.2f}x smaller"
        else:
            size = f"{1 / self.size_ratio:.2f}x larger"
        who = "serve the compressed model" if self.winner == "compressed" else "keep the original"
        return f"{c} is {speed} and {size}, {delta}: {who}"

    def _pts(self, value: float) -> str:
        return _amount(self.metric, value)

    def table(self) -> str:
        """The report as a Markdown table and a verdict line."""
        head = (
            f"compression: {self.method}; {self.metric} on {self.rows:,} rows; samples/s in "
            f"batches of {self.batch_size:,}, {self.threads} thread(s), best of "
            f"{self.rounds} alternating rounds"
        )
        lines = [
            head,
            "",
            f"| variant | format | {self.metric} | size (bytes) | samples/s |",
            "|---|---|---:|---:|---:|",
        ]
        for v in (self.original, self.compressed):
            lines.append(
                f"| {v.name} | {v.format} | {v.metric:.4f} | {v.size_bytes:,} | "
                f"{v.samples_per_s:,.0f} |"
            )
        lines += [
            "",
            f"drop: {self._pts(self.drop)} (gate: at most {self._pts(self.max_drop)}) -> "
            f"{'passed' if self.passed else 'REFUSED'}; speedup {self.speedup:.2f}x; "
            f"size: original / compressed = {self.size_ratio:.2f}x",
            f"winner: {self.winner} ({self.verdict()})",
        ]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``tidal models compress --json`` prints)."""
        return {
            "method": self.method,
            "metric": self.metric,
            "original": self.original.to_json(),
            "compressed": self.compressed.to_json(),
            "drop": round(self.drop, 6),
            "max_drop": self.max_drop,
            "passed": self.passed,
            "speedup": round(self.speedup, 3),
            "size_ratio": round(self.size_ratio, 3),
            "winner": self.winner,
            "verdict": self.verdict(),
            "rows": self.rows,
            "batch_size": self.batch_size,
            "threads": self.threads,
            "rounds": self.rounds,
            "notes": list(self.notes),
        }

    def metrics(self) -> dict[str, Any]:
        """The compressed model's figures, for the registry's ``metrics.json``."""
        return {
            self.metric: round(self.compressed.metric, 6),
            f"original_{self.metric}": round(self.original.metric, 6),
            "size_bytes": self.compressed.size_bytes,
            "samples_per_s": round(self.compressed.samples_per_s, 1),
            "original_samples_per_s": round(self.original.samples_per_s, 1),
            "compression": self.method,
        }


def _amount(metric: Metric, value: float) -> str:
    """A change of the metric for people: points of accuracy, or the error's units."""
    value = value if abs(value) > 1e-12 else 0.0
    if metric == "accuracy":
        return f"{value * 100:+.2f} pt"
    return f"{value:+.4g}"


# -- models as scorers --------------------------------------------------------------------
@dataclass
class _Scorer:
    """A loaded model that maps features to its outputs."""

    name: str
    format: Literal["onnx", "torch"]
    run: Callable[[Array], dict[str, Array]]
    size_bytes: int
    path: str | None = None


def _onnx_scorer(path: Path, name: str, threads: int) -> _Scorer:
    from tidal.ml.onnx import OnnxHandler

    handler = OnnxHandler(path, intra_op_threads=threads)
    handler.load()
    return _Scorer(name, "onnx", handler.predict, path.stat().st_size, str(path))


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        backend = "PyTorch"
        raise missing_extra(backend, "torch", exc) from exc
    return torch


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


def load_torch(path: str | os.PathLike[str], arch: str | Callable[[], Any]) -> Any:
    """Load a PyTorch state dict into a fresh ``arch()``, without running pickled code.

    The state dict is read with ``torch.load(weights_only=True)``. A state dict written by
    the ``int8-dynamic`` method (it holds packed int8 weights) is loaded into a dynamically
    quantized copy of the architecture.

    Args:
        path: the ``.pt`` file (``torch.save(model.state_dict(), path)``).
        arch: a callable returning the untrained module, or its import path
            (``"package.module:factory"``, or ``"file.py:Class"``).

    Raises:
        ModelError: if the file cannot be read or does not fit the architecture.
    """
    torch = _torch()
    module = resolve_arch(arch)()
    try:
        with _torch_quiet():  # reading int8 tensors touches the deprecated TypedStorage
            state = torch.load(Path(path), weights_only=True, map_location="cpu")
    except Exception as exc:
        msg = (
            f"cannot read the PyTorch state dict {str(path)!r} with weights_only=True: {exc}; "
            "save models with torch.save(model.state_dict(), path)"
        )
        raise ModelError(msg) from exc
    if not isinstance(state, Mapping):
        msg = f"{str(path)!r} holds a {type(state).__name__}, not a state dict"
        raise ModelError(msg)
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


# -- the methods --------------------------------------------------------------------------
@contextlib.contextmanager
def _ort_quiet() -> Iterator[None]:
    """Drop onnxruntime.quantization's advice to pre-process, logged on the root logger."""

    def keep(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _onnx_input_name(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    if len(names) != 1:
        msg = f"ONNX model {path} has inputs {names}; compression needs exactly one input"
        raise ModelError(msg)
    return str(names[0])


def _int8_dynamic_onnx(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import (  # type: ignore[import-untyped]
        QuantType,
        quantize_dynamic,
    )

    with _ort_quiet():
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8)


def _int8_static_onnx(src: Path, dst: Path, calibration: Array) -> None:
    from onnxruntime.quantization import (  # type: ignore[import-untyped]
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    name = _onnx_input_name(src)
    chunks = [calibration[i : i + 64] for i in range(0, len(calibration), 64)]

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it = iter(chunks)

        def get_next(self) -> dict[str, Array] | None:
            chunk = next(self.it, None)
            return None if chunk is None else {name: chunk}

    with _ort_quiet():
        quantize_static(
            src,
            dst,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


def _quantize_onnx(fn: Callable[[Path, Path], None], src: Path, dst: Path) -> None:
    try:
        fn(src, dst)
    except Exception as exc:
        msg = (
            f"onnxruntime.quantization could not quantize {src.name}: {type(exc).__name__}: "
            f"{exc}. Models made only of ONNX-ML operators (trees, linear models from "
            "skl2onnx) have nothing to quantize"
        )
        raise ModelError(msg) from exc


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


# -- measuring ----------------------------------------------------------------------------
def _prediction(out: Mapping[str, Array], metric: Metric, output: str | None) -> Array:
    """The output the metric judges: a class per row (accuracy) or a value (mae)."""
    if output is not None:
        if output not in out:
            msg = f"the model has no output {output!r}; its outputs are {list(out)}"
            raise ModelError(msg)
        arr = out[output]
    elif metric == "accuracy":
        ints = [a for a in out.values() if a.dtype.kind in "iub" and a.ndim == 1]
        arr = ints[0] if ints else next(iter(out.values()))
    else:
        arr = next(iter(out.values()))
    if metric == "mae":
        return arr.reshape(len(arr), -1).astype(np.float64)
    if arr.dtype.kind == "f":
        if arr.ndim == 2 and arr.shape[1] > 1:
            return np.asarray(arr.argmax(axis=1))
        return (arr.reshape(-1) > 0.5).astype(np.int64)
    return arr.reshape(-1)


def _score(scorer: _Scorer, data: EvalSet, metric: Metric, output: str | None, batch: int) -> float:
    preds = [
        _prediction(scorer.run(data.X[i : i + batch]), metric, output)
        for i in range(0, len(data), batch)
    ]
    pred = np.concatenate(preds)
    if metric == "accuracy":
        return float(np.mean(pred.reshape(-1) == data.y.reshape(-1)))
    truth = data.y.reshape(len(data.y), -1).astype(np.float64)
    if pred.shape != truth.shape:
        msg = f"mae: the model gives {pred.shape[1]} value(s) per row, y has {truth.shape[1]}"
        raise ModelError(msg)
    return float(np.mean(np.abs(pred - truth)))


def _throughput(
    scorers: Sequence[_Scorer], X: Array, batch: int, min_time: float, rounds: int = 3
) -> list[float]:
    """Batched samples/s of each scorer: timed in alternation, best of ``rounds``."""
    if len(X) < batch:
        X = np.ascontiguousarray(np.resize(X, (batch, X.shape[1])))
    chunks = [X[i : i + batch] for i in range(0, len(X) - batch + 1, batch)]
    for s in scorers:
        s.run(chunks[0])  # warm-up: arenas, kernel selection
    best = [0.0] * len(scorers)
    for _ in range(rounds):
        for j, s in enumerate(scorers):
            n, t0 = 0, time.perf_counter()
            while True:
                for c in chunks:
                    s.run(c)
                    n += len(c)
                elapsed = time.perf_counter() - t0
                if elapsed >= min_time:
                    break
            best[j] = max(best[j], n / elapsed)
    return best


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


# -- the entry point ----------------------------------------------------------------------
def compress(
    model: str | os.PathLike[str] | Any,
    out: str | os.PathLike[str],
    *,
    method: Method,
    eval_set: EvalSet,
    calibration: Array | None = None,
    metric: Metric = "accuracy",
    max_accuracy_drop: float = 0.005,
    arch: str | Callable[[], Any] | None = None,
    amount: float = 0.5,
    output: str | None = None,
    threads: int = 1,
    batch_size: int = 1024,
    min_time: float = 0.2,
    rounds: int = 3,
) -> CompressionReport:
    """Compress ``model`` into ``out``, measure both, and publish only if the gate passes.

    Args:
        model: an ``.onnx`` file, a PyTorch state dict file (with ``arch``), or a
            ``torch.nn.Module``.
        out: where the compressed model goes (``.onnx`` for ONNX results, ``.pt`` for
            PyTorch state dicts); written only when the gate passes, atomically.
        method: ``int8-dynamic``, ``int8-static``, ``prune`` or ``torch-to-onnx``.
        eval_set: the data both models are judged on.
        calibration: features for ``int8-static`` (default: the first 512 evaluation rows).
        metric: ``accuracy`` (classes) or ``mae`` (values).
        max_accuracy_drop: the most the metric may drop (for ``mae``: the most the error
            may grow), in the metric's units: 0.005 is half a point of accuracy.
        arch: the PyTorch architecture for a state dict file (see :func:`load_torch`).
        amount: the fraction of weights ``prune`` sets to zero.
        output: the model output the metric judges (default: an integer output for
            ``accuracy``, else the first; 2-D scores are turned into classes by argmax,
            1-D ones by ``> 0.5``).
        threads: threads for both models while timing (ONNX Runtime intra-op threads,
            ``torch.set_num_threads``).
        batch_size: rows per call, for scoring and timing.
        min_time: seconds each timing round runs at least.
        rounds: timing rounds (the variants alternate; each keeps its best round).

    Returns:
        The report; ``report.compressed.path`` is ``out``.

    Raises:
        CompressionRefused: if the metric dropped by more than ``max_accuracy_drop``
            (nothing is written).
        ConfigError: for an unknown method or metric, or a method the model's format
            does not support.
        ModelError: if a model cannot be loaded, converted or scored.
    """
    if method not in METHODS:
        msg = f"unknown compression method {method!r}; choose from {', '.join(METHODS)}"
        raise ConfigError(msg)
    if metric not in _METRICS:
        msg = f"unknown metric {metric!r}; choose from {', '.join(_METRICS)}"
        raise ConfigError(msg)
    if not 0.0 < amount < 1.0:
        msg = f"prune amount must be between 0 and 1 (a fraction of weights), got {amount}"
        raise ConfigError(msg)
    if max_accuracy_drop < 0:
        msg = f"max_accuracy_drop must be >= 0, got {max_accuracy_drop}"
        raise ConfigError(msg)
    dst = Path(out)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".compress-") as tmp_dir:
        tmp = Path(tmp_dir) / ("model" + (dst.suffix or ".bin"))
        with _torch_threads(threads):
            original, compressed, notes = _make(
                model, tmp, method, eval_set, calibration, arch, amount, threads
            )
            m_orig = _score(original, eval_set, metric, output, batch_size)
            m_comp = _score(compressed, eval_set, metric, output, batch_size)
            speeds = _throughput([original, compressed], eval_set.X, batch_size, min_time, rounds)
        report = CompressionReport(
            method=method,
            metric=metric,
            original=Variant(
                original.name,
                original.format,
                m_orig,
                original.size_bytes,
                speeds[0],
                original.path,
            ),
            compressed=Variant(
                compressed.name, compressed.format, m_comp, compressed.size_bytes, speeds[1], None
            ),
            max_drop=max_accuracy_drop,
            rows=len(eval_set),
            batch_size=batch_size,
            threads=threads,
            rounds=rounds,
            notes=tuple(notes),
        )
        if not report.passed:
            msg = (
                f"the {method} model was not written to {str(dst)!r}: it loses "
                f"{_amount(metric, report.drop)} of {metric}, more than the allowed "
                f"{_amount(metric, max_accuracy_drop)}. Try another method, a calibration sample "
                "closer to the stream, or a larger --max-accuracy-drop if the loss is acceptable"
            )
            raise CompressionRefused(msg, report)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    return replace(report, compressed=replace(report.compressed, path=str(dst)))


def _make(
    model: Any,
    tmp: Path,
    method: Method,
    data: EvalSet,
    calibration: Array | None,
    arch: str | Callable[[], Any] | None,
    amount: float,
    threads: int,
) -> tuple[_Scorer, _Scorer, list[str]]:
    """Load the original, write the compressed model to ``tmp``; both as scorers."""
    notes: list[str] = []
    if not _is_torch_module(model) and Path(model).suffix == ".onnx":
        src = Path(model)
        if not src.is_file():
            msg = f"model file {str(src)!r} does not exist"
            raise ModelError(msg)
        if method == "int8-dynamic":
            _quantize_onnx(_int8_dynamic_onnx, src, tmp)
        elif method == "int8-static":
            if calibration is None:
                calibration = data.X[:_CALIBRATION_ROWS]
                notes.append(
                    f"calibrated on the first {len(calibration)} evaluation rows; give a "
                    "separate calibration sample for an unbiased figure"
                )
            sample = np.ascontiguousarray(calibration, dtype=np.float32)
            _quantize_onnx(lambda a, b: _int8_static_onnx(a, b, sample), src, tmp)
        else:
            msg = (
                f"{method} works on PyTorch models; {src.name} is ONNX (use int8-dynamic "
                "or int8-static)"
            )
            raise ConfigError(msg)
        return (
            _onnx_scorer(src, "original (fp32)", threads),
            _onnx_scorer(tmp, method, threads),
            notes,
        )
    return _make_torch(model, tmp, method, data, arch, amount, threads, notes)


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
