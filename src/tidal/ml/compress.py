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
through ``torch.load(weights_only=True)`` (with PyTorch 2.10 or newer, see
:mod:`tidal.ml.torch`) into an architecture the caller names
(``arch="package.module:factory"`` or ``"file.py:Class"``, see :func:`load_torch`).

This module holds the entry point and the ONNX methods; the evaluation data is in
:mod:`tidal.ml.evalset`, scoring, timing and the report in :mod:`tidal.ml.compress_measure`,
the PyTorch methods and loading in :mod:`tidal.ml.compress_torch` (each imports only the
ones before it). Their public names are importable from here.

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
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError, ModelError
from tidal.ml.compress_measure import (
    _METRICS,
    METHODS,
    CompressionRefused,
    CompressionReport,
    Method,
    Metric,
    Variant,
    _amount,
    _onnx_scorer,
    _score,
    _Scorer,
    _throughput,
)
from tidal.ml.compress_torch import (
    _is_torch_module,
    _make_torch,
    _torch_threads,
    load_torch,
    resolve_arch,
)
from tidal.ml.evalset import EvalSet, read_features

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
    "read_features",
    "resolve_arch",
]

_CALIBRATION_ROWS = 512


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
