"""The closed loop on a planted concept drift: accuracy with retrain -> shadow -> promote vs. none.

A SEA-like stream (three uniform features in [0, 10], label ``a + b > theta``) whose concept
changes (``theta`` 8 -> 13) at ``--at``, written to the embedded log. The same online
logistic regression runs twice over it in one process: once plain (``stream.learn``: it
keeps learning, but slowly unlearns the old concept), once inside ``stream.retrain_loop``
(drift on its errors -> a child process retrains on the newest history replayed from the
log -> shadow -> promote). The table gives the accuracy before the change, between the
change and the promotion, and after the promotion, and the loop's events.

``python bench/run.py retrain-loop [--rows N] [--at N] [--lr X]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import console, machine_line, table
from tidal import Batch, Pipeline
from tidal.io.log import LogSink, LogSource
from tidal.ml.learn.catalog import make
from tidal.ml.learn.loop import RetrainPolicy
from tidal.ml.registry import Registry
from tidal.testing import collect, run

FEATURES = ["a", "b", "c"]


def _write(tmp: Path, rows: int, at: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 10, size=(rows, 3))
    theta = np.where(np.arange(rows) < at, 8.0, 13.0)
    y = (x[:, 0] + x[:, 1] > theta).astype(np.int64)
    sink = LogSink(tmp, "sea", partitions=1)
    sink.write(Batch({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y}))
    sink.close()
    return y


def _plain(tmp: Path, lr: float) -> np.ndarray:
    p = Pipeline("plain")
    s = p.source("in", LogSource(tmp, "sea", bounded=True))
    out = collect(s.learn("m", make("logistic", lr=lr), features=FEATURES, target="y"))
    run(p, max_batch=1000)
    return np.array([r["prediction"] for r in out.records()])


def _loop(tmp: Path, lr: float) -> tuple[np.ndarray, list[dict[str, Any]], float]:
    policy = RetrainPolicy(
        topic="sea", data_dir=tmp, history=1_000, collect=800, adopt_after=500,
        horizon=1_000, epochs=3, workdir=tmp / "jobs",
    )  # fmt: skip
    p = Pipeline("loop")
    s = p.source("in", LogSource(tmp, "sea", bounded=True))
    out = s.retrain_loop(
        "m", "logistic", features=FEATURES, target="y", registry=Registry(tmp / "reg"),
        model="sea", policy=policy, settings={"lr": lr},
    )  # fmt: skip
    rows, events = collect(out), collect(out.side("events"))
    t0 = time.perf_counter()
    run(p, max_batch=1000)
    return (
        np.array([r["prediction"] for r in rows.records()]),
        events.records(),
        time.perf_counter() - t0,
    )


def cli(argv: list[str] | None = None) -> None:
    """``python bench/run.py retrain-loop [--rows N] [--at N] [--lr X]``."""
    ap = argparse.ArgumentParser(prog="bench retrain-loop", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=12_000)
    ap.add_argument("--at", type=int, default=4_000)
    ap.add_argument("--lr", type=float, default=0.05)
    args = ap.parse_args(argv)
    console.print(machine_line())
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        y = _write(tmp, args.rows, args.at)
        plain = _plain(tmp, args.lr)
        looped, events, seconds = _loop(tmp, args.lr)
    promoted = [e for e in events if e["event"] == "promoted" and e["row"] > args.at]
    cut = promoted[0]["row"] if promoted else args.rows
    spans = [("before the change", 0, args.at), ("change -> promotion", args.at, cut)]
    spans.append(("after the promotion", cut, args.rows))
    table(
        f"Prequential accuracy, logistic (SGD lr={args.lr}), concept change at row {args.at}",
        ["rows", "plain learn", "retrain loop"],
        [
            (f"{label} ({a:,}-{b:,})", f"{(plain[a:b] == y[a:b]).mean():.3f}",
             f"{(looped[a:b] == y[a:b]).mean():.3f}")
            for label, a, b in spans if b > a
        ],
    )  # fmt: skip
    finished = [e for e in events if e["event"] == "retrain_finished"]
    table(
        f"Loop events (the whole loop run took {seconds:.1f} s, waiting for jobs included)",
        ["row", "event", "candidate", "serving", "candidate metric"],
        [
            (e["row"], e["event"], e["candidate"], f"{e['serving_metric']:.3f}",
             f"{e['candidate_metric']:.3f}")
            for e in events if e["event"] != "drift"
        ],
    )  # fmt: skip
    if finished:
        import json

        secs = [json.loads(e["detail"])["seconds"] for e in finished]
        console.print(f"retrain jobs: {len(secs)}, seconds inside each job: {secs}")


if __name__ == "__main__":
    cli()
