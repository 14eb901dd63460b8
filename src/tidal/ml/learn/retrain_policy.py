"""The retrain loop's settings (:class:`RetrainPolicy`) and its events' columns.

See :mod:`tidal.ml.learn.loop` for the loop itself.

Example:
    >>> RetrainPolicy(topic="events", history=2_000, horizon=500).metric is None
    True
    >>> RetrainPolicy(topic="events", drift_settings={"delta": 0.0})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    tidal.errors.ConfigError: adwin: need 0 < delta < 1, ...
    >>> events_batch("m", [{"event": "promoted", "row": 10, "candidate": 2}])["candidate"].tolist()
    [2]
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tidal.core.batch import Batch
from tidal.errors import ConfigError

__all__ = ["EVENT_COLUMNS", "RetrainPolicy", "events_batch"]

EVENT_COLUMNS = (
    "event",
    "step",
    "row",
    "version",
    "candidate",
    "job",
    "serving_metric",
    "candidate_metric",
    "detail",
)
"""The columns of every row on the ``events`` output."""


@dataclass(frozen=True, kw_only=True)
class RetrainPolicy:
    """When to retrain, on what, and how a candidate must do to be promoted.

    Args:
        topic: the embedded-log topic the stream is read from (history is replayed from it,
            rows as stored: no feature steps before the loop). Give it or ``pipeline``.
        data_dir: the log's data directory (``None``: ``$TIDAL_DATA_DIR`` or ``./.tidal``).
        pipeline: where the job builds the pipeline again: ``"pkg.module:build"`` or
            ``"path/file.py:build"`` (a function returning the pipeline, or the pipeline
            itself). The job replays the history through the pipeline's one source (Kafka
            or the log, with its value format and connection settings) and the steps
            between it and the loop (:mod:`tidal.runtime.history`). Needed for a Kafka
            source and for features made by steps before the loop.
        history: rows replayed for a retrain: the newest up to the trigger.
        drift: a drift detector name (:data:`tidal.ml.detect.DRIFT_DETECTORS`) watching the
            serving model's errors; ``None``: no drift trigger.
        drift_settings: the detector's parameters (``None``: its defaults), e.g.
            ``{"delta": 1e-5, "clock": 2_000}`` for ``adwin``: ``delta`` is its confidence
            (smaller: fewer false drifts, later detection) and ``clock`` the errors averaged
            into one block (its window holds ``clock * max_blocks`` errors, 32 * 1,024 by
            default: a stream of thousands of rows a second wants larger blocks, or the
            window spans seconds and the error's ordinary wander reads as drift). Recorded
            in each candidate's lineage; the detector's checkpointed state is refused by
            other settings.
        every: also retrain every this many rows (a schedule); ``None``: no schedule.
        horizon: rows the candidate is scored in shadow before the decision.
        metric: ``"accuracy"`` (classifiers' default) or ``"mae"`` (regressors').
        margin: how much better than serving the candidate must be.
        epochs: passes over the history when retraining.
        workers: processes of a data-parallel retrain (``torch.distributed``, gloo; the
            ``mlp`` learner only).
        adopt_after: take the candidate exactly this many rows after the trigger (waiting
            for the job there if needed): reproducible runs. ``None``: at the first batch
            after the job ends, never waiting.
        collect: rows of new data to wait for after a drift before the retrain starts (its
            history then ends with them): a model retrained at the drift would mostly
            learn the old concept. A scheduled retrain starts at once.
        cooldown: rows from the start, and after a decision (or a failed job), before the
            next trigger (a model learning from scratch looks like drift at first).
        workdir: where jobs run (default ``<registry>/<model>/.jobs``).
        prepare: ``"package.module:function"``, a function ``Batch -> Batch`` the retrain job
            applies to the replayed history before training: the steps the stream takes
            between the log and the loop (e.g. a keyed ``lag`` and the features built from
            it), which the raw topic does not hold. It must be importable in the job's
            process (the same code as the pipeline's) and be a pure function of the rows
            (the history starts with no earlier rows: a lag's first rows are missing, so
            drop them there). ``None``: the topic's rows are the training rows.

    Raises:
        ConfigError: for no trigger, sizes that are not positive, ``drift_settings`` the
            detector does not take (or without a detector), or a ``prepare`` that is not
            ``"module:function"``.
    """

    topic: str | None = None
    data_dir: str | os.PathLike[str] | None = None
    pipeline: str | None = None
    history: int = 5_000
    drift: str | None = "adwin"
    drift_settings: Mapping[str, float] | None = None
    every: int | None = None
    horizon: int = 1_000
    metric: Literal["accuracy", "mae"] | None = None
    margin: float = 0.0
    epochs: int = 1
    workers: int = 1
    adopt_after: int | None = None
    collect: int = 500
    cooldown: int = 1_000
    workdir: str | os.PathLike[str] | None = None
    prepare: str | None = None

    def __post_init__(self) -> None:
        if not (self.topic or self.pipeline):
            msg = (
                "a retrain policy needs where to replay history from: topic='...' (the "
                "embedded log topic the stream reads) or pipeline='module:build' (the "
                "pipeline built again: a Kafka source, or feature steps before the loop)"
            )
            raise ConfigError(msg)
        if self.pipeline is not None and (
            not isinstance(self.pipeline, str) or not self.pipeline.strip(": ")
        ):
            msg = (
                "retrain policy: pipeline is 'module:function' or 'file.py:function', "
                f"got {self.pipeline!r}"
            )
            raise ConfigError(msg)
        if self.drift is None and self.every is None:
            msg = (
                "a retrain policy needs a trigger: drift='adwin' (or another detector) "
                "and/or every=N rows"
            )
            raise ConfigError(msg)
        sizes = {
            "history": self.history,
            "horizon": self.horizon,
            "epochs": self.epochs,
            "workers": self.workers,
            "every": self.every or 1,
            "adopt_after": self.adopt_after or 1,
        }
        bad = {k: v for k, v in sizes.items() if not isinstance(v, int) or v < 1}
        if bad or min(self.cooldown, self.collect) < 0 or self.margin < 0:
            msg = (
                f"retrain policy: {bad or 'collect, cooldown, margin'} out of range: sizes "
                "are integers >= 1; collect, cooldown and margin are >= 0"
            )
            raise ConfigError(msg)
        if self.drift_settings is not None:
            if self.drift is None:
                msg = "retrain policy: drift_settings needs a drift detector (drift='adwin')"
                raise ConfigError(msg)
            from tidal.ml.detect.catalog import make_drift

            make_drift(self.drift, settings=self.drift_settings)  # raises ConfigError
        if self.prepare is not None and not _is_target(self.prepare):
            msg = f"retrain policy: prepare is 'package.module:function', got {self.prepare!r}"
            raise ConfigError(msg)
        if self.metric not in (None, "accuracy", "mae"):
            msg = f"retrain policy: metric is 'accuracy' or 'mae', got {self.metric!r}"
            raise ConfigError(msg)


def _is_target(text: Any) -> bool:
    """``text`` looks like ``"package.module:function"``."""
    if not isinstance(text, str) or text.count(":") != 1:
        return False
    module, attr = text.split(":")
    return all(p.isidentifier() for p in module.split(".")) and attr.isidentifier()


def events_batch(step: str, events: list[dict[str, Any]]) -> Batch:
    """The loop's events as a batch with the columns :data:`EVENT_COLUMNS`."""
    n = len(events)
    obj = {c: np.empty(n, dtype=object) for c in ("event", "step", "job", "detail")}
    ints = {c: np.full(n, -1, dtype=np.int64) for c in ("row", "version", "candidate")}
    floats = {c: np.full(n, np.nan) for c in ("serving_metric", "candidate_metric")}
    for i, e in enumerate(events):
        obj["event"][i], obj["step"][i] = e["event"], step
        obj["job"][i] = e.get("job") or ""
        obj["detail"][i] = json.dumps(e.get("detail"))
        ints["row"][i] = e.get("row", -1)
        ints["version"][i] = -1 if e.get("version") is None else e["version"]
        ints["candidate"][i] = -1 if e.get("candidate") is None else e["candidate"]
        for c in floats:
            floats[c][i] = e.get(c, np.nan)
    cols = {**obj, **ints, **floats}
    return Batch({c: cols[c] for c in EVENT_COLUMNS})
