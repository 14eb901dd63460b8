"""The consumer-group traps peers fell into (issue 10, item 6), against the real broker.

- **A rebalance during a restore** (crash loops in Quix and Faust): a member restoring a
  partition's state from the state topic is held there (``TIDAL_TEST_RESTORE_GATE``) while
  another member joins the group, or joins and is SIGKILLed again; only then does the
  restore go on.
- **A revoke or restores slower than** ``max.poll.interval.ms`` (a livelock in Quix):
  the revoking member's checkpoint work (``TIDAL_TEST_REVOKE_PAUSE_MS``), or a new
  member's restores (``TIDAL_TEST_RESTORE_PAUSE_MS``), are stretched past a small
  ``max.poll.interval.ms``; no member may be kicked out (and so rebalance again).
- **Commits during a cooperative rebalance** (librdkafka): every test here commits
  checkpoints (transactions) in the revoke callback of a cooperative rebalance, and
  the members that keep partitions go on committing theirs while it runs.

- **A member that overran** ``max.poll.interval.ms`` in a batch wakes up after its
  partitions moved: its commit is fenced, and it drops those tasks instead of failing.

Each run must settle and its committed output must equal one uninterrupted process's:
0 lost, 0 duplicated. Every step waits for a condition (a file, the group's members).
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka_helpers import new_topic
from kafka_runs import (
    SCALE_PIPELINE,
    WAIT_S,
    Setup,
    describe_group,
    finish,
    finish_with_log,
    output,
    scale_group,
    scale_reference,
    start_run,
    wait_until,
)

from tidal.io.kafka import KafkaConfig
from tidal.runtime.workers.group import REVOKE_PAUSE_ENV
from tidal.runtime.workers.kafka_state import (
    RESTORE_GATE_ENV,
    RESTORE_PAUSE_ENV,
    finished_partitions,
    read_state,
    state_topic,
)

pytestmark = pytest.mark.integration

_start = scale_group


@pytest.fixture(scope="module")
def one_process(kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """The input topic, and the output of one uninterrupted process over it."""
    return scale_reference(kafka_broker.config(), tmp_path_factory.mktemp("one"))


def _member_ids(config: KafkaConfig, group: str) -> set[str]:
    return {m.member_id for m in describe_group(config, group).members}


def _settled(config: KafkaConfig, group: str, members: int) -> bool:
    """Whether the group has ``members`` and its rebalance completed.

    Each member's librdkafka then has its new assignment (a parked member's revoke waits
    for its next poll).
    """
    from confluent_kafka import ConsumerGroupState

    done = describe_group(config, group)
    return len(done.members) == members and done.state == ConsumerGroupState.STABLE


def _first_member(
    config: KafkaConfig, tmp_path: Path, in_topic: str, out: str, group: str, **env: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """Member A: owns all 4 partitions, parks in its 12th batch (3 per task: each task
    has committed a checkpoint by then, so whoever takes a partition restores state)."""
    gate = tmp_path / "gate-a"
    gate.touch()
    first = _start(  # paced: still stepping (and rebalancing) after the gate opens
        config, tmp_path / "a", in_topic, out, 1, group, SCALE_GATE=str(gate),
        SCALE_GATE_AT="12", TIDAL_WORKER="1/2", SCALE_PACE_MS="20", **env,
    )  # fmt: skip
    reached = Path(f"{gate}.reached")
    wait_until("member A parks at its gate", reached.exists, first)
    return first, gate


@pytest.mark.parametrize("trigger", ["join", "kill"])
def test_a_rebalance_during_a_restore_settles_with_the_output_of_one_process(
    trigger: str, one_process: Setup, tmp_path: Path
) -> None:
    config, in_topic, reference = one_process
    out = new_topic(config, "group-out", partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    # A leaves committed, unfinished state for all 4 partitions, then dies
    first, _ = _first_member(config, tmp_path, in_topic, out, group)
    first.kill()
    first.communicate(timeout=WAIT_S)
    gate_b = tmp_path / "gate-b"
    gate_b.touch()
    second = _start(
        config, tmp_path / "b", in_topic, out, 1, group, **{RESTORE_GATE_ENV: str(gate_b)}
    )
    # B gets all 4 partitions and restores the first one's state: it is held there, inside
    # its assign callback, while the group rebalances
    wait_until("member B restores", Path(f"{gate_b}.reached").exists, second)
    before = _member_ids(config, group)
    third = _start(config, tmp_path / "c", in_topic, out, 1, group)
    procs = [second, third]
    wait_until("member C joins", lambda: bool(_member_ids(config, group) - before), *procs)
    if trigger == "kill":  # ... and C dies again before B's restore ends
        with_c = _member_ids(config, group)
        third.kill()
        third.communicate(timeout=WAIT_S)
        procs.remove(third)
        wait_until("C's member leaves", lambda: _member_ids(config, group) < with_c, *procs)
    gate_b.unlink()  # the restore goes on
    summaries = [finish(p) for p in procs]  # each exits 0: none crashed, none looped
    assert summaries[0]["restore_ms"], summaries  # B restored state from the state topic
    assert output(config, out) == reference


def test_restores_longer_together_than_max_poll_interval_do_not_livelock(
    one_process: Setup, tmp_path: Path
) -> None:
    config, in_topic, reference = one_process
    out = new_topic(config, "group-out", partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    first, gate_a = _first_member(config, tmp_path, in_topic, out, group)
    # B: max.poll.interval.ms = 6 s, each restore takes 3.5 s more (a large state), and
    # each batch 0.7 s (B is still busy, polling without waiting, when A's partitions come)
    gate_b = tmp_path / "gate-b"
    gate_b.touch()
    slow = {"SCALE_MAX_POLL_MS": "6000", RESTORE_PAUSE_ENV: "3500", "SCALE_PACE_MS": "700"}
    second = _start(
        config, tmp_path / "b", in_topic, out, 1, group, **slow,
        **{RESTORE_GATE_ENV: str(gate_b)},
    )  # fmt: skip
    wait_until("member B joins", lambda: _settled(config, group, 2), first, second)
    gate_a.unlink()  # A revokes 2 partitions, B starts restoring them
    wait_until("member B restores", Path(f"{gate_b}.reached").exists, first, second)
    first.kill()  # A dies: its other 2 partitions come to B, which is busy by then
    first.communicate(timeout=WAIT_S)
    gate_b.unlink()
    # B, busy, restores the 2 of A in one assign callback: 7 s, past max.poll.interval.ms
    b, b_log = finish_with_log(second)
    assert "maximum poll interval" not in b_log  # B was never kicked out
    assert sorted(b["assigned"]) == [0, 1, 2, 3] and not b["revoked"], b  # once: no loop
    assert len(b["restore_ms"]) == 4 and min(ms for _, ms in b["restore_ms"]) >= 3500, b
    assert output(config, out) == reference


def test_a_member_that_overran_max_poll_interval_wakes_up_fenced_and_drops_its_tasks(
    one_process: Setup, tmp_path: Path
) -> None:
    config, in_topic, reference = one_process
    out = new_topic(config, "group-out", partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    # A parks in a batch past its max.poll.interval.ms: librdkafka takes it out of the
    # group while it does not poll; B gets all 4 partitions (fencing A) and drains them
    poll = {"SCALE_MAX_POLL_MS": "6000"}
    first, gate_a = _first_member(config, tmp_path, in_topic, out, group, **poll)
    second = _start(config, tmp_path / "b", in_topic, out, 1, group, **poll)
    topic = state_topic(group, "kafka-scaled")
    every = {0, 1, 2, 3}
    wait_until("B drains all", lambda: finished_partitions(config, topic, timeout=1.0) == every)
    b = finish(second)
    gate_a.unlink()  # A wakes up: its checkpoint is fenced; it drops the task, rejoins
    a, a_log = finish_with_log(first)
    assert "maximum poll interval" in a_log and "was fenced by a new owner" in a_log
    assert a["dropped"] and sorted(b["assigned"]) == [0, 1, 2, 3], (a, b)
    assert output(config, out) == reference


def _busy_member(
    config: KafkaConfig, data: Path, in_topic: str, out: str, group: str, **env: str
) -> subprocess.Popen[bytes]:
    """A member that polls often and drains slowly: batches of 25 events, each held 30 ms
    (600 batches), so it is still busy, not parked, when the group rebalances."""
    env = {"SCALE_PACE_MS": "30", **env}
    return start_run(SCALE_PIPELINE, config, data, in_topic, out, group=group, max_batch=25, **env)


def test_a_revoke_slower_than_max_poll_interval_does_not_livelock(
    one_process: Setup, tmp_path: Path
) -> None:
    config, in_topic, reference = one_process
    out = new_topic(config, "group-out", partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    # max.poll.interval.ms = 20 s; every revoked task's last checkpoint takes 11 s more, on
    # both members: A's revoke of 2 partitions would last 22 s, kick A out, move all its
    # partitions, make B revoke slowly when A rejoins, and so on (with the budget: 11 s,
    # leaving 9 s for the checkpoint itself on a loaded machine)
    slow = {"SCALE_MAX_POLL_MS": "20000", REVOKE_PAUSE_ENV: "11000"}
    first = _busy_member(config, tmp_path / "a", in_topic, out, group, **slow)
    topic = state_topic(group, "kafka-scaled")
    # A owns all 4 partitions and has checkpointed each: B's arrival moves 2 with state
    wait_until("A checkpoints", lambda: bool(read_state(config, topic, "3/", timeout=1.0)), first)
    second = _start(config, tmp_path / "b", in_topic, out, 1, group, **slow)
    (a, a_log), (b, b_log) = finish_with_log(first), finish_with_log(second)
    assert "maximum poll interval" not in a_log + b_log  # nobody was kicked out
    # A checkpointed what fit in half the interval and dropped the rest uncommitted
    assert a["dropped"] and set(a["dropped"]) < set(a["revoked"]), (a, b)
    # no loop: a few revokes (the cooperative protocol may take 2 rounds), not dozens
    assert len(a["revoked"]) <= 4 and not b["revoked"], (a, b)
    assert output(config, out) == reference
