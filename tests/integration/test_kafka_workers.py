"""``tidal run --workers N`` over Kafka (static partitions): the output of one process.

A keyed input topic of 4 partitions; the pipeline of kafka_scale_pipeline.py writes 1 s
windows to an output topic through ``KafkaTransactionalSink`` (transactional id per worker,
``<id>-w<i>``). The committed output of 2 workers, uninterrupted or with one worker killing
itself inside a checkpoint (seeded crash points; the supervisor restarts it, it resumes from
its checkpoint and its transactional id fences its dead predecessor), must equal the
output of one process: nothing lost, nothing twice.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from kafka_helpers import new_topic, produce, read_all

from tidal.io.kafka import KafkaConfig
from tidal.runtime.workers import CRASH_WORKER_ENV

pytestmark = pytest.mark.integration

PIPELINE = Path(__file__).with_name("kafka_scale_pipeline.py")
TOTAL = 12_000
KEYS = 61
SEED = int(os.environ.get("TIDAL_FAULT_SEED", "20240101"))


def _input(config: KafkaConfig) -> str:
    topic = new_topic(config, "scale-in", partitions=4)
    seq = np.arange(TOTAL, dtype=np.int64)
    keys = [f"key{k}" for k in ((seq * 7_919) % KEYS).tolist()]
    vals = ((seq * 2_654_435_761) % 1_000).tolist()
    ts = (1_704_067_200_000 + seq).tolist()
    values = [
        orjson.dumps({"k": k, "v": v, "ts": t}) for k, v, t in zip(keys, vals, ts, strict=True)
    ]
    produce(config, topic, values, keys=[k.encode() for k in keys], timestamps=ts)
    return topic


def _run(
    config: KafkaConfig, data: Path, in_topic: str, workers: int, **env: str
) -> tuple[str, dict[str, Any]]:
    out = new_topic(config, "scale-out", partitions=2)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "SCALE_"))}
    full.update(SCALE_BOOTSTRAP=config.bootstrap_servers, SCALE_IN=in_topic, SCALE_OUT=out, **env)
    cmd = [
        sys.executable,
        "-m",
        "tidal.cli",
        "run",
        str(PIPELINE),
        "--json",
        "--workers",
        str(workers),
    ]
    cmd += ["--checkpoint-interval", "1ms", "--max-batch", "500", "--max-wait", "0ms"]
    cmd += ["--data-dir", str(data)]
    done = subprocess.run(cmd, env=full, capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return out, orjson.loads(done.stdout.splitlines()[-1])


def _output(config: KafkaConfig, topic: str) -> Counter[bytes]:
    rows = [orjson.loads(r.value or b"{}") for r in read_all(config, topic)]
    return Counter(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rows)


@pytest.fixture(scope="module")
def setup(
    kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[KafkaConfig, str, Counter[bytes]]:
    config = kafka_broker.config()
    in_topic = _input(config)
    out, summary = _run(config, tmp_path_factory.mktemp("one"), in_topic, 1)
    assert summary["events"] == TOTAL and "workers" not in summary
    reference = _output(config, out)
    assert sum(reference.values()) > 500 and max(reference.values()) == 1
    return config, in_topic, reference


def test_two_kafka_workers_give_the_output_of_one_process(
    setup: tuple[KafkaConfig, str, Counter[bytes]], tmp_path: Path
) -> None:
    config, in_topic, reference = setup
    out, summary = _run(config, tmp_path, in_topic, 2)
    assert summary["workers"] == 2 and summary["restarts"] == [0, 0]
    assert summary["events"] == TOTAL
    assert _output(config, out) == reference


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
    assert _output(config, out) == reference, crash
