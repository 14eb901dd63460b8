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
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka_helpers import new_topic
from kafka_runs import HERE, SEED, finish, keyed_input, output, start_run

from tidal.io.kafka import KafkaConfig
from tidal.runtime.workers import CRASH_WORKER_ENV

pytestmark = pytest.mark.integration

PIPELINE = HERE / "kafka_scale_pipeline.py"
TOTAL = 12_000


def _input(config: KafkaConfig) -> str:
    return keyed_input(config, "scale-in", TOTAL)


def _run(
    config: KafkaConfig, data: Path, in_topic: str, workers: int, **env: str
) -> tuple[str, dict[str, Any]]:
    """A run of ``--workers N`` (no group) to a new output topic, checkpointing every 1 ms."""
    out = new_topic(config, "scale-out", partitions=2)
    proc = start_run(PIPELINE, config, data, in_topic, out, workers=workers, interval="1ms", **env)
    return out, finish(proc)


@pytest.fixture(scope="module")
def setup(
    kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[KafkaConfig, str, Counter[bytes]]:
    config = kafka_broker.config()
    in_topic = _input(config)
    out, summary = _run(config, tmp_path_factory.mktemp("one"), in_topic, 1)
    assert summary["events"] == TOTAL and "workers" not in summary
    reference = output(config, out)
    assert sum(reference.values()) > 500 and max(reference.values()) == 1
    return config, in_topic, reference


def test_two_kafka_workers_give_the_output_of_one_process(
    setup: tuple[KafkaConfig, str, Counter[bytes]], tmp_path: Path
) -> None:
    config, in_topic, reference = setup
    out, summary = _run(config, tmp_path, in_topic, 2)
    assert summary["workers"] == 2 and summary["restarts"] == [0, 0]
    assert summary["events"] == TOTAL
    assert output(config, out) == reference


@pytest.mark.parametrize("attempt", range(2))
def test_a_kafka_worker_killed_inside_a_checkpoint_resumes_exactly_once(
    attempt: int, setup: tuple[KafkaConfig, str, Counter[bytes]], tmp_path: Path
) -> None:
    config, in_topic, reference = setup
    rng = random.Random(SEED + attempt)
    point = rng.choice(["after_prepare", "after_manifest", "mid_commit", "after_commit"])
    crash = f"{rng.randrange(2)}:{point}:{rng.randrange(1, 6)}"
    out, summary = _run(config, tmp_path, in_topic, 2, **{CRASH_WORKER_ENV: crash})
    assert sorted(summary["restarts"]) == [0, 1], crash
    assert output(config, out) == reference, crash
