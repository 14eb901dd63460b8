"""Streaming anomaly detection: per-key z-scores against an exponentially weighted baseline.

A :class:`Detector` scores each row of a batch against what it has learned from the rows
*before* it (test-then-train, the prequential order), adds a ``score`` and an ``is_anomaly``
column, and then learns from the batch. :class:`ZScoreDetector` is the vectorized baseline
detector: per key it keeps an exponentially weighted moving mean and variance (EWMA and
EWMVar, Finch 2009) of a numeric column and scores ``z = (x - mean) / sqrt(var)``.

State lives in dense numpy arrays indexed by :class:`~tidal.core.keys.KeyIndex` ids, so
state grows with the number of live keys, never with events. Rows of the same key in one
batch must still be applied one after the other, in arrival order; the detector does that in
*rounds*: the first row of every key in the batch is scored and applied at once, then the
second row of every key, and so on. Each round is a handful of numpy calls over distinct
keys, and the arithmetic per row is the same as per-record processing, so results are
bit-identical to per-record processing however the stream was batched::

    batch (key:value):   a:1  b:5  a:2  a:3  b:6
    occurrence rank:      0    0    1    2    1
    round 0: a:1, b:5    round 1: a:2, b:6    round 2: a:3

Example:
    >>> import numpy as np
    >>> from tidal.core.batch import Batch
    >>> det = ZScoreDetector("z", key="sensor", value="temp", warmup=3)
    >>> calm = Batch({"sensor": ["a"] * 4, "temp": [20.0, 20.5, 19.5, 20.0]})
    >>> det.detect(calm)["is_anomaly"].tolist()
    [False, False, False, False]
    >>> out = det.detect(Batch({"sensor": ["a"], "temp": [35.0]}))
    >>> bool(out["is_anomaly"][0]), round(float(out["score"][0]), 1)
    (True, 42.4)
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.core.duration import Duration, to_millis
from tidal.core.keys import KeyIndex
from tidal.core.operator import Emit, Operator
from tidal.core.watermark import MAX_TIME, MIN_TIME
from tidal.errors import ConfigError, PipelineError, StateError

__all__ = ["Detector", "ZScoreDetector"]

_STATE_KIND = "zscore/1"


@runtime_checkable
class Detector(Protocol):
    """The plug point for anomaly detectors (see DESIGN.md, ``Detector``).

    A detector is prequential: :meth:`detect` scores every row against the state learned
    from the rows before it, returns the batch with the columns ``score`` (float64, larger
    magnitude is more anomalous) and ``is_anomaly`` (bool) added, and then learns from the
    batch. Results must not depend on how the stream was cut into batches. State goes to
    and comes from numeric numpy arrays and JSON values only, like every operator's.

    To run in a pipeline a detector is also an :class:`~tidal.core.operator.Operator`
    (``stream.apply(detector)``); :class:`ZScoreDetector` is both.

    Example:
        >>> isinstance(ZScoreDetector("z", key="k", value="v"), Detector)
        True
    """

    name: str

    def detect(self, batch: Batch) -> Batch:
        """Score ``batch`` (adding ``score`` and ``is_anomaly``), then learn from it."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The learned state as numeric numpy arrays and JSON values."""
        ...

    def restore(self, snap: dict[str, Any]) -> None:
        """Load a :meth:`snapshot` into a fresh detector with the same parameters."""
        ...


def occurrence_rank(ids: Array) -> Array:
    """For each row, how many earlier rows of the batch have the same id.

    Example:
        >>> occurrence_rank(np.array([7, 3, 7, 7, 3])).tolist()
        [0, 0, 1, 2, 1]
    """
    n = len(ids)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    head = np.ones(n, dtype=bool)
    head[1:] = sorted_ids[1:] != sorted_ids[:-1]
    group_start = np.maximum.accumulate(np.where(head, np.arange(n), 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - group_start
    return rank


class ZScoreDetector(Operator):
    """Per-key z-score of ``value`` against an exponentially weighted mean and variance.

    For each row, in arrival order per key, with the key's state ``(n, mean, var)`` *before*
    the row:

    * ``score = (x - mean) / max(sqrt(var), min_std)`` once ``n >= warmup``, else ``0.0``;
    * ``is_anomaly = |score| >= threshold`` (never during warm-up);
    * then, unless the row is an anomaly, the state learns ``x`` with weight
      ``w = max(alpha, 1 / (n + 1))``::

          d = x - mean;  mean += w * d;  var = (1 - w) * (var + w * d * d)

      The ``1 / (n + 1)`` weight makes the first rows an exact running mean and
      (population) variance, so the baseline is unbiased when warm-up ends; after that
      the weight is ``alpha`` (a memory of about ``1 / alpha`` rows).

    Anomalies are *not learned*: a spike or a faulty episode neither drags the mean nor
    inflates the variance, so the key is not blind after it. (Winsorizing anomalies into
    the baseline, the other common choice, widens the variance on every anomalous row and
    leaves a key insensitive for about ``log(inflation) / alpha`` rows after a fault.) A
    lasting change of level must still be accepted: after ``patience`` anomalies in a row
    the key's baseline restarts from the current value and warms up again.

    Rows whose value is not finite get ``score`` NaN, are never anomalous and are not
    learned. With ``ttl``, a key whose newest event time (of any row, learned or not) is
    ``ttl`` or more behind the watermark is forgotten (it warms up again when it comes
    back); this is judged per row against the watermark it arrived under, and the key's id
    is released when the operator's watermark passes, so state stays bounded by the live
    keys.

    Args:
        name: the step's name (keys its state in snapshots).
        key: the key column (e.g. ``"sensor"``).
        value: the numeric column to score.
        alpha: EWMA weight of a new row, in ``(0, 1]``.
        threshold: ``|z|`` at or above which a row is an anomaly.
        warmup: rows a key must have learned before it is scored.
        patience: anomalies in a row after which a key's baseline restarts (a level shift
            is accepted); ``None`` never restarts.
        ttl: forget keys idle this long in event time (``"10m"``); ``None`` keeps them.
        min_std: floor on the standard deviation, so a constant series does not divide by 0.
        score_column: name of the score column.
        anomaly_column: name of the flag column.

    Raises:
        ConfigError: for parameters out of range.

    Example:
        >>> det = ZScoreDetector("z", key="k", value="v", alpha=0.1, threshold=3.0, warmup=2)
        >>> out = det.detect(Batch({"k": [1, 1, 1, 1], "v": [0.0, 2.0, 1.0, 9.0]}))
        >>> [round(s, 2) for s in out["score"].tolist()], out["is_anomaly"].tolist()
        ([0.0, 0.0, 0.0, 9.8], [False, False, False, True])
    """

    def __init__(
        self,
        name: str,
        key: str,
        value: str,
        *,
        alpha: float = 0.05,
        threshold: float = 4.0,
        warmup: int = 10,
        patience: int | None = 30,
        ttl: Duration | None = None,
        min_std: float = 1e-9,
        score_column: str = "score",
        anomaly_column: str = "is_anomaly",
    ) -> None:
        super().__init__(name)
        if not 0.0 < alpha <= 1.0:
            msg = f"step {name!r}: alpha must be in (0, 1], got {alpha!r}"
            raise ConfigError(msg)
        if not threshold > 0.0:
            msg = f"step {name!r}: threshold must be > 0, got {threshold!r}"
            raise ConfigError(msg)
        if warmup < 1:
            msg = f"step {name!r}: warmup must be >= 1 row, got {warmup!r}"
            raise ConfigError(msg)
        if patience is not None and patience < 1:
            msg = f"step {name!r}: patience must be >= 1 row or None, got {patience!r}"
            raise ConfigError(msg)
        if not min_std > 0.0:
            msg = f"step {name!r}: min_std must be > 0, got {min_std!r}"
            raise ConfigError(msg)
        self.key = key
        self.value = value
        self.alpha = float(alpha)
        self.threshold = float(threshold)
        self.warmup = int(warmup)
        self.patience = None if patience is None else int(patience)
        self.ttl_ms = None if ttl is None else to_millis(ttl)
        self.min_std = float(min_std)
        self.score_column = score_column
        self.anomaly_column = anomaly_column
        self.keys = KeyIndex()
        self.n: Array = np.zeros(0, dtype=np.int64)
        self.mean: Array = np.zeros(0, dtype=np.float64)
        self.var: Array = np.zeros(0, dtype=np.float64)
        self.last: Array = np.zeros(0, dtype=np.int64)
        self.streak: Array = np.zeros(0, dtype=np.int64)

    # -- operator ----------------------------------------------------------------------
    def process(self, batch: Batch, port: int) -> Emit:
        """Score the batch and pass it on with the score and flag columns."""
        return [(0, self.detect(batch))]

    def on_watermark(self, wm: int) -> Emit:
        """With ``ttl``, forget the keys idle for ``ttl`` behind the watermark ``wm``.

        The end-of-input watermark (a bounded run's last) expires nothing: the state is
        simply left as it is.
        """
        if self.ttl_ms is not None and len(self.keys) and wm < MAX_TIME:
            live = self.last > MIN_TIME
            gone = np.flatnonzero(live & (self.last + self.ttl_ms <= wm))
            if len(gone):
                self._clear(gone)
                self.keys.release(gone)
                self.ctx.count(f"{self.name}.expired_keys", len(gone))
        return []

    # -- detector ----------------------------------------------------------------------
    def detect(self, batch: Batch) -> Batch:
        """Score every row against its key's state before it, then learn from the rows.

        Raises:
            PipelineError: if the key or value column is missing or not numeric, or ``ttl``
                is set and the batch has no event time.
        """
        self._check(batch)
        n_rows = len(batch)
        score = np.zeros(n_rows, dtype=np.float64)
        flag = np.zeros(n_rows, dtype=bool)
        if n_rows:
            x = np.asarray(batch[self.value], dtype=np.float64)
            kid = self.keys.ids(batch[self.key])
            self._grow(self.keys.capacity)
            rank = occurrence_rank(kid)
            order = np.argsort(rank, kind="stable")
            cuts = np.flatnonzero(np.diff(rank[order])) + 1
            for rows in np.split(order, cuts):
                self._round(batch, rows, kid[rows], x[rows], score, flag)
            self.ctx.count(f"{self.name}.anomalies", int(flag.sum()))
        return batch.with_columns(**{self.score_column: score, self.anomaly_column: flag})

    def _check(self, batch: Batch) -> None:
        missing = [c for c in (self.key, self.value) if c not in batch]
        if missing:
            msg = (
                f"step {self.name!r}: columns {missing} are needed to score anomalies, "
                f"the batch has {batch.names}"
            )
            raise PipelineError(msg)
        if len(batch) and batch[self.value].dtype.kind not in "iufb":
            msg = (
                f"step {self.name!r}: column {self.value!r} must be numeric to score, "
                f"got {batch[self.value].dtype}; cast it in a map step before the detector"
            )
            raise PipelineError(msg)
        if self.ttl_ms is not None and len(batch) and (batch.time is None or batch.wm is None):
            msg = f"step {self.name!r}: ttl needs event time; give the source time=..."
            raise PipelineError(msg)

    def _round(
        self, batch: Batch, rows: Array, k: Array, x: Array, score: Array, flag: Array
    ) -> None:
        """Score and learn one row per key (the keys in ``k`` are distinct)."""
        if self.ttl_ms is not None:
            assert batch.time is not None and batch.wm is not None
            last = self.last[k]
            stale = (last > MIN_TIME) & (last + self.ttl_ms <= batch.wm[rows])
            if stale.any():
                self._clear(k[stale])
        with np.errstate(over="ignore", invalid="ignore"):
            self._learn(batch, rows, k, x, score, flag)

    def _learn(
        self, batch: Batch, rows: Array, k: Array, x: Array, score: Array, flag: Array
    ) -> None:
        n = self.n[k]
        mean = self.mean[k]
        var = self.var[k]
        ok = np.isfinite(x)
        std = np.maximum(np.sqrt(var), self.min_std)
        scored = ok & (n >= self.warmup)
        z = np.where(scored, (x - mean) / std, 0.0)
        z[~ok] = np.nan
        bad = scored & (np.abs(z) >= self.threshold)
        score[rows] = z
        flag[rows] = bad
        # learn from finite, normal values; restart after `patience` anomalies in a row
        w = np.maximum(self.alpha, 1.0 / (n + 1))
        d = x - mean
        incr = w * d
        new_n = n + 1
        new_mean = mean + incr
        new_var = (1.0 - w) * (var + d * incr)
        streak = np.where(bad, self.streak[k] + 1, 0)
        if self.patience is not None:
            restart = streak >= self.patience
            new_n[restart], new_mean[restart], new_var[restart] = 1, x[restart], 0.0
            streak[restart] = 0
            learn = ok & (~bad | restart)
        else:
            learn = ok & ~bad
        self.streak[k[ok]] = streak[ok]
        kk = k[learn]
        self.n[kk] = new_n[learn]
        self.mean[kk] = new_mean[learn]
        self.var[kk] = new_var[learn]
        if batch.time is not None:
            self.last[k] = np.maximum(self.last[k], batch.time[rows])

    def _grow(self, cap: int) -> None:
        have = len(self.n)
        if cap <= have:
            return
        size = max(cap, 2 * have, 16)
        extra = size - have
        self.n = np.concatenate((self.n, np.zeros(extra, dtype=np.int64)))
        self.mean = np.concatenate((self.mean, np.zeros(extra, dtype=np.float64)))
        self.var = np.concatenate((self.var, np.zeros(extra, dtype=np.float64)))
        self.last = np.concatenate((self.last, np.full(extra, MIN_TIME, dtype=np.int64)))
        self.streak = np.concatenate((self.streak, np.zeros(extra, dtype=np.int64)))

    def _clear(self, ids: Array) -> None:
        self.n[ids] = 0
        self.mean[ids] = 0.0
        self.var[ids] = 0.0
        self.last[ids] = MIN_TIME
        self.streak[ids] = 0

    # -- state -------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Keys (JSON) and per-key ``n``, ``mean``, ``var``, ``last``, ``streak`` arrays.

        Example:
            >>> det = ZScoreDetector("z", key="k", value="v")
            >>> _ = det.detect(Batch({"k": ["a", "b"], "v": [1.0, 2.0]}))
            >>> snap = det.snapshot()
            >>> snap["keys"]["keys"], snap["mean"].tolist()
            (['a', 'b'], [1.0, 2.0])
        """
        cap = self.keys.capacity
        return {
            "kind": _STATE_KIND,
            "params": self._params(),
            "keys": self.keys.snapshot(),
            "n": self.n[:cap].copy(),
            "mean": self.mean[:cap].copy(),
            "var": self.var[:cap].copy(),
            "last": self.last[:cap].copy(),
            "streak": self.streak[:cap].copy(),
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot` (a detector with the same parameters).

        Raises:
            StateError: if the snapshot is not a z-score detector's or its parameters differ.
        """
        if snap.get("kind") != _STATE_KIND:
            msg = f"step {self.name!r}: not a ZScoreDetector snapshot (kind {snap.get('kind')!r})"
            raise StateError(msg)
        if snap.get("params") != self._params():
            msg = (
                f"step {self.name!r}: the snapshot was taken with {snap.get('params')}, the "
                f"detector has {self._params()}; restore into a detector with the same "
                "parameters or rename the step to start afresh"
            )
            raise StateError(msg)
        self.keys.restore(snap["keys"])
        cap = self.keys.capacity
        arrays: dict[str, Array] = {
            "n": np.asarray(snap["n"], dtype=np.int64),
            "mean": np.asarray(snap["mean"], dtype=np.float64),
            "var": np.asarray(snap["var"], dtype=np.float64),
            "last": np.asarray(snap["last"], dtype=np.int64),
            "streak": np.asarray(snap["streak"], dtype=np.int64),
        }
        if any(len(a) != cap for a in arrays.values()):
            msg = f"step {self.name!r}: damaged snapshot: arrays do not match {cap} key ids"
            raise StateError(msg)
        self.n, self.mean = arrays["n"].copy(), arrays["mean"].copy()
        self.var, self.last = arrays["var"].copy(), arrays["last"].copy()
        self.streak = arrays["streak"].copy()

    def _params(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "value": self.value,
            "alpha": self.alpha,
            "threshold": self.threshold,
            "warmup": self.warmup,
            "patience": self.patience,
            "ttl_ms": self.ttl_ms,
            "min_std": self.min_std,
        }
