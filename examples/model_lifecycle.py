"""A model's life on a stream: train, compress behind a gate, register, serve, promote.

Run from an empty directory (the registry goes to ``.tidal/registry`` there)::

    python examples/model_lifecycle.py train       # digits.onnx + eval.npz
    tidal models register digits.onnx --name digits --promote
    tidal models compress digits.onnx --method int8-dynamic --eval eval.npz \\
        --out digits.int8.onnx --max-accuracy-drop 0.005 --register digits
    tidal run examples/model_lifecycle.py --events 30000 --max-wait 1ms --json > run.json &
    sleep 2 && tidal models promote digits 2      # while the stream runs
    wait

1. ``train``: a scikit-learn ``MLPClassifier`` (64 -> 256 -> 256 -> 10) on scikit-learn's
   bundled digits (1,797 real 8x8 images, no download; split 75/25, seeded), converted to
   ONNX with :func:`tidal.ml.sklearn.to_onnx`; ``eval.npz`` holds the 450 test images (``X``)
   and their digits (``y``) for the compression gate.
2. Stream (``tidal run``): a generator replays the test images at 5,000 images/s (a 64-wide
   ``pixels`` column and the true digit ``truth``) -> ``predict`` with
   ``registry.serving("digits")`` (production from the registry, a look at the stages every
   250 ms, the swap between two batches) and a 2 ms budget per model call -> a sink that
   counts rows and correct answers per ``model_version``.

The JSON summary gets ``versions`` (rows, accuracy, first and last sequence number per
version: which rows each version scored) and ``swaps``.
"""

from __future__ import annotations

import sys
import time
import warnings
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
from tidal.core.duration import Duration
from tidal.errors import ConfigError
from tidal.io.base import BaseSink
from tidal.io.generator import GeneratorSource
from tidal.ml.registry import Registry

SEED = 0
HIDDEN = (256, 256)
RATE = 5_000.0  # images per second
MODEL = "digits"


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits as float32 pixels in [0, 1], split 75/25 (stratified, seeded)."""
    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(
        X, d.target, test_size=0.25, random_state=SEED, stratify=d.target
    )
    return Xtr, Xte, ytr.astype(np.int64), yte.astype(np.int64)


def train(folder: str | Path = ".") -> dict[str, Any]:
    """Train the MLP; write ``digits.onnx`` and ``eval.npz`` into ``folder``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from tidal.ml.sklearn import to_onnx

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    Xtr, Xte, ytr, yte = load_data()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # converged after about 90 of 300 iterations here; another scikit-learn may differ
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=HIDDEN, max_iter=300, random_state=SEED)
        clf.fit(Xtr, ytr)
    seconds = time.perf_counter() - t0
    (out / "digits.onnx").write_bytes(to_onnx(clf, Xtr.shape[1]))
    np.savez(out / "eval.npz", X=Xte, y=yte)
    return {
        "model": f"MLPClassifier {Xtr.shape[1]}-{'-'.join(map(str, HIDDEN))}-10 -> ONNX",
        "train_seconds": round(seconds, 2),
        "test_accuracy": round(float(clf.score(Xte, yte)), 4),
        "files": ["digits.onnx", "eval.npz"],
    }


class Tally(BaseSink):
    """Rows, correct answers and the sequence range per ``model_version``."""

    def __init__(self) -> None:
        self.versions: dict[str, dict[str, int]] = {}

    def write(self, batch: Batch) -> None:
        versions, seqs = batch["model_version"], batch["seq"]
        correct = batch["digit"] == batch["truth"]
        for v in np.unique(versions):
            rows = versions == v
            t = self.versions.setdefault(
                str(v), {"rows": 0, "correct": 0, "first_seq": int(seqs[rows][0])}
            )
            t["rows"] += int(rows.sum())
            t["correct"] += int(correct[rows].sum())
            t["last_seq"] = int(seqs[rows][-1])

    def table(self) -> dict[str, dict[str, Any]]:
        """Per version: rows, accuracy, first and last sequence number."""
        return {
            v: {
                "rows": t["rows"],
                "accuracy": round(t["correct"] / t["rows"], 4),
                "first_seq": t["first_seq"],
                "last_seq": t["last_seq"],
            }
            for v, t in self.versions.items()
        }


STATE: dict[str, Any] = {}


def build(
    *,
    rate: float | None = RATE,
    registry: Registry | None = None,
    check_every: Duration = "250ms",
    total: int | None = None,
) -> tidal.Pipeline:
    """Replayed test images -> predict (the registry's production version, 2 ms) -> tally."""
    _, Xte, _, yte = load_data()

    def images(seq: np.ndarray) -> dict[str, np.ndarray]:
        i = seq % len(Xte)
        return {"seq": seq, "pixels": Xte[i], "truth": yte[i]}

    registry = registry or Registry()
    if MODEL not in registry.models():  # (with versions but none promoted, serving says so)
        msg = (
            f"no model {MODEL!r} in the registry {registry.root} yet: train and register it "
            f"first (`python {Path(__file__).name} train`, then `tidal models register "
            f"digits.onnx --name {MODEL} --promote`)"
        )
        raise ConfigError(msg)
    model = registry.serving(MODEL, check_every=check_every)
    tally = Tally()
    pipeline = tidal.Pipeline("model_lifecycle")
    (
        pipeline.source("images", GeneratorSource(images, rate=rate, total=total))
        .predict(
            "classify", model, features="pixels", outputs={"label": "digit"}, max_latency="2ms"
        )
        .sink("tally", tally)
    )
    STATE.update(model=model, tally=tally)
    return pipeline


def extra(summary: Any) -> dict[str, Any]:
    """Rows and accuracy per model version, and the swaps, for the JSON summary."""
    return {"versions": STATE["tally"].table(), "swaps": STATE["model"].stats()["swaps"]}


if __name__ == "__main__":
    if sys.argv[1:2] != ["train"]:
        sys.exit(f"usage: python {sys.argv[0]} train [DIR]   (then: tidal run {sys.argv[0]})")
    import json

    try:
        print(json.dumps(train(sys.argv[2] if len(sys.argv) > 2 else ".")))
    except ImportError as exc:  # skl2onnx, for the conversion to ONNX
        sys.exit(f"{exc}; all of it: pip install -e '.[sklearn]' (in the repository root)")
