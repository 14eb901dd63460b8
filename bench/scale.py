"""Scale-out on one machine: the same pipeline with 1 and 2 worker processes.

``python bench/run.py scale [--events N] [--partitions P] [--workers 1,2] [--repeat R]``

Produces ``--events`` events (97 keys, 8 float features, keyed into ``--partitions``
partitions of an embedded-log topic), then runs ``tidal run bench/scale_job.py --workers N``
(a numpy MLP per event, keyed 1 s windows, exactly-once part files, checkpoints every 1 s)
for each N, alternating the worker counts ``--repeat`` times so that a change in the
machine's load hits them alike. Each run is a fresh data directory. BLAS runs single-threaded
in every worker (``OPENBLAS_NUM_THREADS=1``), so one worker uses one core.

Reported: the wall time of the whole command (process start-up, imports, model load and
the final checkpoint included), the run time (the slowest worker's time from open to its
last checkpoint), events/s over the run time, the speed-up against one worker (best run
of each), and the CPU time of all the run's processes (what the split costs, whatever the
load). The load average is printed with every table: on a shared machine
the speed-up is bounded by the cores the other processes leave free.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.common import console, rate, table

JOB = Path(__file__).with_name("scale_job.py")
KEYS = 97


def produce(data: Path, total: int, partitions: int) -> None:
    """``total`` events keyed by ``k``, 1 ms apart, into the topic ``events``."""
    from tidal import Batch
    from tidal.io.log import LogSink

    rng = np.random.default_rng(11)
    sink = LogSink(data, "events", key="k", partitions=partitions)
    sink.open()
    step = 50_000
    for a in range(0, total, step):
        seq = np.arange(a, min(total, a + step), dtype=np.int64)
        cols: dict[str, Any] = {"k": [f"key{k}" for k in (seq % KEYS).tolist()]}
        cols["ts"] = 1_704_067_200_000 + seq
        for i in range(8):
            cols[f"f{i}"] = rng.normal(0, 1, len(seq)).round(4)
        sink.write(Batch(cols, time=cols["ts"]))
    sink.close()


def run_once(data: Path, work: Path, workers: int) -> dict[str, Any]:
    """One ``tidal run`` of the job; its summary plus ``wall`` seconds."""
    env = dict(os.environ)
    env.update(
        BENCH_DATA=str(data),
        BENCH_OUT=str(work / "out"),
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    cmd = [sys.executable, "-m", "tidal.cli", "run", str(JOB), "--json"]
    cmd += ["--workers", str(workers), "--data-dir", str(work / "run")]
    cmd += ["--checkpoint-interval", "1s", "--max-batch", "4096"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers too: they are waited for
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        msg = f"tidal run --workers {workers} failed: {done.stderr.decode()[-2000:]}"
        raise RuntimeError(msg)
    summary: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    summary["wall"] = wall
    summary["cpu"] = cpu
    return summary


def cli(argv: list[str]) -> None:
    """Entry point of ``python bench/run.py scale``."""
    parser = argparse.ArgumentParser(prog="bench/run.py scale")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="tidal-scale-") as tmp:
        root = Path(tmp)
        produce(root / "data", args.events, args.partitions)
        best: dict[int, dict[str, Any]] = {}
        runs: list[list[Any]] = []
        for r in range(args.repeat):
            for n in counts:
                load = os.getloadavg()[0]
                s = run_once(root / "data", root / f"run-{n}-{r}", n)
                seconds = float(s["seconds"])
                cpu, wall = f"{s['cpu']:.2f}", f"{s['wall']:.2f}"
                runs.append([n, r + 1, wall, f"{seconds:.2f}", cpu, f"{load:.2f}"])
                if n not in best or seconds < float(best[n]["seconds"]):
                    best[n] = s
        base = float(best[counts[0]]["seconds"])
        rows = []
        for n in counts:
            s = best[n]
            seconds = float(s["seconds"])
            rows.append(
                [
                    n,
                    f"{s['events']:,}",
                    f"{s['wall']:.2f}",
                    f"{seconds:.2f}",
                    rate(s["events"] / seconds),
                    f"{base / seconds:.2f}x",
                    f"{s['cpu']:.2f}",
                ]
            )
        table(
            f"scale-out on the embedded log: {args.events:,} events, {args.partitions} "
            "partitions, MLP 8-256-256-1 per event + keyed 1 s windows (best run of each)",
            ["workers", "events", "wall s", "run s", "events/s (run)", "speed-up", "CPU s"],
            rows,
        )
        table(
            "every run, in order (load = 1-min load average just before it)",
            ["workers", "run", "wall s", "run s", "CPU s", "load"],
            runs,
        )
    console.print(
        "run s: the slowest worker's time from open to its final checkpoint; wall s adds "
        "process start-up (imports, model load) and the supervisor. CPU s: user + system "
        "time of every process of the run (supervisor and workers): equal CPU s for 1 and "
        "2 workers means the split adds no work, so on free cores the run time halves."
    )


if __name__ == "__main__":
    cli(sys.argv[1:])
