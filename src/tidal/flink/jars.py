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
from pathlib import Path

from tidal.io.kafka.jvm import cache_home, maven, run_maven

__all__ = ["KAFKA_CONNECTOR", "flink_home", "kafka_connector_jar", "kafka_connector_jar_name"]

KAFKA_CONNECTOR = "5.0.0-2.2"
"""The ``flink-sql-connector-kafka`` version: connector 5.0.0, built for Flink 2.2."""

_ARTIFACT = "org.apache.flink:flink-sql-connector-kafka"


def flink_home() -> Path:
    """The jar cache: ``$TIDAL_FLINK_HOME``, else ``~/.cache/tidal/flink``."""
    return cache_home("TIDAL_FLINK_HOME", "flink")


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
    mvn = maven(
        f"Flink's Kafka connector jar is not in {home} yet and fetching it from Maven Central "
        "needs Maven",
        f"or put {jar.name} there (TIDAL_FLINK_HOME sets the folder)",
    )
    home.mkdir(parents=True, exist_ok=True)
    partial = home / f".partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        check = run_maven(
            mvn,
            ["dependency:copy", f"-Dartifact={_ARTIFACT}:{version}"]
            + [f"-DoutputDirectory={partial}"],
            announce=f"fetching {_ARTIFACT}:{version} from Maven Central into {home}",
            failed=f"Maven could not fetch {_ARTIFACT}:{version} (`mvn dependency:copy`)",
            hint="check the network and the version",
            cwd=home,
        )
        got = partial / jar.name
        check(got.is_file())
        got.replace(jar)  # atomic: a concurrent fetch of the same jar writes the same bytes
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return jar
