"""The demo's learning branch: forecast each reading, notice drift, retrain, shadow, promote.

The readings carry no label, so the model learns a self-supervised target: each sensor's
next reading, from its own previous ones. Beside the anomaly branch (same validated
readings)::

    validate -> key_by("sensor")
      -> lags      value_lag1..4 per sensor (core lag: state per key, in checkpoints)
      -> warm      rows whose four lags exist (a sensor's first four readings have none)
      -> deltas    change = value - value_lag1 (the target), d1..d3 = the three changes
                   before it (the features): all known once the reading arrives, none of
                   them is the label itself
      -> forecast  retrain_loop("linear"): predicts ``change`` (so the reading), then learns
                   it (prequential); ADWIN watches the fleet's absolute forecast errors;
                   a drift where the error got worse starts a retrain in a child process
                   on the last seconds of readings replayed from the log topic (the job
                   rebuilds the lags and deltas with :func:`history_features`), the
                   candidate is registered, scored in shadow, promoted or rejected
      -> screen    :class:`LearnWatch`: one line per loop event, the sensors whose
                   forecast error rose at a drift, the rolling error in the summary

One linear model serves the whole fleet: what it learns is how a sensor's next change
follows its last three (per-sensor behaviour enters through each sensor's own lags), in a
few numpy operations per batch. The fleet's concept change
(:meth:`~tidal.apps.demo.fleet.SensorFleet.changing`: one sensor in 20 starts to vibrate at
60 s) makes its errors on those sensors jump; the drift detector sees it in the fleet's
error, and :class:`LearnWatch` names the sensors behind it from per-sensor error averages
(fast against slow). The target and features are clipped at :data:`CLIP` units, so that
a fault's few huge jumps do not outweigh a vibration's steady errors.

The loop replays history from the embedded log, so the branch runs with ``source="log"``
(what ``tidal demo`` runs); see ``docs/decisions/0051-the-demo-learns.md``.

Example:
    >>> import numpy as np
    >>> from tidal.core.batch import Batch
    >>> rows = Batch({"sensor": np.array([1, 1, 1, 1, 1, 1]),
    ...               "value": np.array([1.0, 1.5, 2.5, 4.0, 6.0, np.nan]),
    ...               "ts": np.arange(6)})
    >>> out = history_features(rows)   # rows 0-3 have no fourth lag, row 5 is a dropout
    >>> out["change"].tolist(), out["d1"].tolist(), out["d3"].tolist()
    ([2.0], [1.5], [0.5])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tidal.apps.demo.fleet import EPOCH_MS, SensorFleet
from tidal.core.batch import Array, Batch
from tidal.core.lag import Lag
from tidal.io.base import BaseSink
from tidal.ml.learn.features import Features
from tidal.ml.learn.retrain_policy import RetrainPolicy

if TYPE_CHECKING:
    from collections.abc import Callable

    from tidal.pipeline import Stream

__all__ = [
    "CLIP",
    "DRIFT_DELTA",
    "FEATURES",
    "MODEL",
    "REGISTRY",
    "STEP",
    "LearnWatch",
    "add_forecaster",
    "deltas",
    "drift_settings",
    "history_features",
    "warm",
]

STEP = "forecast"
"""The retrain loop's step name (its counters are ``forecast.drifts`` and so on)."""
MODEL = "demo-forecast"
"""The model's name in the demo's registry."""
REGISTRY = "demo-registry"
"""The registry's directory under the data directory."""
JOBS = "demo-retrain-jobs"
"""Where retrain jobs run, under the data directory."""
LAGS = [1, 2, 3, 4]
FEATURES = ["d1", "d2", "d3"]
TARGET = "change"
CLIP = 3.0
"""The target and the features are clipped to this many units (see :func:`deltas`): a
fault's jump is 20-120 units, a sensor's ordinary change a few tenths."""
STEPS_PER_S = 10
"""Adam steps per second of readings the serving model takes: its mini-batch is a tenth of
a second of the fleet's readings, whatever the fleet's size, so the online model is a
slowly moving fleet consensus (a fault's outliers barely move it) that needs tens of
seconds to follow a change; a retrain fits the last seconds :data:`EPOCHS` times over."""
EPOCHS = 10
DRIFT_DELTA = 1e-5
"""ADWIN's confidence on the fleet's error series (its default is 0.002): a fleet's error
is many thousands of values a second, so even a tiny mean change is significant at 0.002;
see :func:`drift_settings`."""


def warm(batch: Batch) -> Array:
    """Rows whose every lag exists (a sensor's first readings have no fourth lag)."""
    ok: Array = np.isfinite(batch[f"value_lag{LAGS[-1]}"])
    return ok


def deltas(batch: Batch) -> Batch:
    """Add ``change`` (the target) and ``d1..d3`` (the features) from ``value`` and its lags.

    ``change`` is the reading minus the one before; ``d1..d3`` are the three changes before
    it; all clipped to ``±CLIP`` units: the forecaster models a sensor's ordinary changes
    (a few tenths of a unit; a vibration's, up to one), and a jump of tens of units is a
    fault, the anomaly branch's business, that would otherwise dominate a squared loss and
    the drift detector's error series.
    """
    lag = [batch["value"], *(batch[f"value_lag{k}"] for k in LAGS)]
    cols = {TARGET: np.clip(lag[0] - lag[1], -CLIP, CLIP)}
    for i, name in enumerate(FEATURES, start=1):
        cols[name] = np.clip(lag[i] - lag[i + 1], -CLIP, CLIP)
    return batch.with_columns(**cols)


def history_features(rows: Batch) -> Batch:
    """What the branch computes between the log and the loop, for the retrain job's replay.

    The retrain job reads raw readings from the log topic; this drops the dropouts (as the
    validate step does), lags each sensor's values afresh (a sensor's first four readings of
    the history have no lags and are dropped, as the ``warm`` step drops them) and adds
    the deltas. The replay keeps each partition's order, and a sensor's readings are all in
    one partition (the topic is keyed by sensor), so the lags are the ones the stream saw.
    Named by :func:`add_forecaster`'s policy as ``prepare``.
    """
    rows = rows.filter(np.isfinite(np.asarray(rows["value"], dtype=np.float64)))
    if not len(rows):
        return rows
    lagged = Lag("history.lags", "value", periods=LAGS, key="sensor").process(rows, 0)
    out = lagged[0][1]
    assert isinstance(out, Batch)
    return deltas(out.filter(warm(out)))


def drift_settings(fleet: SensorFleet) -> dict[str, float]:
    """ADWIN's settings for the fleet's error series: 1 s blocks, :data:`DRIFT_DELTA`.

    ADWIN tests its window once per block, and the window holds 1,024 blocks: with its
    default 32-error blocks that is 1.6 s of a 2,000-sensor fleet's errors (16 s of 200
    sensors'), and the error's ordinary wander from one second to the next (the log's
    partitions, each a different set of sensors, are read unevenly; faults) read as drift.
    Blocks of one second of readings test once a second at any fleet size, cut only at
    second boundaries, and judge a drift "worse" on a second of errors (see
    :mod:`tidal.ml.learn.loop`), so the detector behaves the same in event time whatever
    the fleet's size.

    Example:
        >>> drift_settings(SensorFleet(2000))
        {'delta': 1e-05, 'clock': 20000}
    """
    return {"delta": DRIFT_DELTA, "clock": max(1, int(fleet.per_s))}


def _policy(
    fleet: SensorFleet, root: Path, topic: str, adopt_after_s: float | None
) -> RetrainPolicy:
    """The loop's policy, in rows scaled to the fleet's readings per second."""
    per_s = int(fleet.per_s)
    adopt = None if adopt_after_s is None else max(1, int(adopt_after_s * per_s))
    return RetrainPolicy(
        topic=topic,
        data_dir=root,
        history=8 * per_s,  # the 8 s of readings collected after the drift
        collect=8 * per_s,
        adopt_after=adopt,
        horizon=4 * per_s,
        cooldown=15 * per_s,
        epochs=EPOCHS,
        drift_settings=drift_settings(fleet),
        workdir=root / JOBS,
        prepare=f"{__name__}:history_features",
    )


def add_forecaster(
    readings: Stream,
    fleet: SensorFleet,
    root: Path,
    topic: str,
    say: Callable[[str], None] | None,
    adopt_after_s: float | None = None,
) -> LearnWatch:
    """Add the learning branch to the validated readings; returns its screen.

    ``adopt_after_s``: seconds of readings after a retrain starts at which the candidate
    enters shadow, the pipeline waiting for the job there if needed (reproducible
    decisions, as the tests need); ``None``: as soon as the job is done, never waiting (the
    demo's pace never depends on the job).
    """
    from tidal.ml.registry import Registry

    served = (
        readings.key_by("sensor")
        .lag("lags", "value", periods=LAGS)
        .filter("warm", warm)
        .map("deltas", deltas)
        .retrain_loop(
            STEP,
            "linear",
            features=Features(numeric=FEATURES),
            target=TARGET,
            registry=Registry(root / REGISTRY),
            model=MODEL,
            policy=_policy(fleet, root, topic, adopt_after_s),
            settings={
                "optimizer": "adam",
                "lr": 0.01,
                "batch_size": max(1, int(fleet.per_s) // STEPS_PER_S),
            },
            metrics=["mae"],
            window=int(fleet.per_s),  # the rolling error: the last second of readings
        )
    )
    watch = LearnWatch(fleet, say)
    served.sink("forecast.screen", watch.rows)
    served.side("events").sink("forecast.events", watch.events)
    return watch


# -- the screen --------------------------------------------------------------------------
class _Rows(BaseSink):
    def __init__(self, watch: LearnWatch) -> None:
        self.watch = watch

    def write(self, batch: Batch) -> None:
        """Fold the batch's forecast errors into the per-sensor averages."""
        self.watch.add_rows(batch)


class _Events(BaseSink):
    def __init__(self, watch: LearnWatch) -> None:
        self.watch = watch

    def write(self, batch: Batch) -> None:
        """One screen line per loop event."""
        for e in batch.to_records():
            self.watch.add_event(e)


@dataclass
class LearnWatch:
    """The learning branch's screen: loop events as lines, drifting sensors named.

    Per sensor it keeps two exponentially weighted averages of the clipped absolute
    forecast error, a fast one (half-life :attr:`fast_s` of event time) and a slow one
    (:attr:`slow_s`); at a drift it names the sensors whose fast average is at least
    :attr:`ratio` times their slow one (the worst three on screen, all in :attr:`log`).
    Every line fits 80 columns.

    Attributes:
        fleet: the sensor model (for event time and the sensor count).
        say: prints a screen line (``None``: keeps the lines only in :attr:`log`).
        log: every event, as a dict: ``event``, ``row``, ``time_s`` (the newest event time
            the loop had served, seconds after the epoch), ``after_change`` (whether a
            reading of the concept change had reached the loop),
            ``line`` (what the screen showed), ``sensors`` (drifts: the sensors named).
        mae: the serving model's rolling mean absolute error (last second of readings).
        seen: rows the loop has served in this run.
        time_s: the newest event time served (seconds after the epoch; the log's
            partitions are read unevenly, so others may be seconds behind).
        changed_at: rows served when the first reading of the concept change arrived.
        version: the serving version (``"online"`` before the first promotion).

    Example:
        >>> watch = LearnWatch(SensorFleet(4, hz=1.0), None)
        >>> watch.add_event({"event": "retrain_started", "row": 90, "detail":
        ...     '{"reason": "drift", "history": 40}'})
        >>> watch.log[0]["line"]
        'learn  retrain started (drift): a child process replays 40 readings'
    """

    fleet: SensorFleet
    say: Callable[[str], None] | None
    fast_s: float = 3.0
    slow_s: float = 60.0
    ratio: float = 2.0
    log: list[dict[str, Any]] = field(default_factory=list)
    mae: float = float("nan")
    version: str = "online"
    seen: int = 0
    time_s: float = 0.0
    changed_at: int | None = None

    def __post_init__(self) -> None:
        n = self.fleet.sensors
        self._acc = np.zeros((4, n))  # fast sum, fast weight, slow sum, slow weight
        self.rows = _Rows(self)
        self.events = _Events(self)

    def add_rows(self, batch: Batch) -> None:
        """Fold a batch of the loop's output into the per-sensor error averages."""
        if not len(batch):
            return
        sensor = np.asarray(batch["sensor"], dtype=np.int64)
        err = np.abs(batch[TARGET] - batch["prediction"])
        n, acc = self.fleet.sensors, self._acc
        dt = len(batch) / self.fleet.per_s  # event-time seconds the batch spans
        for row, half in ((0, self.fast_s), (2, self.slow_s)):
            keep = 0.5 ** (dt / half)
            acc[row] *= keep
            acc[row + 1] *= keep
            acc[row] += np.bincount(sensor, err, minlength=n)
            acc[row + 1] += np.bincount(sensor, minlength=n)
        self.mae = float(batch["mae_rolling"][-1])
        self.version = str(batch["model_version"][-1])
        self.seen += len(batch)
        ts = np.asarray(batch["ts"], dtype=np.int64)
        self.time_s = max(self.time_s, (int(ts.max()) - EPOCH_MS) / 1000.0)
        fleet = self.fleet
        if fleet.change_at is not None and self.changed_at is None:
            every = fleet.change_every
            hit = (sensor % every == every // 2) & (ts >= EPOCH_MS + fleet.change_at * 1000.0)
            if hit.any():
                self.changed_at = self.seen

    def rising(self) -> list[tuple[int, float]]:
        """Sensors whose fast error average is :attr:`ratio` times their slow one, worst first."""
        acc = self._acc
        with np.errstate(invalid="ignore", divide="ignore"):
            fast = acc[0] / acc[1]
            slow = acc[2] / acc[3]
            up = fast / slow
        ok = np.isfinite(up) & (acc[1] >= 5.0) & (up >= self.ratio)
        ids = np.flatnonzero(ok)
        ids = ids[np.argsort(-up[ids], kind="stable")]
        return [(int(i), float(up[i])) for i in ids]

    def add_event(self, e: dict[str, Any]) -> None:
        """One loop event: a screen line (and the sensors behind a drift)."""
        detail = json.loads(e["detail"]) if e.get("detail") else None
        kind = e["event"]
        entry: dict[str, Any] = {
            "event": kind,
            "row": int(e["row"]),
            "time_s": self.time_s,
            "after_change": self.changed_at is not None,
        }
        if kind == "drift":
            worse = bool(detail and detail.get("worse"))
            entry["worse"] = worse
            if worse and detail is not None:
                up = self.rising()
                entry["sensors"] = [s for s, _ in up]
                line = (
                    f"learn  drift: the fleet's forecast error rose to {detail['recent_error']:.2f}"
                )
                if up:
                    named = ", ".join(f"{s} x{r:.1f}" for s, r in up[:3])
                    more = ", ..." if len(up) > 3 else ""
                    line += f"\nlearn    up on {len(up)} sensor(s): {named}{more}"
            else:
                line = "learn  drift: the forecast error fell (no retrain)"
        elif kind == "retrain_started":
            assert detail is not None
            line = (
                f"learn  retrain started ({detail['reason']}): a child process replays "
                f"{detail['history']:,} readings"
            )
        elif kind == "retrain_finished":
            assert detail is not None
            line = f"learn  retrain finished: {detail['rows']:,} rows in {detail['seconds']} s"
        elif kind == "registered":
            line = f"learn  registered v{e['candidate']} (shadow: scored beside serving)"
        elif kind in ("shadow_score", "promoted", "rejected"):
            cand, serv = e["candidate_metric"], e["serving_metric"]
            why = {
                "shadow_score": "shadow",
                "promoted": "promoted (better)",
                "rejected": "rejected (no better)",
            }[kind]
            line = f"learn  v{e['candidate']} {why}: MAE {cand:.3f} vs serving {serv:.3f}"
        elif kind == "retrain_failed":
            line = f"learn  retrain failed: {detail}"
        else:
            line = f"learn  {kind}"
        entry["line"] = line
        self.log.append(entry)
        if self.say is not None:
            self.say(line)

    def summary(self) -> dict[str, Any]:
        """Counts of the loop's events, the drifting sensors named, the rolling error.

        ``false_drifts`` counts drifts that would retrain (the error got worse) before the
        first reading of the fleet's concept change reached the loop; ``named`` the sensors
        named at drifts after it, and ``named_changing`` how many of those are the changing
        sensors.
        """
        kinds = [e["event"] for e in self.log]
        worse = [e for e in self.log if e["event"] == "drift" and e["worse"]]
        before = [e for e in worse if not e["after_change"]]
        named = sorted({s for e in worse if e not in before for s in e.get("sensors", [])})
        changing = set(self.fleet.changing().tolist())
        return {
            "drifts": len(worse),
            "false_drifts": len(before),
            "retrains": kinds.count("retrain_started"),
            "promotions": kinds.count("promoted"),
            "rejections": kinds.count("rejected"),
            "named": named,
            "named_changing": len([s for s in named if s in changing]),
            "mae": None if self.mae != self.mae else round(self.mae, 4),
            "version": self.version,
        }
