"""Measuring a model against its compressed variant: scores, throughput, the report.

The measuring half of :func:`tidal.ml.compress.compress`. Both variants are loaded as
scorers (a function from features to outputs), judged by the same metric on the same
evaluation set (``accuracy``, or ``mae`` for regressions), and timed on batches in
alternation (best of three rounds, same thread count). A :class:`CompressionReport` holds
the figures and the gate's decision: :attr:`~CompressionReport.passed` (the metric dropped
by at most ``max_drop``) and :attr:`~CompressionReport.winner` (the variant to serve).

Example:
    >>> fp32 = Variant("original (fp32)", "onnx", 0.95, 40_000, 100_000.0)
    >>> int8 = Variant("int8-dynamic", "onnx", 0.948, 12_000, 250_000.0)
    >>> report = CompressionReport(
    ...     method="int8-dynamic", metric="accuracy", original=fp32, compressed=int8,
    ...     max_drop=0.005, rows=540, batch_size=1024, threads=1)
    >>> report.passed, report.winner, round(report.speedup, 2)
    (True, 'compressed', 2.5)
    >>> report.verdict()
    'int8-dynamic is 2.50x faster and 3.33x smaller, accuracy -0.20 pt: serve the compressed model'
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ModelError

if TYPE_CHECKING:
    from tidal.ml.evalset import EvalSet

__all__ = [
    "METHODS",
    "CompressionRefused",
    "CompressionReport",
    "Method",
    "Metric",
    "Variant",
]

Method = Literal["int8-dynamic", "int8-static", "prune", "torch-to-onnx"]
Metric = Literal["accuracy", "mae"]
METHODS: tuple[str, ...] = get_args(Method)
_METRICS: tuple[str, ...] = get_args(Metric)
_SAME_SPEED = 0.05  # within 5%: no measurable difference in throughput


class CompressionRefused(ModelError):
    """The gate refused a compressed model: the metric dropped by more than allowed.

    Attributes:
        report: the measurements that made the decision.
    """

    def __init__(self, message: str, report: CompressionReport) -> None:
        super().__init__(message)
        self.report = report


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
