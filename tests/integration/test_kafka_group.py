"""``tidal run --group NAME``: Kafka's consumer group assigns partitions, state moves via Kafka.

Each worker runs one task per partition it owns; a task's checkpoint travels in the state
topic ``<pipeline>.tidal-state`` inside its output transaction, and its transactional id
``<id>-p<partition>`` fences a previous owner. The committed output must equal the output of
one uninterrupted process: with one member, with two, with six on four partitions (the idle
ones wait in the group until every partition drained), and with one of two SIGKILLed while
it holds partitions (the other takes them over with their state; the killed one is
restarted by the supervisor and rejoins).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_helpers import new_topic
from test_kafka_workers import TOTAL, _input, _output

from tidal.io.kafka import KafkaConfig

pytestmark = pytest.mark.integration

PIPELINE = Path(__file__).with_name("kafka_scale_pipeline.py")
WAIT_S = 240.0


def _start(
    config: KafkaConfig,
    data: Path,
    in_topic: str,
    out: str,
    workers: int,
    group: str | None = None,
    **env: str,
) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "SCALE_"))}
    full.update(SCALE_BOOTSTRAP=config.bootstrap_servers, SCALE_IN=in_topic, SCALE_OUT=out)
    full.update(env)
    cmd = [sys.executable, "-m", "tidal.cli", "run", str(PIPELINE), "--json"]
    cmd += ["--group", group or f"g-{uuid.uuid4().hex[:8]}", "--workers", str(workers)]
    cmd += ["--checkpoint-interval", "50ms", "--max-batch", "500", "--max-wait", "0ms"]
    cmd += ["--data-dir", str(data)]
    return subprocess.Popen(cmd, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()  # the supervisor: its workers get SIGTERM from the kernel
        out, err = proc.communicate()
        pytest.fail(f"the group did not finish in {WAIT_S:.0f} s: {err.decode()[-6000:]}")
    assert proc.returncode == 0, err.decode()[-4000:]
    summary: dict[str, Any] = orjson.loads(out.splitlines()[-1])
    return summary


@pytest.fixture(scope="module")
def setup(
    kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[KafkaConfig, str, Counter[bytes]]:
    from test_kafka_workers import _run

    config = kafka_broker.config()
    in_topic = _input(config)
    out, summary = _run(config, tmp_path_factory.mktemp("one"), in_topic, 1)
    assert summary["events"] == TOTAL
    return config, in_topic, _output(config, out)


@pytest.mark.parametrize("workers", [1, 2, 6])  # 6 on 4 partitions: two idle, no hang
def test_a_group_gives_the_output_of_one_process(
    workers: int, setup: tuple[KafkaConfig, str, Counter[bytes]], tmp_path: Path
) -> None:
    config, in_topic, reference = setup
    out = new_topic(config, "group-out", partitions=2)
    summary = _finish(_start(config, tmp_path, in_topic, out, workers))
    assert summary["events"] >= TOTAL, summary
    assert _output(config, out) == reference


def test_a_member_sigkilled_while_it_owns_partitions_hands_them_over_with_state(
    setup: tuple[KafkaConfig, str, Counter[bytes]], tmp_path: Path
) -> None:
    config, in_topic, reference = setup
    out = new_topic(config, "group-out", partitions=2)
    gate = tmp_path / "gate"
    gate.touch()
    proc = _start(config, tmp_path, in_topic, out, 2, SCALE_GATE=str(gate))
    reached = Path(f"{gate}.reached")
    deadline = time.monotonic() + WAIT_S
    while not reached.exists():
        assert proc.poll() is None, proc.communicate()[1].decode()[-4000:]
        assert time.monotonic() < deadline, "worker 1 never reached the gate"
        time.sleep(0.01)
    os.kill(int(reached.read_text()), signal.SIGKILL)
    gate.unlink()
    summary = _finish(proc)
    assert summary["restarts"] == [0, 1]
    moved = [p for w in summary["per_worker"] for p, _ in w.get("restore_ms", [])]
    assert moved, summary  # some partition was restored from the state topic
    assert _output(config, out) == reference


def _members(config: KafkaConfig, group: str) -> int:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(config.client())
    done = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=30)
    return len(done.members)


def test_a_member_added_mid_run_takes_partitions_with_their_state(
    setup: tuple[KafkaConfig, str, Counter[bytes]], tmp_path: Path
) -> None:
    config, in_topic, reference = setup
    out = new_topic(config, "group-out", partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    gate = tmp_path / "gate"
    gate.touch()
    # the first member (posing as worker 1, which the gate parks) owns all 4 partitions
    first = _start(  # paced: still polling (and so rebalancing) after the gate opens
        config, tmp_path / "a", in_topic, out, 1, group, SCALE_GATE=str(gate),
        TIDAL_WORKER="1/2", SCALE_PACE_MS="20",
    )  # fmt: skip
    reached = Path(f"{gate}.reached")
    deadline = time.monotonic() + WAIT_S
    while not reached.exists():
        assert first.poll() is None, first.communicate()[1].decode()[-4000:]
        assert time.monotonic() < deadline, "the first member never reached the gate"
        time.sleep(0.01)
    second = _start(config, tmp_path / "b", in_topic, out, 1, group)
    while _members(config, group) < 2:  # the second joined: the group rebalances
        assert second.poll() is None, second.communicate()[1].decode()[-4000:]
        assert time.monotonic() < deadline, "the second member never joined"
        time.sleep(0.05)
    gate.unlink()  # the first member goes on, and hands partitions over on its next poll
    a, b = _finish(first), _finish(second)
    assert a["revoked"] and b["assigned"], (a, b)
    assert {p for p, _ in b["restore_ms"]} & set(a["revoked"]), (a, b)
    assert _output(config, out) == reference


@pytest.mark.parametrize("point", ["after_manifest:4", "mid_commit:3"])
def test_a_member_killed_inside_a_checkpoint_loses_and_duplicates_nothing(
    point: str, setup: tuple[KafkaConfig, str, Counter[bytes]], tmp_path: Path
) -> None:
    # after_manifest: the state is in the open transaction, not committed; mid_commit: the
    # transaction committed, the runtime had not finished its checkpoint
    config, in_topic, reference = setup
    out = new_topic(config, "group-out", partitions=2)
    # paced: the crash point's n-th checkpoint must come before the input ends, on any machine
    env = {"TIDAL_TEST_WORKER_CRASH": f"0:{point}", "SCALE_PACE_MS": "20"}
    summary = _finish(_start(config, tmp_path, in_topic, out, 2, **env))
    assert summary["restarts"] == [1, 0], summary
    assert _output(config, out) == reference
