"""Exactly-once on Kafka through kill -9: a real process killed again and again, then compared.

The worker (kafka_eos_worker.py) reads a Kafka topic, counts 1 s tumbling windows per key
and writes them to another topic through the exactly-once ``KafkaTransactionalSink``,
checkpointing every 50 ms. The test SIGKILLs it at seeded random moments: while it runs,
while it starts (importing, fencing the previous producer, restoring), at the runtime's
checkpoint crash points (``TIDAL_TEST_CRASH_POINT``) and in the middle of the Kafka commit
(``TIDAL_TEST_KAFKA_CRASH=in_commit``: offsets sent, commit not). Each time it is restarted
until it finishes. The output read with ``read_committed`` must then be the same multiset
as an uninterrupted run's: nothing lost, nothing twice.

The same test with the at-least-once ``KafkaSink`` must find duplicates (so it can fail): its
first kill comes right after it wrote windows to Kafka that no checkpoint covers yet
(``TIDAL_TEST_KAFKA_CRASH=after_write``), so the restart writes them again.
The seed is ``TIDAL_FAULT_SEED`` (default fixed) so a failure can be replayed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from kafka_eos_worker import produce
from kafka_helpers import new_topic, read_all

from tidal.io.kafka import KafkaConfig
from tidal.io.kafka.sink import CRASH_ENV as KAFKA_CRASH_ENV
from tidal.io.parts import read_committed
from tidal.runtime.checkpoint import CRASH_ENV, CRASH_POINTS

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("kafka_eos_worker.py")
TOTAL = 100_000
RATE = 8_000  # events per second while kills happen: 12.5 s of input, more than kills eat
SEED = int(os.environ.get("TIDAL_FAULT_SEED", "20240101"))


def _start(
    sink: str,
    config: KafkaConfig,
    topics: tuple[str, str],
    tmp: Path,
    rate: int,
    env_add: dict[str, str],
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDAL_")}
    env.update(env_add)
    args = [sys.executable, str(WORKER), sink, config.bootstrap_servers, *topics]
    return subprocess.Popen(
        [*args, str(tmp / "out"), str(tmp / "data"), str(rate)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def _output(config: KafkaConfig, topic: str, tmp: Path) -> tuple[Counter[bytes], Counter[bytes]]:
    main = Counter(r.value or b"" for r in read_all(config, topic))
    late = Counter(
        orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in read_committed(tmp / "out" / "late")
    )
    return main, late


def _run_to_end(sink: str, config: KafkaConfig, topics: tuple[str, str], tmp: Path) -> int | None:
    proc = _start(sink, config, topics, tmp, 0, {})
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    summary = orjson.loads(stdout.splitlines()[-1])
    assert summary["events_total"] == TOTAL, summary
    restored: int | None = orjson.loads(stdout.splitlines()[0])["restored_from"]
    return restored


@pytest.mark.parametrize(("sink", "kills"), [("eos", 20), ("alo", 6)])
def test_kafka_kill_9_loses_and_duplicates_nothing_only_with_transactions(
    sink: str, kills: int, kafka_config: KafkaConfig, tmp_path: Path
) -> None:
    started = time.monotonic()
    source = new_topic(kafka_config, "eos-in", 1)
    produce(kafka_config.bootstrap_servers, source, TOTAL)

    ref_topic = new_topic(kafka_config, "eos-ref", 2)
    _run_to_end("eos", kafka_config, (source, ref_topic), tmp_path / "ref")
    ref_main, ref_late = _output(kafka_config, ref_topic, tmp_path / "ref")
    assert len(ref_main) > 10_000 and len(ref_late) > 100
    assert max(ref_main.values()) == 1  # every window row is distinct

    rng = random.Random(f"{SEED}-{sink}")
    out_topic = new_topic(kafka_config, f"{sink}-out", 2)
    topics, run = (source, out_topic), tmp_path / "run"
    moments: list[str] = []
    restored: list[int | None] = []
    for _attempt in range(200):
        if len(moments) >= kills:
            restored.append(_run_to_end(sink, kafka_config, topics, run))
            break
        env: dict[str, str] = {}
        how = rng.random()
        if sink == "alo" and not moments:  # once right after windows reached Kafka, before
            env[KAFKA_CRASH_ENV] = "after_write:2"  # a checkpoint covers them: it must repeat
        elif how < 0.3:
            env[CRASH_ENV] = f"{rng.choice(CRASH_POINTS)}:{rng.randint(1, 4)}"
        elif how < 0.45 and sink == "eos":
            env[KAFKA_CRASH_ENV] = f"in_commit:{rng.randint(1, 4)}"
        proc = _start(sink, kafka_config, topics, run, RATE, env)
        assert proc.stdout is not None
        if how > 0.85:  # while it starts: importing, fencing, restoring
            time.sleep(rng.uniform(0.0, 1.5))
            proc.send_signal(signal.SIGKILL)
            moment = "starting"
        else:
            line = proc.stdout.readline()
            assert line, proc.communicate()[1].decode()[-3000:]
            restored.append(orjson.loads(line)["restored_from"])
            if not env:
                time.sleep(rng.uniform(0.0, 0.4))
                proc.send_signal(signal.SIGKILL)
            moment = next(iter(env.values()), "running")
        _, stderr = proc.communicate(timeout=120)
        if proc.returncode == 0:  # it finished before the kill came: that is fine, once
            moments.append(f"{moment} (finished)")
            break
        assert proc.returncode == -signal.SIGKILL, (moment, proc.returncode, stderr.decode())
        moments.append(moment)

    main, late = _output(kafka_config, out_topic, run)
    lost, extra = ref_main - main, main - ref_main
    kinds = Counter(m.split(":")[0] for m in moments)
    print(f"{sink}: {len(moments)} kills ({kinds}), {time.monotonic() - started:.1f} s")
    assert len(moments) >= kills, moments
    assert sum(r is not None for r in restored) >= len(restored) // 2  # kills were real
    if sink == "eos":
        assert not lost and not extra, f"{sum(lost.values())} lost, {sum(extra.values())} extra"
        assert late == ref_late
        assert sum(m.startswith("in_commit") for m in moments) >= 2
    else:  # at-least-once: nothing lost, but the kills make it write windows again
        assert not lost
        assert sum(extra.values()) > 0, "the at-least-once sink wrote no duplicate"
