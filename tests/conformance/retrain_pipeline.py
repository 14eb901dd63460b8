"""The pipeline file the retrain-replay tests run, and that the retrain job builds again.

The stream is SEA-like (features ``a``, ``b``, ``c``, label ``y``), read from a Kafka topic
or an embedded-log topic; a feature step derives ``c10 = c / 10`` (the *feature prefix*:
the learner uses ``a``, ``b``, ``c10``, so a job that skipped the prefix could not train);
then a retrain loop ``m`` whose policy names this file's ``build`` as its pipeline.

Environment (read by ``build()`` in the test process and again in the job's process,
which inherits it; nothing of it is written to the job's files):

- ``RETRAIN_SOURCE``: ``kafka`` or ``log``; ``RETRAIN_TOPIC``: the topic;
  ``RETRAIN_DATA_DIR``: the log's directory (``log``);
- ``TIDAL_KAFKA``: the bootstrap servers (:class:`~tidal.io.kafka.KafkaConfig`'s default);
  ``RETRAIN_CLIENT_ID``: a client setting the job can only get from the environment (a
  stand-in for a SASL password: the tests check it is in no job file);
- ``RETRAIN_REGISTRY`` and ``RETRAIN_WORKDIR``: the registry and the jobs' directory;
- ``RETRAIN_GATE``: while this file exists, the feature step of a *job* (not the
  pipeline: ``TIDAL_RETRAIN_JOB`` is not set there) parks after its first batch, having
  created ``<gate>.reached``: the test kills the job there, mid-replay.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tidal import Pipeline
from tidal.core.batch import Batch
from tidal.io.kafka import KafkaConfig
from tidal.io.kafka.source import KafkaSource
from tidal.io.log import LogSource
from tidal.ml.learn.loop import RetrainPolicy
from tidal.pipeline import Stream

FEATURES = ["a", "b", "c10"]
SCHEMA = {"a": float, "b": float, "c": float, "y": int}


def features(batch: Batch) -> Batch:
    """The feature prefix: ``c10 = c / 10`` (and the test's gate, in a job only)."""
    gate = os.environ.get("RETRAIN_GATE")
    if gate and Path(gate).exists() and not Path(gate + ".reached").exists():
        if os.environ.get("TIDAL_RETRAIN_JOB"):
            Path(gate + ".reached").write_text(str(os.getpid()))
            while Path(gate).exists():  # parked until the test kills the process
                time.sleep(0.01)
    return batch.with_columns(c10=batch["c"] / 10.0)


def build() -> Pipeline:
    """Source (Kafka or log) -> features -> retrain loop ``m``."""
    topic = os.environ["RETRAIN_TOPIC"]
    src: Any
    if os.environ["RETRAIN_SOURCE"] == "kafka":
        config = KafkaConfig(extra={"client.id": os.environ.get("RETRAIN_CLIENT_ID", "tidal")})
        src = KafkaSource(topic, config=config, bounded=True, schema=SCHEMA)
    else:
        src = LogSource(os.environ["RETRAIN_DATA_DIR"], topic, bounded=True)
    policy = RetrainPolicy(
        pipeline=f"{__file__}:build",
        history=1_000,
        horizon=1_000,
        adopt_after=500,
        collect=800,
        epochs=3,
        workdir=os.environ["RETRAIN_WORKDIR"],
    )
    p = Pipeline("retrain")
    s = p.source("in", src).map("features", features)
    s.retrain_loop(
        "m", "logistic", features=FEATURES, target="y", registry=os.environ["RETRAIN_REGISTRY"],
        model="sea", policy=policy, settings={"lr": 0.05}, metrics=["accuracy"],
    )  # fmt: skip
    return p


def loop_output(p: Pipeline, port: str = "main") -> Stream:
    """The loop's ``main`` or ``events`` output, to collect in a test."""
    node = p.nodes["m"]
    return Stream(p, node, node.outputs.index(port))
