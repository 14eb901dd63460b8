"""The ``detect`` pipeline step: a detector over keyed batches, with alerts and explanations.

``stream.detect("anomalies", "auto", value="latency_ms", key="host")`` adds a
:class:`DetectStep`. For every row it adds:

================  ==============================================================
``anomaly_score`` ``P(|Z| < deviation)`` in ``[0, 1]`` (:func:`~tidal.ml.detect.base.to_score`)
``deviation``     how many of the detector's standard deviations the value is out
``expected_low``  the expected range, where the detector has one (else NaN)
``expected_high``
``detector``      which detector gave the score (an ensemble's member)
``alert``         True on the first row of an incident (hysteresis: one per incident)
================  ==============================================================

Counters: ``<step>.alerts`` (incidents opened), ``<step>.anomalies`` (rows at or above
``alert_on``). Rows with a missing (NaN) value get NaN scores and never alert; they are
counted as ``<step>.missing``. With ``ttl``, a key whose newest event time is ``ttl`` or
more behind the step's watermark is forgotten (detector and incident state cleared, its id
reused; counted as ``<step>.expired_keys``), so state stays bounded by the live keys; it
warms up again when it comes back.

Rows are scored in arrival order per key, causally: a score uses only the key's earlier
rows. The state (key index, detector, incidents) goes into checkpoints as
numeric arrays and JSON, like every operator's.

Example:
    >>> import numpy as np
    >>> from tidal.core.batch import Batch
    >>> step = DetectStep("d", "median_mad", value="v")
    >>> x = np.r_[np.sin(np.arange(300) / 5.0), 8.0, np.sin(np.arange(301, 320) / 5.0)]
    >>> out = step.process(Batch({"v": x}), 0)[0][1]
    >>> np.flatnonzero(out["alert"]).tolist(), out["detector"][300]
    ([300], 'median_mad')
    >>> explain(out.to_records()[300])
    'median_mad: 8 is above the expected range [-3.58, 3.63] by 4.37 (8.8 sigmas)'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.core.duration import Duration, to_millis
from tidal.core.keys import KeyIndex
from tidal.core.operator import Emit, Operator
from tidal.core.watermark import MAX_TIME, MIN_TIME
from tidal.errors import ConfigError, PipelineError, StateError
from tidal.ml.detect.base import Detector, grow, to_score
from tidal.ml.detect.ensemble import Hysteresis

__all__ = ["DetectStep", "explain"]

_STATE_KIND = "detect/1"
OUTPUTS = ("anomaly_score", "deviation", "expected_low", "expected_high", "detector", "alert")


class DetectStep(Operator):
    """Score a stream with a :class:`~tidal.ml.detect.base.Detector`, per key, with alerts.

    Args:
        name: the step's name (keys its state).
        detector: a detector, or a name from :data:`tidal.ml.detect.DETECTORS` (``"auto"``
            is the default choice).
        value: the value column, or several for a multivariate detector.
        key: the key column; ``None`` scores one series.
        alert_on: deviation that opens an incident.
        alert_off: deviation under which a row is quiet.
        quiet: quiet rows in a row that close an incident.
        seed: seed for detectors built by name.
        ttl: forget keys idle this long in event time (``"10m"``); needs a detector with
            a ``forget(ids)`` method (the baselines and ``gated_z``) and event time.

    Raises:
        ConfigError: for an unknown detector name, several value columns for a
            univariate detector, or ``ttl`` with a detector that cannot forget a key.
    """

    def __init__(
        self,
        name: str,
        detector: Detector | str = "auto",
        *,
        value: str | Sequence[str],
        key: str | None = None,
        alert_on: float = 5.0,
        alert_off: float = 3.0,
        quiet: int = 16,
        seed: int = 0,
        ttl: Duration | None = None,
    ) -> None:
        from tidal.ml.detect.catalog import make

        super().__init__(name)
        self.values = [value] if isinstance(value, str) else list(value)
        if not self.values:
            msg = f"step {name!r}: give at least one value column"
            raise ConfigError(msg)
        if isinstance(detector, str):
            detector = make(detector, features=len(self.values), seed=seed)
        if len(self.values) > 1 and not detector.multivariate:
            msg = (
                f"step {name!r}: detector {detector.kind!r} scores one value column, got "
                f"{self.values}; use 'hst' or 'iforest' for several, or one step per column"
            )
            raise ConfigError(msg)
        if ttl is not None and not callable(getattr(detector, "forget", None)):
            msg = (
                f"step {name!r}: detector {detector.kind!r} cannot forget single keys, so it "
                "takes no ttl; use a baseline (median_mad, rolling_z, ewma, gated_z) or drop ttl"
            )
            raise ConfigError(msg)
        self.ttl_ms = None if ttl is None else to_millis(ttl)
        self.last: Array = np.zeros(0, dtype=np.int64)
        self.detector = detector
        self.key = key
        self.alerts = Hysteresis(on=alert_on, off=alert_off, quiet=quiet)
        self.keys = KeyIndex()
        names = getattr(detector, "names", None) or [detector.kind]
        self._names = np.array(names, dtype=object)

    def process(self, batch: Batch, port: int) -> Emit:
        """Score the batch and pass it on with the detection columns."""
        return [(0, self.detect(batch))]

    def detect(self, batch: Batch) -> Batch:
        """The batch with the :data:`OUTPUTS` columns added (then the detector learns).

        Raises:
            PipelineError: if a value or key column is missing or a value is not numeric.
        """
        x = self._values(batch)
        n = len(batch)
        ids = self.keys.ids(batch[self.key]) if self.key is not None else np.zeros(n, np.int64)
        finite = np.isfinite(x).all(axis=1)
        dev = np.full(n, np.nan)
        low, high = np.full(n, np.nan), np.full(n, np.nan)
        member = np.zeros(n, dtype=np.int64)
        if getattr(self.detector, "missing", False):
            out = self.detector.score(x, ids)
            sel: Array | slice = slice(None)
        else:
            sel = np.flatnonzero(finite)
            out = self.detector.score(x[finite], ids[finite])
        dev[sel], low[sel], high[sel] = out.deviation, out.low, out.high
        if out.member is not None:
            member[sel] = out.member
        dev[~finite] = np.nan
        alert, _active = self.alerts.update(dev, ids)
        if self.ttl_ms is not None:
            self._touch(batch, ids)
        names = self._names[member]
        names[~finite] = None
        self.ctx.count(f"{self.name}.alerts", int(alert.sum()))
        with np.errstate(invalid="ignore"):
            self.ctx.count(f"{self.name}.anomalies", int((dev >= self.alerts.on).sum()))
        self.ctx.count(f"{self.name}.missing", int(n - finite.sum()))
        return batch.with_columns(
            anomaly_score=to_score(dev),
            deviation=dev,
            expected_low=low,
            expected_high=high,
            detector=names,
            alert=alert,
        )

    def _touch(self, batch: Batch, ids: Array) -> None:
        """Keep each key's newest event time (for ``ttl``)."""
        if batch.time is None:
            msg = f"step {self.name!r}: ttl needs event time; give the source time=..."
            raise PipelineError(msg)
        self.last = grow(self.last, self.keys.capacity, MIN_TIME)
        np.maximum.at(self.last, ids, batch.time)

    def on_watermark(self, wm: int) -> Emit:
        """With ``ttl``, forget the keys idle for ``ttl`` behind the watermark ``wm``.

        The end-of-input watermark expires nothing: the state is left as it is.
        """
        if self.ttl_ms is None or wm >= MAX_TIME or not len(self.last):
            return []
        gone = np.flatnonzero((self.last > MIN_TIME) & (self.last + self.ttl_ms <= wm))
        if len(gone):
            self.detector.forget(gone)  # type: ignore[attr-defined]  # checked in __init__
            self.alerts.forget(gone)
            self.last[gone] = MIN_TIME
            self.keys.release(gone)
            self.ctx.count(f"{self.name}.expired_keys", len(gone))
        return []

    def _values(self, batch: Batch) -> Array:
        need = [*self.values, *([self.key] if self.key else [])]
        missing = [c for c in need if c not in batch]
        if missing:
            msg = (
                f"step {self.name!r}: columns {missing} are needed to detect, "
                f"the batch has {batch.names}"
            )
            raise PipelineError(msg)
        cols = []
        for c in self.values:
            col = batch[c]
            if len(col) and col.dtype.kind not in "iufb":
                msg = (
                    f"step {self.name!r}: column {c!r} must be numeric, got {col.dtype}; "
                    "cast it (or send bad rows to the dead letters) before the detect step"
                )
                raise PipelineError(msg)
            cols.append(np.asarray(col, dtype=np.float64))
        return np.stack(cols, axis=1) if cols else np.zeros((len(batch), 0))

    def snapshot(self) -> dict[str, Any]:
        """Key index, detector state and incident state."""
        return {
            "kind": _STATE_KIND,
            "params": {"values": self.values, "key": self.key, **self.alerts.params()},
            "keys": self.keys.snapshot(),
            "detector": self.detector.snapshot(),
            "alerts": self.alerts.snapshot(),
            "last": self.last.copy(),
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`.

        Raises:
            StateError: if the snapshot is another step's or its parameters differ.
        """
        params = {"values": self.values, "key": self.key, **self.alerts.params()}
        if snap.get("kind") != _STATE_KIND or snap.get("params") != params:
            msg = (
                f"step {self.name!r}: the snapshot is of a detect step with "
                f"{snap.get('params')}, this one has {params}; rename the step to start afresh"
            )
            raise StateError(msg)
        self.keys.restore(snap["keys"])
        try:
            self.detector.restore(snap["detector"])
        except StateError as exc:
            msg = f"step {self.name!r}: {exc}"
            raise StateError(msg) from exc
        self.alerts.restore(snap["alerts"])
        self.last = np.asarray(snap.get("last", np.zeros(0)), dtype=np.int64).copy()


def explain(row: Mapping[str, Any], value: str | None = None) -> str:
    """One line saying which detector fired, the expected range, and by how much it was left.

    ``value`` names the value column (default: ``"value"``, else the first numeric one).

    Example:
        >>> explain({"value": 3.0, "detector": "hst", "deviation": 6.1,
        ...          "expected_low": float("nan"), "expected_high": float("nan")})
        'hst: 3 is unusual (6.1 sigmas)'
    """
    found: Any = row.get(value) if value is not None else row.get("value")
    if value is None and found is None:  # the first numeric column not a detection output
        for name, v in row.items():
            if name not in OUTPUTS and isinstance(v, float | int) and found is None:
                found = v
    det, d = row.get("detector"), float(row.get("deviation") or 0.0)
    lo, hi = row.get("expected_low"), row.get("expected_high")
    shown = f"{found:.4g}" if isinstance(found, float | int) else str(found)
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{det}: {shown} is unusual ({d:.1f} sigmas)"
    v = float(found) if isinstance(found, float | int) else float("nan")
    if v > hi:
        where, by = "above", v - hi
    elif v < lo:
        where, by = "below", lo - v
    else:
        return f"{det}: {shown} is inside the expected range [{lo:.3g}, {hi:.3g}] ({d:.1f} sigmas)"
    span = f"[{lo:.3g}, {hi:.3g}]"
    return f"{det}: {shown} is {where} the expected range {span} by {by:.3g} ({d:.1f} sigmas)"
