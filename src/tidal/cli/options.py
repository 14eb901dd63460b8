"""Command-line options of ``tidal``: values from flags, ``TIDAL_*`` variables or defaults."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tidal.core.duration import to_seconds
from tidal.errors import ConfigError
from tidal.runtime.replay import parse_time

if TYPE_CHECKING:
    pass


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
    "--events",
    _count,
    None,
    "stop once the job has read N events since it began (a run resumed from a checkpoint "
    "counts the events before it, so a restarted job ends where it would have; default: "
    "unbounded)",
    "N",
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
    if low not in ("log", "generator", "kafka"):
        msg = f"expected 'log', 'kafka' or 'generator', got {text!r}"
        raise ValueError(msg)
    return low


_SOURCE = _Option(
    "--source",
    _source,
    "log",
    "'log': a feed process writes the readings into the embedded log (topic demo-sensors "
    "under --data-dir) and the pipeline reads them there; 'kafka': the same through Kafka "
    "topics (see --kafka); 'generator': made in the pipeline",
    "log|kafka|generator",
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
_WORKERS = _Option(
    "--workers",
    _positive,
    1,
    "run the pipeline in N worker processes on this machine, each on its share of the "
    "source partitions (at most one per partition), supervised and restarted if they die",
    "N",
)
_GROUP = _Option(
    "--group",
    _text,
    None,
    "run as one worker of this Kafka consumer group (on any machine): Kafka assigns the "
    "partitions, each partition's state moves through Kafka on a rebalance; needs "
    "--checkpoint-interval and a pipeline file with build()",
    "NAME",
)
_REPARTITION_PARTITIONS = _Option(
    "--repartition-partitions",
    _positive,
    None,
    "with --group, when the pipeline groups by a column that is not the input's message "
    "key: partitions of the repartition topic Tidal creates (default: the input's count)",
    "N",
)
_REPARTITION_PURGE_INTERVAL = _Option(
    "--repartition-purge-interval",
    _interval,
    "30s",
    "with --group and a repartition topic: delete each partition's records that the second "
    "stage committed past, at most this often; 'off' to keep them",
    "DURATION",
)
_DATA_DIR = _Option(
    "--data-dir", _text, ".tidal", "where checkpoints (and the embedded log) live", "PATH"
)
_DEAD_LETTERS = _Option(
    "--dead-letters",
    _text,
    None,
    "write every dead letter (step, reason, position, raw record) to this JSON Lines file; "
    "appended to with --checkpoint-interval (a resumed job keeps the earlier ones), "
    "replaced otherwise",
    "FILE",
)
_RESET = _Option(
    "--reset",
    _flag,
    False,
    "start afresh: delete the demo's topic, checkpoints and alerts output under --data-dir "
    "first (refused while a demo runs there)",
    is_flag=True,
)
_NO_LEARN = _Option(
    "--no-learn",
    _flag,
    False,
    "run the demo without its learning branch (the forecaster under the retrain loop)",
    is_flag=True,
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
