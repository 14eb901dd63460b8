"""Real-time image recognition: a small CNN on handwritten digits, int8-quantized, on a stream.

    tidal run examples/digits_cnn.py --events 20000 --json

1. Data: scikit-learn's bundled digits (1,797 real 8x8 handwritten images; no download),
   split 75/25 with a fixed seed.
2. Model: a small CNN (conv 16 -> conv 32 -> 2x2 max-pool -> 64 -> 10) trained with PyTorch
   for 25 epochs (about 2.5 s on one core, seeded), exported to ONNX with
   ``tidal.ml.compress`` (``torch-to-onnx``). Without PyTorch a scikit-learn MLP stands in
   (and the summary says so).
3. Compression: int8 dynamic and int8 static (calibrated on training images) quantization,
   each judged by the accuracy gate on the test images and timed against fp32 in the same
   process. The variant with the most images/s among those that pass the gate is served.
   Dynamic int8 convolutions are *slower* than fp32 in ONNX Runtime; the report says so.
4. Stream: a generator replays the test images (a 64-wide ``pixels`` column and the true
   ``label``) through ``predict`` (ONNX Runtime, 1 thread) into a sink that counts correct
   answers.

The trained and compressed models are cached under ``<data dir>/models/digits_cnn-<key>``
(``$TIDAL_DATA_DIR``, default ``.tidal``), keyed by a hash of this file (the model and the
training settings) and the library versions, so later runs do not retrain. The JSON
summary gets ``accuracy`` (fp32/int8 on the test images, and on the stream),
``images_per_s`` (batched, per variant, and through the pipeline) and the compression
reports.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

try:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
except ModuleNotFoundError as exc:  # say which extra, rather than a traceback
    _NEEDS = (
        f"{Path(__file__).name} needs scikit-learn: pip install -e '.[sklearn]' (in the "
        f"repository root; {exc})"
    )
    if __name__ == "__main__":
        sys.exit(_NEEDS)
    raise ImportError(_NEEDS) from exc

import tidal
from tidal.core.batch import Batch
from tidal.io.base import BaseSink
from tidal.io.generator import GeneratorSource
from tidal.ml.compress import CompressionRefused, EvalSet, compress
from tidal.ml.handler import with_postprocess
from tidal.ml.onnx import OnnxHandler
from tidal.runtime.checkpoint import default_data_dir

SEED = 0
TRAIN = {"epochs": 25, "batch": 64, "lr": 2e-3, "conv": (16, 32), "hidden": 64, "seed": SEED}
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits as float32 pixels in [0, 1], split 75/25 (stratified, seeded)."""
    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(
        X, d.target, test_size=0.25, random_state=SEED, stratify=d.target
    )
    return Xtr, Xte, ytr.astype(np.int64), yte.astype(np.int64)


def make_cnn() -> Any:
    """The CNN: 64 pixels in (reshaped to 1x8x8), 10 logits out."""
    import torch
    from torch import nn

    c1, c2 = TRAIN["conv"]

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
            self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
            self.fc1 = nn.Linear(c2 * 4 * 4, TRAIN["hidden"])
            self.fc2 = nn.Linear(TRAIN["hidden"], 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.reshape(-1, 1, 8, 8)
            x = torch.relu(self.conv1(x))
            x = torch.nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
            return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    return DigitsCNN()


def train_cnn(Xtr: np.ndarray, ytr: np.ndarray) -> Any:
    """Train the CNN (seeded; Adam, cross-entropy)."""
    import torch

    torch.manual_seed(SEED)
    threads = torch.get_num_threads()
    # One thread: the layers are tiny, and on a busy 2-core machine two OpenMP threads
    # waiting on each other made training ten times slower (26 s instead of 2.3 s).
    torch.set_num_threads(1)
    try:
        net = make_cnn()
        opt = torch.optim.Adam(net.parameters(), lr=TRAIN["lr"])
        X, y = torch.from_numpy(Xtr), torch.from_numpy(ytr)
        gen = torch.Generator().manual_seed(SEED)
        for _ in range(TRAIN["epochs"]):
            perm = torch.randperm(len(X), generator=gen)
            for i in range(0, len(X), TRAIN["batch"]):
                idx = perm[i : i + TRAIN["batch"]]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def train_mlp_onnx(Xtr: np.ndarray, ytr: np.ndarray) -> bytes:
    """Without PyTorch: a scikit-learn MLP, as ONNX (logits-free: label + probabilities)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from tidal.ml.sklearn import to_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(256,), max_iter=200, random_state=SEED)
        clf.fit(Xtr, ytr)
    return to_onnx(clf, 64)


def cache_dir() -> Path:
    """``<data dir>/models/digits_cnn-<hash of settings and library versions>``."""
    import onnxruntime
    import sklearn

    versions = {"sklearn": sklearn.__version__, "onnxruntime": onnxruntime.__version__}
    if HAVE_TORCH:
        import torch

        versions["torch"] = torch.__version__
    source = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    key = json.dumps({"source": source, "torch": HAVE_TORCH, **versions}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(default_data_dir()) / "models" / f"digits_cnn-{digest}"


def build_models() -> tuple[Path, dict[str, Any]]:
    """Train and export (or reuse the cache): ``fp32.onnx`` in the cache directory."""
    folder = cache_dir()
    info_file = folder / "info.json"
    if info_file.is_file():
        return folder, {**json.loads(info_file.read_text()), "cached": True}
    Xtr, Xte, ytr, yte = load_data()
    t0 = time.perf_counter()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".build-"))
    if HAVE_TORCH:
        net = train_cnn(Xtr, ytr)
        train_s = time.perf_counter() - t0
        compress(net, tmp / "fp32.onnx", method="torch-to-onnx", eval_set=EvalSet(Xte, yte))
        model = "cnn (PyTorch, exported to ONNX)"
    else:
        (tmp / "fp32.onnx").write_bytes(train_mlp_onnx(Xtr, ytr))
        train_s = time.perf_counter() - t0
        model = "mlp (scikit-learn; PyTorch is not installed)"
    info = {"model": model, "train_seconds": round(train_s, 2), "train_images": len(Xtr)}
    (tmp / "info.json").write_text(json.dumps(info))
    try:
        os.rename(tmp, folder)
    except OSError:  # another run built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, {**info, "cached": False}


def quantize(folder: Path) -> dict[str, Any]:
    """int8 dynamic and static, each measured against fp32; returns the reports."""
    Xtr, Xte, _, yte = load_data()
    test = EvalSet(Xte, yte)
    reports: dict[str, Any] = {}
    for method in ("int8-dynamic", "int8-static"):
        out = folder / f"{method}.onnx"
        try:
            report = compress(
                folder / "fp32.onnx",
                out,
                method=method,  # type: ignore[arg-type]
                eval_set=test,
                calibration=Xtr[:512],
                batch_size=256,
                min_time=0.1,
                rounds=5,
            )
        except CompressionRefused as exc:
            report = exc.report
        reports[method] = report
    return reports


class Tally(BaseSink):
    """Counts rows and correct predictions."""

    def __init__(self) -> None:
        self.rows = 0
        self.correct = 0

    def write(self, batch: Batch) -> None:
        self.rows += len(batch)
        self.correct += int(np.count_nonzero(batch["digit"] == batch["label"]))


STATE: dict[str, Any] = {}


def build() -> tidal.Pipeline:
    """Train/compress (or reuse), choose the fastest variant that passed, stream the images."""
    folder, info = build_models()
    reports = quantize(folder)
    passed = [r for r in reports.values() if r.passed]
    best = max(passed, key=lambda r: r.compressed.samples_per_s, default=None)
    fp32_speed = max(r.original.samples_per_s for r in reports.values())
    if best is not None and best.compressed.samples_per_s > fp32_speed:
        served, path = best.method, folder / f"{best.method}.onnx"
    else:
        served, path = "fp32", folder / "fp32.onnx"
    _, Xte, _, yte = load_data()

    def images(seq: np.ndarray) -> dict[str, np.ndarray]:
        i = seq % len(Xte)
        return {"pixels": Xte[i], "label": yte[i]}

    def to_digit(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        scores = out.get("output", out.get("probabilities"))
        assert scores is not None
        return {"digit": scores.argmax(axis=1)}

    handler = with_postprocess(OnnxHandler(path, version=served), to_digit)
    tally = Tally()
    pipeline = tidal.Pipeline("digits")
    (
        pipeline.source("images", GeneratorSource(images))
        .predict("classify", handler, features="pixels")
        .sink("tally", tally)
    )
    STATE.update(info=info, reports=reports, served=served, tally=tally)
    return pipeline


def extra(summary: Any) -> dict[str, Any]:
    """Quality and speed figures for the JSON summary."""
    reports = STATE["reports"]
    tally = STATE["tally"]
    any_report = next(iter(reports.values()))
    accuracy = {"fp32": round(any_report.original.metric, 4)}
    speed = {"fp32": round(max(r.original.samples_per_s for r in reports.values()))}
    for method, r in reports.items():
        accuracy[method] = round(r.compressed.metric, 4)
        speed[method] = round(r.compressed.samples_per_s)
    accuracy["stream"] = round(tally.correct / tally.rows, 4) if tally.rows else None
    speed["stream"] = round(summary.events_per_s)
    return {
        **STATE["info"],
        "served": STATE["served"],
        "test_images": any_report.rows,
        "accuracy": accuracy,
        "images_per_s": speed,
        "compression": {m: r.to_json() for m, r in reports.items()},
    }


if __name__ == "__main__":
    p = build()
    s = p.run(max_events=20_000)
    print(json.dumps({**s.to_json(), **extra(s)}, indent=2))
