"""``tidal log ...``: the embedded log from the command line (see :mod:`tidal.io.log.commands`)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass
from tidal.cli.options import (
    _DATA_DIR,
    _count,
    _duration,
    _flag,
    _Option,
    _positive,
    _text,
)


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
    "delete": (
        "delete a topic and its consumer groups' positions (refused while it is written)",
        (),
    ),
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
    if args.log_command == "delete":
        return log.delete(args.data_dir, args.topic, out=out)
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
