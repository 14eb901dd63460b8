"""ONNX Runtime backend: the default model backend (onnxruntime is in the core install).

:class:`OnnxHandler` scores an ONNX model (a file or its bytes) with an ONNX Runtime
``InferenceSession``. Any framework that exports ONNX serves through it: PyTorch
(``torch.onnx.export``), scikit-learn (:func:`tidal.ml.sklearn.to_onnx`), LightGBM,
XGBoost, Keras. Loading an ONNX file runs no code from the file.

Threads: ONNX Runtime's default is one intra-op thread per physical core, spinning while
it waits for work. On a shared machine — a stream processor beside a broker, other workers,
other pipelines — that makes every worker fight for every core, and Tidal scales out with
processes, not threads. So the handler defaults to ``intra_op_threads=1`` and
``inter_op_threads=1``; raise ``intra_op_threads`` for a large model on a machine of its own.
With more than one thread, idle threads sleep instead of spinning
(``session.intra_op.allow_spinning = 0``), which costs a little latency and saves the CPU
for the rest of the pipeline.

Outputs become columns named after the model's outputs (or ``outputs={"model_name":
"column"}``): an output of shape ``(rows, 1)`` becomes a 1-D column (a score), an output of
shape ``(rows, k)`` stays one 2-D column (class probabilities, an embedding; split it into
``<name>_<i>`` columns with :func:`tidal.ml.handler.split_columns`). Outputs that are not
tensors (scikit-learn's ZipMap, a list of dicts) are refused at load: convert with
``zipmap=False``.

Example:
    >>> import numpy as np
    >>> from onnx import TensorProto, helper, numpy_helper
    >>> ones = numpy_helper.from_array(np.ones((3, 1), dtype=np.float32), "w")
    >>> graph = helper.make_graph(
    ...     [helper.make_node("MatMul", ["x", "w"], ["total"])], "sum",
    ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
    ...     [helper.make_tensor_value_info("total", TensorProto.FLOAT, [None, 1])], [ones])
    >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    >>> h = OnnxHandler(model.SerializeToString(), version="v1")
    >>> h.load()
    >>> h.predict(np.ones((2, 3), dtype=np.float32))["total"].tolist()
    [3.0, 3.0]
    >>> h.signature
    Signature(inputs=(), n_features=3, dtype='float32', outputs=('total',))
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError, ModelError
from tidal.ml.handler import BaseHandler, Signature, missing_extra, output_column

__all__ = ["OnnxHandler"]

_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def _ort() -> Any:
    try:
        import onnxruntime  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
        raise missing_extra(backend="ONNX Runtime", extra="onnx", exc=exc) from exc
    return onnxruntime


class OnnxHandler(BaseHandler):
    """Score an ONNX model with ONNX Runtime.

    Args:
        model: a path to an ``.onnx`` file, or the model's bytes.
        outputs: the model outputs to compute, as a list of names or a mapping of output
            name to column name (``None``: every output, under its own name).
        intra_op_threads: threads used inside one operator (a matrix product); 1 by
            default (see the module docs).
        inter_op_threads: threads running independent graph branches at once; 1 runs the
            graph sequentially.
        providers: ONNX Runtime execution providers, in order of preference.
        version: the model version recorded on every output row.

    Raises:
        ConfigError: for thread counts below 1 or no providers.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        *,
        outputs: Sequence[str] | Mapping[str, str] | None = None,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        version: str | None = None,
    ) -> None:
        if intra_op_threads < 1 or inter_op_threads < 1:
            msg = (
                f"OnnxHandler: thread counts must be >= 1, got intra_op_threads="
                f"{intra_op_threads}, inter_op_threads={inter_op_threads}"
            )
            raise ConfigError(msg)
        if not providers:
            msg = "OnnxHandler: give at least one execution provider, e.g. CPUExecutionProvider"
            raise ConfigError(msg)
        self.model = model if isinstance(model, bytes) else Path(model)
        self.outputs = dict(outputs) if isinstance(outputs, Mapping) else outputs
        self.intra_op_threads = int(intra_op_threads)
        self.inter_op_threads = int(inter_op_threads)
        self.providers = tuple(providers)
        if version is not None:
            self.version = str(version)
        self.session: Any = None
        self._input = ""
        self._dtype: np.dtype[Any] = np.dtype(np.float32)
        self._n_features: int | None = None
        self._fixed_batch: int | None = None
        self._names: list[str] = []
        self._columns: list[str] = []

    @property
    def source(self) -> str:
        """Where the model comes from, for messages."""
        if isinstance(self.model, bytes):
            return f"<{len(self.model)} bytes of ONNX>"
        return str(self.model)

    def session_options(self) -> Any:
        """The ``onnxruntime.SessionOptions`` the session is made with."""
        ort = _ort()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        opts.inter_op_num_threads = self.inter_op_threads
        opts.execution_mode = (
            ort.ExecutionMode.ORT_SEQUENTIAL
            if self.inter_op_threads == 1
            else ort.ExecutionMode.ORT_PARALLEL
        )
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only; warnings go through our messages
        if self.intra_op_threads > 1:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return opts

    def load(self) -> None:
        """Create the inference session and check the model's input and outputs.

        Raises:
            ModelError: if the file is missing or not a valid ONNX model, the model has
                more than one input, or an output is not a tensor or does not exist.
        """
        ort = _ort()
        if isinstance(self.model, Path) and not self.model.is_file():
            msg = f"ONNX model file {str(self.model)!r} does not exist"
            raise ModelError(msg)
        src = self.model if isinstance(self.model, bytes) else str(self.model)
        try:
            session = ort.InferenceSession(
                src, sess_options=self.session_options(), providers=list(self.providers)
            )
        except Exception as exc:
            msg = f"cannot load the ONNX model {self.source}: {exc}"
            raise ModelError(msg) from exc
        self._check_input(session)
        self._check_outputs(session)
        self.session = session

    def _check_input(self, session: Any) -> None:
        inputs = session.get_inputs()
        if len(inputs) != 1:
            names = [i.name for i in inputs]
            msg = (
                f"ONNX model {self.source} has inputs {names}; OnnxHandler scores models with "
                "one 2-D input (rows x features)"
            )
            raise ModelError(msg)
        inp = inputs[0]
        if inp.type not in _DTYPES:
            msg = f"ONNX model {self.source}: input {inp.name!r} is {inp.type}, not a tensor"
            raise ModelError(msg)
        shape = list(inp.shape)
        if len(shape) != 2:
            msg = (
                f"ONNX model {self.source}: input {inp.name!r} has shape {shape}; "
                "OnnxHandler needs a 2-D input (rows x features)"
            )
            raise ModelError(msg)
        self._input = inp.name
        self._dtype = np.dtype(_DTYPES[inp.type])
        self._n_features = shape[1] if isinstance(shape[1], int) else None
        self._fixed_batch = shape[0] if isinstance(shape[0], int) else None

    def _check_outputs(self, session: Any) -> None:
        available = {o.name: o.type for o in session.get_outputs()}
        if self.outputs is None:
            wanted = {name: name for name in available}
        elif isinstance(self.outputs, dict):
            wanted = {str(k): str(v) for k, v in self.outputs.items()}
        else:
            wanted = {str(k): str(k) for k in self.outputs}
        unknown = [n for n in wanted if n not in available]
        if unknown:
            msg = (
                f"ONNX model {self.source} has no outputs {unknown}; its outputs are "
                f"{list(available)}"
            )
            raise ModelError(msg)
        not_tensor = {n: available[n] for n in wanted if not available[n].startswith("tensor(")}
        if not_tensor:
            msg = (
                f"ONNX model {self.source}: outputs {not_tensor} are not tensors; "
                "convert scikit-learn classifiers with zipmap=False "
                "(tidal.ml.sklearn.to_onnx does), or keep only tensor outputs with "
                f"outputs={[n for n in wanted if n not in not_tensor]}"
            )
            raise ModelError(msg)
        self._names = list(wanted)
        self._columns = list(wanted.values())

    def predict(self, X: Array) -> dict[str, Array]:
        """Run the session on ``X`` (converted to the model's input dtype).

        Raises:
            ModelError: if the handler is not loaded or ONNX Runtime fails (e.g. a wrong
                feature count, which the message spells out).
        """
        if self.session is None:
            msg = f"OnnxHandler for {self.source} is not loaded; call load() first"
            raise ModelError(msg)
        if X.dtype != self._dtype:
            X = X.astype(self._dtype)
        try:
            results = self.session.run(self._names, {self._input: X})
        except Exception as exc:
            raise ModelError(self._explain(X, exc)) from exc
        return {col: output_column(r) for col, r in zip(self._columns, results, strict=True)}

    def _explain(self, X: Array, exc: Exception) -> str:
        msg = f"ONNX Runtime failed on a ({X.shape[0]}, {X.shape[1]}) input: {exc}"
        if self._n_features is not None and X.shape[1] != self._n_features:
            msg += f"; the model takes {self._n_features} features"
        if self._fixed_batch is not None and X.shape[0] != self._fixed_batch:
            msg += (
                f"; the model's input has a fixed batch size of {self._fixed_batch}: export "
                "it with a dynamic first axis (torch.onnx.export(..., dynamic_axes=...))"
            )
        return msg

    @property
    def signature(self) -> Signature:
        """Feature count and dtype from the model's input, output columns (after load)."""
        return Signature(
            n_features=self._n_features,
            dtype=self._dtype.name,
            outputs=tuple(self._columns),
        )

    def describe(self) -> dict[str, Any]:
        """Type, version, source, providers and thread settings."""
        return {
            "type": "OnnxHandler",
            "version": self.version,
            "model": self.source,
            "providers": list(self.providers),
            "intra_op_threads": self.intra_op_threads,
            "inter_op_threads": self.inter_op_threads,
        }
