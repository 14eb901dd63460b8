"""The ``drift`` pipeline step: a drift detector over one column, per key, with drift events.

``stream.drift("error_drift", "adwin", column="error", key="sensor")`` adds a
:class:`DriftStep`. Every row passes on with two columns added (``output`` names them;
``"drift"`` by default):

=================  ============================================================
``drift``          True at the row where the key's detector found a drift
``drift_score``    the detector's statistic over its threshold (>= 1 at a drift,
                   NaN where it did not test, e.g. during warm-up)
=================  ============================================================

The ``events`` side output carries one row per drift: the row's columns plus ``detector``
(the detector's kind), ``column`` (the column watched) and ``step``. Drifts are counted as
``<step>.drifts`` in the run summary and metrics; rows whose value is missing or not finite
are passed on untested (``drift`` False) and counted as ``<step>.missing``. What to watch:
a feature column (covariate drift), a model's prediction (prior drift), or its error
(``abs(y - y_hat)`` or ``y != y_hat``: concept drift; ADWIN and Page-Hinkley are made for
this one). The state (key index and detector state) goes into checkpoints as arrays and
JSON.

Example:
    >>> import numpy as np
    >>> from tidal.core.batch import Batch
    >>> step = DriftStep("d", "cusum", column="err")
    >>> x = np.r_[np.tile([0.0, 1.0], 150), np.ones(40)]
    >>> out = step.process(Batch({"err": x}), 0)
    >>> [port for port, _ in out], np.flatnonzero(out[0][1]["drift"]).tolist()
    ([0, 1], [323])
    >>> event = out[1][1].to_records()[0]
    >>> event["detector"], event["column"], round(event["drift_score"], 3)
    ('cusum', 'err', 1.031)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tidal.core.batch import Batch
from tidal.core.keys import KeyIndex
from tidal.core.operator import Emit, Operator
from tidal.errors import ConfigError, PipelineError, StateError
from tidal.ml.detect.drift import DriftDetector

__all__ = ["DriftStep"]

_STATE_KIND = "drift/1"


class DriftStep(Operator):
    """Watch one numeric column for drift, per key; drift events on the ``events`` output.

    Args:
        name: the step's name (keys its state and its counters).
        detector: a :class:`~tidal.ml.detect.drift.DriftDetector`, or a name from
            :data:`tidal.ml.detect.DRIFT_DETECTORS`.
        column: the numeric column to watch.
        key: the key column; ``None`` watches one series.
        output: name of the flag column; the score column is ``<output>_score``.
        seed: seed for detectors built by name.

    Raises:
        ConfigError: for an unknown detector name or an empty column name.
    """

    outputs = ("main", "events")

    def __init__(
        self,
        name: str,
        detector: DriftDetector | str,
        *,
        column: str,
        key: str | None = None,
        output: str = "drift",
        seed: int = 0,
    ) -> None:
        from tidal.ml.detect.catalog import make_drift

        super().__init__(name)
        if not column or not output:
            msg = f"step {name!r}: give the column to watch and a non-empty output name"
            raise ConfigError(msg)
        self.detector = make_drift(detector, seed=seed) if isinstance(detector, str) else detector
        self.column = column
        self.key = key
        self.output = output
        self.keys = KeyIndex()

    def process(self, batch: Batch, port: int) -> Emit:
        """Test the batch's rows; pass them on with the drift columns; emit the drifts."""
        n = len(batch)
        need = [self.column, *([self.key] if self.key else [])]
        missing = [c for c in need if c not in batch]
        if missing:
            msg = (
                f"step {self.name!r}: columns {missing} are needed to watch for drift, "
                f"the batch has {batch.names}"
            )
            raise PipelineError(msg)
        col = batch[self.column]
        if n and col.dtype.kind not in "iufb":
            msg = (
                f"step {self.name!r}: column {self.column!r} must be numeric, got {col.dtype}; "
                "cast it (or compute an error column with map) before the drift step"
            )
            raise PipelineError(msg)
        x = np.asarray(col, dtype=np.float64)
        ids = self.keys.ids(batch[self.key]) if self.key is not None else np.zeros(n, np.int64)
        ok = np.isfinite(x)
        drift = np.zeros(n, dtype=bool)
        score = np.full(n, np.nan)
        sel = np.flatnonzero(ok)
        found = self.detector.update(x[sel], ids[sel])
        drift[sel], score[sel] = found.drift, found.score
        n_drift = int(drift.sum())
        self.ctx.count(f"{self.name}.drifts", n_drift)
        self.ctx.count(f"{self.name}.missing", int(n - len(sel)))
        out = batch.with_columns(**{self.output: drift, f"{self.output}_score": score})
        emit: Emit = [(0, out)]
        if n_drift:
            events = out.filter(drift)
            emit.append(
                (
                    1,
                    events.with_columns(
                        detector=np.full(n_drift, self.detector.kind, dtype=object),
                        column=np.full(n_drift, self.column, dtype=object),
                        step=np.full(n_drift, self.name, dtype=object),
                    ),
                )
            )
        return emit

    def _params(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "key": self.key,
            "output": self.output,
            "detector": self.detector.kind,
        }

    def snapshot(self) -> dict[str, Any]:
        """Key index and detector state."""
        return {
            "kind": _STATE_KIND,
            "params": self._params(),
            "keys": self.keys.snapshot(),
            "detector": self.detector.snapshot(),
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`.

        Raises:
            StateError: if the snapshot is another step's or its parameters differ.
        """
        params = self._params()
        if snap.get("kind") != _STATE_KIND or snap.get("params") != params:
            msg = (
                f"step {self.name!r}: the snapshot is of a drift step with "
                f"{snap.get('params')}, this one has {params}; rename the step to start afresh"
            )
            raise StateError(msg)
        self.keys.restore(snap["keys"])
        try:
            self.detector.restore(snap["detector"])
        except StateError as exc:
            msg = f"step {self.name!r}: {exc}"
            raise StateError(msg) from exc
