"""Models on the stream: an MLP 20->64->64->1 scored per event and batched, and in a pipeline.

Three tables:

1. **Model calls** (no pipeline): 100,000 rows scored in calls of 1 row (per event), 64,
   1,024 rows and all rows at once, with ONNX Runtime and PyTorch (eager, when installed),
   both on one thread (the handlers' default). Samples/s over all calls, per-call p50/p99,
   and the largest absolute difference from a numpy float64 reference of the same weights.
   More variants (int8 quantized models from :mod:`tidal.ml.compress`) plug in through
   ``VARIANTS``: a name and a function of the MLP's weights that returns a handler.
2. **Latency**: a ``GeneratorSource`` at 10,000 events/s -> ``predict(max_latency="1ms")``
   -> sink; per-event latency from the event's due time to the end of its micro-batch
   (see ``bench/latency.py``), with the chunk sizes the latency batcher chose.
3. **Throughput**: the same pipeline as fast as it goes (no rate, no latency budget),
   features as 20 named columns and as one 2-D column.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.common import rate, table
from tidal import Batch, Executor, Pipeline
from tidal.io.base import BaseSink
from tidal.io.generator import GeneratorSource
from tidal.ml.handler import ModelHandler
from tidal.ml.onnx import OnnxHandler
from tidal.ml.predict import Predict

N_FEATURES = 20
HIDDEN = 64
FEATURES = [f"f{i}" for i in range(N_FEATURES)]


# -- the model ------------------------------------------------------------------------------
class MLP:
    """Weights of an MLP 20 -> 64 -> 64 -> 1 (ReLU), He-initialised from a seed."""

    def __init__(self, seed: int = 0, widths: tuple[int, ...] = (N_FEATURES, HIDDEN, HIDDEN, 1)):
        rng = np.random.default_rng(seed)
        self.widths = widths
        self.weights = [
            (
                rng.normal(0, np.sqrt(2.0 / i), size=(i, o)).astype(np.float32),
                rng.normal(0, 0.1, size=o).astype(np.float32),
            )
            for i, o in zip(widths[:-1], widths[1:], strict=True)
        ]

    def reference(self, X: np.ndarray) -> np.ndarray:
        """Float64 numpy forward pass."""
        h = X.astype(np.float64)
        for k, (w, b) in enumerate(self.weights):
            h = h @ w.astype(np.float64) + b
            if k < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        out: np.ndarray = h[:, 0]
        return out

    def onnx_bytes(self) -> bytes:
        """The MLP as an ONNX model (Gemm + Relu), dynamic batch axis."""
        from onnx import TensorProto, helper, numpy_helper

        nodes, inits = [], []
        x = "x"
        for k, (w, b) in enumerate(self.weights):
            inits += [numpy_helper.from_array(w, f"w{k}"), numpy_helper.from_array(b, f"b{k}")]
            last = k == len(self.weights) - 1
            y = "score" if last else f"h{k}"
            nodes.append(helper.make_node("Gemm", [x, f"w{k}", f"b{k}"], [y if last else f"g{k}"]))
            if not last:
                nodes.append(helper.make_node("Relu", [f"g{k}"], [y]))
            x = y
        graph = helper.make_graph(
            nodes,
            "mlp",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, self.widths[0]])],
            [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        data: bytes = model.SerializeToString()
        return data

    def torch_module(self) -> Any:
        """The MLP as a ``torch.nn.Sequential`` with the same weights."""
        import torch

        layers: list[Any] = []
        for k, (w, b) in enumerate(self.weights):
            lin = torch.nn.Linear(w.shape[0], w.shape[1])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w.T.copy()))
                lin.bias.copy_(torch.from_numpy(b))
            layers.append(lin)
            if k < len(self.weights) - 1:
                layers.append(torch.nn.ReLU())
        return torch.nn.Sequential(*layers)


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _onnx(mlp: MLP) -> ModelHandler:
    return OnnxHandler(mlp.onnx_bytes(), version="fp32")


def _torch(mlp: MLP) -> ModelHandler:
    from tidal.ml.torch import TorchHandler

    return TorchHandler(mlp.torch_module(), outputs=("score",), version="fp32")


VARIANTS: dict[str, Callable[[MLP], ModelHandler]] = {"onnxruntime fp32": _onnx}
"""Handlers to compare: name -> function of the MLP. Add int8 variants here."""
if torch_available():
    VARIANTS["pytorch fp32 (eager)"] = _torch


def make_rows(n: int, seed: int = 1) -> np.ndarray:
    """Standard-normal float32 features, C-contiguous ``(n, 20)``."""
    return np.random.default_rng(seed).normal(size=(n, N_FEATURES)).astype(np.float32)


# -- 1. model calls -------------------------------------------------------------------------
def time_calls(handler: ModelHandler, X: np.ndarray, size: int) -> dict[str, Any]:
    """Score ``X`` in calls of ``size`` rows; per-call times and the scores."""
    n = len(X)
    starts = range(0, n, size)
    times = np.empty(len(starts), dtype=np.int64)
    outs = []
    predict = handler.predict
    clock = time.perf_counter_ns
    for i, lo in enumerate(starts):
        chunk = X[lo : lo + size]
        t0 = clock()
        out = predict(chunk)
        times[i] = clock() - t0
        outs.append(out["score"])
    total = times.sum() / 1e9
    return {
        "samples_per_s": n / total,
        "p50_us": float(np.percentile(times, 50)) / 1e3,
        "p99_us": float(np.percentile(times, 99)) / 1e3,
        "calls": len(times),
        "scores": np.concatenate(outs),
    }


def bench_calls(rows: int, sizes: tuple[int, ...], repeat: int, mlp: MLP) -> list[dict[str, Any]]:
    X = make_rows(rows)
    ref = mlp.reference(X)
    results = []
    for name, make in VARIANTS.items():
        h = make(mlp)
        h.load()
        for size in sizes:
            size = min(size, rows)
            runs = [time_calls(h, X, size) for _ in range(1 if size == 1 else repeat)]
            best = max(runs, key=lambda r: r["samples_per_s"])
            diff = float(np.max(np.abs(best["scores"].astype(np.float64) - ref)))
            results.append({"variant": name, "size": size, **best, "max_abs_diff": diff})
    return results


def print_calls(results: list[dict[str, Any]], rows: int) -> None:
    table(
        f"Model calls: MLP {N_FEATURES}->{HIDDEN}->{HIDDEN}->1 on {rows:,} rows, one thread; "
        "best of 3 (per-event: 1 run)",
        [
            "variant",
            "rows per call",
            "calls",
            "samples/s",
            "p50 us/call",
            "p99 us/call",
            "max |diff| vs float64",
        ],
        [
            [
                r["variant"],
                "1 (per event)"
                if r["size"] == 1
                else (f"{r['size']:,} (all)" if r["size"] == rows else f"{r['size']:,}"),
                f"{r['calls']:,}",
                rate(r["samples_per_s"]),
                f"{r['p50_us']:.1f}",
                f"{r['p99_us']:.1f}",
                f"{r['max_abs_diff']:.1e}",
            ]
            for r in results
        ],
    )


# -- 2 and 3. pipelines ---------------------------------------------------------------------
class _Count(BaseSink):
    """Counts rows and checks the score column is there; keeps nothing."""

    def __init__(self) -> None:
        self.rows = 0
        self.batches = 0

    def write(self, batch: Batch) -> None:
        assert "score" in batch and "model_version" in batch
        self.rows += len(batch)
        self.batches += 1


def _feature_pool(size: int, two_d: bool) -> Callable[[np.ndarray], dict[str, Any]]:
    """Columns for sequence numbers: views of a pre-made pool (the source costs ~nothing)."""
    X = make_rows(size, seed=2)
    cols = [np.ascontiguousarray(X[:, i]) for i in range(N_FEATURES)]

    def make(seq: np.ndarray) -> dict[str, Any]:
        lo = int(seq[0]) % size
        hi = lo + len(seq)
        if hi <= size:
            return (
                {"x": X[lo:hi]}
                if two_d
                else dict(zip(FEATURES, (c[lo:hi] for c in cols), strict=True))
            )
        idx = seq % size
        return {"x": X[idx]} if two_d else {f: c[idx] for f, c in zip(FEATURES, cols, strict=True)}

    return make


def run_pipeline(
    handler: ModelHandler,
    *,
    events: int,
    events_per_s: int | None,
    max_latency: str | None,
    max_wait: str,
    max_batch: int,
    two_d: bool = False,
) -> dict[str, Any]:
    p = Pipeline("models")
    sink = _Count()
    src = p.source(
        "gen",
        GeneratorSource(_feature_pool(1 << 16, two_d), rate=events_per_s, total=events),
    )
    op = Predict("score", handler, features="x" if two_d else FEATURES, max_latency=max_latency)
    src.apply(op).sink("out", sink)
    ex = Executor(p, max_batch=max_batch, max_wait=max_wait, handle_signals=False)
    ex.open()
    t0 = time.perf_counter()
    while ex.step():
        pass
    ex.finish(drain=True)
    wall = time.perf_counter() - t0
    s = ex.summary()
    assert sink.rows == events, (sink.rows, events)
    sizes = op.chosen_sizes()
    return {
        "summary": s,
        "wall": wall,
        "batches": sink.batches,
        "calls": s.counts.get("score.model_calls", 0),
        "sizes_p50": int(np.median(sizes)) if sizes else 0,
        "sizes_max": max(sizes) if sizes else 0,
        "stats": op.stats(),
    }


def bench_latency(
    events_per_s: int, seconds: float, waits: tuple[str, ...], repeat: int, mlp: MLP
) -> list[dict[str, Any]]:
    out = []
    for name, make in VARIANTS.items():
        for wait in waits:
            runs = []
            for _ in range(repeat):
                r = run_pipeline(
                    make(mlp),
                    events=int(events_per_s * seconds),
                    events_per_s=events_per_s,
                    max_latency="1ms",
                    max_wait=wait,
                    max_batch=8_192,
                )
                runs.append(r)
            runs.sort(key=lambda r: r["summary"].latency_ms["p99"])
            chosen = runs[len(runs) // 2]
            chosen["variant"], chosen["wait"] = name, wait
            chosen["p99s"] = [r["summary"].latency_ms["p99"] for r in runs]
            out.append(chosen)
    return out


def print_latency(results: list[dict[str, Any]], events_per_s: int, seconds: float) -> None:
    rows = []
    for r in results:
        s = r["summary"]
        lat = s.latency_ms
        rows.append(
            [
                r["variant"].split(" (")[0],
                r["wait"],
                f"{s.events:,}",
                f"{s.events / max(r['batches'], 1):.1f}",
                f"{r['sizes_p50']} / {r['sizes_max']}",
                f"{r['stats'].get('over_budget', 0):,} / {r['calls']:,}",
                f"{lat['p50']:.3f}",
                f"{lat['p99']:.3f}",
                f"{lat['p999']:.3f}",
                "/".join(f"{x:.2f}" for x in r["p99s"]),
            ]
        )
    table(
        f"Latency: GeneratorSource at {events_per_s:,} events/s for {seconds:g} s -> "
        "predict(MLP, max_latency='1ms') -> sink; median run (by p99)",
        [
            "model",
            "max_wait",
            "events",
            "events/batch",
            "chunk p50/max",
            "calls > 1 ms",
            "p50 ms",
            "p99 ms",
            "p999 ms",
            "p99 of runs",
        ],
        rows,
    )
    print()
    print(
        "latency = from each event's due time (the generator's schedule) to the end of the "
        "micro-batch that holds it: source, feature matrix, model, sink."
    )


def bench_throughput(events: int, max_batch: int, repeat: int, mlp: MLP) -> list[dict[str, Any]]:
    out = []
    for name, make in VARIANTS.items():
        for two_d in (False, True):
            runs = [
                run_pipeline(
                    make(mlp),
                    events=events,
                    events_per_s=None,
                    max_latency=None,
                    max_wait="0ms",
                    max_batch=max_batch,
                    two_d=two_d,
                )
                for _ in range(repeat)
            ]
            best = min(runs, key=lambda r: r["wall"])
            best["variant"] = name
            best["features"] = "one 2-D column (n, 20)" if two_d else "20 named columns"
            out.append(best)
    return out


def print_throughput(results: list[dict[str, Any]], events: int, max_batch: int) -> None:
    table(
        f"Throughput: GeneratorSource ({events:,} events, no rate) -> predict(MLP) -> sink, "
        f"max_batch={max_batch:,}, no latency budget; best of 3",
        ["model", "features", "events", "wall s", "samples/s", "batches"],
        [
            [
                r["variant"],
                r["features"],
                f"{r['summary'].events:,}",
                f"{r['wall']:.3f}",
                rate(r["summary"].events / r["wall"]),
                f"{r['batches']:,}",
            ]
            for r in results
        ],
    )


def main(
    rows: int = 100_000,
    sizes: tuple[int, ...] = (1, 64, 1_024, 100_000),
    events_per_s: int = 10_000,
    seconds: float = 5.0,
    waits: tuple[str, ...] = ("0ms", "1ms"),
    throughput_events: int = 2_000_000,
    max_batch: int = 65_536,
    repeat: int = 3,
) -> dict[str, Any]:
    """Run the three parts and print their tables; returns the figures."""
    mlp = MLP()
    calls = bench_calls(rows, sizes, repeat, mlp)
    print_calls(calls, rows)
    latency = bench_latency(events_per_s, seconds, waits, repeat, mlp)
    print_latency(latency, events_per_s, seconds)
    throughput = bench_throughput(throughput_events, max_batch, repeat, mlp)
    print_throughput(throughput, throughput_events, max_batch)
    return {"calls": calls, "latency": latency, "throughput": throughput}


def cli(argv: list[str] | None = None) -> None:
    """``python bench/run.py models [--rows N] [--rate N] [--seconds S] [--events N]``."""
    ap = argparse.ArgumentParser(prog="bench models", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--waits", default="0ms,1ms")
    ap.add_argument("--events", type=int, default=2_000_000, help="for the throughput run")
    ap.add_argument("--max-batch", type=int, default=65_536)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    main(
        rows=args.rows,
        sizes=(1, 64, 1_024, args.rows),
        events_per_s=args.rate,
        seconds=args.seconds,
        waits=tuple(args.waits.split(",")),
        throughput_events=args.events,
        max_batch=args.max_batch,
        repeat=args.repeat,
    )
