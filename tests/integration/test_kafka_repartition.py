"""``tidal run --group NAME`` with a repartition topic: key_by on a column that is not the key.

The input's message key is ``k``; the pipeline (kafka_repartition_pipeline.py) groups by
``u``, so a group runs it in two stages joined by the topic
``<group>.kafka-repartitioned.repartition`` that Tidal creates (decision 0042). The committed
windows must equal one uninterrupted process's (which reads every partition, so needs no
repartition): with one member, with two, with one of two SIGKILLed mid-run (in a seeded
stage 1 batch, while it holds partitions; the supervisor restarts it), and with one
killing itself inside a checkpoint (state and rows produced but not committed; committed
but not recorded). 0 lost, 0 duplicated.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from kafka_helpers import new_topic, produce, read_all

from tidal.io.kafka import KafkaConfig

pytestmark = pytest.mark.integration

PIPELINE = Path(__file__).with_name("kafka_repartition_pipeline.py")
TOTAL = 8_000
WAIT_S = 240.0
SEED = int(os.environ.get("TIDAL_FAULT_SEED", "20240101"))


def _input(config: KafkaConfig) -> str:
    topic = new_topic(config, "repart-in", partitions=4)
    seq = np.arange(TOTAL, dtype=np.int64)
    keys = [f"key{k}" for k in ((seq * 7_919) % 61).tolist()]  # the message key
    users = [f"u{u}" for u in ((seq * 31) % 17).tolist()]  # what the pipeline groups by
    vals = ((seq * 2_654_435_761) % 1_000).tolist()
    ts = (1_704_067_200_000 + seq).tolist()
    values = [
        orjson.dumps({"k": k, "u": u, "v": v, "ts": t})
        for k, u, v, t in zip(keys, users, vals, ts, strict=True)
    ]
    produce(config, topic, values, keys=[k.encode() for k in keys], timestamps=ts)
    return topic


def _env(config: KafkaConfig, in_topic: str, out: str, **env: str) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "SCALE_"))}
    full.update(SCALE_BOOTSTRAP=config.bootstrap_servers, SCALE_IN=in_topic, SCALE_OUT=out)
    full.update(env)
    return full


def _start(
    config: KafkaConfig,
    data: Path,
    in_topic: str,
    out: str,
    workers: int,
    group: str,
    max_batch: int = 500,
    **env: str,
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "tidal.cli", "run", str(PIPELINE), "--json"]
    cmd += ["--group", group, "--workers", str(workers)]
    cmd += ["--checkpoint-interval", "50ms", "--max-batch", str(max_batch), "--max-wait", "0ms"]
    cmd += ["--data-dir", str(data)]
    return subprocess.Popen(
        cmd, env=_env(config, in_topic, out, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


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


def _output(config: KafkaConfig, topic: str) -> Counter[bytes]:
    rows = [orjson.loads(r.value or b"{}") for r in read_all(config, topic)]
    return Counter(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rows)


@pytest.fixture(scope="module")
def setup(
    kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[KafkaConfig, str, Counter[bytes]]:
    """The input, and the output of one uninterrupted process (no group, no repartition)."""
    config = kafka_broker.config()
    in_topic = _input(config)
    out = new_topic(config, "repart-out", partitions=2)
    cmd = [sys.executable, "-m", "tidal.cli", "run", str(PIPELINE), "--json"]
    cmd += ["--checkpoint-interval", "50ms", "--max-batch", "500", "--max-wait", "0ms"]
    cmd += ["--data-dir", str(tmp_path_factory.mktemp("one"))]
    done = subprocess.run(
        cmd, env=_env(config, in_topic, out), capture_output=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert orjson.loads(done.stdout.splitlines()[-1])["events"] == TOTAL
    reference = _output(config, out)
    assert sum(reference.values()) > 100 and max(reference.values()) == 1
    return config, in_topic, reference


@pytest.mark.parametrize("workers", [1, 2])
def test_a_group_keyed_by_another_column_gives_the_output_of_one_process(
    workers: int, setup: tuple[KafkaConfig, str, Counter[bytes]], tmp_path: Path
) -> None:
    from tidal.io.kafka.admin import KafkaAdmin

    config, in_topic, reference = setup
    out = new_topic(config, "repart-out", partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    summary = _finish(_start(config, tmp_path, in_topic, out, workers, group))
    assert summary["events"] >= TOTAL, summary
    assert _output(config, out) == reference
    assert KafkaAdmin(config).partitions(f"{group}.kafka-repartitioned.repartition") == 4
    owned = summary["per_worker"] if "per_worker" in summary else [summary]
    stage2 = {p for w in owned for p in w["assigned"] if isinstance(p, str)}
    assert stage2 == {"r0", "r1", "r2", "r3"}, summary  # the second stage ran, all of it


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
    proc = _start(config, tmp_path, in_topic, out, 2, group, 200, **env)
    reached = Path(f"{gate}.reached")
    deadline = time.monotonic() + WAIT_S
    while not reached.exists():
        assert proc.poll() is None, proc.communicate()[1].decode()[-4000:]
        assert time.monotonic() < deadline, f"no worker reached batch {at}"
        time.sleep(0.01)
    os.kill(int(reached.read_text()), signal.SIGKILL)
    gate.unlink()
    summary = _finish(proc)
    assert sorted(summary["restarts"]) == [0, 1], (at, summary)
    assert _output(config, out) == reference, at


@pytest.mark.parametrize("point", ["after_manifest:4", "mid_commit:3"])
def test_a_member_killed_inside_a_checkpoint_loses_and_duplicates_nothing(
    point: str, setup: tuple[KafkaConfig, str, Counter[bytes]], tmp_path: Path
) -> None:
    # after_manifest: the repartitioned rows (or the windows) and the state are in the open
    # transaction, not committed; mid_commit: committed, the runtime had not finished
    config, in_topic, reference = setup
    out = new_topic(config, "repart-out", partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    env = {"TIDAL_TEST_WORKER_CRASH": f"0:{point}", "SCALE_PACE_MS": "20"}
    summary = _finish(_start(config, tmp_path, in_topic, out, 2, group, 200, **env))
    assert summary["restarts"] == [1, 0], summary
    assert _output(config, out) == reference
