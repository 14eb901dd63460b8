"""Flink's Kafka SQL connector jar, resolved from Maven Central once into a cache.

PyFlink ships Flink's runtime but not its connectors: a job that reads Kafka with
``'connector' = 'kafka'`` needs ``org.apache.flink:flink-sql-connector-kafka`` (one shaded
jar with the Kafka client inside) on ``pipeline.jars``. :func:`kafka_connector_jar` copies
it from Maven Central with ``mvn dependency:copy`` the first time, into
``$TIDAL_FLINK_HOME`` (default ``~/.cache/tidal/flink``), like
:func:`tidal.io.kafka.broker.ensure_jars` does for the broker's jars.

The connector's versions are ``<connector>-<flink minor>``: :data:`KAFKA_CONNECTOR` is the
newest one released for Flink 2.x (``5.0.0-2.2``), and it runs on PyFlink 2.3 (the test of
``examples/flink_job.py`` proves it on every ``make flink-test``).

Example:
    >>> kafka_connector_jar_name()
    'flink-sql-connector-kafka-5.0.0-2.2.jar'
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tidal.errors import ConfigError, ConnectorError

__all__ = ["KAFKA_CONNECTOR", "flink_home", "kafka_connector_jar", "kafka_connector_jar_name"]

KAFKA_CONNECTOR = "5.0.0-2.2"
"""The ``flink-sql-connector-kafka`` version: connector 5.0.0, built for Flink 2.2."""

_ARTIFACT = "org.apache.flink:flink-sql-connector-kafka"


def flink_home() -> Path:
    """The jar cache: ``$TIDAL_FLINK_HOME``, else ``~/.cache/tidal/flink``."""
    env = os.environ.get("TIDAL_FLINK_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tidal" / "flink"


def kafka_connector_jar_name(version: str = KAFKA_CONNECTOR) -> str:
    """The connector jar's file name."""
    return f"flink-sql-connector-kafka-{version}.jar"


def kafka_connector_jar(version: str = KAFKA_CONNECTOR) -> Path:
    """The path of the Kafka SQL connector jar, copied from Maven Central the first time.

    Pass it to Flink as ``pipeline.jars`` = ``file://<path>``.

    Raises:
        ConfigError: the jar is not cached and ``mvn`` is not on PATH.
        ConnectorError: Maven could not fetch it (no network, unknown version).
    """
    home = flink_home()
    jar = home / kafka_connector_jar_name(version)
    if jar.is_file():
        return jar
    mvn = shutil.which("mvn")
    if mvn is None:
        msg = (
            f"Flink's Kafka connector jar is not in {home} yet and fetching it from Maven "
            "Central needs Maven: install it (Debian/Ubuntu: `apt-get install maven`), or put "
            f"{jar.name} there (TIDAL_FLINK_HOME sets the folder)"
        )
        raise ConfigError(msg)
    home.mkdir(parents=True, exist_ok=True)
    partial = home / f".partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [
        mvn,
        "-B",
        "-q",
        "-Dstyle.color=never",
        "dependency:copy",
        f"-Dartifact={_ARTIFACT}:{version}",
        f"-DoutputDirectory={partial}",
    ]
    print(f"tidal: fetching {_ARTIFACT}:{version} from Maven Central into {home}", file=sys.stderr)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=home)  # noqa: S603
    got = partial / jar.name
    if done.returncode != 0 or not got.is_file():
        lines = (done.stdout + done.stderr).splitlines()
        shown = " | ".join(ln.strip() for ln in ([x for x in lines if "ERROR" in x] or lines)[:3])
        shutil.rmtree(partial, ignore_errors=True)
        msg = (
            f"Maven could not fetch {_ARTIFACT}:{version} (`mvn dependency:copy`, exit "
            f"{done.returncode}): {shown or 'no output'}; check the network and the version"
        )
        raise ConnectorError(msg)
    got.replace(jar)  # atomic: a concurrent fetch of the same jar writes the same bytes
    shutil.rmtree(partial, ignore_errors=True)
    return jar
