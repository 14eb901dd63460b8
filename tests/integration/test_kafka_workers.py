"""``tidal run --workers N`` over Kafka (static partitions): the output of one process.

A keyed input topic of 4 partitions; the pipeline of kafka_scale_pipeline.py writes 1 s
windows to an output topic through ``KafkaTransactionalSink`` (transactional id per worker,
``<id>-w<i>``). The committed output of 2 workers, uninterrupted or with one worker killing
itself inside a checkpoint (seeded crash points; the supervisor restarts it, it resumes from
its checkpoint and its transactional id fences its dead predecessor), must equal the
output of one process: nothing lost, nothing twice.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from kafka_runs import SCALE_TOTAL, SEED, Setup, output, scale_reference, scale_run

from tidal.runtime.workers import CRASH_WORKER_ENV

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return scale_reference(kafka_broker.config(), tmp_path_factory.mktemp("one"))


def test_two_kafka_workers_give_the_output_of_one_process(setup: Setup, tmp_path: Path) -> None:
    config, in_topic, reference = setup
    out, summary = scale_run(config, tmp_path, in_topic, 2)
    assert summary["workers"] == 2 and summary["restarts"] == [0, 0]
    assert summary["events"] == SCALE_TOTAL
    assert output(config, out) == reference


@pytest.mark.parametrize("attempt", range(2))
def test_a_kafka_worker_killed_inside_a_checkpoint_resumes_exactly_once(
    attempt: int, setup: Setup, tmp_path: Path
) -> None:
    config, in_topic, reference = setup
    rng = random.Random(SEED + attempt)
    point = rng.choice(["after_prepare", "after_manifest", "mid_commit", "after_commit"])
    crash = f"{rng.randrange(2)}:{point}:{rng.randrange(1, 6)}"
    out, summary = scale_run(config, tmp_path, in_topic, 2, **{CRASH_WORKER_ENV: crash})
    assert sorted(summary["restarts"]) == [0, 1], crash
    assert output(config, out) == reference, crash
