"""Transaction fraud scoring: gradient-boosted trees, converted to ONNX, on a stream.

    tidal run examples/fraud.py --events 200000 --json

1. Data: a synthetic but realistic card-transaction generator. Each transaction has a card,
   a merchant category, an amount, the hour of day, the distance from the card's home and
   the card's transactions in the last hour (velocity). About 2.5% are fraud, and fraud
   looks like fraud does in practice, with overlap: riskier categories (online,
   electronics, jewelry), larger amounts, night hours, far from home, bursts of
   transactions. Every column is a pure function of the sequence number, so the stream
   is replayable from any position.
2. Model: scikit-learn's ``GradientBoostingClassifier`` (100 trees of depth 3) trained on
   40,000 transactions from another part of the sequence (no overlap with the stream; about
   3 s), converted to ONNX with :func:`tidal.ml.sklearn.to_onnx` and cached under
   ``<data dir>/models/fraud-<key>`` (keyed by a hash of this file and the library
   version). ``HistGradientBoostingClassifier`` trains faster, but skl2onnx 1.20 cannot
   convert it from scikit-learn 1.9.
3. Stream: generator -> ``predict`` (ONNX Runtime, 1 thread, a 2 ms latency budget per
   model call: the batcher cuts large batches into chunks that keep the call's p99 under
   it) -> a sink that keeps the scores and the true labels.

The JSON summary gets the quality on the stream: ROC ``auc``, ``average_precision``, and
``precision_at_k`` / ``recall_at_k`` for an alert budget of 1% of transactions, plus
events/s (the run's) and the batch sizes the latency budget chose.
"""

from __future__ import annotations

import hashlib
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
    import sklearn
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
from tidal.ml.handler import with_postprocess
from tidal.ml.onnx import OnnxHandler
from tidal.runtime.checkpoint import default_data_dir

SEED = 7
CARDS = 20_000
FRAUD_RATE = 0.025
CATEGORIES = (
    "grocery",
    "restaurant",
    "gas",
    "online",
    "travel",
    "electronics",
    "jewelry",
    "pharmacy",
)
_MU = np.array([3.4, 3.3, 3.6, 3.9, 5.4, 5.0, 5.3, 3.0])  # log-amount by category
_P_LEGIT = np.array([0.30, 0.20, 0.15, 0.15, 0.05, 0.08, 0.02, 0.05])
_P_FRAUD = np.array([0.12, 0.08, 0.10, 0.28, 0.08, 0.18, 0.10, 0.06])
FEATURES = ["amount", "category", "hour", "distance_km", "velocity_1h"]
TRAIN_FROM, TRAIN_ROWS = 10**12, 40_000
MODEL = {"n_estimators": 100, "max_depth": 3, "learning_rate": 0.1, "seed": SEED}
ALERT_BUDGET = 0.01


# -- the generator ----------------------------------------------------------------------------
def _uniform(seq: np.ndarray, stream: int) -> np.ndarray:
    """A uniform in [0, 1) per sequence number: SplitMix64 of (seed, seq, stream)."""
    with np.errstate(over="ignore"):
        z = seq.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(
            (SEED * 1_000_003 + stream) * 0xD1B54A32D192ED03 % 2**64
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _normal(seq: np.ndarray, stream: int) -> np.ndarray:
    u1 = np.maximum(_uniform(seq, stream), 1e-12)
    u2 = _uniform(seq, stream + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _pick(u: np.ndarray, probs: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(np.cumsum(probs), u, side="right"), len(probs) - 1)


def transactions(seq: np.ndarray) -> dict[str, np.ndarray]:
    """The transactions with these sequence numbers (deterministic, replayable)."""
    fraud = _uniform(seq, 1) < FRAUD_RATE
    u_cat = _uniform(seq, 2)
    category = np.where(fraud, _pick(u_cat, _P_FRAUD), _pick(u_cat, _P_LEGIT))
    amount = np.exp(_MU[category] + 0.8 * _normal(seq, 3) + np.where(fraud, 0.5, 0.0))
    day_hour = np.mod(13.0 + 4.0 * _normal(seq, 5), 24.0)
    night = fraud & (_uniform(seq, 7) < 0.3)
    hour = np.where(night, 6.0 * _uniform(seq, 8), day_hour).astype(np.int64)
    far = fraud & (_uniform(seq, 9) < 0.3)
    distance = -np.log(np.maximum(_uniform(seq, 10), 1e-12)) * np.where(far, 250.0, 8.0)
    burst = np.where(fraud, 1.6, 0.7)
    velocity = np.floor(-np.log(np.maximum(_uniform(seq, 11), 1e-12)) * burst)
    velocity += np.where(fraud & (_uniform(seq, 12) < 0.2), 2.0, 0.0)
    return {
        "card_id": (_uniform(seq, 0) * CARDS).astype(np.int64),
        "amount": np.round(amount, 2),
        "category": category.astype(np.int64),
        "hour": hour,
        "distance_km": np.round(distance, 1),
        "velocity_1h": velocity.astype(np.int64),
        "is_fraud": fraud,
    }


def feature_matrix(cols: dict[str, np.ndarray]) -> np.ndarray:
    """The model's features, in order, as float32."""
    return np.column_stack([cols[f] for f in FEATURES]).astype(np.float32)


# -- the model ----------------------------------------------------------------------------------
def model_path() -> tuple[Path, dict[str, Any]]:
    """Train and convert (or reuse the cache): ``model.onnx``."""
    # keyed by this file (the generator and the settings) and the library version
    key = json.dumps(
        {
            "source": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
            "sklearn": sklearn.__version__,
        },
        sort_keys=True,
    )
    folder = (
        Path(default_data_dir())
        / "models"
        / f"fraud-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    )
    if (folder / "info.json").is_file():
        return folder / "model.onnx", {
            **json.loads((folder / "info.json").read_text()),
            "cached": True,
        }
    from sklearn.ensemble import GradientBoostingClassifier

    from tidal.ml.sklearn import to_onnx

    t0 = time.perf_counter()
    cols = transactions(np.arange(TRAIN_FROM, TRAIN_FROM + TRAIN_ROWS, dtype=np.int64))
    clf = GradientBoostingClassifier(
        n_estimators=MODEL["n_estimators"],
        max_depth=MODEL["max_depth"],
        learning_rate=MODEL["learning_rate"],
        random_state=SEED,
    ).fit(feature_matrix(cols), cols["is_fraud"].astype(np.int64))
    info = {
        "model": "GradientBoostingClassifier -> ONNX",
        "train_rows": TRAIN_ROWS,
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".build-"))
    (tmp / "model.onnx").write_bytes(to_onnx(clf, len(FEATURES)))
    (tmp / "info.json").write_text(json.dumps(info))
    try:
        os.rename(tmp, folder)
    except OSError:  # another run built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / "model.onnx", {**info, "cached": False}


# -- the pipeline ---------------------------------------------------------------------------
class Scores(BaseSink):
    """Keeps every score and true label (for AUC and precision@k at the end)."""

    def __init__(self) -> None:
        self.scores: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def write(self, batch: Batch) -> None:
        self.scores.append(batch["fraud_score"].astype(np.float64))
        self.labels.append(batch["is_fraud"].astype(bool))


def fraud_score(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The probability of the fraud class."""
    return {"fraud_score": out["probabilities"][:, 1]}


STATE: dict[str, Any] = {}


def build() -> tidal.Pipeline:
    """Generator -> predict (ONNX, 2 ms budget per call) -> scores."""
    path, info = model_path()
    handler = with_postprocess(OnnxHandler(path, version="gbt-1"), fraud_score)
    sink = Scores()
    pipeline = tidal.Pipeline("fraud")
    scored = pipeline.source("transactions", GeneratorSource(transactions)).predict(
        "score", handler, features=FEATURES, max_latency="2ms"
    )
    scored.sink("scores", sink)
    STATE.update(info=info, sink=sink, step=pipeline.nodes["score"].op)
    return pipeline


def quality(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """ROC AUC, average precision, and precision/recall in the top 1% of scores."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    k = max(1, int(len(scores) * ALERT_BUDGET))
    top = np.argsort(-scores, kind="stable")[:k]
    frauds = int(labels.sum())
    both = 0 < frauds < len(labels)
    return {
        "transactions": len(labels),
        "frauds": frauds,
        "fraud_rate": round(frauds / len(labels), 4) if len(labels) else None,
        "auc": round(float(roc_auc_score(labels, scores)), 4) if both else None,
        "average_precision": (
            round(float(average_precision_score(labels, scores)), 4) if both else None
        ),
        "k": k,
        "precision_at_k": round(float(labels[top].mean()), 4),
        "recall_at_k": round(float(labels[top].sum() / frauds), 4) if frauds else None,
    }


def extra(summary: Any) -> dict[str, Any]:
    """Quality and speed figures for the JSON summary."""
    sink: Scores = STATE["sink"]
    scores = np.concatenate(sink.scores) if sink.scores else np.empty(0)
    labels = np.concatenate(sink.labels) if sink.labels else np.empty(0, dtype=bool)
    sizes = STATE["step"].chosen_sizes()
    return {
        **STATE["info"],
        "quality": quality(scores, labels) if len(labels) else {},
        "events_per_s": round(summary.events_per_s, 1),
        "model_call_rows": {
            "median": int(np.median(sizes)) if sizes else None,
            "max": max(sizes) if sizes else None,
        },
    }


if __name__ == "__main__":
    p = build()
    s = p.run(max_events=200_000)
    print(json.dumps({**s.to_json(), **extra(s)}, indent=2))
