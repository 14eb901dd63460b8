"""The project's own Kafka broker: starts, answers, restarts with its data, stops cleanly."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from tidal.io.kafka.admin import KafkaAdmin
from tidal.io.kafka.broker import Broker

pytestmark = pytest.mark.integration


def _gone_within(pid: int, seconds: float) -> bool:
    """Wait (without polling) for ``pid`` to end: a pidfd turns readable when it exits."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], seconds)
        return bool(ready)
    finally:
        os.close(fd)


def _produce(bootstrap: str, topic: str, n: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(n):
        producer.produce(topic, value=f'{{"i": {i}}}'.encode(), key=str(i % 5).encode())
    assert producer.flush(30) == 0


def _consume(bootstrap: str, topic: str, n: int) -> list[bytes]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "check", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    got: list[bytes] = []
    try:
        while len(got) < n:
            for m in consumer.consume(n - len(got), timeout=30):
                assert m.error() is None, m.error()
                got.append(m.value() or b"")
    finally:
        consumer.close()
    return got


def test_starts_answers_restarts_with_its_data_and_stops(own_kafka_broker: Broker) -> None:
    broker = own_kafka_broker
    pid, port = broker.pid, broker.port
    assert pid is not None and broker.running
    assert broker.bootstrap == f"127.0.0.1:{port}"
    assert Broker.find(broker.data_dir) is not None  # another process's view: `tidal kafka status`
    admin = KafkaAdmin(broker.config(), timeout=30)
    admin.create_topic("kept", 3)
    _produce(broker.bootstrap, "kept", 300)
    assert sum(admin.end_offsets("kept").values()) == 300

    broker.restart()
    assert broker.port == port and broker.pid != pid
    assert _gone_within(pid, 0)  # the old JVM is gone, not merely replaced
    admin = KafkaAdmin(broker.config(), timeout=30)
    assert admin.topics() == ["kept"]
    assert sorted(_consume(broker.bootstrap, "kept", 300)) == sorted(
        f'{{"i": {i}}}'.encode() for i in range(300)
    )

    last = broker.pid
    assert last is not None
    broker.stop()
    assert _gone_within(last, 0)
    assert not broker.running and broker.pid is None
    assert Broker.find(broker.data_dir) is None
    assert not admin.answers(1.0)


def test_broker_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from tidal.io.kafka.broker import Broker
        broker = Broker({str(tmp_path / "kafka")!r})
        broker.start()
        print(broker.pid, flush=True)
        sys.stdin.read()  # until the test kills this process
        """
    )
    starter = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = starter.stdout.readline() if starter.stdout else ""
        assert line.strip().isdigit(), starter.stderr.read() if starter.stderr else line
        jvm = int(line)
        assert not _gone_within(jvm, 0)
        starter.send_signal(signal.SIGKILL)  # no atexit, no finally: only the kernel's tie
        starter.wait(30)
        assert _gone_within(jvm, 30), f"the broker (pid {jvm}) outlived the killed process"
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
        for stream in (starter.stdin, starter.stdout, starter.stderr):
            if stream is not None:
                stream.close()


def test_a_second_broker_on_the_same_directory_is_refused(own_kafka_broker: Broker) -> None:
    from tidal.errors import ConnectorError

    other = Broker(own_kafka_broker.data_dir)
    with pytest.raises(ConnectorError, match="already runs"):
        other.start()
    assert own_kafka_broker.running
