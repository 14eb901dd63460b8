"""The ``tidal`` command line: ``tidal run FILE.py`` and ``tidal demo``.

::

    tidal run FILE.py [--events N] [--max-batch N] [--max-wait 5ms] [--json]
                      [--checkpoint-interval 1s] [--data-dir .tidal]
                      [--from-offset N | --from-time 2024-01-01T00:00:00Z]
    tidal demo [--events N] [--rate R] [--sensors N] [--out alerts.jsonl] [--json]
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

Every option can also be set with an environment variable ``TIDAL_<OPTION>`` (``--max-wait``
is ``TIDAL_MAX_WAIT``; flags take ``1/true/yes/on`` or ``0/false/no/off``); a command-line
option wins over the environment. ``--help`` names the variable of each option.

``tidal run`` loads a Python file that defines ``pipeline`` (a :class:`~tidal.Pipeline`) or
``build()`` returning one, and optionally ``extra(summary) -> dict`` with figures to add to
the summary. With ``--json`` it prints exactly one JSON object on standard output (whatever
the pipeline itself prints goes to standard error)::

    {"events": 50000, "seconds": 0.08, "events_per_s": 610000.0,
     "latency_ms": {"p50": 7.1, "p99": 9.0, "p999": 9.0}, "late": 0, "dead_letters": 4,
     "counts": {...}, "outputs": {...}, "alerts": 12, ...}

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

``tidal models`` manages the model registry (``--registry``, ``$TIDAL_REGISTRY``, default
``<data dir>/registry``; see :mod:`tidal.ml.registry`) and compresses models with an accuracy
gate (:mod:`tidal.ml.compress`): ``compress`` prints the report and exits with status 3,
writing nothing, when the compressed model loses more than ``--max-accuracy-drop``.

Example:
    >>> main(["demo", "--events", "2000", "--rate", "0", "--sensors", "50", "--out", "",
    ...       "--source", "generator", "--checkpoint-interval", "off", "--json"])
    ... # doctest: +ELLIPSIS
    {"events":2000,...,"alerts":0,"sensors":50,"faults":0}
    0
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import orjson

from tidal.core.duration import to_seconds
from tidal.errors import ConfigError, PipelineError, TidalError
from tidal.pipeline import Pipeline
from tidal.runtime.checkpoint import CheckpointConfig
from tidal.runtime.executor import Executor, RunSummary
from tidal.runtime.replay import StartFrom, parse_time

if TYPE_CHECKING:
    from tidal.observe.status import StatusLine

__all__ = ["main"]

ENV_PREFIX = "TIDAL_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


# -- option values ------------------------------------------------------------------------
def _count(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        msg = f"expected a whole number, got {text!r}"
        raise ValueError(msg) from None
    if value < 0:
        msg = f"expected a number >= 0, got {text!r}"
        raise ValueError(msg)
    return value


def _positive(text: str) -> int:
    value = _count(text)
    if value == 0:
        msg = f"expected a number > 0, got {text!r}"
        raise ValueError(msg)
    return value


def _duration(text: str) -> str:
    to_seconds(text)  # raises ConfigError (a ValueError) with the accepted forms
    return text


def _rate(text: str) -> float:
    if text.strip().lower() in ("max", "inf"):
        return 0.0
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        msg = f"expected events per second (0 or 'max': as fast as possible), got {text!r}"
        raise ValueError(msg) from None
    if value < 0:
        msg = f"expected a rate >= 0, got {text!r}"
        raise ValueError(msg)
    return value


def _text(text: str) -> str:
    return text


_OFF = "off"


def _interval(text: str) -> str:
    low = text.strip().lower()
    if low in ("off", "no", "none", "0", ""):
        return _OFF
    to_seconds(text)  # raises ConfigError (a ValueError) with the accepted forms
    return text


def _time(text: str) -> int:
    return parse_time(text)  # raises ConfigError (a ValueError) with the accepted forms


def _flag(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    msg = f"expected one of 1/true/yes/on or 0/false/no/off, got {text!r}"
    raise ValueError(msg)


@dataclass(frozen=True)
class _Option:
    """One command-line option with its environment variable and default."""

    flag: str
    convert: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None
    is_flag: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        shown = "" if self.default in (None, False) else f" (default: {self.default})"
        text = f"{self.help}{shown} [env:\N{NO-BREAK SPACE}{self.env}]"
        if self.is_flag:
            parser.add_argument(self.flag, action="store_true", default=None, help=text)
        else:
            parser.add_argument(
                self.flag,
                type=_argtype(self.convert),
                default=None,
                metavar=self.metavar,
                help=text,
            )

    def resolve(self, args: argparse.Namespace) -> None:
        """Fill in the environment variable or the default where the flag was not given."""
        if getattr(args, self.dest) is not None:
            return
        raw = os.environ.get(self.env)
        if raw is None:
            setattr(args, self.dest, self.default)
            return
        try:
            setattr(args, self.dest, self.convert(raw))
        except ValueError as exc:
            msg = f"environment variable {self.env}={raw!r} is not a valid {self.flag}: {exc}"
            raise ConfigError(msg) from None


def _argtype(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = convert.__name__.lstrip("_")
    return parse


_EVENTS = _Option(
    "--events", _count, None, "stop after N events (a bounded run; default: unbounded)", "N"
)
_MAX_BATCH = _Option("--max-batch", _positive, 8192, "most events per micro-batch", "N")
_MAX_WAIT = _Option(
    "--max-wait", _duration, "5ms", "latency budget: wait this long to fill a batch", "DURATION"
)
_JSON = _Option(
    "--json", _flag, False, "print one JSON summary object on stdout, nothing else", is_flag=True
)
_RATE = _Option(
    "--rate",
    _rate,
    None,
    "events per second, 0 or 'max' as fast as possible (default: real time, 10 per sensor)",
    "R",
)
_SENSORS = _Option("--sensors", _positive, 2000, "number of simulated sensors", "N")
_OUT = _Option(
    "--out",
    _text,
    None,
    "where alerts go: a directory of exactly-once part files (default: alerts), or with "
    "--checkpoint-interval off a JSON Lines file (default: alerts.jsonl); '' for none",
    "PATH",
)


def _source(text: str) -> str:
    low = text.strip().lower()
    if low not in ("log", "generator"):
        msg = f"expected 'log' or 'generator', got {text!r}"
        raise ValueError(msg)
    return low


_SOURCE = _Option(
    "--source",
    _source,
    "log",
    "'log': a feed thread writes the readings into the embedded log (topic demo-sensors "
    "under --data-dir) and the pipeline reads them there; 'generator': made in the pipeline",
    "log|generator",
)

_CHECKPOINT_INTERVAL = _Option(
    "--checkpoint-interval",
    _interval,
    _OFF,
    "checkpoint this often (e.g. 1s) and resume from the last checkpoint on start; 'off' for none",
    "DURATION",
)
_DEMO_CHECKPOINT_INTERVAL = _Option(
    "--checkpoint-interval",
    _interval,
    "1s",
    "checkpoint this often, committing the alerts, and resume from the last checkpoint on "
    "start; 'off' for none (needs --source generator)",
    "DURATION",
)
_DATA_DIR = _Option(
    "--data-dir", _text, ".tidal", "where checkpoints (and the embedded log) live", "PATH"
)
_FROM_OFFSET = _Option(
    "--from-offset",
    _count,
    None,
    "replay: start every source partition at offset N with empty state, ignoring checkpoints",
    "N",
)
_FROM_TIME = _Option(
    "--from-time",
    _time,
    None,
    "replay: start at the first record at or after TIME (ISO-8601 or Unix ms), with empty "
    "state; the source must be able to seek by time (the embedded log can)",
    "TIME",
)

_RUN_OPTIONS = (
    _EVENTS,
    _MAX_BATCH,
    _MAX_WAIT,
    _JSON,
    _CHECKPOINT_INTERVAL,
    _DATA_DIR,
    _FROM_OFFSET,
    _FROM_TIME,
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
    demo.set_defaults(handler=_demo, options=_DEMO_OPTIONS)
    _add_log(commands)
    _add_models(commands)
    return parser


# -- tidal log: the embedded log ----------------------------------------------------------
def _log_format(text: str) -> str:
    if text not in ("jsonl", "csv"):
        msg = f"expected jsonl or csv, got {text!r}"
        raise ValueError(msg)
    return text


_LOG_PARTITIONS = _Option("--partitions", _positive, 1, "number of partitions", "N")
_RETENTION_BYTES = _Option(
    "--retention-bytes", _positive, None, "per partition, drop old segments past B bytes", "B"
)
_RETENTION = _Option("--retention", _duration, None, "drop segments older than this", "7d")
_SEGMENT_BYTES = _Option(
    "--segment-bytes", _positive, 64 << 20, "start a new segment file past B bytes", "B"
)
_LOG_JSON = _Option("--json", _flag, False, "print one JSON object", is_flag=True)
_LOG_FILE = _Option("--file", _text, None, "read this file (default: standard input)", "F")
_LOG_FORMAT = _Option(
    "--format", _log_format, None, "jsonl or csv (default: from the file name, else jsonl)", "FMT"
)
_LOG_KEY = _Option("--key", _text, None, "field whose value is the record key", "COL")
_LOG_PARTITION = _Option("--partition", _count, None, "only this partition", "P")
_FROM_BEGINNING = _Option(
    "--from-beginning", _flag, False, "start at the first offset, not the group's", is_flag=True
)
_LOG_MAX = _Option("--max", _positive, None, "stop after N records", "N")
_LOG_GROUP = _Option(
    "--group", _text, None, "consumer group: start at its positions, commit as printed", "G"
)
_LOG_LINES = _Option("--lines", _count, 10, "start N records before each partition's end", "N")

_LOG_COMMANDS: dict[str, tuple[str, tuple[_Option, ...]]] = {
    "topics": ("list the topics", ()),
    "create": (
        "create a topic",
        (_LOG_PARTITIONS, _RETENTION_BYTES, _RETENTION, _SEGMENT_BYTES),
    ),
    "describe": ("partitions, offsets, sizes and group positions of a topic", (_LOG_JSON,)),
    "produce": (
        "append JSON Lines or CSV from a file or standard input",
        (_LOG_FILE, _LOG_FORMAT, _LOG_KEY, _LOG_PARTITION),
    ),
    "consume": (
        "print the records as JSON Lines, then stop",
        (_FROM_BEGINNING, _LOG_MAX, _LOG_GROUP, _LOG_PARTITION),
    ),
    "tail": (
        "print the last records, then follow (Ctrl-C stops)",
        (_LOG_LINES, _LOG_MAX, _LOG_PARTITION),
    ),
}


def _add_log(commands: Any) -> None:
    log = commands.add_parser(
        "log",
        help="the embedded log: topics, produce, consume",
        description=(
            "Kafka-like topics in files under the data directory: no server needed. "
            "`consume` and `tail` print JSON Lines and work in pipes."
        ),
    )
    sub = log.add_subparsers(dest="log_command", required=True, metavar="COMMAND")
    for name, (text, options) in _LOG_COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        if name != "topics":
            p.add_argument("topic", metavar="TOPIC", help="the topic")
        for opt in (*options, _DATA_DIR):
            opt.add_to(p)
        p.set_defaults(handler=_log_command, options=(*options, _DATA_DIR))


def _log_command(args: argparse.Namespace) -> int:
    from tidal.io.log import commands as log

    out = sys.stdout
    if args.log_command == "topics":
        return log.topics(args.data_dir, out=out)
    if args.log_command == "create":
        return log.create(
            args.data_dir,
            args.topic,
            partitions=args.partitions,
            retention_bytes=args.retention_bytes,
            retention=args.retention,
            segment_bytes=args.segment_bytes,
            out=out,
        )
    if args.log_command == "describe":
        return log.describe(args.data_dir, args.topic, as_json=args.json, out=out)
    if args.log_command == "produce":
        return log.produce(
            args.data_dir,
            args.topic,
            file=args.file,
            fmt=args.format,
            key=args.key,
            partition=args.partition,
            out=out,
        )
    if args.log_command == "consume":
        return log.consume(
            args.data_dir,
            args.topic,
            from_beginning=args.from_beginning,
            max_records=args.max,
            group=args.group,
            partition=args.partition,
        )
    return log.tail(
        args.data_dir, args.topic, lines=args.lines, max_records=args.max, partition=args.partition
    )


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
    except KeyboardInterrupt:
        print("tidal: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    module = _load(args.file)
    pipeline = _pipeline_of(module, args.file)
    extra = getattr(module, "extra", None)
    return _execute(pipeline, args, extra=extra if callable(extra) else None)


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tidal.demo import TOPIC, build_demo
    from tidal.observe.status import StatusLine

    hz = 10.0
    rate = float(args.sensors * hz) if args.rate is None else (args.rate or None)
    exactly_once = args.checkpoint_interval != _OFF
    from_log = args.source == "log"
    if from_log and not exactly_once:
        msg = (
            "the demo on the embedded log resumes from its checkpoints: give "
            "--checkpoint-interval a duration (e.g. 1s), or run --source generator"
        )
        raise ConfigError(msg)
    out = args.out
    if out is None:
        out = "alerts" if exactly_once else "alerts.jsonl"
    console = Console()
    status = StatusLine(console, enabled=False if args.json else None, alerts=["alerts"])
    pipeline, handles = build_demo(
        sensors=args.sensors,
        rate=rate,
        hz=hz,
        out=out or None,
        screen=None if args.json else status.print,
        exactly_once=exactly_once,
        source=args.source,
        data_dir=args.data_dir,
    )
    if not args.json:
        pace = "as fast as possible" if rate is None else f"{rate:,.0f} events/s"
        where = "alerts on screen only"
        if out:
            where = f"alerts -> {out}/ (exactly once)" if exactly_once else f"alerts -> {out}"
        via = ""
        if from_log and handles.feed is not None:
            at = handles.feed.next_seq
            via = f" -> log topic {TOPIC} in {args.data_dir}" + (
                f" (resuming after {at:,} readings)" if at else ""
            )
        console.print(
            f"tidal demo: {args.sensors:,} sensors at {hz:g} Hz, {pace}{via}; {where}. "
            "Detectors warm up for the first 20 s of event time; Ctrl-C stops, and a "
            "restart continues where it stopped.",
            highlight=False,
            soft_wrap=True,
        )
    return _execute(
        pipeline,
        args,
        extra=handles.extra,
        status=status,
        title="tidal demo",
        at_limit="stop" if exactly_once else "drain",
        around=lambda executor: handles.feeding(on_error=lambda _: executor.stop()),
    )


def _execute(
    pipeline: Pipeline,
    args: argparse.Namespace,
    *,
    extra: Callable[[RunSummary], Any] | None = None,
    status: StatusLine | None = None,
    title: str = "tidal run",
    at_limit: Literal["drain", "stop"] = "drain",
    around: Callable[[Executor], AbstractContextManager[Any]] | None = None,
) -> int:
    from rich.console import Console

    from tidal.observe.status import StatusLine, summary_table

    if status is None:
        status = StatusLine(Console(), enabled=False if args.json else None)
    executor = Executor(
        pipeline,
        max_batch=args.max_batch,
        max_wait=args.max_wait,
        max_events=args.events,
        progress=status.update,
        checkpoint=_checkpoint_config(args),
        start_from=_start_from(args),
        at_limit=at_limit,
    )
    context = contextlib.nullcontext() if around is None else around(executor)
    with _stdout_to_stderr(args.json), status, context:
        summary = executor.run()
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
    return 0


def _checkpoint_config(args: argparse.Namespace) -> CheckpointConfig | None:
    if args.checkpoint_interval == _OFF:
        return None
    return CheckpointConfig(data_dir=args.data_dir, interval=args.checkpoint_interval)


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


# -- models: the registry and compression ---------------------------------------------------
def _choice(*allowed: str) -> Callable[[str], str]:
    def choice(text: str) -> str:
        if text not in allowed:
            msg = f"expected one of {', '.join(allowed)}, got {text!r}"
            raise ValueError(msg)
        return text

    return choice


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        msg = f"expected a number, got {text!r}"
        raise ValueError(msg) from None
    if value < 0:
        msg = f"expected a number >= 0, got {text!r}"
        raise ValueError(msg)
    return value


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


_REGISTRY = _Option(
    "--registry", _text, None, "the model registry directory (default: <data dir>/registry)", "DIR"
)
_MODELS_JSON = _Option("--json", _flag, False, "print JSON on stdout", is_flag=True)
_METHOD = _Option(
    "--method",
    _choice("int8-dynamic", "int8-static", "prune", "torch-to-onnx"),
    None,
    "int8-dynamic, int8-static, prune or torch-to-onnx (required)",
    "METHOD",
)
_EVAL = _Option("--eval", _text, None, "evaluation set: .npz (X, y) or .parquet (required)", "FILE")


@dataclass(frozen=True)
class _OwnEnvOption(_Option):
    """An option whose environment variable is not ``TIDAL_<FLAG>``.

    For a flag whose name another command uses with another meaning: ``tidal demo --out``
    reads ``TIDAL_OUT``, and setting it for the demo must not move compressed models.
    """

    env_var: str = ""

    @property
    def env(self) -> str:
        return self.env_var


_DST = _OwnEnvOption(
    "--out",
    _text,
    None,
    "where the compressed model goes (required)",
    "DST",
    env_var="TIDAL_COMPRESS_OUT",
)
_CALIBRATION = _Option(
    "--calibration",
    _text,
    None,
    "int8-static calibration sample, .npz (X) or .parquet (default: 512 evaluation rows)",
    "FILE",
)
_MAX_DROP = _Option(
    "--max-accuracy-drop",
    _share,
    0.005,
    "refuse a model whose metric drops more (for mae: whose error grows more)",
    "X",
)
_METRIC = _Option("--metric", _choice("accuracy", "mae"), "accuracy", "accuracy or mae", "NAME")
_ARCH = _Option(
    "--arch", _text, None, "PyTorch architecture of a state dict: package.module:factory", "SPEC"
)
_AMOUNT = _Option("--amount", _share, 0.5, "fraction of weights prune sets to zero", "X")
_LABEL = _Option("--label", _text, "label", "Parquet column with the true values", "COLUMN")
_FEATURES = _Option(
    "--features",
    _names,
    None,
    "Parquet feature columns, comma-separated (default: the rest)",
    "A,B",
)
_OUTPUT = _Option("--output", _text, None, "the model output the metric judges", "NAME")
_THREADS = _Option("--threads", _positive, 1, "threads per model while timing", "N")
_REGISTER_AS = _Option(
    "--register", _text, None, "register the compressed model under this name if it passes", "NAME"
)
_SIGNATURE = _Option(
    "--signature",
    _text,
    None,
    "input columns: a,b,c, a JSON object like signature.json, or a JSON file",
    "S",
)
_METRICS = _Option("--metrics", _text, None, "metrics: a JSON object or a JSON file", "JSON")
_PARENT = _Option("--parent", _positive, None, "the version this one derives from", "N")
_COMPRESSION = _Option("--compression", _text, None, "the compression applied", "METHOD")
_DATA_RANGE = _Option(
    "--data-range", _text, None, "the training data's range, FROM..TO", "FROM..TO"
)
_PROMOTE = _Option("--promote", _flag, False, "promote the new version at once", is_flag=True)
_FRACTION = _Option("--fraction", _share, 0.1, "fraction of keys the canary scores", "F")


def _add_models(commands: Any) -> None:
    models = commands.add_parser(
        "models",
        help="model registry and compression",
        description="Compress models with an accuracy gate; register, promote, roll back, "
        "shadow and canary versions in the model registry.",
    )
    sub = models.add_subparsers(dest="models_command", required=True, metavar="COMMAND")

    def leaf(
        name: str,
        help_text: str,
        handler: Callable[[argparse.Namespace], int],
        options: tuple[_Option, ...],
        *positional: tuple[str, str],
    ) -> None:
        p = sub.add_parser(name, help=help_text, description=help_text)
        for arg, text in positional:
            p.add_argument(arg, help=text)
        for opt in (*options, _REGISTRY, _MODELS_JSON):
            opt.add_to(p)
        p.set_defaults(handler=handler, options=(*options, _REGISTRY, _MODELS_JSON))

    leaf(
        "compress",
        "compress a model, compare it with the original on an evaluation set, and write it "
        "only if the accuracy gate passes (exit status 3 if not)",
        _models_compress,
        (
            _METHOD,
            _EVAL,
            _DST,
            _CALIBRATION,
            _MAX_DROP,
            _METRIC,
            _ARCH,
            _AMOUNT,
            _LABEL,
            _FEATURES,
            _OUTPUT,
            _THREADS,
            _REGISTER_AS,
        ),
        ("src", "the model: an .onnx file, or a PyTorch state dict with --arch"),
    )
    leaf("list", "list the registered models and their stages", _models_list, ())
    leaf(
        "show",
        "show a model version (default: production)",
        _models_show,
        (),
        ("model", "NAME or NAME:VERSION"),
    )
    leaf(
        "register",
        "add a model file as the next version",
        _models_register,
        (_NAME_OPT, _SIGNATURE, _METRICS, _PARENT, _COMPRESSION, _DATA_RANGE, _ARCH, _PROMOTE),
        ("file", "the model file (.onnx, .skops, .pt)"),
    )
    leaf(
        "promote",
        "make VERSION the production version",
        _models_promote,
        (),
        ("name", "the model"),
        ("version", "the version (3 or v3)"),
    )
    leaf(
        "rollback",
        "put the previous production version back",
        _models_rollback,
        (),
        ("name", "the model"),
    )
    leaf(
        "shadow",
        "score VERSION in shadow next to production ('off' to stop)",
        _models_shadow,
        (),
        ("name", "the model"),
        ("version", "the version, or off"),
    )
    leaf(
        "canary",
        "route a fraction of keys to VERSION ('off' to stop)",
        _models_canary,
        (_FRACTION,),
        ("name", "the model"),
        ("version", "the version, or off"),
    )


_NAME_OPT = _Option("--name", _text, None, "the model's name (required)", "NAME")


def _registry(args: argparse.Namespace) -> Any:
    from tidal.ml.registry import Registry

    return Registry(args.registry)


def _required(args: argparse.Namespace, *opts: _Option) -> None:
    for opt in opts:
        if getattr(args, opt.dest) is None:
            msg = f"{opt.flag} is required (or set {opt.env})"
            raise ConfigError(msg)


def _json_arg(text: str, what: str) -> Any:
    path = Path(text)
    raw = path.read_text(encoding="utf-8") if path.is_file() else text
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        msg = f"{what} must be JSON or a JSON file, got {text!r}: {exc}"
        raise ConfigError(msg) from None


def _print_json(data: Any, *, indent: bool) -> None:
    opt = orjson.OPT_INDENT_2 if indent else 0
    sys.stdout.write(orjson.dumps(data, default=str, option=opt).decode() + "\n")


def _models_compress(args: argparse.Namespace) -> int:
    from tidal.ml.compress import CompressionRefused, EvalSet, compress, read_features
    from tidal.ml.registry import Lineage

    _required(args, _METHOD, _EVAL, _DST)
    feats = args.features or ()
    eval_set = EvalSet.load(args.eval, label=args.label, features=feats)
    calibration = None
    if args.calibration:
        calibration = read_features(args.calibration, label=args.label, features=feats)
    try:
        report = compress(
            args.src,
            args.out,
            method=args.method,
            eval_set=eval_set,
            calibration=calibration,
            metric=args.metric,
            max_accuracy_drop=args.max_accuracy_drop,
            arch=args.arch,
            amount=args.amount,
            output=args.output,
            threads=args.threads,
        )
    except CompressionRefused as exc:
        if args.json:
            _print_json(exc.report.to_json(), indent=False)
        else:
            print(exc.report.table())
        print(f"tidal: refused: {exc}", file=sys.stderr)
        return 3
    result = report.to_json()
    if args.register:
        lineage = Lineage(compression=args.method, extra={"source_model": str(args.src)})
        mv = _registry(args).register(
            args.out, name=args.register, metrics=report.metrics(), lineage=lineage
        )
        result["registered"] = {"name": mv.name, "version": mv.version}
    if args.json:
        _print_json(result, indent=False)
    else:
        print(report.table())
        if args.register:
            print(f"registered as {args.register} v{result['registered']['version']}")
    return 0


def _stages_line(name: str, stages: Any) -> str:
    prod = "-" if stages.production is None else f"v{stages.production}"
    prev = ",".join(f"v{v}" for v in stages.previous) or "-"
    shadow = "-" if stages.shadow is None else f"v{stages.shadow}"
    canary = (
        "-"
        if stages.canary is None
        else f"v{stages.canary.version} ({stages.canary.fraction:g} of keys)"
    )
    return f"{name}: production {prod}, previous {prev}, shadow {shadow}, canary {canary}"


def _models_list(args: argparse.Namespace) -> int:
    reg = _registry(args)
    rows = []
    for name in reg.models():
        versions = [v.version for v in reg.versions(name)]
        rows.append({"name": name, "versions": versions, "stages": reg.stages(name).to_dict()})
    if args.json:
        _print_json({"registry": str(reg.root), "models": rows}, indent=False)
        return 0
    if not rows:
        print(f"no models in {reg.root}")
    for row in rows:
        listed = ",".join(f"v{v}" for v in row["versions"])
        print(f"{_stages_line(row['name'], reg.stages(row['name']))}; versions {listed}")
    return 0


def _models_show(args: argparse.Namespace) -> int:
    reg = _registry(args)
    name, _, version = args.model.partition(":")
    mv = reg.get(name, version or None)
    data = mv.to_dict()
    data["stages"] = reg.stages(name).to_dict()
    _print_json(data, indent=not args.json)
    return 0


def _models_register(args: argparse.Namespace) -> int:
    from tidal.ml.registry import Lineage

    _required(args, _NAME_OPT)
    reg = _registry(args)
    signature: Any = None
    if args.signature:
        text = args.signature.strip()
        if text.startswith("{") or Path(text).is_file():
            signature = _json_arg(text, "--signature")
        else:
            signature = _names(text)
    metrics = _json_arg(args.metrics, "--metrics") if args.metrics else None
    data_range = None
    if args.data_range:
        lo, sep, hi = args.data_range.partition("..")
        if not sep:
            msg = f"--data-range is FROM..TO, got {args.data_range!r}"
            raise ConfigError(msg)
        data_range = (lo, hi)
    lineage = Lineage(
        data_range=data_range,
        parent=args.parent,
        compression=args.compression,
        extra={"arch": args.arch} if args.arch else {},
    )
    mv = reg.register(
        args.file, name=args.name, signature=signature, metrics=metrics, lineage=lineage
    )
    stages = reg.promote(mv.name, mv.version) if args.promote else reg.stages(mv.name)
    if args.json:
        _print_json({**mv.to_dict(), "stages": stages.to_dict()}, indent=False)
    else:
        print(f"registered {mv.name} v{mv.version} in {mv.path}")
        print(_stages_line(mv.name, stages))
    return 0


def _stage_result(args: argparse.Namespace, name: str, stages: Any) -> int:
    if args.json:
        _print_json({"name": name, "stages": stages.to_dict()}, indent=False)
    else:
        print(_stages_line(name, stages))
    return 0


def _off(text: str) -> str | None:
    return None if text.strip().lower() in ("off", "none", "-") else text


def _models_promote(args: argparse.Namespace) -> int:
    return _stage_result(args, args.name, _registry(args).promote(args.name, args.version))


def _models_rollback(args: argparse.Namespace) -> int:
    return _stage_result(args, args.name, _registry(args).rollback(args.name))


def _models_shadow(args: argparse.Namespace) -> int:
    stages = _registry(args).shadow(args.name, _off(args.version))
    return _stage_result(args, args.name, stages)


def _models_canary(args: argparse.Namespace) -> int:
    stages = _registry(args).canary(args.name, _off(args.version), fraction=args.fraction)
    return _stage_result(args, args.name, stages)


if __name__ == "__main__":  # python -m tidal.cli
    raise SystemExit(main())
