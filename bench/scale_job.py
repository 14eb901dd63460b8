"""The pipeline that ``bench/scale.py`` runs with ``tidal run --workers N`` (or ``--group``).

A CPU-bound keyed pipeline: events (a key and 8 features) -> a numpy MLP scores every
event (8 -> 256 -> 256 -> 1, seeded weights; a stand-in for a real model, single-threaded
BLAS) -> key_by -> 1 s tumbling windows (count, mean and max of the score) -> an
exactly-once sink. Two transports, the same steps:

- embedded log: ``BENCH_DATA`` is the data directory of the input topic ``events``,
  ``BENCH_OUT`` the directory of the part files;
- Kafka, when ``BENCH_BOOTSTRAP`` is set: a bounded ``KafkaSource`` on topic
  ``BENCH_TOPIC`` (message key = column ``k``, so ``--group`` needs no repartition) and a
  ``KafkaTransactionalSink`` to topic ``BENCH_OUT`` (its transactional id too).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tidal import Pipeline, bounded, tumbling
from tidal import aggregations as agg
from tidal.io.jsonl import JsonlPartSink
from tidal.io.kafka import KafkaConfig, KafkaSource, KafkaTransactionalSink
from tidal.io.log import LogSource
from tidal.ml.handler import BaseHandler

FEATURES = [f"f{i}" for i in range(8)]
HIDDEN = 256
SCHEMA: dict[str, type] = {"k": str, "ts": int, **{f: float for f in FEATURES}}


class Mlp(BaseHandler):
    """A fixed two-hidden-layer perceptron in numpy (float32)."""

    version = "bench-mlp"

    def load(self) -> None:
        """Seeded weights."""
        rng = np.random.default_rng(7)
        self.w1 = rng.normal(0, 0.3, (len(FEATURES), HIDDEN)).astype(np.float32)
        self.w2 = rng.normal(0, 0.06, (HIDDEN, HIDDEN)).astype(np.float32)
        self.w3 = rng.normal(0, 0.06, (HIDDEN, 1)).astype(np.float32)

    def predict(self, X: Any) -> dict[str, Any]:
        """The score of each row."""
        h = np.maximum(X @ self.w1, 0.0)
        h = np.maximum(h @ self.w2, 0.0)
        return {"score": (h @ self.w3)[:, 0]}


def ends() -> tuple[Any, Any]:
    """The bounded source and the exactly-once sink of the transport the environment names."""
    bootstrap = os.environ.get("BENCH_BOOTSTRAP")
    if not bootstrap:
        source = LogSource(os.environ["BENCH_DATA"], "events", bounded=True, schema=SCHEMA)
        return source, JsonlPartSink(os.environ["BENCH_OUT"])
    config = KafkaConfig(bootstrap_servers=bootstrap)
    out = os.environ["BENCH_OUT"]
    kafka = KafkaSource(
        os.environ["BENCH_TOPIC"],
        config=config,
        group=f"{out}-in",
        bounded=True,
        schema=SCHEMA,
        key_column="k",
    )
    sink = KafkaTransactionalSink(out, config=config, key="k", transactional_id=out, source=kafka)
    return kafka, sink


def build() -> Pipeline:
    """Log or Kafka -> MLP -> keyed 1 s windows -> part files or Kafka, exactly once."""
    source, sink = ends()
    p = Pipeline("scale-bench")
    (
        p.source("in", source, time="ts", watermark=bounded("100ms"))
        .predict("mlp", Mlp(), features=FEATURES)
        .key_by("k")
        .window(
            "per_second",
            tumbling("1s"),
            {"n": agg.count(), "mean": agg.mean("score"), "hi": agg.max("score")},
        )
        .sink("out", sink)
    )
    return p
