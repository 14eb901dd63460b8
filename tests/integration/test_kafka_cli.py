"""``tidal kafka ...`` against the real broker: the tools' round trip, errors, up/status/down."""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, ConfigResource

from tidal.io.kafka import KafkaConfig
from tidal.io.kafka.admin import KafkaAdmin, client_settings
from tidal.io.kafka.broker import FAST_START, Broker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def tidal(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None, shell: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI as a user does, in a fresh process (``shell``: a pipeline around it)."""
    full = {k: v for k, v in os.environ.items() if k != "TIDAL_KAFKA"}
    fast = " ".join(FAST_START)  # for `up`: half the CPU time to start
    full.update({"PYTHONPATH": str(REPO / "src"), "TIDAL_KAFKA_JVM_OPTIONS": fast, **(env or {})})
    cmd = [sys.executable, "-m", "tidal", "kafka", *args]
    if shell is not None:
        line = " ".join(f"'{c}'" for c in cmd)
        return subprocess.run(
            ["bash", "-o", "pipefail", "-c", shell.replace("TIDAL", line)],
            input=stdin,
            capture_output=True,
            env=full,
            timeout=120,
            check=False,
        )
    return subprocess.run(cmd, input=stdin, capture_output=True, env=full, timeout=120, check=False)


def lines(out: bytes) -> list[dict[str, object]]:
    return [orjson.loads(x) for x in out.splitlines()]


def test_create_produce_consume_describe(kafka_config: KafkaConfig) -> None:
    at = ["--bootstrap-servers", kafka_config.bootstrap_servers]
    topic = f"cli-{uuid.uuid4().hex[:8]}"
    made = tidal("create", topic, "--partitions", "3", "--config", "retention.ms=3600000", *at)
    assert made.returncode == 0, made.stderr
    assert f"created topic '{topic}' with 3 partitions" in made.stdout.decode()
    admin = AdminClient({"bootstrap.servers": kafka_config.bootstrap_servers})
    configs = admin.describe_configs([ConfigResource("TOPIC", topic)])
    got = next(iter(configs.values())).result(30)
    assert got["retention.ms"].value == "3600000"
    assert topic in tidal("topics", *at).stdout.decode().split()

    records = [{"user": f"u{i % 5}", "n": i} for i in range(100)]
    body = b"".join(orjson.dumps(r) + b"\n" for r in records)
    sent = tidal("produce", topic, "--key", "user", *at, stdin=body)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.decode().startswith(f"produced 100 records to '{topic}'")

    # The key is the field's value, and a key's records share one partition, in order.
    plain = Consumer(
        client_settings(
            kafka_config, **{"group.id": f"check-{topic}", "auto.offset.reset": "earliest"}
        )
    )
    plain.subscribe([topic])
    seen: list[tuple[bytes | None, int, dict[str, object]]] = []
    try:
        while len(seen) < 100:
            for m in plain.consume(100, timeout=30):
                assert m.error() is None
                seen.append((m.key(), m.partition(), orjson.loads(m.value() or b"")))
    finally:
        plain.close()
    assert all(key == str(rec["user"]).encode() for key, _, rec in seen)
    assert len({(key, p) for key, p, _ in seen}) == 5
    for user in {r["user"] for r in records}:
        ns = [rec["n"] for _, _, rec in seen if rec["user"] == user]
        assert ns == sorted(ns, key=int)  # type: ignore[arg-type]

    first = tidal("consume", topic, "--group", "g", "--max", "40", *at)
    assert first.returncode == 0, first.stderr
    assert len(lines(first.stdout)) == 40
    info = orjson.loads(tidal("describe", topic, "--json", *at).stdout)
    assert sum(p["end"] for p in info["partitions"]) == 100
    lag = info["groups"]["g"]
    assert sum(v["lag"] for v in lag.values()) == 60 and set(lag) == {"0", "1", "2"}
    assert sum(v["committed"] or 0 for v in lag.values()) == 40
    text = tidal("describe", topic, *at).stdout.decode()
    assert f"topic '{topic}': 3 partitions" in text and "total lag 60" in text

    rest = tidal("consume", topic, "--group", "g", *at)
    assert rest.returncode == 0, rest.stderr
    both = lines(first.stdout) + lines(rest.stdout)
    assert sorted(both, key=lambda r: int(r["n"])) == records  # type: ignore[call-overload]
    info = orjson.loads(tidal("describe", topic, "--json", *at).stdout)
    assert sum(v["lag"] for v in info["groups"]["g"].values()) == 0
    assert tidal("consume", topic, "--group", "g", *at).stdout == b""  # nothing new

    # In a pipe that closes early: three lines, no complaint, status 0.
    head = tidal("consume", topic, "--from-beginning", *at, shell="TIDAL | head -3")
    assert head.returncode == 0 and head.stderr == b""
    assert len(lines(head.stdout)) == 3


def _one_line(done: subprocess.CompletedProcess[bytes]) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    err = done.stderr.decode().strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("tidal: error: ")
    return err[0]


def test_errors_are_one_line_and_status_2(
    kafka_config: KafkaConfig, kafka_topic: Callable[..., str], tmp_path: Path
) -> None:
    at = ["--bootstrap-servers", kafka_config.bootstrap_servers]
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{s.getsockname()[1]}"
    down = _one_line(tidal("topics", "--bootstrap-servers", nowhere))
    assert f"no Kafka broker listens at {nowhere}" in down and "tidal kafka up" in down
    down = _one_line(tidal("consume", "x", env={"TIDAL_KAFKA": nowhere}))
    assert nowhere in down

    missing = _one_line(tidal("consume", "no-such-topic", *at))
    assert "no topic 'no-such-topic'" in missing and "tidal kafka create" in missing

    topic = kafka_topic(partitions=1)
    bad = _one_line(tidal("produce", topic, *at, stdin=b'{"a": 1}\n[2]\n{"a": 3}\n'))
    assert "<stdin> line 2: not a JSON object" in bad and "the 1 records before it" in bad
    assert KafkaAdmin(kafka_config).end_offsets(topic) == {0: 1}

    exists = _one_line(tidal("create", topic, *at))
    assert "already exists" in exists
    assert "--config takes key=value" in _one_line(tidal("create", "y", "--config", "nope", *at))

    # No Java: `up` says what to install instead of a traceback.
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {"PATH": str(bare), "JAVA_HOME": "", "TIDAL_KAFKA_HOME": str(tmp_path / "cache")}
    no_java = _one_line(tidal("up", "--data-dir", str(tmp_path / "d"), env=env))
    assert "Java 17" in no_java and "apt-get install openjdk-17" in no_java
    # Java but no Maven (and no cached jars): it names Maven.
    java = shutil.which("java")
    assert java is not None
    (bare / "java").symlink_to(java)
    no_mvn = _one_line(tidal("up", "--data-dir", str(tmp_path / "d"), env=env))
    assert "Maven" in no_mvn and "apt-get install maven" in no_mvn


def _gone_within(pid: int, seconds: float) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], seconds)[0])
    finally:
        os.close(fd)


def test_up_status_down(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    where = ["--data-dir", str(tmp_path)]
    try:
        up = tidal("up", *where, "--port", str(port))
        assert up.returncode == 0, up.stderr
        assert up.stdout.decode() == f"127.0.0.1:{port}\n"
        broker = Broker.find(tmp_path / "kafka")
        assert broker is not None and broker.pid is not None
        pid = broker.pid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"-XX:TieredStopAtLevel=1" in cmdline  # $TIDAL_KAFKA_JVM_OPTIONS reached the JVM

        again = tidal("up", *where)
        assert again.returncode == 0 and again.stdout == up.stdout
        assert "already runs" in again.stderr.decode()
        status = tidal("status", *where)
        assert status.returncode == 0 and "answering" in status.stdout.decode()
        assert tidal("topics", "--bootstrap-servers", f"127.0.0.1:{port}").returncode == 0

        stopped = tidal("down", *where)
        assert stopped.returncode == 0 and f"pid {pid}" in stopped.stdout.decode()
        assert _gone_within(pid, 30)
        after = tidal("status", *where)
        assert after.returncode == 1 and "no Kafka broker runs" in after.stdout.decode()
        assert tidal("down", *where).returncode == 0  # nothing to stop is not an error
    finally:
        left = Broker.find(tmp_path / "kafka")
        if left is not None:
            left.stop()
