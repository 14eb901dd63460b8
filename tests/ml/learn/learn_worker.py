"""The process that test_learn_kill9.py kills: prequential learning with checkpoints.

    python learn_worker.py OUT_DIR DATA_DIR TOTAL RATE

A deterministic generator of ``TOTAL`` labeled rows -> pace (sleeps to hold ``RATE`` rows
per second; 0: as fast as possible) -> ``lag`` (the previous two labels and the previous
``x0``: keyed state that must survive the kills too) -> ``learn`` (logistic regression, Adam, exact
per-sample mode, no standardization: its results do not depend on batch boundaries) ->
exactly-once JSON Lines part files in ``OUT_DIR`` (seq, prediction, score, accuracy).
Checkpoints every 50 ms under ``DATA_DIR``. After restoring it prints one JSON line
``{"restored_from": id}``; at the end, one with the learner's weights and step count.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any


def make(seq: Any) -> dict[str, Any]:
    """Labeled rows for sequence numbers: a pure function of ``seq``."""
    import numpy as np

    cols: dict[str, Any] = {"seq": seq}
    for j in range(4):
        cols[f"x{j}"] = np.sin(seq * (0.7 + 0.31 * j) + j)
    z = cols["x0"] - 0.5 * cols["x1"] + 0.25 * cols["x2"] + 0.3 * np.sin(seq * 12.9898)
    cols["y"] = (z > 0).astype(np.int64)
    return cols


def main(argv: list[str]) -> int:
    import orjson

    from tidal import Executor, Pipeline
    from tidal.io.generator import GeneratorSource
    from tidal.io.jsonl import JsonlPartSink
    from tidal.ml.learn import Features, LogisticRegression
    from tidal.ml.learn.step import LearnStep
    from tidal.runtime.checkpoint import CheckpointConfig

    out, data, total, rate = Path(argv[0]), argv[1], int(argv[2]), float(argv[3])

    def pace(batch: Any) -> Any:
        if rate:
            time.sleep(len(batch) / rate)
        return batch["seq"] >= 0

    p = Pipeline("learn-exactly-once")
    step = LearnStep(
        "model",
        LogisticRegression(optimizer="adam", lr=0.05, mode="exact"),
        features=Features(
            numeric=["x0", "x1", "x2", "x3", "y_lag1", "y_lag2", "x0_lag1"], standardize=False
        ),
        target="y",
        metrics=["accuracy"],
    )
    (
        p.source("in", GeneratorSource(make, total=total))
        .filter("pace", pace)
        .lag("prev", ["y", "x0"], periods=[1, 2], fill=0)
        .apply(step)
        .map("keep", lambda b: b.select(["seq", "prediction", "prediction_score", "accuracy"]))
        .sink("out", JsonlPartSink(out))
    )
    executor = Executor(
        p,
        max_batch=300,
        max_wait="0ms",
        checkpoint=CheckpointConfig(data_dir=data, interval="50ms", keep=3),
    )
    executor.open()
    sys.stdout.write(orjson.dumps({"restored_from": executor.restored_from}).decode() + "\n")
    sys.stdout.flush()
    executor.run()
    learner = step.learner
    assert isinstance(learner, LogisticRegression)
    final = {"W": learner.W.ravel().tolist(), "steps": int(learner.t[0])}
    sys.stdout.write(orjson.dumps(final).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
