"""Anomaly detectors: quality on the labelled evaluation set, and points/s, beside River's HST.

``python bench/run.py detect`` prints both tables; ``--quality`` or ``--speed`` only one;
``--against REV`` times the block baselines and ``hst`` of git revision ``REV`` against the
working tree in one process (CPU time and wall clock, scores checked equal bit for bit).

Quality: every detector runs as a :class:`~tidal.ml.detect.step.DetectStep` with its
default parameters and default alert thresholds over the series of
:func:`tidal.ml.detect.evalset.evaluation_set`, in batches of ``--batch`` rows, and its
alerts are scored by :func:`~tidal.ml.detect.evalset.score_alerts` (NAB-style
early-detection score, precision, recall). River's ``HalfSpaceTrees`` (behind River's
``MinMaxScaler``, as River's documentation shows it) scores the same series, one point at a
time, in the same process; its alerts are incidents of ``score >= threshold`` with the same
hysteresis, and its threshold is the best of a grid *on this set* (a favour ours do not get).

Speed: points per second of ``score`` per detector, on one series and on 10,000 keys,
with River's HST on one series.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import rate, table  # noqa: E402
from tidal.core.batch import Batch  # noqa: E402
from tidal.ml.detect import AUTO, DETECTORS, DetectStep, Hysteresis, make  # noqa: E402
from tidal.ml.detect.evalset import Result, Series, evaluation_set, score_alerts  # noqa: E402

RIVER_THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.993, 0.995, 0.997, 0.998, 0.999)


def run_detector(name: str, series: Series, batch: int = 500) -> np.ndarray:
    """The alert flag of every row of ``series`` under detector ``name``."""
    step = DetectStep("d", name, value="value")
    alerts = []
    for i in range(0, len(series.x), batch):
        out = step.detect(Batch({"value": series.x[i : i + batch]}))
        alerts.append(out["alert"])
    return np.concatenate(alerts)


def river_scores(series: Series) -> np.ndarray:
    """River ``MinMaxScaler | HalfSpaceTrees`` scores, one point at a time (NaN skipped)."""
    from river import anomaly, compose, preprocessing

    model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=42))
    out = np.zeros(len(series.x))
    for i, v in enumerate(series.x.tolist()):
        if v != v:  # NaN
            continue
        rec = {"value": v}
        out[i] = model.score_one(rec)
        model.learn_one(rec)
    return out


def river_alerts(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Incidents of ``score >= threshold`` with the hysteresis our detectors use."""
    hyst = Hysteresis(on=threshold, off=threshold, quiet=16)
    alert, _ = hyst.update(scores, np.zeros(len(scores), dtype=np.int64))
    return alert


def quality(batch: int = 500, seed: int = 12) -> dict[str, Result]:
    """Score every detector and River's HST on the evaluation set; print the table."""
    data = evaluation_set(seed)
    results: dict[str, Result] = {}
    per_series: dict[str, list[float]] = {}
    for name in DETECTORS:
        runs = [(s, run_detector(name, s, batch)) for s in data]
        results[name] = score_alerts(runs)
        per_series[name] = [
            score_alerts([r]).nab if r[0].windows else -0.11 * int(r[1].sum()) for r in runs
        ]
    t0 = time.perf_counter()
    scores = [river_scores(s) for s in data]
    river_rate = sum(len(s.x) for s in data) / (time.perf_counter() - t0)
    best = max(
        RIVER_THRESHOLDS,
        key=lambda th: (
            score_alerts((s, river_alerts(sc, th)) for s, sc in zip(data, scores, strict=True)).nab
        ),
    )
    river_runs = [(s, river_alerts(sc, best)) for s, sc in zip(data, scores, strict=True)]
    label = f"river HST (threshold {best}, tuned here)"
    results[label] = score_alerts(river_runs)
    per_series[label] = [
        score_alerts([r]).nab if r[0].windows else -0.11 * int(r[1].sum()) for r in river_runs
    ]
    rows = [
        (
            name + (" (auto)" if name == AUTO else ""),
            f"{r.nab:.1f}",
            f"{r.nab_low_fp:.1f}",
            f"{r.precision:.2f}",
            f"{r.recall:.2f}",
            f"{r.detected}/{r.windows}",
            r.false_alerts,
            f"{r.mean_delay:.1f}",
        )
        for name, r in sorted(results.items(), key=lambda kv: -kv[1].nab_low_fp)
    ]
    n_points = sum(len(s.x) for s in data)
    table(
        f"Detectors on the evaluation set ({len(data)} series, {n_points:,} points, seed {seed})",
        [
            "detector",
            "NAB score",
            "NAB, low-FP profile",
            "alert precision",
            "alert recall",
            "windows found",
            "false alerts",
            "mean delay (points)",
        ],
        rows,
    )
    short = {n: n.split(" ")[0] + (" HST" if n.startswith("river") else "") for n in per_series}
    table(
        "NAB score per series (series without anomalies: -0.11 per false alert)",
        ["series", *short.values()],
        [
            (s.name, *(_cell(per_series[n][i], bool(s.windows)) for n in per_series))
            for i, s in enumerate(data)
        ],
    )
    print(f"river HST ran at {rate(river_rate)} (score_one + learn_one, with MinMaxScaler)")
    return results


def _cell(v: float, labelled: bool) -> str:
    return f"{v:.0f}" if labelled else f"{v:.2f}"


def _time(
    det: Any, x: np.ndarray, keys: np.ndarray, batch: int, warm: int = 0
) -> tuple[float, float]:
    """Points/s of ``det.score`` over ``x[warm:]``, wall clock and per CPU-second.

    The first ``warm`` rows are not timed. The CPU time is the process's (all threads).
    """
    for i in range(0, warm, batch):
        det.score(x[i : min(i + batch, warm)], keys[i : min(i + batch, warm)])
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(warm, len(x), batch):
        det.score(x[i : i + batch], keys[i : i + batch])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = len(x) - warm
    return n / wall, n / max(cpu, 1e-9)


def _data(points: int, keys: int, per_key: int) -> tuple[np.ndarray, ...]:
    """One series of ``points`` values; ``keys`` keys x ``per_key`` values, interleaved."""
    rng = np.random.default_rng(0)
    x = (np.sin(np.arange(points) / 30.0) * 3 + rng.normal(size=points))[:, None]
    one = np.zeros(points, dtype=np.int64)
    n_keyed = keys * per_key
    xk = (np.sin(np.arange(n_keyed) / 30.0) * 3 + rng.normal(size=n_keyed))[:, None]
    many = np.tile(np.arange(keys), per_key)
    return x, one, xk, many


def _load() -> str:
    try:
        return f"load avg {os.getloadavg()[0]:.1f}"
    except OSError:
        return "load avg n/a"


def speed(
    points: int = 1_000_000,
    keys: int = 10_000,
    batch: int = 100_000,
    per_key: int = 800,
    river_points: int = 20_000,
) -> dict[str, tuple[float, float]]:
    """Points/s per detector on one series and on ``keys`` keys; River's HST on one series.

    One series: ``points`` values. Keyed: ``per_key`` values for each of ``keys`` keys,
    interleaved; the first 600 per key (every detector's warm-up, the seasonal detector's
    period learning and HST's first two windows) are not timed. Each rate is given in wall
    clock time and per CPU-second of the process (the latter moves less with the load of a
    shared machine). ``hst`` runs on its default engine (numba where installed, compiled
    before timing); ``hst (numpy engine)`` is the fallback, in the same process.
    """
    from tidal.ml.detect.kernels import has_numba, warm_up
    from tidal.ml.detect.trees import HalfSpaceTrees

    warm_up()
    x, one, xk, many = _data(points, keys, per_key)
    warm = keys * min(600, per_key - 1)
    factories: dict[str, Any] = {name: (lambda name=name: make(name)) for name in DETECTORS}
    if has_numba():
        factories["hst (numpy engine)"] = lambda: HalfSpaceTrees(engine="numpy")
    out: dict[str, tuple[float, float]] = {}
    cpu: dict[str, tuple[float, float]] = {}
    loads: dict[str, str] = {}
    for name, factory in factories.items():
        if name == "iforest":
            n = min(points, 50_000)
            single, single_cpu = _time(factory(), x[:n], one[:n], batch)
            out[name] = (single, float("nan"))  # a forest per key: not for 10,000 keys
            cpu[name] = (single_cpu, float("nan"))
            loads[name] = _load()
            continue
        single, single_cpu = _time(factory(), x, one, batch)
        keyed, keyed_cpu = _time(factory(), xk, many, batch, warm)
        out[name], cpu[name], loads[name] = (single, keyed), (single_cpu, keyed_cpu), _load()
    from river import anomaly

    model = anomaly.HalfSpaceTrees(seed=42)
    vals = np.random.default_rng(1).uniform(size=river_points).tolist()
    t0, c0 = time.perf_counter(), time.process_time()
    for v in vals:
        rec = {"x": v}
        model.score_one(rec)
        model.learn_one(rec)
    river = river_points / (time.perf_counter() - t0)
    river_cpu = river_points / max(time.process_time() - c0, 1e-9)

    def both(w: float, c: float) -> str:
        return f"{rate(w)} ({rate(c)})" if w == w else "n/a (a forest per key)"

    rows = [
        (
            name,
            both(s, cpu[name][0]),
            both(k, cpu[name][1]),
            f"{s / river:.0f}x ({cpu[name][0] / river_cpu:.0f}x)",
            loads[name],
        )
        for name, (s, k) in out.items()
    ]
    rows.append(("river HST (score_one + learn_one)", both(river, river_cpu), "", "1x", _load()))
    table(
        f"Detector speed: one series of {points:,} points; {keys:,} keys x {per_key} points "
        f"(the last {per_key - 600} per key timed); batches of {batch:,}. "
        "Wall clock (per CPU-second)",
        ["detector", "one series", f"{keys:,} keys", "one series vs River HST", "load"],
        rows,
    )
    out["river_hst"] = (river, float("nan"))
    return out


def _old_modules(rev: str) -> dict[str, Any]:
    """The baseline and tree detector classes of git revision ``rev`` (with its ``base``)."""
    import subprocess
    import types

    def source(path: str) -> str:
        cmd = ["git", "-C", str(ROOT), "show", f"{rev}:src/tidal/ml/detect/{path}"]
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

    mods: dict[str, Any] = {}
    base = types.ModuleType("_old_detect_base")
    sys.modules[base.__name__] = base
    exec(compile(source("base.py"), f"{rev}:base.py", "exec"), base.__dict__)  # noqa: S102
    for name in ("baseline", "trees"):
        mod = types.ModuleType(f"_old_detect_{name}")
        sys.modules[mod.__name__] = mod
        text = source(f"{name}.py").replace(
            "tidal.ml.detect.base import", f"{base.__name__} import"
        )
        exec(compile(text, f"{rev}:{name}.py", "exec"), mod.__dict__)  # noqa: S102
        mods[name] = mod
    return mods


def against(
    rev: str,
    points: int = 1_000_000,
    keys: int = 10_000,
    batch: int = 100_000,
    per_key: int = 800,
    runs: int = 3,
) -> dict[str, tuple[float, float]]:
    """Old code (git revision ``rev``) against the working tree, in one process.

    For the block baselines and ``hst``: old and new alternate, ``runs`` times each, on
    the data of :func:`speed`; the best CPU time of each (points per CPU-second, which
    moves less with the load than wall clock) and the best wall time are compared. Scores
    are checked equal bit for bit on the way.
    """
    from tidal.ml.detect.kernels import warm_up

    warm_up()
    old = _old_modules(rev)
    x, one, xk, many = _data(points, keys, per_key)
    warm = keys * min(600, per_key - 1)
    pairs = {
        "median_mad": (old["baseline"].MedianMAD, lambda: make("median_mad")),
        "rolling_z": (old["baseline"].RollingZ, lambda: make("rolling_z")),
        "ewma": (old["baseline"].EWMA, lambda: make("ewma")),
        "hst": (old["trees"].HalfSpaceTrees, lambda: make("hst")),
    }
    rows, out = [], {}
    for name, (old_cls, new) in pairs.items():
        for label, xs, ks, w in (("one series", x, one, 0), (f"{keys:,} keys", xk, many, warm)):
            _check_equal(name, old_cls(), new(), xs[: 3 * batch], ks[: 3 * batch], batch)
            best_old, best_new = (0.0, 0.0), (0.0, 0.0)
            for _ in range(runs):
                o, nw = _time(old_cls(), xs, ks, batch, w), _time(new(), xs, ks, batch, w)
                best_old = (max(best_old[0], o[0]), max(best_old[1], o[1]))
                best_new = (max(best_new[0], nw[0]), max(best_new[1], nw[1]))
            out[f"{name} {label}"] = (best_new[1] / best_old[1], best_new[0] / best_old[0])
            rows.append(
                (
                    f"{name}, {label}",
                    rate(best_old[1]),
                    rate(best_new[1]),
                    f"{best_new[1] / best_old[1]:.1f}x",
                    f"{rate(best_old[0])} -> {rate(best_new[0])}",
                    _load(),
                )
            )
    table(
        f"Detector speed, {rev} against the working tree in one process (best of {runs}, "
        f"alternating; scores equal bit for bit)",
        ["detector", "old, per CPU-s", "new, per CPU-s", "new/old (CPU)", "wall", "load"],
        rows,
    )
    return out


def _check_equal(
    name: str, old: Any, new: Any, x: np.ndarray, keys: np.ndarray, batch: int
) -> None:
    for i in range(0, len(x), batch):
        a, b = (
            old.score(x[i : i + batch], keys[i : i + batch]),
            new.score(x[i : i + batch], keys[i : i + batch]),
        )
        for f in ("deviation", "low", "high"):
            if getattr(a, f).tobytes() != getattr(b, f).tobytes():
                msg = f"{name}: {f} differs between the old and the new code"
                raise AssertionError(msg)


def cli(argv: list[str] | None = None) -> None:
    """``python bench/run.py detect [--quality | --speed] [--points N] [--keys K]``."""
    ap = argparse.ArgumentParser(prog="bench detect", description=__doc__.splitlines()[0])
    ap.add_argument("--quality", action="store_true", help="only the evaluation table")
    ap.add_argument("--speed", action="store_true", help="only the speed table")
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--per-key", type=int, default=800, help="points per key (keyed run)")
    ap.add_argument(
        "--against",
        metavar="REV",
        help="time the baselines and hst of git revision REV against the working tree",
    )
    ap.add_argument("--runs", type=int, default=3, help="--against: runs of each, best kept")
    args = ap.parse_args(argv)
    if args.against:
        against(args.against, args.points, args.keys, args.batch, args.per_key, args.runs)
        return
    both = not (args.quality or args.speed)
    if args.quality or both:
        quality()
    if args.speed or both:
        speed(args.points, args.keys, args.batch, args.per_key)


if __name__ == "__main__":
    cli()
