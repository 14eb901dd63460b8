"""Online learning, prequential (test-then-train), beside River and scikit-learn.

``python bench/run.py learn`` prints both tables; ``--drift`` or ``--elec2`` only one.

Drift: online logistic regression on ``--samples`` rows x 20 features (default 200,000)
whose concept changes at the midpoint (half the true weights flip sign). Every learner
predicts each row before learning it (River, Tidal's exact mode) or each chunk before
learning it (mini-batch learners), in one process, on the same rows:

* Tidal mini-batch: ``LogisticRegression(optimizer="sgd", lr=0.5, mode="minibatch")``,
  one step on the mean gradient of 32 rows, fed 4,096-row batches through ``predict_learn``;
* Tidal exact: ``LogisticRegression(optimizer="sgd", lr=0.01, mode="exact")``: River's
  algorithm, one step per row;
* River: ``linear_model.LogisticRegression()`` (SGD, lr 0.01), ``predict_proba_one``
  then ``learn_one`` per row;
* scikit-learn: ``SGDClassifier(loss="log_loss")``, ``predict`` then ``partial_fit`` per
  32-row chunk.

Packaged: River's Phishing (accuracy) and TrumpApproval (MAE) data sets, one row at a
time, Tidal's learn step beside River's linear models with the same settings.

Elec2 (``../shared/data/elec2.csv``, 45,312 rows, 6 features): ``tidal learn``'s
pipeline (:func:`tidal.cli.learn.learn_csv`) with and without lag features, a whole
pipeline with ``stream.lag`` in front of ``stream.learn`` (best of 3 runs), River's
logistic regression and ALMA (behind River's ``StandardScaler``) on the same rows and the
same features, and "repeat the last label". Samples/s count the learning loop only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import rate, table  # noqa: E402
from tidal.ml.learn import LogisticRegression  # noqa: E402
from tidal.ml.learn.kernels import warm_up  # noqa: E402

ELEC2 = next(
    (
        p / "shared" / "data" / "elec2.csv"
        for p in (ROOT.parent, ROOT.parent.parent)
        if (p / "shared" / "data" / "elec2.csv").is_file()
    ),
    ROOT.parent / "shared" / "data" / "elec2.csv",
)


def drift_stream(n: int, d: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows x ``d`` features; the concept changes at ``n // 2``."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    w2 = w.copy()
    w2[: d // 2] *= -1
    z = np.where(np.arange(n) < n // 2, X @ w, X @ w2) + rng.normal(0, 0.5, n)
    return X, (z > 0).astype(np.float64)


def _tidal(model: LogisticRegression, X: np.ndarray, y: np.ndarray, batch: int = 4096) -> Any:
    pred = np.empty(len(y))
    for s in range(0, len(y), batch):
        pred[s : s + batch] = model.predict_learn(X[s : s + batch], y[s : s + batch])[:, 1] >= 0.5
    return pred


def _river(model: Any, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    names = [f"x{i}" for i in range(X.shape[1])]
    pred = np.empty(len(y))
    for i, (row, label) in enumerate(zip(X.tolist(), y.tolist(), strict=True)):
        x = dict(zip(names, row, strict=True))
        pred[i] = model.predict_proba_one(x).get(True, 0.0) >= 0.5
        model.learn_one(x, bool(label))
    return pred


def _sklearn(X: np.ndarray, y: np.ndarray, chunk: int = 32) -> np.ndarray:
    from sklearn.linear_model import SGDClassifier

    model = SGDClassifier(loss="log_loss", random_state=0)
    pred = np.zeros(len(y))
    for s in range(0, len(y), chunk):
        xc, yc = X[s : s + chunk], y[s : s + chunk]
        if s:
            pred[s : s + chunk] = model.predict(xc)
        model.partial_fit(xc, yc, classes=[0.0, 1.0])
    return pred


def drift(samples: int = 200_000, river_samples: int | None = None) -> dict[str, Any]:
    """The drift table; returns {learner: (samples/s, accuracy, accuracy after the drift)}."""
    from river import linear_model

    X, y = drift_stream(samples)
    half = samples // 2
    warm_up()
    runs: dict[str, Any] = {
        "Tidal mini-batch (SGD lr 0.5, 32 rows/step)": lambda: _tidal(
            LogisticRegression(optimizer="sgd", lr=0.5, mode="minibatch"), X, y
        ),
        "Tidal exact per-sample (SGD)": lambda: _tidal(
            LogisticRegression(optimizer="sgd", lr=0.01, mode="exact"), X, y
        ),
        "River LogisticRegression learn_one": lambda: _river(
            linear_model.LogisticRegression(), X, y
        ),
        "scikit-learn SGDClassifier.partial_fit (32 rows)": lambda: _sklearn(X, y),
    }
    out: dict[str, Any] = {}
    for name, fn in runs.items():
        t0 = time.perf_counter()
        pred = fn()
        seconds = time.perf_counter() - t0
        right = pred == y
        out[name] = (samples / seconds, right.mean(), right[half:].mean())
    river = out["River LogisticRegression learn_one"][0]
    rows = [
        (name, rate(r), f"{r / river:.1f}x", f"{acc:.4f}", f"{after:.4f}")
        for name, (r, acc, after) in out.items()
    ]
    table(
        f"Online logistic regression, {samples:,} x 20, concept drift at {half:,} (prequential)",
        ["learner", "samples/s", "vs River", "accuracy", "accuracy after drift"],
        rows,
    )
    return out


def _river_elec2(model: Any, cols: dict[str, np.ndarray], names: list[str], y: np.ndarray) -> Any:
    X = np.stack([cols[c] for c in names], axis=1)
    t0 = time.perf_counter()
    right = 0
    for row, label in zip(X.tolist(), y.tolist(), strict=True):
        x = dict(zip(names, row, strict=True))
        right += model.predict_one(x) == label
        model.learn_one(x, label)
    return len(y) / (time.perf_counter() - t0), right / len(y)


def _tidal_pipeline(
    cols: dict[str, np.ndarray], feats: list[str], periods: list[int], batch: int = 8192
) -> tuple[float, float, float]:
    """A whole pipeline: memory source -> ``stream.lag`` -> ``stream.learn`` -> memory sink.

    The lags are of the label and every input, per row of the one stream (Elec2 has no key);
    the rate is rows over the wall time of ``run()``, executor and metric columns included.
    Returns (samples/s, accuracy, samples per CPU-second of this process).
    """
    from tidal import Pipeline
    from tidal.core.lag import lag_names
    from tidal.io.memory import MemorySink, MemorySource

    warm_up()
    p = Pipeline("elec2")
    lagged = ["class", *feats]
    raw = {c: cols[c] for c in lagged}  # the file's columns only
    s = p.source("in", MemorySource(raw)).lag("lags", lagged, periods=periods, fill=0.0)
    model = LogisticRegression(optimizer="sgd", lr=0.1, mode="exact")
    names = feats + lag_names(lagged, periods)
    s.learn("model", model, features=names, target="class", metrics=["accuracy"]).sink(
        "out", MemorySink()
    )
    t0, c0 = time.perf_counter(), time.process_time()
    summary = p.run(max_batch=batch, max_wait="0ms", handle_signals=False)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    acc = summary.extra["metrics"]["model.accuracy"]
    return summary.events / seconds, acc, summary.events / max(cpu, 1e-9)


def elec2(path: Path = ELEC2) -> dict[str, Any]:
    """The Elec2 table; returns {learner: (samples/s, accuracy)}."""
    import pyarrow.csv as pacsv
    from river import linear_model, preprocessing

    from tidal.cli.learn import _with_lags, learn_csv

    if not path.is_file():
        print(f"bench learn: {path} not found; skipping Elec2")
        return {}
    table_ = pacsv.read_csv(path)
    cols = {c: table_[c].to_numpy() for c in table_.column_names}
    y = cols["class"].astype(np.int64)
    feats = [c for c in cols if c != "class"]
    lagged = feats + _with_lags(cols, feats, "class", 2)
    out: dict[str, Any] = {"repeat the last label": (float("nan"), float((y[1:] == y[:-1]).mean()))}
    for label, lags in (("6 features", 0), ("6 features + 2 lags", 2)):
        res = learn_csv(
            path,
            target="class",
            lags=lags,
            exact=True,
            lr=0.1,
            metric="accuracy",
            batch=8192,
            quiet=True,
        )
        out[f"Tidal logistic, exact SGD lr 0.1 ({label})"] = (
            res["samples_per_s"],
            res["metrics"]["accuracy"],
        )
    cpu_rates: dict[str, float] = {}
    for periods in ([1], [1, 2]):
        label = f"stream.lag {','.join(map(str, periods))} of label + 6 features"
        runs = [_tidal_pipeline(cols, feats, periods) for _ in range(3)]  # best of 3
        best = max(runs)
        out[f"Tidal pipeline: {label}, learn (exact SGD lr 0.1)"] = best[:2]
        cpu_rates[label] = max(r[2] for r in runs)
    for label, names in (("6 features", feats), ("6 features + 2 lags", lagged)):
        for kind in ("LogisticRegression", "ALMAClassifier"):
            model = preprocessing.StandardScaler() | getattr(linear_model, kind)()
            out[f"River {kind} ({label})"] = _river_elec2(model, cols, names, y)
    rows = [(name, "" if r != r else rate(r), f"{acc:.4f}") for name, (r, acc) in out.items()]
    table(
        f"Elec2 prequential accuracy ({len(y):,} rows)", ["learner", "samples/s", "accuracy"], rows
    )
    for label, cpu_rate in cpu_rates.items():  # wall time on a shared machine waits for CPU
        print(f"Tidal pipeline ({label}): {rate(cpu_rate)} per CPU-second of the process")
    return out


def _river_rows(name: str) -> tuple[list[dict[str, float]], list[Any]]:
    from river import datasets

    data = list(getattr(datasets, name)())
    return [x for x, _ in data], [y for _, y in data]


def packaged() -> dict[str, Any]:
    """Phishing (accuracy) and TrumpApproval (MAE), data sets shipped inside River's package.

    One row at a time for every learner (``batch=1``), so Tidal's online standardization
    sees exactly what River's ``StandardScaler`` sees; same learning rates.
    """
    from river import linear_model, preprocessing

    from tidal.core.batch import Batch
    from tidal.ml.learn import Features, LinearRegression
    from tidal.ml.learn.step import LearnStep

    out: dict[str, Any] = {}
    for data, task in (("Phishing", "accuracy"), ("TrumpApproval", "mae")):
        xs, ys = _river_rows(data)
        names = list(xs[0])
        cols = {n: np.array([float(x[n]) for x in xs]) for n in names}
        target = np.array([float(v) for v in ys])
        cls = task == "accuracy"
        if cls:
            tidal_runs = {
                "Tidal, exact SGD lr 0.01 (River's step)": lambda: LogisticRegression(
                    lr=0.01, mode="exact"
                ),
                "Tidal, exact Adam lr 0.05": lambda: LogisticRegression(
                    optimizer="adam", lr=0.05, mode="exact"
                ),
            }
        else:  # River's squared loss has gradient 2 (y_hat - y): its lr 0.01 is our 0.02
            tidal_runs = {
                "Tidal, exact SGD lr 0.02 (River's step)": lambda: LinearRegression(
                    lr=0.02, mode="exact"
                ),
                "Tidal, exact SGD lr 0.01": lambda: LinearRegression(lr=0.01, mode="exact"),
            }
        for label, build in tidal_runs.items():
            step = LearnStep(
                "m", build(), features=Features(numeric=names), target="y", metrics=[task]
            )
            for i in range(len(target)):
                step.learn(
                    Batch({**{n: cols[n][i : i + 1] for n in names}, "y": target[i : i + 1]})
                )
            assert step.metrics is not None
            out[(data, label)] = step.metrics.values()[task]
        model = preprocessing.StandardScaler() | (
            linear_model.LogisticRegression() if cls else linear_model.LinearRegression()
        )
        err = 0.0
        for x, y in zip(xs, ys, strict=True):
            guess = model.predict_one(x)
            err += (guess == y) if cls else abs((guess or 0.0) - y)
            model.learn_one(x, y)
        river_name = "LogisticRegression" if cls else "LinearRegression"
        out[(data, f"River {river_name} (SGD lr 0.01)")] = err / len(ys)
    rows = [(d, name, f"{v:.4f}") for (d, name), v in out.items()]
    table(
        "Data sets shipped in River's package (prequential, one row at a time)",
        ["data set (metric)", "learner", "value"],
        [(f"{d} ({'accuracy' if d == 'Phishing' else 'MAE'})", n, v) for d, n, v in rows],
    )
    return out


def cli(argv: list[str] | None = None) -> None:
    """``python bench/run.py learn [--drift | --elec2] [--samples N]``."""
    p = argparse.ArgumentParser(prog="bench learn", description=__doc__)
    p.add_argument("--drift", action="store_true", help="only the drift table")
    p.add_argument("--elec2", action="store_true", help="only the Elec2 table")
    p.add_argument("--packaged", action="store_true", help="only Phishing and TrumpApproval")
    p.add_argument("--samples", type=int, default=200_000, help="rows of the drift stream")
    args = p.parse_args(argv)
    both = not (args.drift or args.elec2 or args.packaged)
    if args.drift or both:
        drift(args.samples)
    if args.elec2 or both:
        elec2()
    if args.packaged or both:
        packaged()


if __name__ == "__main__":
    cli(sys.argv[1:])
