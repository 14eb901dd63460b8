"""Drift detectors: detection delay and false alarms beside River's, and points/s.

``python bench/run.py drift`` prints both tables; ``--quality`` or ``--speed`` only one.

Quality: streams with one planted, abrupt drift at ``--at`` (10,000 values) followed by
``--after`` (5,000) values, ``--repeats`` seeds each:

* ``mean +1σ`` / ``mean +0.5σ``: N(0, 1), then N(1, 1) / N(0.5, 1);
* ``var ×3``: N(0, 1), then N(0, 3²) (a change of spread only);
* ``SEA`` / ``Agrawal`` / ``Hyperplane`` errors: River's synthetic generators
  (``river.datasets.synth``) before the drift (SEA variant 0, Agrawal function 0, a random
  10-feature hyperplane) and after it (SEA variant 3, Agrawal function 2, another
  hyperplane); a logistic regression (scikit-learn, standardized features) is fitted on
  the first 2,000 rows and frozen; the stream watched is its 0/1 error.

Every detector (Tidal's, with their default parameters, and River's ``ADWIN``, ``KSWIN``
and ``PageHinkley`` with theirs) sees the same
values in the same process. *False alarms* are drifts before the planted one, per 10,000
stationary values; *found* is the share of repeats with a drift in the ``--after`` values
after it; *delay* is the median number of values from the drift to the first one found.

Speed: values per second of one detector over a 200,000-value stationary series in one
call (Tidal) or one ``update`` per value (River), and Tidal's over 100 keys interleaved
(2,000 values each, past every warm-up and window).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import table  # noqa: E402
from tidal.core.batch import Array  # noqa: E402
from tidal.ml.detect import DRIFT_DETECTORS, make_drift  # noqa: E402

TIDAL = sorted(DRIFT_DETECTORS)


def river_detectors() -> dict[str, Callable[[int], Any]]:
    """River's detectors with their default parameters, by seed."""
    from river import drift

    return {
        "river ADWIN": lambda s: drift.ADWIN(),
        "river PageHinkley": lambda s: drift.PageHinkley(),
        "river KSWIN": lambda s: drift.KSWIN(seed=s),
    }


def run_river(det: Any, x: Array) -> Array:
    """River's detector over ``x``, one value at a time; the rows where it fired."""
    out = np.zeros(len(x), dtype=bool)
    update = det.update
    for i, v in enumerate(x.tolist()):
        update(v)
        if det.drift_detected:
            out[i] = True
    return out


def run_tidal(name: str, x: Array, seed: int) -> Array:
    """Tidal's detector over ``x`` in one call; the rows where it fired."""
    return make_drift(name, seed=seed).update(x, np.zeros(len(x), dtype=np.int64)).drift


def _synth_error(kind: str, seed: int, at: int, after: int) -> Array:
    from river.datasets import synth
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    before_gen: Any
    after_gen: Any
    if kind == "SEA":
        before_gen, after_gen = synth.SEA(variant=0, seed=seed), synth.SEA(variant=3, seed=seed + 1)
    elif kind == "Agrawal":
        before_gen = synth.Agrawal(classification_function=0, seed=seed)
        after_gen = synth.Agrawal(classification_function=2, seed=seed + 1)
    else:
        before_gen = synth.Hyperplane(seed=seed, n_features=10)
        after_gen = synth.Hyperplane(seed=seed + 10_000, n_features=10)
    rows = list(before_gen.take(at)) + list(after_gen.take(after))
    names = sorted(rows[0][0])
    x = np.array([[r[0][n] for n in names] for r in rows], dtype=np.float64)
    y = np.array([r[1] for r in rows]).astype(np.int64)
    fit = min(2_000, at)
    scaler = StandardScaler().fit(x[:fit])
    model = LogisticRegression(max_iter=500).fit(scaler.transform(x[:fit]), y[:fit])
    err: Array = (model.predict(scaler.transform(x)) != y).astype(np.float64)
    return err


def streams(at: int, after: int, seed: int) -> dict[str, Array]:
    """Every quality stream for one seed (the drift at ``at``)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1, at + after)
    out = {
        "mean +1σ": np.r_[base[:at], base[at:] + 1.0],
        "mean +0.5σ": np.r_[base[:at], base[at:] + 0.5],
        "var ×3": np.r_[base[:at], base[at:] * 3.0],
    }
    for kind in ("SEA", "Agrawal", "Hyperplane"):
        out[f"{kind} errors"] = _synth_error(kind, seed, at, after)
    return out


def quality(at: int = 10_000, after: int = 5_000, repeats: int = 5) -> dict[str, Any]:
    """The quality table: per stream and detector, false alarms, found share, delay."""
    river = river_detectors()
    names = [*TIDAL, *river]
    stats: dict[tuple[str, str], dict[str, list[float]]] = {}
    for seed in range(repeats):
        for sname, x in streams(at, after, seed).items():
            for name in names:
                fired = (
                    run_river(river[name](seed), x) if name in river else run_tidal(name, x, seed)
                )
                s = stats.setdefault((sname, name), {"fa": [], "delay": []})
                s["fa"].append(float(fired[:at].sum()))
                hits = np.flatnonzero(fired[at:])
                s["delay"].append(float(hits[0]) if len(hits) else np.nan)
    rows = []
    out: dict[str, Any] = {}
    for (sname, name), s in stats.items():
        fa = sum(s["fa"]) / (at * repeats) * 10_000
        d = np.asarray(s["delay"])
        found = float(np.mean(~np.isnan(d)))
        delay = float(np.nanmedian(d)) if found else float("nan")
        out[f"{sname}/{name}"] = (fa, found, delay)
        rows.append(
            [sname, name, f"{fa:.2f}", f"{found:.0%}", "-" if np.isnan(delay) else f"{delay:.0f}"]
        )
    table(
        f"Drift detection: {repeats} seeds, drift at {at:,}, {after:,} values after it "
        "(false alarms per 10,000 stationary values; median delay in values)",
        ["stream", "detector", "false alarms / 10k", "found", "delay"],
        rows,
    )
    return out


def speed(points: int = 200_000, keys: int = 100, river_points: int = 20_000) -> dict[str, Any]:
    """Values per second of every detector (Tidal one call, River one update per value)."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, points)
    kid = rng.integers(0, keys, points)
    rows, out = [], {}
    for name in TIDAL:
        t = time.perf_counter()
        make_drift(name).update(x, np.zeros(points, dtype=np.int64))
        one = points / (time.perf_counter() - t)
        t = time.perf_counter()
        make_drift(name).update(x, kid)
        many = points / (time.perf_counter() - t)
        out[name] = (one, many)
        rows.append([f"tidal {name}", f"{one:,.0f}", f"{many:,.0f}"])
    for name, factory in river_detectors().items():
        xs = x[:river_points]
        t = time.perf_counter()
        run_river(factory(0), xs)
        one = river_points / (time.perf_counter() - t)
        out[name] = (one, float("nan"))
        rows.append([name, f"{one:,.0f}", "-"])
    table(
        f"Drift detectors: values/s, {points:,} values (River: {river_points:,}); keyed: "
        f"{keys:,} keys in one call",
        ["detector", "one series", f"{keys:,} keys"],
        rows,
    )
    return out


def cli(argv: list[str] | None = None) -> None:
    """``python bench/run.py drift [--quality | --speed] [--repeats N] [--at N] [--after N]``."""
    ap = argparse.ArgumentParser(prog="bench drift", description=__doc__.splitlines()[0])
    ap.add_argument("--quality", action="store_true", help="only the quality table")
    ap.add_argument("--speed", action="store_true", help="only the speed table")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--at", type=int, default=10_000)
    ap.add_argument("--after", type=int, default=5_000)
    ap.add_argument("--points", type=int, default=200_000)
    args = ap.parse_args(argv)
    both = not (args.quality or args.speed)
    if args.quality or both:
        quality(args.at, args.after, args.repeats)
    if args.speed or both:
        speed(args.points)


if __name__ == "__main__":
    cli()
