"""Helpers for the tests that run ``tidal run FILE.py`` against the broker in a subprocess.

Shared by test_kafka_workers.py (``--workers N``), test_kafka_group.py and
test_kafka_group_traps.py (``--group NAME``) and test_kafka_repartition.py (``--group``
with a repartition topic): the keyed input, the command line and its environment
(``SCALE_*`` for the pipeline files, nothing inherited from ``TIDAL_*``), waiting for a
run's JSON summary or for a condition, and the committed output as a multiset of rows.
The ``scale_*`` helpers run kafka_scale_pipeline.py, whose output the first three compare
with one uninterrupted process's (:func:`scale_reference`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from kafka_helpers import new_topic, produce, read_all

from tidal.io.kafka import KafkaConfig

HERE = Path(__file__).parent
WAIT_S = 240.0
"""How long a run or a condition may take before the test fails."""
SEED = int(os.environ.get("TIDAL_FAULT_SEED", "20240101"))
"""The seed of the randomized kill tests (set it to replay a failure)."""


def keyed_input(config: KafkaConfig, prefix: str, total: int, *, users: bool = False) -> str:
    """A new topic of 4 partitions with ``total`` JSON records keyed by ``k``.

    Fields ``k`` (61 keys, also the message key), ``v`` and ``ts`` (event time, 1 ms apart
    from 2024-01-01, also the record timestamp); with ``users``, ``u`` (17 values) too,
    which the repartition pipeline groups by.
    """
    topic = new_topic(config, prefix, partitions=4)
    seq = np.arange(total, dtype=np.int64)
    keys = [f"key{k}" for k in ((seq * 7_919) % 61).tolist()]
    vals = ((seq * 2_654_435_761) % 1_000).tolist()
    ts = (1_704_067_200_000 + seq).tolist()
    rows: list[dict[str, Any]] = [
        {"k": k, "v": v, "ts": t} for k, v, t in zip(keys, vals, ts, strict=True)
    ]
    if users:
        for row, u in zip(rows, ((seq * 31) % 17).tolist(), strict=True):
            row["u"] = f"u{u}"
    values = [orjson.dumps(r) for r in rows]
    produce(config, topic, values, keys=[k.encode() for k in keys], timestamps=ts)
    return topic


def run_env(config: KafkaConfig, in_topic: str, out: str, **env: str) -> dict[str, str]:
    """The environment of a run: this one without ``TIDAL_*``/``SCALE_*``, plus ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "SCALE_"))}
    full.update(SCALE_BOOTSTRAP=config.bootstrap_servers, SCALE_IN=in_topic, SCALE_OUT=out)
    full.update(env)
    return full


def start_run(
    pipeline: Path,
    config: KafkaConfig,
    data: Path,
    in_topic: str,
    out: str,
    *,
    workers: int | None = None,
    group: str | None = None,
    interval: str = "50ms",
    max_batch: int = 500,
    args: tuple[str, ...] = (),
    **env: str,
) -> subprocess.Popen[bytes]:
    """Start ``tidal run PIPELINE --json`` (``--workers``/``--group`` when given)."""
    cmd = [sys.executable, "-m", "tidal.cli", "run", str(pipeline), "--json"]
    if group is not None:
        cmd += ["--group", group]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    cmd += ["--checkpoint-interval", interval, "--max-batch", str(max_batch), "--max-wait", "0ms"]
    cmd += ["--data-dir", str(data), *args]
    return subprocess.Popen(
        cmd,
        env=run_env(config, in_topic, out, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish_with_log(proc: subprocess.Popen[bytes]) -> tuple[dict[str, Any], str]:
    """The JSON summary of a run that must exit 0 within ``WAIT_S``, and its stderr."""
    try:
        out, err = proc.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()  # the supervisor: its workers get SIGTERM from the kernel
        out, err = proc.communicate()
        pytest.fail(f"the run did not finish in {WAIT_S:.0f} s: {err.decode()[-6000:]}")
    assert proc.returncode == 0, err.decode()[-4000:]
    summary: dict[str, Any] = orjson.loads(out.splitlines()[-1])
    return summary, err.decode()


def finish(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The JSON summary of a run that must exit 0 within ``WAIT_S``."""
    return finish_with_log(proc)[0]


def wait_until(
    what: str, cond: Callable[[], bool], *procs: subprocess.Popen[bytes], every: float = 0.01
) -> None:
    """Wait until ``cond()`` (asked every ``every`` seconds); fail if a process in ``procs``
    exits first, or after ``WAIT_S``."""
    deadline = time.monotonic() + WAIT_S
    while not cond():
        for proc in procs:
            assert proc.poll() is None, proc.communicate()[1].decode()[-4000:]
        assert time.monotonic() < deadline, f"{what}: not within {WAIT_S:.0f} s"
        time.sleep(every)


def describe_group(config: KafkaConfig, group: str) -> Any:
    """The consumer group's description (``.members``, ``.state``), from a plain AdminClient."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(config.client())
    return admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=30)


def output(config: KafkaConfig, topic: str) -> Counter[bytes]:
    """The committed rows of ``topic``, as a multiset of canonical JSON (duplicates count)."""
    rows = [orjson.loads(r.value or b"{}") for r in read_all(config, topic)]
    return Counter(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rows)


# -- kafka_scale_pipeline.py: keyed by the message key, no repartition --------------------------
SCALE_PIPELINE = HERE / "kafka_scale_pipeline.py"
SCALE_TOTAL = 12_000
Setup = tuple[KafkaConfig, str, Counter[bytes]]
"""The cluster, the input topic, and one uninterrupted process's output."""


def scale_input(config: KafkaConfig) -> str:
    """The scale pipeline's input: ``SCALE_TOTAL`` records keyed by ``k``, 4 partitions."""
    return keyed_input(config, "scale-in", SCALE_TOTAL)


def scale_run(
    config: KafkaConfig, data: Path, in_topic: str, workers: int, **env: str
) -> tuple[str, dict[str, Any]]:
    """A run of ``--workers N`` (no group) to a new output topic, checkpointing every 1 ms."""
    out = new_topic(config, "scale-out", partitions=2)
    proc = start_run(
        SCALE_PIPELINE, config, data, in_topic, out, workers=workers, interval="1ms", **env
    )
    return out, finish(proc)


def scale_reference(config: KafkaConfig, data: Path) -> Setup:
    """A new input, and the output of one uninterrupted process over it (no group)."""
    in_topic = scale_input(config)
    out, summary = scale_run(config, data, in_topic, 1)
    assert summary["events"] == SCALE_TOTAL and "workers" not in summary
    reference = output(config, out)
    assert sum(reference.values()) > 500 and max(reference.values()) == 1
    return config, in_topic, reference


def scale_group(
    config: KafkaConfig,
    data: Path,
    in_topic: str,
    out: str,
    workers: int,
    group: str | None = None,
    max_batch: int = 500,
    **env: str,
) -> subprocess.Popen[bytes]:
    """``--group`` (a new one unless given) with ``workers`` processes."""
    group = group or f"g-{uuid.uuid4().hex[:8]}"
    return start_run(
        SCALE_PIPELINE,
        config,
        data,
        in_topic,
        out,
        workers=workers,
        group=group,
        max_batch=max_batch,
        **env,
    )
