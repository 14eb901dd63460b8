"""``tidal demo --learn``: the closed loop on screen, on sensors whose behaviour changes.

A fleet's sensors report ``temp``, ``load`` and ``fan``; a reading is an ``overheat`` when
``temp + 0.5 * load`` passes a limit. Half-way through, the fleet's firmware changes how
``temp`` is calibrated (the limit moves), so the online model serving the overheat
prediction goes stale. The readings go into the embedded log, and
:meth:`~tidal.pipeline.Stream.retrain_loop` serves them: its errors drift, a child process
retrains a candidate on the readings since the change (replayed from the log), the
candidate is registered, scored in shadow and promoted, and every step is a line on screen.

Example:
    >>> import tempfile
    >>> lines = []
    >>> summary = run_learning_demo(tempfile.mkdtemp(), say=lines.append, rows=8_000)
    >>> steps = [ln.split()[2] for ln in lines if ln.startswith("  row")]
    >>> [s for s in steps if s != "drift"][:5]
    ['retrain_started', 'retrain_finished', 'registered', 'shadow_score', 'promoted']
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tidal.core.batch import Batch
from tidal.io.log import LogSink, LogSource
from tidal.io.log.topic import Topic
from tidal.ml.learn.loop import RetrainPolicy
from tidal.ml.registry import Registry
from tidal.pipeline import Pipeline
from tidal.runtime.executor import Executor, RunSummary

__all__ = ["LEARN_TOPIC", "run_learning_demo", "write_readings"]

LEARN_TOPIC = "demo-learn-readings"
FEATURES = ["temp", "load", "fan"]


def write_readings(data_dir: str | os.PathLike[str], rows: int, *, seed: int = 7) -> None:
    """Write ``rows`` readings (the calibration changes half-way) to :data:`LEARN_TOPIC`."""
    if Topic.exists(data_dir, LEARN_TOPIC):
        Topic.delete(data_dir, LEARN_TOPIC)
    rng = np.random.default_rng(seed)
    temp, load, fan = rng.uniform(20, 80, rows), rng.uniform(0, 100, rows), rng.uniform(0, 1, rows)
    limit = np.where(np.arange(rows) < rows // 2, 90.0, 70.0)  # the firmware change
    sink = LogSink(data_dir, LEARN_TOPIC, partitions=2, key="sensor")
    sink.write(
        Batch(
            {
                "sensor": np.arange(rows) % 50,
                "temp": temp,
                "load": load,
                "fan": fan,
                "overheat": (temp + 0.5 * load > limit).astype(np.int64),
            }
        )
    )
    sink.close()


class _Say:
    """A sink that turns the loop's events into screen lines."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say

    def open(self) -> None:
        """Nothing to open."""

    def write(self, batch: Batch) -> None:
        """One line per event."""
        for e in batch.to_records():
            if e["event"] == "drift":
                worse = json.loads(e["detail"])["worse"]
                line = f"row {e['row']:>6}  drift{'' if worse else ' (error fell: ignored)'}"
            elif e["event"] in ("shadow_score", "promoted", "rejected"):
                line = (
                    f"row {e['row']:>6}  {e['event']}  v{e['candidate']}: accuracy "
                    f"{e['candidate_metric']:.3f} vs serving {e['serving_metric']:.3f}"
                )
            elif e["event"] == "registered":
                line = f"row {e['row']:>6}  registered  v{e['candidate']} (shadow)"
            elif e["event"] == "retrain_started":
                d = json.loads(e["detail"])
                line = (
                    f"row {e['row']:>6}  retrain_started  ({d['reason']}): a child process "
                    f"replays the last {d['history']:,} readings from the log"
                )
            elif e["event"] == "retrain_finished":
                d = json.loads(e["detail"])
                line = (
                    f"row {e['row']:>6}  retrain_finished  {d['rows']:,} rows in {d['seconds']} s"
                )
            else:
                line = f"row {e['row']:>6}  {e['event']}  {e['detail']}"
            self.say(line)

    def flush(self) -> None:
        """Nothing buffered."""

    def close(self) -> None:
        """Nothing to close."""


def run_learning_demo(
    data_dir: str | os.PathLike[str],
    *,
    say: Callable[[str], None] = print,
    rows: int = 20_000,
) -> RunSummary:
    """Write the readings, then serve them with the retrain loop, saying each loop step."""
    root = Path(data_dir)
    write_readings(root, rows)
    registry = Registry(root / "registry")
    policy = RetrainPolicy(
        topic=LEARN_TOPIC,
        data_dir=root,
        history=1_000,
        collect=800,
        adopt_after=500,
        horizon=1_000,
        epochs=3,
        workdir=root / "retrain-jobs",
    )
    p = Pipeline("demo-learn")
    src = p.source("readings", LogSource(root, LEARN_TOPIC, bounded=True))
    served = src.retrain_loop(
        "overheat",
        "logistic",
        features=FEATURES,
        target="overheat",
        registry=registry,
        model=f"overheat-{os.getpid()}",
        policy=policy,
        settings={"lr": 0.05},
        metrics=["accuracy"],
    )
    sink: Any = _Say(lambda line: say("  " + line))
    served.side("events").sink("loop-events", sink)
    say(
        f"serving overheat predictions on {rows:,} readings; the calibration changes at row "
        f"{rows // 2:,}"
    )
    summary = Executor(p, max_batch=500, handle_signals=False).run()
    accuracy = summary.extra.get("metrics", {}).get("overheat.accuracy")
    say(
        f"done: {summary.counts.get('overheat.promotions', 0)} promotion(s), "
        f"{summary.counts.get('overheat.rejections', 0)} rejection(s), overall accuracy "
        f"{accuracy:.3f}; registry at {registry.root}"
    )
    return summary
