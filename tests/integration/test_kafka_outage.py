"""The broker goes away for 10 s in the middle of a run and comes back.

A pipeline reads a topic and writes every record, transformed, to another topic through
the at-least-once ``KafkaSink`` (idempotent producer), checkpointing every 200 ms.
Half-way, the broker is stopped for 10 s: the pipeline must wait (no crash), say so (a
``broker unreachable`` warning on the ``tidal.kafka`` logger, the outage counted in
``health``), and once the broker is back carry on, so that a reader finally sees every
record: none lost (and, without a crash, none twice: the idempotent producer's retries
do not duplicate).

The same scenario with ``KafkaTransactionalSink`` (one transaction per checkpoint, the
source's offsets inside it) must give every record exactly once to a ``read_committed``
reader: a transaction the outage breaks is aborted (or its hung producer replaced) and the
pipeline rewinds to the last committed checkpoint (decision 0017).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import orjson
import pytest
from kafka_helpers import new_topic, produce, read_all

from tidal import Executor, Pipeline
from tidal.io.kafka.sink import KafkaSink, KafkaTransactionalSink
from tidal.io.kafka.source import KafkaSource
from tidal.runtime.checkpoint import CheckpointConfig

pytestmark = pytest.mark.integration

HALF = 5_000
DOWN_S = 10.0


def _wait_for(what: str, ok: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _outage_run(broker: Any, tmp_path: Any, exactly_once: bool = False) -> tuple[Any, Any, Any]:
    """Run the pipeline through the outage; return ``(config, source, sink)``."""
    config = broker.config()
    tag = "outage"
    src_topic, out_topic = new_topic(config, f"{tag}-in", 2), new_topic(config, f"{tag}-out", 2)
    produce(config, src_topic, [orjson.dumps({"n": i}) for i in range(HALF)])
    source = KafkaSource(src_topic, config=config, group=tag, schema={"n": int})
    sink: KafkaSink
    if exactly_once:
        sink = KafkaTransactionalSink(
            out_topic, config=config, key="n", transactional_id=tag, source=source
        )
    else:
        sink = KafkaSink(out_topic, config=config, key="n")
    p = Pipeline(tag)
    p.source("in", source).map("double", lambda b: {"n": b["n"], "twice": b["n"] * 2}).sink(
        "out", sink
    )
    executor = Executor(
        p,
        handle_signals=False,
        checkpoint=CheckpointConfig(data_dir=tmp_path / "data", interval="200ms"),
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            executor.run()
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    _wait_for(
        "the first half",
        lambda: bool(failure) or (executor.events >= HALF and executor.checkpoints > 0),
    )
    assert not failure, failure

    broker.stop()
    down = time.monotonic()
    # the clients notice when librdkafka's callbacks are served: on a busy machine that can
    # take longer than the outage itself, so the broker stays down until they have
    _wait_for("the outage to be noticed", lambda: source.health.outages + sink.health.outages)
    time.sleep(max(0.0, DOWN_S - (time.monotonic() - down)))  # the rest of the 10 s outage
    assert worker.is_alive() and not failure, failure  # it waits, it does not crash

    broker.start()
    produce(config, src_topic, [orjson.dumps({"n": i}) for i in range(HALF, 2 * HALF)])
    _wait_for("every record", lambda: executor.events >= 2 * HALF or bool(failure), 240.0)
    assert not failure, failure
    done = executor.checkpoints
    _wait_for(
        "a checkpoint after the last record",
        lambda: executor.checkpoints > done + 1 or bool(failure),
        240.0,
    )
    assert not failure, failure
    executor.stop()
    worker.join(120)
    assert not worker.is_alive() and not failure, failure

    rows = [orjson.loads(r.value or b"") for r in read_all(config, out_topic)]
    assert sorted(r["n"] for r in rows) == list(range(2 * HALF))  # none lost, none twice
    assert all(r["twice"] == 2 * r["n"] for r in rows)
    return config, source, sink


def test_broker_down_for_10_s_mid_run(
    own_kafka_broker: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tidal.kafka")
    _, source, sink = _outage_run(own_kafka_broker, tmp_path)
    assert "broker unreachable" in caplog.text
    assert not source.health.down and not sink.health.down  # it noticed the broker is back
    assert "broker back" in caplog.text
    source.commit()  # the group's offsets work again too


def test_broker_down_for_10_s_mid_run_exactly_once(own_kafka_broker: Any, tmp_path: Any) -> None:
    _, source, sink = _outage_run(own_kafka_broker, tmp_path, exactly_once=True)
    assert not source.health.down and not sink.health.down
