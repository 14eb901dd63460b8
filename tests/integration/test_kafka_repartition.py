"""``tidal run --group NAME`` with a repartition topic: key_by on a column that is not the key.

The input's message key is ``k``; the pipeline (kafka_repartition_pipeline.py) groups by
``u``, so a group runs it in two stages joined by the topic
``<group>.kafka-repartitioned.repartition`` that Tidal creates (decision 0042). The committed
windows must equal one uninterrupted process's (which reads every partition, so needs no
repartition): with one member, with two, with one of two SIGKILLed mid-run (in a seeded
stage 1 batch, while it holds partitions; the supervisor restarts it), and with one
killing itself inside a checkpoint (state and rows produced but not committed; committed
but not recorded; committed but not purged). 0 lost, 0 duplicated.

The purge (decision 0056): after each run every repartition partition starts at stage 2's
committed offset (records below it deleted, none at or past it); the kill tests purge after
every commit, so a purge that deleted a record stage 2 still needed would lose windows. A
purge the broker refuses is reported, not raised.
"""

from __future__ import annotations

import os
import random
import signal
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka_helpers import new_topic, produce
from kafka_runs import HERE, SEED, finish, keyed_input, output, start_run, wait_until

from tidal.errors import ConnectorError
from tidal.io.kafka import KafkaConfig
from tidal.io.kafka.admin import KafkaAdmin
from tidal.runtime.workers.purge import Purger

pytestmark = pytest.mark.integration

PIPELINE = HERE / "kafka_repartition_pipeline.py"
TOTAL = 8_000
EVERY_COMMIT = ("--repartition-purge-interval", "1ms")  # purge after (nearly) every commit


def _purged_to_the_commit(config: KafkaConfig, group: str) -> dict[int, tuple[int, int]]:
    """Per repartition partition: (first offset kept, stage 2's committed offset).

    Asserts that no record at or past the committed offset was deleted.
    """
    topic = f"{group}.kafka-repartitioned.repartition"
    admin = KafkaAdmin(config, timeout=30.0)
    committed = admin.committed(f"{topic}.in", topic)
    first = admin.start_offsets(topic)
    assert sorted(committed) == [0, 1, 2, 3], committed  # stage 2 committed every partition
    for p, low in first.items():
        assert low <= committed[p], (p, low, committed)  # never past the commit
    return {p: (first[p], committed[p]) for p in sorted(first)}


def _purge_figures(summary: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
    owned = summary["per_worker"] if "per_worker" in summary else [summary]
    purged: dict[str, int] = {}
    errors: list[str] = []
    for w in owned:
        for p, off in w.get("purged", {}).items():
            purged[p] = max(purged.get(p, 0), off)
        errors += w.get("purge_errors", [])
    return purged, errors


@pytest.fixture(scope="module")
def setup(
    kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[KafkaConfig, str, Counter[bytes]]:
    """The input, and the output of one uninterrupted process (no group, no repartition)."""
    config = kafka_broker.config()
    in_topic = keyed_input(config, "repart-in", TOTAL, users=True)
    out = new_topic(config, "repart-out", partitions=2)
    data = tmp_path_factory.mktemp("one")
    summary = finish(start_run(PIPELINE, config, data, in_topic, out))
    assert summary["events"] == TOTAL
    reference = output(config, out)
    assert sum(reference.values()) > 100 and max(reference.values()) == 1
    return config, in_topic, reference


@pytest.mark.parametrize("workers", [1, 2])
def test_a_group_keyed_by_another_column_gives_the_output_of_one_process(
    workers: int, setup: tuple[KafkaConfig, str, Counter[bytes]], tmp_path: Path
) -> None:
    config, in_topic, reference = setup
    out = new_topic(config, "repart-out", partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    proc = start_run(PIPELINE, config, tmp_path, in_topic, out, workers=workers, group=group)
    summary = finish(proc)
    assert summary["events"] >= TOTAL, summary
    assert output(config, out) == reference
    assert KafkaAdmin(config).partitions(f"{group}.kafka-repartitioned.repartition") == 4
    owned = summary["per_worker"] if "per_worker" in summary else [summary]
    stage2 = {p for w in owned for p in w["assigned"] if isinstance(p, str)}
    assert stage2 == {"r0", "r1", "r2", "r3"}, summary  # the second stage ran, all of it
    # the purge (default interval, so the final checkpoints' purges at least): every
    # repartition partition now starts at stage 2's committed offset
    purged, errors = _purge_figures(summary)
    assert not errors, errors
    kept = _purged_to_the_commit(config, group)
    assert all(low == done > 0 for low, done in kept.values()), kept
    assert purged == {f"r{p}": low for p, (low, _) in kept.items()}, (purged, kept)


@pytest.mark.parametrize("attempt", range(2))
def test_a_member_sigkilled_mid_run_loses_and_duplicates_nothing(
    attempt: int, setup: tuple[KafkaConfig, str, Counter[bytes]], tmp_path: Path
) -> None:
    config, in_topic, reference = setup
    rng = random.Random(SEED + attempt)
    # the stage 1 batch where the first worker to reach it is killed: batches of 200 give
    # each input partition (2,000 records) about 10, so a worker with one reaches it
    at = rng.randrange(2, 6)
    out = new_topic(config, "repart-out", partitions=2)
    gate = tmp_path / "gate"
    gate.touch()
    group = f"g-{uuid.uuid4().hex[:8]}"
    env = {"SCALE_GATE": str(gate), "SCALE_GATE_AT": str(at), "SCALE_PACE_MS": "10"}
    proc = start_run(
        PIPELINE, config, tmp_path, in_topic, out, workers=2, group=group, max_batch=200,
        args=EVERY_COMMIT, **env,
    )  # fmt: skip
    reached = Path(f"{gate}.reached")
    wait_until(f"a worker reaches batch {at}", reached.exists, proc)
    os.kill(int(reached.read_text()), signal.SIGKILL)
    gate.unlink()
    summary = finish(proc)
    assert sorted(summary["restarts"]) == [0, 1], (at, summary)
    assert output(config, out) == reference, at
    kept = _purged_to_the_commit(config, group)  # purged at each commit: nothing lost
    assert all(low == done > 0 for low, done in kept.values()), kept


@pytest.mark.parametrize("point", ["after_manifest:4", "mid_commit:3", "after_commit:3"])
def test_a_member_killed_inside_a_checkpoint_loses_and_duplicates_nothing(
    point: str, setup: tuple[KafkaConfig, str, Counter[bytes]], tmp_path: Path
) -> None:
    # after_manifest: the repartitioned rows (or the windows) and the state are in the open
    # transaction, not committed; mid_commit: committed, the runtime had not finished;
    # after_commit: committed, not purged yet (a stage 2 task's purge is lost with it, and
    # the partition's next owner purges when it restores it). Purging at every commit.
    config, in_topic, reference = setup
    out = new_topic(config, "repart-out", partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    env = {"TIDAL_TEST_WORKER_CRASH": f"0:{point}", "SCALE_PACE_MS": "20"}
    proc = start_run(
        PIPELINE, config, tmp_path, in_topic, out, workers=2, group=group, max_batch=200,
        args=EVERY_COMMIT, **env,
    )  # fmt: skip
    summary = finish(proc)
    assert summary["restarts"] == [1, 0], summary
    assert output(config, out) == reference
    kept = _purged_to_the_commit(config, group)
    assert all(low == done > 0 for low, done in kept.values()), kept
    assert _purge_figures(summary)[1] == [], summary


def test_a_purge_the_broker_refuses_is_reported_not_raised(kafka_broker: Any) -> None:
    config = kafka_broker.config()
    topic = new_topic(config, "purge", partitions=1)
    produce(config, topic, [b"x"] * 5)
    admin = KafkaAdmin(config, timeout=30.0)
    with pytest.raises(ConnectorError, match="deleting records"):
        admin.delete_records(topic, {0: 50})  # past the end: OFFSET_OUT_OF_RANGE
    purger = Purger(admin, topic, every=3600.0)
    purger.committed(0, 50)
    purger.close()
    assert len(purger.errors) == 1 and purger.errors[0].startswith("0@50: "), purger.errors
    assert admin.start_offsets(topic) == {0: 0} and purger.purged == {}
    purger.committed(0, 3)  # a failure does not hold the next request back (throttle)
    purger.close()
    assert purger.purged == {0: 3} and admin.start_offsets(topic) == {0: 3}
    assert admin.delete_records(topic, {0: 4}) == {0: 4}
