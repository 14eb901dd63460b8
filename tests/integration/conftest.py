"""Fixtures for the tests that need a real Apache Kafka broker.

* ``kafka_broker`` (session): one broker for the whole run, started from the project's jars
  (:class:`tidal.io.kafka.broker.Broker`, Java 17 + Maven) in a temporary directory and
  always stopped at the end; the JVM is tied to the pytest process, so even a killed run
  leaves no broker behind. With ``$TIDAL_KAFKA`` set, the tests use that cluster instead and
  start nothing. Without Java or Maven the tests *fail* with a message naming what to install.
* ``kafka_config``: a :class:`~tidal.io.kafka.KafkaConfig` for that broker.
* ``kafka_admin`` (session): a :class:`~tidal.io.kafka.admin.KafkaAdmin` on it.
* ``kafka_topic``: a factory, ``kafka_topic(partitions=3, config={...}) -> name``, that
  creates a topic with a name unique to the test (ready to produce to: every partition has
  a leader) and deletes it afterwards.
* ``own_kafka_broker``: a broker of the test's own, for tests that stop or restart it
  (``.stop()``, ``.start()``, ``.restart()`` keep its port and data); stopped afterwards.

* ``schema_registry`` (session): an Apicurio Registry (Confluent-compatible API), built from
  Maven Central once into ~/.cache/tidal/registry by
  :func:`tidal.io.kafka.registry.ensure_registry` (a few minutes the first time), run on
  loopback with in-memory storage and stopped at the end; its ``url`` is the API's base.
  With ``$TIDAL_SCHEMA_REGISTRY`` set, that registry is used instead. Without Java or
  Maven the tests fail with what to install, as the broker's do.

The brokers start with :data:`~tidal.io.kafka.broker.FAST_START` JVM options (C1 JIT only:
half the CPU time to start on a busy machine).

Mark the test modules ``pytestmark = pytest.mark.integration``.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tidal.errors import TidalError
from tidal.io.kafka import KafkaConfig
from tidal.io.kafka.admin import KafkaAdmin
from tidal.io.kafka.broker import FAST_START, Broker
from tidal.io.kafka.registry import Registry


class ExistingCluster:
    """The cluster named by ``$TIDAL_KAFKA``: used, never started or stopped."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def config(self, **settings: Any) -> KafkaConfig:
        return KafkaConfig(bootstrap_servers=self.bootstrap, **settings)

    def __repr__(self) -> str:
        return f"ExistingCluster({self.bootstrap!r})"


def _start(broker: Broker) -> None:
    try:
        broker.start()
    except TidalError as exc:
        pytest.fail(f"the Kafka tests need a broker: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker | ExistingCluster]:
    existing = os.environ.get("TIDAL_KAFKA")
    if existing:
        cluster = ExistingCluster(existing)
        try:
            KafkaAdmin(cluster.config()).check()
        except TidalError as exc:
            pytest.fail(f"TIDAL_KAFKA={existing}: {exc}", pytrace=False)
        yield cluster
        return
    broker = Broker(tmp_path_factory.mktemp("kafka"), jvm_options=FAST_START)
    _start(broker)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_config(kafka_broker: Broker | ExistingCluster) -> KafkaConfig:
    return kafka_broker.config()


@pytest.fixture(scope="session")
def kafka_admin(kafka_broker: Broker | ExistingCluster) -> KafkaAdmin:
    return KafkaAdmin(kafka_broker.config(), timeout=30.0)


@pytest.fixture
def kafka_topic(
    kafka_admin: KafkaAdmin, request: pytest.FixtureRequest
) -> Iterator[Callable[..., str]]:
    made: list[str] = []
    stem = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name)[:80].strip("-")

    def create(partitions: int = 1, *, config: Mapping[str, str] | None = None) -> str:
        name = f"t-{stem}-{uuid.uuid4().hex[:8]}"
        kafka_admin.create_topic(name, partitions, config=config)
        made.append(name)
        return name

    yield create
    for name in made:
        try:
            kafka_admin.delete_topic(name, missing_ok=True)
        except TidalError as exc:  # the test's own result matters more than the clean-up
            print(f"kafka_topic: could not delete {name}: {exc}")


@pytest.fixture
def own_kafka_broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "kafka", jvm_options=FAST_START)
    _start(broker)
    try:
        yield broker
    finally:
        broker.stop()


class ExistingRegistry:
    """The registry named by ``$TIDAL_SCHEMA_REGISTRY``: used, never started or stopped."""

    def __init__(self, url: str) -> None:
        self.url = url


@pytest.fixture(scope="session")
def schema_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Registry | ExistingRegistry]:
    existing = os.environ.get("TIDAL_SCHEMA_REGISTRY")
    if existing:
        yield ExistingRegistry(existing)
        return
    registry = Registry(tmp_path_factory.mktemp("registry"), jvm_options=FAST_START)
    try:
        registry.start()
    except TidalError as exc:
        pytest.fail(f"the schema registry tests need a registry: {exc}", pytrace=False)
    try:
        yield registry
    finally:
        registry.stop()
