"""``tidal demo --kafka``: the sensor demo through real Kafka topics, killed and restarted.

The demo runs as a user runs it (``python -m tidal demo --kafka``) against the test broker:
a feed process produces the readings into topic ``demo-sensors``, the pipeline reads them
with a ``KafkaSource`` and commits its alerts to topic ``demo-alerts`` in one transaction
per checkpoint (and to part files). It is SIGKILLed at seeded random moments once it has
checkpointed progress, then stopped with Ctrl-C. The alerts a ``read_committed`` reader
sees in ``demo-alerts`` must each be there once, equal the committed part files, and match
an uninterrupted in-process run over the same readings.
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
from typing import Any

import orjson
import pytest
from kafka_helpers import read_all

from tidal.apps.demo import EPOCH_MS, build_demo
from tidal.apps.demo.pipeline import ALERTS_TOPIC, KAFKA_PIPELINE, TOPIC, reset_demo
from tidal.io.kafka import KafkaConfig
from tidal.io.kafka.admin import KafkaAdmin
from tidal.io.parts import read_committed
from tidal.runtime.snapshot import decode

pytestmark = pytest.mark.integration

SENSORS = 100
KILLS = 2
DUE = 10  # alerts the final comparison must cover at least
MARGIN_S = 60.0  # event time after a window's end before its alert counts as due
SEED = int(os.environ.get("TIDAL_FAULT_SEED", "20240101"))


def _start(config: KafkaConfig, data: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDAL_")}
    cmd = [sys.executable, "-m", "tidal", "demo", "--kafka", "--rate", "max"]
    cmd += ["--sensors", str(SENSORS), "--bootstrap-servers", config.bootstrap_servers]
    cmd += ["--data-dir", str(data), "--out", str(out), "--checkpoint-interval", "200ms"]
    return subprocess.Popen(
        [*cmd, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def _progress(data: Path) -> int:
    """Readings counted by the newest complete checkpoint (0 for none)."""
    done = sorted((data / "checkpoints" / KAFKA_PIPELINE).glob("chk-*/MANIFEST.json"))
    if not done:
        return 0
    try:
        state = decode((done[-1].parent / "state.npz").read_bytes())
    except FileNotFoundError:  # deleted meanwhile: a newer one replaced it
        return 0
    return int(state["snapshot"]["events"])


def _wait_for_progress(proc: subprocess.Popen[str], data: Path, before: int) -> None:
    deadline = time.monotonic() + 120
    while _progress(data) <= before:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the demo checkpointed no progress in 120 s"
        time.sleep(0.05)


def _position_for_due_alerts(n: int) -> int:
    """Readings after which an uninterrupted run's first ``n`` alerts are all due."""
    pipeline, handles = build_demo(sensors=SENSORS, rate=None, keep_alerts=True)
    pipeline.run(max_events=600_000, max_wait="0ms", handle_signals=False)
    assert handles.alerts is not None
    ends = sorted(a["window_end"] for a in handles.alerts.records())
    assert len(ends) >= n, f"the first 600,000 readings raise {len(ends)} alerts"
    seconds = (ends[n - 1] - EPOCH_MS) / 1000 + MARGIN_S
    return int(seconds * SENSORS * 10.0) + 1


def _key(alert: dict[str, Any]) -> tuple[int, int, int, int]:
    return alert["sensor"], alert["window_start"], alert["window_end"], alert["count"]


def test_demo_on_kafka_killed_and_restarted_commits_each_alert_once(
    kafka_config: KafkaConfig, tmp_path: Path
) -> None:
    admin = KafkaAdmin(kafka_config)
    for name in (TOPIC, ALERTS_TOPIC):  # a clean slate on a shared cluster
        admin.delete_topic(name, missing_ok=True)
    rng = random.Random(f"{SEED}-demo-kafka")
    data, out = tmp_path / "data", tmp_path / "alerts"
    for _ in range(KILLS):
        before = _progress(data)
        proc = _start(kafka_config, data, out)
        _wait_for_progress(proc, data, before)  # it runs, however busy the machine
        time.sleep(rng.uniform(0.3, 1.5))  # a random moment once it runs
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL

    # The check below needs at least DUE alerts whose windows closed a minute of event time
    # before the stop. How far the demo got by then depends on the machine's speed, so the
    # last run is stopped only once a checkpoint covers the readings that make them due.
    needed = _position_for_due_alerts(DUE)
    before = _progress(data)
    proc = _start(kafka_config, data, out, "--json")
    _wait_for_progress(proc, data, before)
    deadline = time.monotonic() + 180
    while len(read_committed(out)) < 20 or _progress(data) < needed:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, f"no checkpoint of {needed} readings in 180 s"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    summary = orjson.loads(stdout)
    assert summary["restored_from"] is not None and summary["restored_events"] > 0, summary
    position = summary["position"]

    in_kafka = [orjson.loads(r.value) for r in read_all(kafka_config, ALERTS_TOPIC)]
    counts = Counter(_key(a) for a in in_kafka)
    repeated = [k for k, n in counts.items() if n > 1]
    assert not repeated, f"{len(repeated)} alerts committed twice to Kafka, e.g. {repeated[:3]}"
    assert set(counts) == {_key(a) for a in read_committed(out)}

    pipeline, handles = build_demo(sensors=SENSORS, rate=None, keep_alerts=True)
    pipeline.run(max_events=position + 50_000, max_wait="0ms", handle_signals=False)
    assert handles.alerts is not None
    reference = {_key(a): a for a in handles.alerts.records()}
    cutoff = EPOCH_MS + int((position / (SENSORS * 10.0) - MARGIN_S) * 1000)
    due = {k for k, a in reference.items() if a["window_end"] <= cutoff}
    assert len(due) >= DUE
    lost = due - set(counts)
    extra = set(counts) - set(reference)
    assert not lost, f"{len(lost)} alerts lost, e.g. {sorted(lost)[:3]}"
    assert not extra, f"{len(extra)} alerts the uninterrupted run did not raise"

    # --reset deletes the topics and the transactions' checkpoint group as well
    deleted = reset_demo(data, out, kafka=kafka_config)
    assert out in deleted and not (data / "checkpoints" / KAFKA_PIPELINE).exists()
    assert {TOPIC, ALERTS_TOPIC}.isdisjoint(admin.topics())
    assert f"{KAFKA_PIPELINE}.checkpoints" not in admin.groups()
