"""Consumer lag of a KafkaSource on /metrics, against a real broker."""

from __future__ import annotations

import orjson
import pytest
from kafka_helpers import new_topic, produce

from tidal import Executor, Pipeline
from tidal.io.kafka import KafkaConfig
from tidal.io.kafka.source import KafkaSource
from tidal.io.memory import MemorySink
from tidal.observe.live import LiveRun

pytestmark = pytest.mark.integration


def test_kafka_consumer_lag_is_what_is_left_to_read(kafka_config: KafkaConfig) -> None:
    topic = new_topic(kafka_config, "lag", 2)
    produce(kafka_config, topic, [orjson.dumps({"i": i}) for i in range(400)])
    p = Pipeline("kafka-lag")
    p.source("in", KafkaSource(topic, config=kafka_config, bounded=True)).sink("out", MemorySink())
    live = LiveRun()
    ex = Executor(
        p, observer=live, max_batch=50, max_events=100, at_limit="stop", handle_signals=False
    )
    summary = ex.run()
    assert summary.events == 100
    source = live.snapshot()["sources"]["in"]
    assert source["consumer_lag"] == 300
    assert sum(source["lag_by_partition"].values()) == 300
