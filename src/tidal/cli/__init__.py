"""The ``tidal`` command line: ``tidal run FILE.py`` and ``tidal demo``.

::

    tidal run FILE.py [--events N] [--max-batch N] [--max-wait 5ms] [--json]
                      [--checkpoint-interval 1s] [--data-dir .tidal]
                      [--from-offset N | --from-time 2024-01-01T00:00:00Z]
                      [--dead-letters dead.jsonl] [--workers N] [--group NAME]
                      [--repartition-partitions N] [--repartition-purge-interval 30s]
    tidal demo [--events N] [--rate R] [--sensors N] [--out alerts] [--json] [--reset]
               [--checkpoint-interval 1s] [--data-dir .tidal]
    tidal log topics | create TOPIC --partitions N [--retention-bytes B] [--retention 7d]
    tidal log describe TOPIC [--json]
    tidal log produce TOPIC [--file F] [--format jsonl|csv] [--key COL] [--partition P]
    tidal log consume TOPIC [--from-beginning] [--max N] [--group G] [--partition P]
    tidal log tail TOPIC [--lines N] [--max N] [--partition P]
    tidal models compress SRC --method int8-dynamic|int8-static|prune|torch-to-onnx
                          --eval FILE --out DST [--calibration FILE]
                          [--max-accuracy-drop 0.005] [--metric accuracy|mae] [--json]
    tidal models list | show NAME[:VERSION] | register FILE --name NAME [--signature S]
    tidal models promote NAME VERSION | rollback NAME | shadow NAME VERSION|off
    tidal models canary NAME VERSION|off --fraction F
    tidal top [--data-dir .tidal] [--pipeline NAME] [--once]

``tidal run --ui`` and ``tidal demo`` (unless ``--no-ui``) serve a live dashboard on
``http://127.0.0.1:8765/``; ``--metrics-port P`` serves Prometheus metrics on ``/metrics``
(see :mod:`tidal.cli.observe`); ``tidal top`` shows the same figures in the terminal.

Every option can also be set with an environment variable ``TIDAL_<OPTION>`` (``--max-wait``
is ``TIDAL_MAX_WAIT``; flags take ``1/true/yes/on`` or ``0/false/no/off``); a command-line
option wins over the environment. ``--help`` names the variable of each option.

``tidal run`` loads a Python file that defines ``pipeline`` (a :class:`~tidal.Pipeline`) or
``build()`` returning one, and optionally ``extra(summary) -> dict`` with figures to add to
the summary. With ``--json`` it prints exactly one JSON object on standard output (whatever
the pipeline itself prints goes to standard error)::

    {"events": 50000, "events_total": 50000, "seconds": 0.08, "events_per_s": 610000.0,
     "latency_ms": {"p50": 7.1, "p99": 9.0, "p999": 9.0}, "late": 0, "dead_letters": 4,
     "counts": {...}, "outputs": {...}, "alerts": 12, ...}

Every figure of the summary is this run's; ``events_total`` counts the job's events since it
began, across restarts from checkpoints, and is what ``--events N`` bounds (so a job killed
and restarted with the same command ends where an uninterrupted one would). ``tidal demo
--reset`` starts the demo afresh instead (its topic, checkpoints and alerts are deleted).
``--dead-letters FILE`` writes each dead letter (step, reason, source position, raw record)
as a line of JSON.

Checkpoints are off unless ``--checkpoint-interval`` is given: then the run checkpoints under
``--data-dir`` (``$TIDAL_DATA_DIR``, default ``.tidal``), restores the newest checkpoint on
start, and makes exactly-once sinks (:mod:`tidal.io.parts`) commit with each checkpoint; a
pipeline with such a sink needs it. ``--from-offset N`` / ``--from-time T`` replay history
(:mod:`tidal.runtime.replay`): state starts empty and every source opens at offset ``N``, or
at its first record at or after ``T`` (an ISO-8601 time or Unix milliseconds), ignoring the
checkpoints. ``tidal demo --checkpoint-interval 1s`` writes its alerts exactly once, as part
files in the directory ``--out`` (default ``alerts``), and resumes where it stopped.

Without ``--json`` a live status line runs while the pipeline does (on a terminal) and a
summary table follows. Ctrl-C (SIGINT) or SIGTERM stops after the current micro-batch and
still prints the summary. Errors print one line on standard error and exit with status 2.

``--workers N`` runs the file in N supervised worker processes, each on its share of the
source partitions; ``--group NAME`` makes this process a member of a Kafka consumer group
whose partitions (and their state) Kafka assigns (:mod:`tidal.cli.workers`, README
"Scaling out").

``tidal models`` manages the model registry (``--registry``, ``$TIDAL_REGISTRY``, default
``<data dir>/registry``; see :mod:`tidal.ml.registry`) and compresses models with an accuracy
gate (:mod:`tidal.ml.compress`): ``compress`` prints the report and exits with status 3,
writing nothing, when the compressed model loses more than ``--max-accuracy-drop``.

Example:
    >>> main(["demo", "--events", "2000", "--rate", "0", "--sensors", "50", "--out", "",
    ...       "--source", "generator", "--checkpoint-interval", "off", "--json"])
    ... # doctest: +ELLIPSIS
    {"events":2000,...,"alerts":0,"sensors":50,"scorecard":{...}}
    0
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import orjson

from tidal.errors import ConfigError, PipelineError, TidalError, os_error_text
from tidal.pipeline import Pipeline
from tidal.runtime.checkpoint import CheckpointConfig
from tidal.runtime.executor import Executor, RunSummary
from tidal.runtime.replay import StartFrom

if TYPE_CHECKING:
    from tidal.io.kafka.config import KafkaConfig
    from tidal.observe.live import LiveRun
    from tidal.observe.status import StatusLine

from tidal.cli.detect import _add_detect
from tidal.cli.kafka import (
    KAFKA_OPTIONS,
    _add_kafka,
    add_kafka_options,
    cluster_given,
    kafka_config,
    project_broker,
)
from tidal.cli.learn import _add_learn
from tidal.cli.log import _add_log
from tidal.cli.models import _add_models
from tidal.cli.observe import DEMO_OBSERVE_OPTIONS, RUN_OBSERVE_OPTIONS, observing
from tidal.cli.options import (
    _CHECKPOINT_INTERVAL,
    _DATA_DIR,
    _DEAD_LETTERS,
    _DEMO_CHECKPOINT_INTERVAL,
    _EVENTS,
    _FROM_OFFSET,
    _FROM_TIME,
    _GROUP,
    _JSON,
    _MAX_BATCH,
    _MAX_WAIT,
    _NO_LEARN,
    _OFF,
    _OUT,
    _RATE,
    _REPARTITION_PARTITIONS,
    _REPARTITION_PURGE_INTERVAL,
    _RESET,
    _SENSORS,
    _SOURCE,
    _WORKERS,
    ENV_PREFIX,
)
from tidal.cli.top import _add_top

__all__ = ["main"]


_RUN_OPTIONS = (
    _EVENTS,
    _MAX_BATCH,
    _MAX_WAIT,
    _JSON,
    _CHECKPOINT_INTERVAL,
    _DATA_DIR,
    _FROM_OFFSET,
    _FROM_TIME,
    _DEAD_LETTERS,
    _WORKERS,
    _GROUP,
    _REPARTITION_PARTITIONS,
    _REPARTITION_PURGE_INTERVAL,
    *RUN_OBSERVE_OPTIONS,
)
_DEMO_OPTIONS = (
    _EVENTS,
    _RATE,
    _SENSORS,
    _OUT,
    _SOURCE,
    _MAX_BATCH,
    _MAX_WAIT,
    _JSON,
    _DEMO_CHECKPOINT_INTERVAL,
    _DATA_DIR,
    _RESET,
    _NO_LEARN,
    *DEMO_OBSERVE_OPTIONS,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidal",
        description="Tidal: real-time AI on event streams, in columnar micro-batches.",
        epilog=f"Every option can also be set with an environment variable ({ENV_PREFIX}...).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run the pipeline defined in a Python file",
        description=(
            "Run FILE.py, which defines `pipeline` (a tidal.Pipeline) or `build()` returning "
            "one, and optionally `extra(summary) -> dict` with figures for the summary."
        ),
    )
    run.add_argument("file", metavar="FILE.py", help="the pipeline file")
    for opt in _RUN_OPTIONS:
        opt.add_to(run)
    run.set_defaults(handler=_run, options=_RUN_OPTIONS)
    demo = commands.add_parser(
        "demo",
        help="the IoT anomaly demo (no server needed)",
        description=(
            "Simulated sensors -> sliding-window features -> z-score anomaly alerts, with "
            "faults injected. Runs until Ctrl-C unless --events is given."
        ),
    )
    for opt in _DEMO_OPTIONS:
        opt.add_to(demo)
    demo.add_argument(
        "--kafka",
        dest="source",
        action="store_const",
        const="kafka",
        help=(
            "run through Kafka topics (= --source kafka): the readings in topic demo-sensors, "
            "the alerts committed exactly once to demo-alerts; without --bootstrap-servers "
            "(TIDAL_KAFKA) it starts the project's broker under --data-dir (`tidal kafka down` "
            "stops it)"
        ),
    )
    demo.add_argument(
        "--learn",
        action="store_true",
        help=(
            "show the small classifier version of the learning loop instead (the main demo "
            "learns too: a forecaster under the retrain loop): an online model serves "
            "overheat predictions, the sensors' calibration changes, and drift -> retrain "
            "(a child process, on history replayed from the log) -> shadow -> promote "
            "happens on screen (registry and log under --data-dir/learn)"
        ),
    )
    add_kafka_options(demo)
    demo.set_defaults(handler=_demo, options=(*_DEMO_OPTIONS, *KAFKA_OPTIONS))
    _add_log(commands)
    _add_models(commands)
    _add_kafka(commands)
    _add_detect(commands)
    _add_learn(commands)
    _add_top(commands)
    return parser


# -- commands ------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tidal`` command line; returns the exit status.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Example:
        >>> main(["run", "no/such/file.py"])
        2
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already reported
        return exc.code if isinstance(exc.code, int) else 2
    try:
        for opt in args.options:
            opt.resolve(args)
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except TidalError as exc:
        print(f"tidal: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only or forbidden path: one line, no traceback
        print(f"tidal: error: {os_error_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tidal: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from tidal.cli.workers import Worker, job_layout, supervise

    worker = Worker.from_env()  # a worker of `--workers N`: handlers first, then the rest
    module = _load(args.file)
    pipeline = _pipeline_of(module, args.file)
    args.checkpoint_dir = None

    def build() -> Pipeline:  # a fresh copy, for re-splitting the state (decision 0052)
        return _pipeline_of(_load(args.file), args.file)

    if args.group:
        from tidal.cli.workers import run_group

        if worker is None and args.workers > 1:
            return supervise(pipeline, args, args.workers, build)
        return run_group(module, pipeline, args, worker)
    if worker is not None:
        worker.setup(pipeline, args)
    elif args.workers > 1:
        from tidal.runtime.workers import worker_count

        count = worker_count(pipeline, args.workers)
        if count > 1:
            return supervise(pipeline, args, count, build)
    if args.dead_letters:
        _dead_letters_to(pipeline, args)
    extra = getattr(module, "extra", None)
    with contextlib.nullcontext() if worker is not None else job_layout(
        pipeline, args, None, build
    ):
        return _execute(
            pipeline,
            args,
            extra=extra if callable(extra) else None,
            around=None if worker is None else lambda executor: worker.running(executor),
        )


def _dead_letters_to(pipeline: Pipeline, args: argparse.Namespace) -> None:
    """``--dead-letters FILE``: the pipeline's dead letters go to a JSON Lines file."""
    from tidal.io.jsonl import JsonlSink

    if pipeline.dead_letters is not None:
        msg = (
            f"pipeline {pipeline.name!r} already sends its dead letters to "
            f"{type(pipeline.dead_letters).__name__}; drop --dead-letters "
            f"({ENV_PREFIX}DEAD_LETTERS) or the pipeline's dead_letters="
        )
        raise ConfigError(msg)
    resumes = args.checkpoint_interval != _OFF
    pipeline.dead_letters = JsonlSink(args.dead_letters, append=resumes)


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    if args.learn:
        from tidal.apps.demo.learning import run_learning_demo

        rows = 20_000 if args.events is None else max(int(args.events), 4_000)
        run_learning_demo(Path(args.data_dir or ".tidal") / "learn", rows=rows)
        return 0

    from tidal.apps.demo import TOPIC, build_demo, reset_demo
    from tidal.apps.demo.pipeline import ALERTS_TOPIC
    from tidal.observe.status import StatusLine

    hz = 10.0
    rate = float(args.sensors * hz) if args.rate is None else (args.rate or None)
    exactly_once = args.checkpoint_interval != _OFF
    from_log = args.source in ("log", "kafka")
    if from_log and not exactly_once:
        where = "on Kafka" if args.source == "kafka" else "on the embedded log"
        msg = (
            f"the demo {where} resumes from its checkpoints: give "
            "--checkpoint-interval a duration (e.g. 1s), or run --source generator"
        )
        raise ConfigError(msg)
    out = args.out
    if out is None:
        out = "alerts" if exactly_once else "alerts.jsonl"
    console = Console()
    say = (lambda line: console.print(line, highlight=False)) if not args.json else None
    kafka = _demo_cluster(args, say) if args.source == "kafka" else None
    if args.reset:
        deleted = reset_demo(args.data_dir, out or None, kafka=kafka)
        if say is not None:
            what = ", ".join(str(p) for p in deleted) if deleted else "nothing to delete"
            say(f"tidal demo --reset: {what}")
    status = StatusLine(
        console, enabled=False if args.json else None, alerts=["alerts"], dead="dropouts"
    )
    pipeline, handles = build_demo(
        sensors=args.sensors,
        rate=rate,
        hz=hz,
        out=out or None,
        screen=None if args.json else status.print,
        exactly_once=exactly_once,
        source=args.source,
        data_dir=args.data_dir,
        kafka=kafka,
        learn=False if args.no_learn else None,
    )
    if say is not None:
        pace = "as fast as possible" if rate is None else f"{rate:,.0f} events/s"
        say(f"tidal demo: {args.sensors:,} sensors at {hz:g} Hz, {pace}")
        if from_log and handles.feed is not None:
            at = handles.feed.next_seq
            resume = f", resuming after {at:,} readings" if at else " (new)"
            if kafka is not None:
                say(f"  readings: Kafka topic {TOPIC} at {kafka.bootstrap_servers}{resume}")
                say(f"  alerts: also Kafka topic {ALERTS_TOPIC} (exactly once, read_committed)")
            else:
                say(f"  readings: log topic {TOPIC} in {args.data_dir}{resume}")
        where = "screen only"
        if out:
            where = f"{out}/ (exactly once)" if exactly_once else out
        say(f"  alerts: {where}; each names the fault behind it")
        say("  dropouts: readings a sensor lost (NaN), sent to the dead letters")
        say("  detectors warm up for 20 s of event time; Ctrl-C stops, a rerun resumes")
        if handles.learner is not None:
            say(
                "  learning: a model forecasts each reading from the sensor's last ones; at "
                "60 s one sensor in 20 starts to vibrate: drift -> retrain -> shadow -> "
                "promote shows as `learn` lines"
            )
        elif handles.learn_note is not None:
            say(f"  {handles.learn_note}")

    def scorecard(summary: RunSummary) -> str:
        line = handles.scorecard_line(summary)
        if handles.learner is not None:
            s = handles.learner.summary()
            line += (
                f"\nlearning: {s['drifts']} drift(s), {s['retrains']} retrain(s), "
                f"{s['promotions']} promoted, {s['rejections']} rejected; serving "
                f"{s['version']}, forecast MAE {s['mae']}"
            )
        return line

    return _execute(
        pipeline,
        args,
        extra=handles.extra,
        status=status,
        title="tidal demo",
        at_limit="stop" if exactly_once else "drain",
        around=lambda executor: handles.feeding(on_error=lambda _: executor.stop()),
        closing=scorecard,
    )


def _demo_cluster(args: argparse.Namespace, say: Callable[[str], None] | None) -> KafkaConfig:
    """``tidal demo --kafka``'s cluster: the one named, else the project's own broker."""
    try:
        from tidal.io.kafka.admin import require_kafka

        require_kafka()
    except ImportError as exc:
        raise ConfigError(str(exc)) from exc
    config = kafka_config(args)
    if cluster_given(args):
        return config
    broker = project_broker(args.data_dir, say)
    return replace(config, bootstrap_servers=broker.bootstrap)


def _execute(
    pipeline: Pipeline,
    args: argparse.Namespace,
    *,
    extra: Callable[[RunSummary], Any] | None = None,
    status: StatusLine | None = None,
    title: str = "tidal run",
    at_limit: Literal["drain", "stop"] = "drain",
    around: Callable[[Executor], AbstractContextManager[Any]] | None = None,
    closing: Callable[[RunSummary], str] | None = None,
) -> int:
    from rich.console import Console

    from tidal.observe.status import StatusLine

    if status is None:
        status = StatusLine(Console(), enabled=False if args.json else None)
    say = None if args.json else (lambda line: status.console.print(line, highlight=False))
    with observing(args, pipeline.name, say=say) as observer:
        return _execute_observed(
            pipeline, args, observer, extra, status, title, at_limit, around, closing
        )


def _execute_observed(
    pipeline: Pipeline,
    args: argparse.Namespace,
    observer: LiveRun | None,
    extra: Callable[[RunSummary], Any] | None,
    status: StatusLine,
    title: str,
    at_limit: Literal["drain", "stop"],
    around: Callable[[Executor], AbstractContextManager[Any]] | None,
    closing: Callable[[RunSummary], str] | None,
) -> int:
    from tidal.observe.status import summary_table

    executor = Executor(
        pipeline,
        max_batch=args.max_batch,
        max_wait=args.max_wait,
        max_events=args.events,
        progress=status.update,
        checkpoint=_checkpoint_config(args),
        start_from=_start_from(args),
        at_limit=at_limit,
        observer=observer,
        freeze_heap=True,
    )
    with _stdout_to_stderr(args.json), status:
        executor.open()  # restores the checkpoint and locks its directory first
        try:
            with contextlib.nullcontext() if around is None else around(executor):
                summary = executor.run()
        finally:
            if executor.store is not None:
                executor.store.unlock()  # (a no-op after a run, which unlocks itself)
    if extra is not None:
        added = extra(summary)
        if not isinstance(added, dict):
            msg = f"extra(summary) must return a dict of figures, got {type(added).__name__}"
            raise PipelineError(msg)
        summary.extra.update(added)
    if args.json:
        sys.stdout.write(orjson.dumps(summary.to_json(), default=str).decode() + "\n")
        sys.stdout.flush()
    else:
        status.console.print(summary_table(summary, title=title))
        if closing is not None:
            status.console.print(closing(summary), highlight=False)
    return 0


def _checkpoint_config(args: argparse.Namespace) -> CheckpointConfig | None:
    if args.checkpoint_interval == _OFF:
        return None
    data_dir = getattr(args, "checkpoint_dir", None) or args.data_dir
    return CheckpointConfig(data_dir=data_dir, interval=args.checkpoint_interval)


def _start_from(args: argparse.Namespace) -> StartFrom | None:
    offset = getattr(args, "from_offset", None)
    when = getattr(args, "from_time", None)
    if offset is not None and when is not None:
        msg = "give --from-offset or --from-time, not both"
        raise ConfigError(msg)
    if offset is None and when is None:
        return None
    return StartFrom(offset=offset, time_ms=when)


@contextlib.contextmanager
def _stdout_to_stderr(active: bool) -> Iterator[None]:
    """With ``--json``, keep stdout for the one JSON object: prints go to stderr."""
    if not active:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


# -- loading a pipeline file ---------------------------------------------------------------
def _load(path_text: str) -> ModuleType:
    path = Path(path_text)
    if not path.is_file():
        msg = (
            f"cannot run {path_text!r}: no such file; give the path of a Python file that "
            "defines `pipeline` or `build()`"
        )
        raise ConfigError(msg)
    name = "__tidal_run__"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        msg = f"cannot run {path_text!r}: not a Python file"
        raise ConfigError(msg)
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except TidalError:
        sys.modules.pop(name, None)
        raise
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        msg = f"{path_text}:{exc.lineno}: syntax error: {exc.msg}"
        raise PipelineError(msg) from exc
    except Exception as exc:
        sys.modules.pop(name, None)
        msg = (
            f"{path_text}{_line_in(exc, path)}: loading the file raised {type(exc).__name__}: {exc}"
        )
        raise PipelineError(msg) from exc
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    return module


def _line_in(exc: BaseException, path: Path) -> str:
    """``:LINE`` of the deepest traceback frame in ``path``, or ``""``."""
    line = ""
    tb = exc.__traceback__
    target = path.resolve()
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == target:
            line = f":{tb.tb_lineno}"
        tb = tb.tb_next
    return line


def _pipeline_of(module: ModuleType, path_text: str) -> Pipeline:
    pipeline = getattr(module, "pipeline", None)
    build = getattr(module, "build", None)
    if pipeline is None and callable(build):
        try:
            pipeline = build()
        except TidalError:
            raise
        except Exception as exc:
            msg = f"{path_text}: build() raised {type(exc).__name__}: {exc}"
            raise PipelineError(msg) from exc
    if not isinstance(pipeline, Pipeline):
        got = "nothing" if pipeline is None else type(pipeline).__name__
        msg = (
            f"{path_text} must define `pipeline = tidal.Pipeline(...)` or `def build() -> "
            f"tidal.Pipeline`; found {got}"
        )
        raise ConfigError(msg)
    return pipeline
