"""``tidal run FILE.py --workers N``: the supervisor's side and the worker's side.

The supervisor loads the file once to plan (every source and sink must split across
workers; no more workers than partitions; the data directory's checkpoints must have been
taken with the same N), then starts N copies of ``tidal run FILE.py --json ...`` with
``TIDAL_WORKER=<i>/<N>`` in their environment (:class:`~tidal.runtime.workers.Supervisor`).
A worker sees that variable, installs its signal handlers, makes its sources read its
partitions only, checkpoints in its own directory and runs as a plain ``tidal run`` would.
At the end the supervisor prints one summary over all workers (``--json``: one JSON
object, with ``workers``, ``restarts`` and ``per_worker``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from tidal.errors import ConfigError, PipelineError
from tidal.observe.summary import RunSummary
from tidal.pipeline import Pipeline
from tidal.runtime.executor import Executor
from tidal.runtime.graph import Graph
from tidal.runtime.workers import (
    CRASH_WORKER_ENV,
    WORKER_ENV,
    Supervisor,
    WorkerResult,
    assign,
    parse_worker,
    worker_dir,
    worker_signals,
)

__all__ = ["PARENT_ENV", "Worker", "supervise"]

PARENT_ENV = "TIDAL_WORKER_PARENT"
"""The supervisor's pid, in each worker's environment."""


class Worker:
    """This process as worker ``index`` of ``count`` (from ``$TIDAL_WORKER``), or ``None``.

    Construct it first thing in ``tidal run`` (signals stay blocked until then).
    """

    def __init__(self, text: str) -> None:
        self.index, self.count = parse_worker(text)
        parent = int(os.environ.get(PARENT_ENV, os.getppid()))
        self.attach: Callable[[Callable[[], None]], None] = worker_signals(parent)

    @classmethod
    def from_env(cls) -> Worker | None:
        """The worker this process is, if a supervisor started it."""
        text = os.environ.get(WORKER_ENV)
        return cls(text) if text else None

    def setup(self, pipeline: Pipeline, args: argparse.Namespace) -> None:
        """Take this worker's partitions, checkpoint directory and dead-letter file."""
        assign(pipeline, self.index, self.count)
        args.checkpoint_dir = worker_dir(args.data_dir, pipeline.name, self.index, self.count)
        if args.dead_letters:
            path = Path(args.dead_letters)
            args.dead_letters = str(path.with_name(f"{path.stem}.w{self.index}{path.suffix}"))

    @contextlib.contextmanager
    def running(self, executor: Executor) -> Iterator[None]:
        """While the executor runs: a stop signal (even one that came earlier) stops it."""
        self.attach(executor.stop)
        yield


@contextlib.contextmanager
def job_layout(
    pipeline: Pipeline, args: argparse.Namespace, workers: int | None, build: Callable[[], Graph]
) -> Iterator[None]:
    """Hold the job's layout lock while it runs; first re-split its state if ``workers`` changed.

    With checkpoints on (and no ``--group``), a data directory whose checkpoints were taken
    by another number of workers (or by one process) is re-split for this run (decision
    0052); the line saying so goes to standard error.

    Raises:
        StateError: if the state cannot be re-split, or another run holds the job.
    """
    if args.checkpoint_interval == "off" or args.group:
        yield
        return
    from tidal.runtime.workers.resplit import JobLayout

    layout = JobLayout(args.data_dir, pipeline.name)
    layout.lock()
    try:
        done = layout.ensure(workers, build)
        if done is not None:
            print(f"tidal run: {done.line()}", file=sys.stderr)
        yield
    finally:
        layout.unlock()


def supervise(
    pipeline: Pipeline, args: argparse.Namespace, count: int, build: Callable[[], Graph]
) -> int:
    """Run ``args.file`` in ``count`` supervised worker processes; returns the exit status.

    Args:
        pipeline: the pipeline, loaded once to plan.
        args: ``tidal run``'s options.
        count: how many workers.
        build: loads a fresh copy of the pipeline (for a re-split, see :func:`job_layout`).

    Raises:
        ConfigError: for options that do not apply to several processes.
        StateError: for checkpoints of another layout that cannot be re-split.
        PipelineError: when a worker keeps failing.
    """
    if args.events is not None:
        msg = (
            "--events bounds one process's run; with --workers stop the job with Ctrl-C, or "
            "let its bounded sources end"
        )
        raise ConfigError(msg)
    with job_layout(pipeline, args, count, build):
        return _supervise(pipeline, args, count)


def _supervise(pipeline: Pipeline, args: argparse.Namespace, count: int) -> int:
    for i in range(count):
        worker_dir(args.data_dir, pipeline.name, i, count).mkdir(parents=True, exist_ok=True)
    crash = os.environ.get(CRASH_WORKER_ENV, "")
    crash_index, _, crash_point = crash.partition(":")

    def env_for(index: int, start: int) -> dict[str, str]:
        env = {WORKER_ENV: f"{index}/{count}", PARENT_ENV: str(os.getpid())}
        if crash and start == 0 and crash_index == str(index):
            env["TIDAL_TEST_CRASH_POINT"] = crash_point
        return env

    def started(index: int, pid: int) -> None:
        pid_file = worker_dir(args.data_dir, pipeline.name, index, count) / "PID"
        tmp = pid_file.with_suffix(".tmp")
        tmp.write_text(f"{pid}\n")
        tmp.replace(pid_file)
        if not args.json:
            print(f"tidal run: worker {index}/{count} started (pid {pid})", file=sys.stderr)

    env = {k: v for k, v in os.environ.items() if k not in (CRASH_WORKER_ENV, WORKER_ENV)}
    supervisor = Supervisor(
        lambda index: _command(args), count, env=env, env_for=env_for, on_start=started
    )
    results = supervisor.run()
    summary = combine(results)
    if args.json:
        sys.stdout.write(orjson.dumps(summary.to_json(), default=str).decode() + "\n")
        sys.stdout.flush()
    else:
        from rich.console import Console

        from tidal.observe.status import summary_table

        Console().print(summary_table(summary, title=f"tidal run --workers {count}"))
    if supervisor.error is not None:
        print(f"tidal: error: {supervisor.error}", file=sys.stderr)
    if supervisor.status == 1:
        msg = supervisor.error or "a worker failed"
        raise PipelineError(msg)
    return supervisor.status


def _command(args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "tidal.cli", "run", str(args.file), "--json"]
    cmd += ["--max-batch", str(args.max_batch), "--max-wait", str(args.max_wait)]
    cmd += ["--checkpoint-interval", str(args.checkpoint_interval)]
    cmd += ["--data-dir", str(args.data_dir)]
    if args.from_offset is not None:
        cmd += ["--from-offset", str(args.from_offset)]
    if args.from_time is not None:
        cmd += ["--from-time", str(args.from_time)]
    if args.dead_letters:
        cmd += ["--dead-letters", str(args.dead_letters)]
    if args.group:
        cmd += ["--group", str(args.group)]
    if getattr(args, "repartition_partitions", None):
        cmd += ["--repartition-partitions", str(args.repartition_partitions)]
    purge = getattr(args, "repartition_purge_interval", None)
    if purge is not None:
        cmd += ["--repartition-purge-interval", str(purge)]
    return cmd


def run_group(
    module: ModuleType, pipeline: Pipeline, args: argparse.Namespace, worker: Worker | None
) -> int:
    """``tidal run FILE.py --group NAME``: this process as one member of the group.

    Raises:
        ConfigError: without checkpoints, or without ``build()`` in the file.
    """
    from tidal.runtime.workers.group import GroupWorker

    if args.checkpoint_interval == "off":
        msg = "--group moves state between workers through checkpoints: give --checkpoint-interval"
        raise ConfigError(msg)
    build = getattr(module, "build", None)
    if not callable(build):
        msg = (
            f"{args.file}: --group builds one copy of the pipeline per partition; define "
            "`def build() -> tidal.Pipeline` instead of a module-level `pipeline`"
        )
        raise ConfigError(msg)
    if args.events is not None:
        msg = "--events is not supported with --group; let bounded sources end, or Ctrl-C"
        raise ConfigError(msg)
    purge = getattr(args, "repartition_purge_interval", "30s")
    group = GroupWorker(
        build,
        args.group,
        interval=args.checkpoint_interval,
        max_batch=args.max_batch,
        max_wait=args.max_wait,
        repartition_partitions=getattr(args, "repartition_partitions", None),
        purge_interval=None if purge == "off" else purge,  # what --...-interval off gives
    )
    if worker is not None:
        worker.attach(group.stop)
    else:
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: group.stop())
    t0 = time.perf_counter()
    stats = group.run()
    seconds = time.perf_counter() - t0
    summary = {"events": stats.events, "seconds": round(seconds, 4), **stats.to_json()}
    summary["group"] = args.group
    if args.json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
        sys.stdout.flush()
    else:
        print(f"tidal run --group {args.group}: {orjson.dumps(summary).decode()}")
    return 0


def combine(results: list[WorkerResult]) -> RunSummary:
    """One summary over the workers' last runs: sums, the longest time, the worst latency.

    Example:
        >>> a = WorkerResult(0, 1, [0], {"events": 10, "events_total": 10, "seconds": 1.0,
        ...                              "late": 0, "dead_letters": 1, "outputs": {"o": 2}})
        >>> b = WorkerResult(1, 2, [-9, 0], {"events": 5, "events_total": 8, "seconds": 2.0,
        ...                                  "late": 1, "dead_letters": 0, "outputs": {"o": 3}})
        >>> s = combine([a, b])
        >>> s.events, s.events_total, s.seconds, s.outputs, s.extra["restarts"]
        (15, 18, 2.0, {'o': 5}, [0, 1])
    """
    sums: dict[str, Any] = {"counts": {}, "outputs": {}}
    latency: dict[str, Any] = {}
    events = restored = late = dead = 0
    seconds = 0.0
    for r in results:
        s = r.summary
        events += int(s.get("events", 0))
        restored += int(s.get("events_total", 0)) - int(s.get("events", 0))
        late += int(s.get("late", 0))
        dead += int(s.get("dead_letters", 0))
        seconds = max(seconds, float(s.get("seconds", 0.0)))
        for part in ("counts", "outputs"):
            for k, v in (s.get(part) or {}).items():
                sums[part][k] = sums[part].get(k, 0) + int(v)
        for k, v in (s.get("latency_ms") or {}).items():
            if isinstance(v, int | float):
                latency[k] = max(latency.get(k, v), v)
    return RunSummary(
        events=events,
        seconds=seconds,
        latency_ms=latency,
        late=late,
        dead_letters=dead,
        counts=sums["counts"],
        outputs=sums["outputs"],
        extra={
            "workers": len(results),
            "restarts": [r.restarts for r in results],
            "per_worker": [r.summary for r in results],
        },
        restored_events=restored,
    )
