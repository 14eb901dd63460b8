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
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka_helpers import new_topic
from kafka_runs import (
    SCALE_TOTAL,
    Setup,
    describe_group,
    finish,
    output,
    scale_group,
    scale_reference,
    wait_until,
)

from tidal.io.kafka import KafkaConfig

pytestmark = pytest.mark.integration

_start = scale_group


@pytest.fixture(scope="module")
def setup(kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return scale_reference(kafka_broker.config(), tmp_path_factory.mktemp("one"))


@pytest.mark.parametrize("workers", [1, 2, 6])  # 6 on 4 partitions: two idle, no hang
def test_a_group_gives_the_output_of_one_process(
    workers: int, setup: Setup, tmp_path: Path
) -> None:
    config, in_topic, reference = setup
    out = new_topic(config, "group-out", partitions=2)
    summary = finish(_start(config, tmp_path, in_topic, out, workers))
    assert summary["events"] >= SCALE_TOTAL, summary
    assert output(config, out) == reference


def test_a_member_sigkilled_while_it_owns_partitions_hands_them_over_with_state(
    setup: Setup, tmp_path: Path
) -> None:
    config, in_topic, reference = setup
    out = new_topic(config, "group-out", partitions=2)
    gate = tmp_path / "gate"
    gate.touch()
    group = f"g-{uuid.uuid4().hex[:8]}"
    # both members join before either goes past its first batch; then small, paced batches:
    # the rebalance that gives worker 1 its share ends long before worker 0 could drain it
    proc = _start(
        config, tmp_path, in_topic, out, 2, group, max_batch=100, SCALE_GATE=str(gate),
        SCALE_HOLD_GROUP=group, SCALE_PACE_MS="20",
    )  # fmt: skip
    reached = Path(f"{gate}.reached")
    wait_until("worker 1 reaches the gate", reached.exists, proc)
    os.kill(int(reached.read_text()), signal.SIGKILL)
    gate.unlink()
    summary = finish(proc)
    assert summary["restarts"] == [0, 1]
    moved = [p for w in summary["per_worker"] for p, _ in w.get("restore_ms", [])]
    assert moved, summary  # some partition was restored from the state topic
    assert output(config, out) == reference


def _members(config: KafkaConfig, group: str) -> int:
    return len(describe_group(config, group).members)


def test_a_member_added_mid_run_takes_partitions_with_their_state(
    setup: Setup, tmp_path: Path
) -> None:
    config, in_topic, reference = setup
    out = new_topic(config, "group-out", partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    gate = tmp_path / "gate"
    gate.touch()
    # the first member (posing as worker 1, which the gate parks) owns all 4 partitions
    first = _start(  # after the gate it waits for the rebalance, then goes on paced
        config, tmp_path / "a", in_topic, out, 1, group, SCALE_GATE=str(gate),
        TIDAL_WORKER="1/2", SCALE_PACE_MS="20", SCALE_SHARE_GROUP=group,
    )  # fmt: skip
    reached = Path(f"{gate}.reached")
    wait_until("the first member reaches the gate", reached.exists, first)
    second = _start(config, tmp_path / "b", in_topic, out, 1, group)
    # the second joined: the group rebalances
    wait_until("the second member joins", lambda: _members(config, group) >= 2, second, every=0.05)
    gate.unlink()  # the first member goes on, and hands partitions over on its next poll
    a, b = finish(first), finish(second)
    assert a["revoked"] and b["assigned"], (a, b)
    assert {p for p, _ in b["restore_ms"]} & set(a["revoked"]), (a, b)
    assert output(config, out) == reference


@pytest.mark.parametrize("point", ["after_manifest:4", "mid_commit:3"])
def test_a_member_killed_inside_a_checkpoint_loses_and_duplicates_nothing(
    point: str, setup: Setup, tmp_path: Path
) -> None:
    # after_manifest: the state is in the open transaction, not committed; mid_commit: the
    # transaction committed, the runtime had not finished its checkpoint
    config, in_topic, reference = setup
    out = new_topic(config, "group-out", partitions=2)
    # both members join before either goes past its first batch (so worker 0 has a share),
    # then small, paced batches: its n-th checkpoint comes long before its input ends
    group = f"g-{uuid.uuid4().hex[:8]}"
    env = {"TIDAL_TEST_WORKER_CRASH": f"0:{point}", "SCALE_PACE_MS": "20"}
    proc = _start(
        config, tmp_path, in_topic, out, 2, group, max_batch=100, SCALE_HOLD_GROUP=group, **env
    )
    summary = finish(proc)
    assert summary["restarts"] == [1, 0], summary
    assert output(config, out) == reference
