"""``tidal kafka ...``: the project's own broker (up, status, down) and tools for any cluster.

::

    tidal kafka up [--data-dir .tidal] [--port 9092]     # prints the bootstrap address
    tidal kafka status | down [--data-dir .tidal]
    tidal kafka topics [--all]
    tidal kafka create TOPIC --partitions N [--replication-factor R] [--config k=v ...]
    tidal kafka delete TOPIC
    tidal kafka describe TOPIC [--json]                 # partitions, end offsets, group lag
    tidal kafka produce TOPIC [--file F] [--key FIELD] [--partition P]   # JSON Lines in
    tidal kafka consume TOPIC [--from-beginning] [--max N] [--group G] [--partition P]

The tools take ``--bootstrap-servers`` (``$TIDAL_KAFKA``, default ``127.0.0.1:9092``, where
``up`` puts the broker) and the TLS/SASL settings of :class:`~tidal.io.kafka.KafkaConfig`
(``--security-protocol``, ``--sasl-mechanism``, ``--sasl-username``, ``--sasl-password``,
``--ssl-ca-location``, ...; each also from ``$TIDAL_KAFKA_...``), plus ``-X key=value`` for
any other librdkafka setting. The broker of ``up`` lives in ``<data dir>/kafka`` and runs
detached from the terminal until ``down``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tidal.cli.options import _DATA_DIR, _count, _flag, _Option, _positive, _text
from tidal.errors import ConfigError
from tidal.io.kafka.config import DEFAULT_BOOTSTRAP, KafkaConfig

__all__ = ["KAFKA_OPTIONS", "cluster_given", "kafka_config", "project_broker"]

_UP_PORT = 9092  # what KafkaConfig's default bootstrap points at


@dataclass(frozen=True)
class _KafkaOption(_Option):
    """An option whose environment variable is named, not derived from the flag."""

    variable: str = ""

    @property
    def env(self) -> str:
        return self.variable or super().env


def _protocol(text: str) -> str:
    value = text.strip().upper()
    if value not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        msg = f"expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, got {text!r}"
        raise ValueError(msg)
    return value


_BOOTSTRAP = _KafkaOption(
    "--bootstrap-servers",
    _text,
    DEFAULT_BOOTSTRAP,
    "the Kafka cluster, host:port[,host:port...]",
    "HOST:PORT",
    variable="TIDAL_KAFKA",
)
_SECURITY = (
    _KafkaOption(
        "--security-protocol",
        _protocol,
        "PLAINTEXT",
        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
        "P",
        variable="TIDAL_KAFKA_SECURITY_PROTOCOL",
    ),
    _KafkaOption(
        "--sasl-mechanism",
        _text,
        None,
        "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ...",
        "M",
        variable="TIDAL_KAFKA_SASL_MECHANISM",
    ),
    _KafkaOption(
        "--sasl-username", _text, None, "SASL user", "U", variable="TIDAL_KAFKA_SASL_USERNAME"
    ),
    _KafkaOption(
        "--sasl-password",
        _text,
        None,
        "SASL password (prefer the environment variable)",
        "P",
        variable="TIDAL_KAFKA_SASL_PASSWORD",
    ),
    _KafkaOption(
        "--ssl-ca-location",
        _text,
        None,
        "CA certificate file to verify the brokers",
        "FILE",
        variable="TIDAL_KAFKA_SSL_CA_LOCATION",
    ),
    _KafkaOption(
        "--ssl-certificate-location",
        _text,
        None,
        "client certificate (mutual TLS)",
        "FILE",
        variable="TIDAL_KAFKA_SSL_CERTIFICATE_LOCATION",
    ),
    _KafkaOption(
        "--ssl-key-location",
        _text,
        None,
        "client private key (mutual TLS)",
        "FILE",
        variable="TIDAL_KAFKA_SSL_KEY_LOCATION",
    ),
)
KAFKA_OPTIONS: tuple[_Option, ...] = (_BOOTSTRAP, *_SECURITY)
"""The connection options every Kafka command takes (see :func:`kafka_config`)."""


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            msg = f"{flag} takes key=value, got {item!r}"
            raise ConfigError(msg)
        out[k.strip()] = v
    return out


def add_kafka_options(parser: argparse.ArgumentParser) -> None:
    """Add :data:`KAFKA_OPTIONS` and ``-X key=value`` to a command's parser."""
    for opt in KAFKA_OPTIONS:
        opt.add_to(parser)
    parser.add_argument(
        "-X",
        "--client-config",
        dest="client_config",
        action="append",
        metavar="KEY=VALUE",
        help="any other librdkafka setting, e.g. -X compression.type=lz4 (repeatable)",
    )


def kafka_config(args: argparse.Namespace) -> KafkaConfig:
    """The :class:`KafkaConfig` of resolved :data:`KAFKA_OPTIONS` (and ``-X`` settings)."""
    return KafkaConfig(
        bootstrap_servers=args.bootstrap_servers,
        security_protocol=args.security_protocol,
        sasl_mechanism=args.sasl_mechanism,
        sasl_username=args.sasl_username,
        sasl_password=args.sasl_password,
        ssl_ca_location=args.ssl_ca_location,
        ssl_certificate_location=args.ssl_certificate_location,
        ssl_key_location=args.ssl_key_location,
        extra=_pairs(getattr(args, "client_config", None), "-X"),
    )


# -- the commands ------------------------------------------------------------------------
_PORT = _KafkaOption(
    "--port",
    _positive,
    None,
    f"the broker's client port (default: the last one used in --data-dir, else {_UP_PORT})",
    "PORT",
    variable="TIDAL_KAFKA_PORT",
)
_ALL = _Option(
    "--all", _flag, False, "include internal topics (__consumer_offsets...)", is_flag=True
)
_PARTITIONS = _Option("--partitions", _positive, 1, "number of partitions", "N")
_REPLICATION = _Option(
    "--replication-factor",
    int,
    -1,
    "replicas per partition (-1: the broker's default)",
    "R",
)
_JSON = _Option("--json", _flag, False, "print one JSON object", is_flag=True)
_FILE = _Option("--file", _text, None, "read this JSON Lines file (default: standard input)", "F")
_KEY = _Option("--key", _text, None, "field whose value is the record key", "FIELD")
_PARTITION = _Option("--partition", _count, None, "only this partition", "P")
_FROM_BEGINNING = _Option(
    "--from-beginning", _flag, False, "start at the first offset, not the group's", is_flag=True
)
_MAX = _Option("--max", _positive, None, "stop after N records", "N")
_GROUP = _Option(
    "--group", _text, None, "consumer group: start at its offsets, commit as printed", "G"
)

_BROKER_COMMANDS: dict[str, tuple[str, tuple[_Option, ...]]] = {
    "up": (
        "start the project's own Kafka broker in the background and print its address",
        (_PORT, _DATA_DIR),
    ),
    "status": ("say whether the broker of `tidal kafka up` runs, and where", (_DATA_DIR,)),
    "down": ("stop the broker of `tidal kafka up`", (_DATA_DIR,)),
}
_TOOLS: dict[str, tuple[str, tuple[_Option, ...]]] = {
    "topics": ("list the topics", (_ALL,)),
    "create": ("create a topic", (_PARTITIONS, _REPLICATION)),
    "delete": ("delete a topic", ()),
    "describe": ("partitions, end offsets and consumer-group lag of a topic", (_JSON,)),
    "produce": (
        "send JSON Lines from a file or standard input, one record per line",
        (_FILE, _KEY, _PARTITION),
    ),
    "consume": (
        "print the records as JSON Lines (read_committed), then stop",
        (_FROM_BEGINNING, _MAX, _GROUP, _PARTITION),
    ),
}


def _add_kafka(commands: Any) -> None:
    kafka = commands.add_parser(
        "kafka",
        help="Apache Kafka: the project's own broker, topics, produce, consume",
        description=(
            "`up`/`status`/`down` run a single-node Apache Kafka broker (jars from Maven "
            "Central; needs Java 17 and Maven) under --data-dir. The other commands work "
            "on any cluster: --bootstrap-servers or TIDAL_KAFKA says which."
        ),
    )
    sub = kafka.add_subparsers(dest="kafka_command", required=True, metavar="COMMAND")
    for name, (text, options) in _BROKER_COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        for opt in options:
            opt.add_to(p)
        p.set_defaults(handler=_broker_command, options=options)
    for name, (text, options) in _TOOLS.items():
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        if name != "topics":
            p.add_argument("topic", metavar="TOPIC", help="the topic")
        for opt in options:
            opt.add_to(p)
        if name == "create":
            p.add_argument(
                "--config",
                dest="topic_config",
                action="append",
                metavar="KEY=VALUE",
                help="a topic setting, e.g. --config retention.ms=86400000 (repeatable)",
            )
        add_kafka_options(p)
        p.set_defaults(handler=_tool_command, options=(*options, *KAFKA_OPTIONS))


def _broker_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) / "kafka"


def cluster_given(args: argparse.Namespace) -> bool:
    """Whether the user named a cluster (``--bootstrap-servers`` or ``$TIDAL_KAFKA``)."""
    import os

    return "TIDAL_KAFKA" in os.environ or args.bootstrap_servers != DEFAULT_BOOTSTRAP


def project_broker(data_dir: str | Path, say: Any = None) -> Any:
    """The project's broker of ``data_dir`` (``tidal kafka up``'s), started if not running.

    A broker started here outlives the command, like ``tidal kafka up``'s: a rerun finds it,
    and ``tidal kafka down`` stops it. ``say`` (a print function) hears what happens.
    """
    from tidal.io.kafka.broker import Broker, port_free

    where = Path(data_dir) / "kafka"
    running = Broker.find(where)
    if running is not None:
        return running
    recorded = Broker(where).port
    port: int | None = recorded or _UP_PORT
    if recorded is None and not port_free(_UP_PORT):
        port = None  # 9092 is taken (another Kafka?): any free port
    broker = Broker(where, port=port, detach=True)
    if say is not None:
        say(f"  starting Apache Kafka {broker.version} in {where} (`tidal kafka down` stops it)")
    broker.start()
    return broker


def _broker_command(args: argparse.Namespace) -> int:
    from tidal.io.kafka.broker import Broker

    where = _broker_dir(args)
    err = sys.stderr
    running = Broker.find(where)
    if args.kafka_command == "up":
        if running is not None:
            print(
                f"tidal: a Kafka broker already runs in {where} (pid {running.pid}); "
                "`tidal kafka down` stops it",
                file=err,
            )
            print(running.bootstrap)
            return 0
        recorded = Broker(where).port
        port = args.port or recorded or _UP_PORT
        broker = Broker(where, port=port, detach=True)
        broker.start()
        hint = "" if port == _UP_PORT else f"; export TIDAL_KAFKA={broker.bootstrap}"
        print(
            f"tidal: Apache Kafka {broker.version} up at {broker.bootstrap} (pid {broker.pid}, "
            f"data and log in {where}); `tidal kafka down` stops it{hint}",
            file=err,
        )
        print(broker.bootstrap)
        return 0
    if args.kafka_command == "status":
        if running is None:
            print(f"no Kafka broker runs in {where}; start one with `tidal kafka up`")
            return 1
        from tidal.io.kafka.admin import KafkaAdmin

        answers = KafkaAdmin(running.config(), timeout=5.0).answers()
        state = "answering" if answers else f"NOT answering (see {running.log_path})"
        print(f"Kafka broker at {running.bootstrap}, {state}: pid {running.pid}, data in {where}")
        return 0 if answers else 1
    if running is None:
        print(f"no Kafka broker runs in {where}")
        return 0
    pid = running.pid
    running.stop()
    print(f"stopped the Kafka broker at {running.bootstrap} (pid {pid})")
    return 0


def _tool_command(args: argparse.Namespace) -> int:
    try:
        from tidal.io.kafka import commands as kafka
        from tidal.io.kafka.admin import require_kafka

        require_kafka()
    except ImportError as exc:
        raise ConfigError(str(exc)) from exc
    config = kafka_config(args)
    out = sys.stdout
    command = args.kafka_command
    if command == "topics":
        return kafka.topics(config, internal=args.all, out=out)
    if command == "create":
        return kafka.create(
            config,
            args.topic,
            partitions=args.partitions,
            replication_factor=args.replication_factor,
            settings=_pairs(args.topic_config, "--config"),
            out=out,
        )
    if command == "delete":
        return kafka.delete(config, args.topic, out=out)
    if command == "describe":
        return kafka.describe(config, args.topic, as_json=args.json, out=out)
    if command == "produce":
        return kafka.produce(
            config, args.topic, file=args.file, key=args.key, partition=args.partition, out=out
        )
    return kafka.consume(
        config,
        args.topic,
        from_beginning=args.from_beginning,
        max_records=args.max,
        group=args.group,
        partition=args.partition,
    )
