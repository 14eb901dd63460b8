"""The retrain loop on a Kafka-sourced stream: history is replayed from the topic.

The pipeline (tests/conformance/retrain_pipeline.py) reads a SEA-like stream from a real
topic, derives a feature, and serves an online logistic regression in a retrain loop whose
policy names the pipeline file: on drift, the job (a child process) builds the pipeline
again, replays the newest ``history`` records of the topic up to the end offsets recorded
at the trigger through the same JSON decoding and feature step, and trains a candidate; it
is shadowed and promoted. The job's Kafka settings come from the environment it inherits,
never from its files or command line. A job killed mid-replay runs again on the same rows
and writes the same candidate, bit for bit.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import orjson
import pytest
from kafka_helpers import produce

from tidal.io.kafka import KafkaConfig
from tidal.io.kafka.admin import KafkaAdmin
from tidal.ml.learn.retrain_job import STATE_FILE, decode_state
from tidal.ml.registry import Registry
from tidal.runtime.history import replay_history
from tidal.testing import collect, run

pytestmark = pytest.mark.integration

CONFORMANCE = Path(__file__).parents[1] / "conformance"
PIPELINE = str(CONFORMANCE / "retrain_pipeline.py") + ":build"
DRIFT_AT = 4_000
N = 10_000
T0 = 1_700_000_000_000
KEEP = {"retention.ms": "-1"}  # records stamped in 2023: no deletion by time


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, CONFORMANCE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


contract = _module("history_contract")
pipeline_file = _module("retrain_pipeline")


def _sea(n: int, seed: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, size=(n, 3))
    return x, (x[:, 0] + x[:, 1] > theta).astype(np.int64)


def _produce_sea(config: KafkaConfig, topic: str, n: int, partitions: int = 1) -> None:
    x1, y1 = _sea(min(n, DRIFT_AT), 1, 8.0)
    x2, y2 = _sea(max(0, n - DRIFT_AT), 2, 13.0)
    x, y = np.r_[x1, x2], np.r_[y1, y2]
    values = [
        orjson.dumps({"a": r[0], "b": r[1], "c": r[2], "y": int(v)})
        for r, v in zip(x.tolist(), y.tolist(), strict=True)
    ]
    for p in range(partitions):  # row i to partition i % partitions, stamped T0 + i ms
        idx = range(p, n, partitions)
        produce(
            config, topic, [values[i] for i in idx],
            timestamps=[T0 + i for i in idx], partition=p,
        )  # fmt: skip


def _env(
    mp: pytest.MonkeyPatch, config: KafkaConfig, topic: str, tmp: Path, secret: str
) -> dict[str, str]:
    env = {
        "RETRAIN_SOURCE": "kafka",
        "RETRAIN_TOPIC": topic,
        "TIDAL_KAFKA": config.bootstrap_servers,  # KafkaConfig()'s default
        "RETRAIN_CLIENT_ID": secret,
        "RETRAIN_REGISTRY": str(tmp / "reg"),
        "RETRAIN_WORKDIR": str(tmp / "jobs"),
    }
    for k, v in env.items():
        mp.setenv(k, v)
    return env


def test_kafka_history_keeps_the_history_contract(
    kafka_config: KafkaConfig,
    kafka_topic: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = kafka_topic(2, config=KEEP)
    _produce_sea(kafka_config, topic, 200, partitions=2)
    _env(monkeypatch, kafka_config, topic, tmp_path, "unused")

    def c10(rows: Any) -> None:
        assert np.allclose(rows["c10"], rows["c"] / 10.0)  # decoded, then the prefix ran

    base = {"pipeline": PIPELINE, "step": "m"}
    contract.check_history(replay_history, base, {0: 100, 1: 100}, c10)


class LoopRun:
    def __init__(self, tmp: Path, env: dict[str, str], events: list[dict[str, Any]], counts: Any):
        self.tmp, self.env, self.events, self.counts = tmp, env, events, counts
        self.secret = env["RETRAIN_CLIENT_ID"]

    def event(self, kind: str, **match: Any) -> dict[str, Any]:
        return next(
            e
            for e in self.events
            if e["event"] == kind and all(e[k] == v for k, v in match.items())
        )


@pytest.fixture(scope="module")
def loop_run(kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopRun]:
    """The loop over 10,000 Kafka records (drift at 4,000), run once for the tests below."""
    config = kafka_broker.config()
    admin = KafkaAdmin(config, timeout=30.0)
    topic = f"t-retrain-{uuid.uuid4().hex[:8]}"
    admin.create_topic(topic, 1, config=KEEP)
    tmp = tmp_path_factory.mktemp("kafka-retrain")
    secret = f"secret-{uuid.uuid4().hex}"
    try:
        _produce_sea(config, topic, N)
        with pytest.MonkeyPatch.context() as mp:
            env = _env(mp, config, topic, tmp, secret)
            p = pipeline_file.build()
            rows = collect(pipeline_file.loop_output(p))
            events = collect(pipeline_file.loop_output(p, "events"))
            summary = run(p, max_batch=700)
            assert len(rows) == N
            yield LoopRun(tmp, env, events.records(), summary.counts)
    finally:
        admin.delete_topic(topic, missing_ok=True)


def test_drift_on_kafka_retrains_from_the_topic_shadows_and_promotes(loop_run: LoopRun) -> None:
    kinds = [e["event"] for e in loop_run.events]
    want = ["retrain_started", "retrain_finished", "registered", "shadow_score", "promoted"]
    assert [k for k in kinds if k in want][:5] == want, kinds
    promoted = next(e for e in loop_run.events if e["event"] == "promoted" and e["row"] > DRIFT_AT)
    started = loop_run.event("retrain_started", job=promoted["job"])
    drifts = [e["row"] for e in loop_run.events if e["event"] == "drift"]
    assert started["row"] - 800 in drifts  # `collect` rows after a drift...
    assert DRIFT_AT < started["row"] - 800 < DRIFT_AT + 500  # ...found soon after the change
    assert promoted["candidate_metric"] > promoted["serving_metric"]
    assert loop_run.counts["m.promotions"] >= 1
    # the job replayed the topic's newest 1,000 records up to the offsets fixed at the start
    job = loop_run.tmp / "jobs" / started["job"]
    spec = json.loads((job / "job.json").read_text())
    assert spec["pipeline"] == PIPELINE and spec["step"] == "m"
    assert spec["ends"] == {"0": started["row"]}  # one partition: offset = row count
    assert spec["starts"] == {"0": started["row"] - 1_000}
    assert json.loads((job / "done.json").read_text())["rows"] == 1_000
    rows = replay_history(spec | {"history": 10_000})
    assert rows.offset is not None
    assert rows.offset.tolist() == list(range(started["row"] - 1_000, started["row"]))
    # its Kafka settings came from the environment: in no file of the job
    for f in job.iterdir():
        assert loop_run.secret.encode() not in f.read_bytes(), f.name
    # registered with lineage, promoted through the registry
    reg = Registry(loop_run.tmp / "reg")
    version = reg.get("sea", promoted["candidate"])
    assert version.lineage.extra["job"] == started["job"]
    assert version.lineage.extra["pipeline"] == PIPELINE
    assert reg.stages("sea").production == promoted["candidate"]


def _arrays(tree: Any, at: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_arrays(v, f"{at}/{k}"))
        return out
    return {at: tree}


def _job(folder: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(folder / "stderr.txt", "ab") as err:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "tidal.ml.learn.retrain_job", str(folder)], env=env, stderr=err
        )


def test_a_job_killed_mid_replay_reruns_on_the_same_rows(
    loop_run: LoopRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    promoted = loop_run.event("promoted")
    original = loop_run.tmp / "jobs" / promoted["job"]
    spec = json.loads((original / "job.json").read_text())
    spec["parent"] = os.getpid()  # the job's parent is this test now
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "job.json").write_text(json.dumps(spec))
    env = {**os.environ, **loop_run.env, "TIDAL_RETRAIN_JOB": spec["id"]}
    gate = tmp_path / "gate"
    gate.write_text("")
    proc = _job(folder, {**env, "RETRAIN_GATE": str(gate)})
    deadline = time.monotonic() + 300
    while not Path(f"{gate}.reached").exists():  # the job is replaying: its first batch
        assert proc.poll() is None, (folder / "stderr.txt").read_text()
        assert time.monotonic() < deadline, "the job never reached its feature step"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # killed mid-replay
    assert proc.wait() == -signal.SIGKILL
    assert not (folder / "done.json").exists() and not (folder / STATE_FILE).exists()
    gate.unlink()
    rerun = _job(folder, env)
    assert rerun.wait(timeout=300) == 0, (folder / "stderr.txt").read_text()
    done = json.loads((folder / "done.json").read_text())
    assert done["rows"] == json.loads((original / "done.json").read_text())["rows"] == 1_000
    want = _arrays(decode_state((original / STATE_FILE).read_bytes()))
    got = _arrays(decode_state((folder / STATE_FILE).read_bytes()))
    assert want.keys() == got.keys()
    for k, v in want.items():  # the same candidate, bit for bit
        if isinstance(v, np.ndarray):
            assert np.array_equal(v, got[k]), k
        else:
            assert v == got[k], k
