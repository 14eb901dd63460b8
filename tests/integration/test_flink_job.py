"""examples/flink_job.py end to end: Kafka -> Flink SQL -> Tidal model + detector -> Kafka.

Runs on PyFlink's local mini-cluster (``make flink-test``, in .venv-flink) against the
project's Kafka broker (the ``kafka_broker`` fixture), with Flink's own Kafka SQL connector
jar from Maven Central. In the main environment (no PyFlink) it skips.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

if importlib.util.find_spec("pyflink") is None:  # as tests/flink/flink_env.require_pyflink
    if os.environ.get("TIDAL_FLINK_TESTS") == "1":
        raise RuntimeError("TIDAL_FLINK_TESTS=1 but PyFlink is missing: run `make flink-env`")
    pytest.skip(
        "PyFlink lives in .venv-flink: `make flink-test` runs this", allow_module_level=True
    )

from tidal.flink.core import KeyedDetector, Scorer  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS, WINDOWS, PER_WINDOW, SPIKE = ("h1", "h2", "h3"), 300, 4, 250
T0 = 1_700_000_000_000


def _example() -> Any:
    path = Path(__file__).resolve().parents[2] / "examples" / "flink_job.py"
    spec = importlib.util.spec_from_file_location("flink_job_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _events() -> list[dict[str, Any]]:
    out = []
    for w in range(WINDOWS):
        for j in range(PER_WINDOW):
            for h, host in enumerate(HOSTS):
                spike = host == "h1" and w == SPIKE
                out.append(
                    {
                        "host": host,
                        "ts": T0 + w * 1000 + j * 250,
                        "latency_ms": 400.0 if spike else 20 + 5 * math.sin(w / 10 + h) + j * 0.5,
                        "errors": 3 if spike else 0,
                    }
                )
    return out


def test_flink_job_scores_and_detects_from_kafka_to_kafka(
    kafka_config: Any, kafka_topic: Any
) -> None:
    from confluent_kafka import Consumer, Producer

    bootstrap = kafka_config.bootstrap_servers
    source, sink = kafka_topic(1), kafka_topic(1)
    producer = Producer({"bootstrap.servers": bootstrap})
    for e in _events():
        producer.produce(source, json.dumps(e).encode())
    producer.produce(source, b"{not json")  # a bad record: skipped by the JSON format
    assert producer.flush(30) == 0

    example = _example()
    example.build(bootstrap, source, sink, bounded=True).wait()

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "check",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([sink])
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while len(rows) < len(HOSTS) * WINDOWS and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            rows.append(json.loads(msg.value()))
    consumer.close()
    assert len(rows) == len(HOSTS) * WINDOWS

    # the model: the same ONNX model scores the same features identically in Tidal
    scorer = Scorer(example.model(), output="risk")
    scorer.open()
    want = scorer.score([np.array([r[f] for r in rows]) for f in example.FEATURES])
    np.testing.assert_array_equal(np.array([r["risk"] for r in rows]), want["risk"])
    assert {r["model_version"] for r in rows} == {"risk-v1"}

    # the detector: each host's windows, in order, as Tidal scores the series
    for host in HOSTS:
        mine = sorted((r for r in rows if r["host"] == host), key=lambda r: r["last_ts"])
        assert [r["events"] for r in mine] == [PER_WINDOW] * WINDOWS
        means = np.array([r["mean_latency"] for r in mine])
        cols, _ = KeyedDetector("median_mad").score(None, means)
        np.testing.assert_array_equal([r["deviation"] for r in mine], cols["deviation"])
        alerts = [i for i, r in enumerate(mine) if r["alert"]]
        assert alerts == ([SPIKE] if host == "h1" else [])
    spike = next(r for r in rows if r["host"] == "h1" and r["alert"])
    assert spike["risk"] > 0.99 and spike["anomaly_score"] > 0.99
