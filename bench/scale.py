"""Scale-out on one machine: the same pipeline with 1 and 2 worker processes.

``python bench/run.py scale [--events N] [--partitions P] [--workers 1,2] [--repeat R]
[--kafka [--bootstrap HOST:PORT]]``

Produces ``--events`` events (97 keys, 8 float features, keyed into ``--partitions``
partitions of an embedded-log topic), then runs ``tidal run bench/scale_job.py --workers N``
(a numpy MLP per event, keyed 1 s windows, exactly-once part files, checkpoints every 1 s)
for each N, alternating the worker counts ``--repeat`` times so that a change in the
machine's load hits them alike. Each run is a fresh data directory. BLAS runs single-threaded
in every worker (``OPENBLAS_NUM_THREADS=1``), so one worker uses one core.

With ``--kafka`` the same events go once into a topic of ``--partitions`` partitions (the
message key is the event's key, so a key stays in one partition) on the project's own
single-node broker, started here on the same machine (it shares the cores with the
workers), or on ``--bootstrap`` / ``$TIDAL_KAFKA``; each run is ``tidal run
bench/scale_job.py --group NAME --workers N`` (Kafka's consumer group assigns the
partitions, a bounded ``KafkaSource`` ends the job, a ``KafkaTransactionalSink`` writes
the windows exactly once) with a new group and output topic.

Reported: the wall time of the whole command (process start-up, imports, model load and
the final checkpoint included), the run time (the slowest worker's time from open to its
last checkpoint; with ``--group`` from joining the group to the end), events/s (the input
events over the run time), the speed-up against one worker (best run of each), and the CPU
time of all the run's processes (what the split costs, whatever the load; not the
broker's). Every run's committed output is checked: its windows count every input event
exactly once. The load average is printed with every table: on a shared machine the
speed-up is bounded by the cores the other processes leave free.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.common import console, rate, table
from tidal import Batch

JOB = Path(__file__).with_name("scale_job.py")
KEYS = 97
COLUMNS = ["workers", "events", "wall s", "run s", "events/s (run)", "speed-up", "CPU s"]
Prepare = Callable[[Path], tuple[dict[str, str], list[str], Callable[[], int]]]
"""A run's set-up: given its work directory, the job's environment, the extra ``tidal run``
arguments, and a function counting the events its committed output windows hold."""


def events(total: int) -> Iterator[Batch]:
    """``total`` events keyed by ``k``, 1 ms apart, in batches of 50,000 (seeded)."""
    rng = np.random.default_rng(11)
    step = 50_000
    for a in range(0, total, step):
        seq = np.arange(a, min(total, a + step), dtype=np.int64)
        cols: dict[str, Any] = {"k": [f"key{k}" for k in (seq % KEYS).tolist()]}
        cols["ts"] = 1_704_067_200_000 + seq
        for i in range(8):
            cols[f"f{i}"] = rng.normal(0, 1, len(seq)).round(4)
        yield Batch(cols, time=cols["ts"])


def produce(sink: Any, total: int) -> None:
    """Write :func:`events` to ``sink`` (keyed by ``k``) and close it."""
    sink.open()
    for batch in events(total):
        sink.write(batch)
    sink.close()


def run_once(env: dict[str, str], work: Path, workers: int, extra: list[str]) -> dict[str, Any]:
    """One ``tidal run`` of the job; its summary plus ``wall`` and ``cpu`` seconds."""
    full = dict(os.environ)
    full.update(env, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "tidal.cli", "run", str(JOB), "--json", *extra]
    cmd += ["--workers", str(workers), "--data-dir", str(work / "run")]
    cmd += ["--checkpoint-interval", "1s", "--max-batch", "4096"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=full, capture_output=True, check=False)
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


def series(args: argparse.Namespace, root: Path, title: str, prepare: Prepare) -> None:
    """Run the job ``--repeat`` times for each worker count; check each output; print tables."""
    counts = [int(x) for x in args.workers.split(",")]
    best: dict[int, dict[str, Any]] = {}
    runs: list[list[Any]] = []
    for r in range(args.repeat):
        for n in counts:
            work = root / f"run-{n}-{r}"
            env, extra, counted = prepare(work)
            load = os.getloadavg()[0]
            s = run_once(env, work, n, extra)
            if (got := counted()) != args.events:
                msg = f"--workers {n}, run {r + 1}: the output windows count {got:,} events, "
                msg += f"not the {args.events:,} of the input"
                raise RuntimeError(msg)
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
                rate(args.events / seconds),
                f"{base / seconds:.2f}x",
                f"{s['cpu']:.2f}",
            ]
        )
    what = f"{args.events:,} events, {args.partitions} partitions, MLP 8-256-256-1 per event"
    table(f"{title}: {what} + keyed 1 s windows (best run of each)", COLUMNS, rows)
    table(
        "every run, in order (load = 1-min load average just before it)",
        ["workers", "run", "wall s", "run s", "CPU s", "load"],
        runs,
    )
    console.print(
        f"Every run's committed windows count all {args.events:,} input events. "
        "events: the events the workers read (with --group, a partition that moved before "
        "its first checkpoint is read again; its output is not doubled). run s: the slowest "
        "worker's time from open to its final checkpoint (with --group: from joining the "
        "group until every partition drained); wall s adds process start-up "
        "(imports, model load) and the supervisor. CPU s: user + system time of every process "
        "of the run (supervisor and workers, not a broker): equal CPU s for 1 and 2 workers "
        "means the split adds no work, so on free cores the run time halves."
    )


def on_log(args: argparse.Namespace, root: Path) -> None:
    """The series over the embedded log (``tidal run --workers N``)."""
    from tidal.io.log import LogSink
    from tidal.io.parts import read_committed

    data = root / "data"
    produce(LogSink(data, "events", key="k", partitions=args.partitions), args.events)

    def prepare(work: Path) -> tuple[dict[str, str], list[str], Callable[[], int]]:
        out = work / "out"
        env = {"BENCH_DATA": str(data), "BENCH_OUT": str(out)}
        return env, [], lambda: sum(int(r["n"]) for r in read_committed(out))

    series(args, root, "scale-out on the embedded log", prepare)


def on_kafka(args: argparse.Namespace, root: Path) -> None:
    """The series over a Kafka topic (``tidal run --group NAME --workers N``)."""
    from bench.kafka import cluster, committed, create
    from tidal.io.kafka import KafkaSink

    with cluster(args.bootstrap) as config:
        topic = create(config, "bench-scale-in", args.partitions)
        options = {"linger.ms": 20, "compression.type": "lz4", "batch.size": 1_000_000}
        produce(KafkaSink(topic, config=config, key="k", producer_options=options), args.events)

        def prepare(work: Path) -> tuple[dict[str, str], list[str], Callable[[], int]]:
            out = create(config, "bench-scale-out", 2)
            env = {"BENCH_BOOTSTRAP": config.bootstrap_servers, "BENCH_TOPIC": topic}
            env["BENCH_OUT"] = out

            def windows() -> int:
                return sum(int(orjson.loads(v)["n"]) for v in committed(config, out))

            return env, ["--group", f"g-{out}"], windows

        where = (
            f"broker at {args.bootstrap}"
            if args.bootstrap
            else f"the broker shares the machine's {os.cpu_count()} cores"
        )
        series(args, root, f"scale-out on Kafka, --group ({where})", prepare)


def cli(argv: list[str]) -> None:
    """Entry point of ``python bench/run.py scale``."""
    parser = argparse.ArgumentParser(prog="bench/run.py scale")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--kafka", action="store_true", help="over Kafka with --group")
    parser.add_argument("--bootstrap", default=None, help="an existing cluster (else start one)")
    args = parser.parse_args(argv)
    if args.bootstrap and not args.kafka:
        parser.error("--bootstrap goes with --kafka")
    with tempfile.TemporaryDirectory(prefix="tidal-scale-") as tmp:
        (on_kafka if args.kafka else on_log)(args, Path(tmp))


if __name__ == "__main__":
    cli(sys.argv[1:])
