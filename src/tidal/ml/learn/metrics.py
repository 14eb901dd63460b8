"""Prequential (test-then-train) metrics, overall and over a rolling window, per row.

:class:`Prequential` is fed each batch's labels and the predictions made *before* the batch
was learned. Every metric but ROC AUC is a ratio of running sums, so it is computed for
every row at once from cumulative sums: row ``i``'s ``accuracy`` is the accuracy over all
rows up to and including ``i``, and ``accuracy_rolling`` over the last ``window`` rows.

=============  ==========================  ==================================================
metric         tasks                       definition
=============  ==========================  ==================================================
``accuracy``   classification              share of rows whose predicted class was right
``f1``         binary classification       F1 of class 1: ``2 tp / (2 tp + fp + fn)``
``log_loss``   classification              mean ``-log p(true class)`` (p clipped to 1e-15)
``roc_auc``    binary classification       P(score of a 1 > score of a 0); see below
``mae``        regression                  mean absolute error
``rmse``       regression                  root mean squared error
``r2``         regression                  ``1 - SSE / SST`` (SST about the running mean)
=============  ==========================  ==================================================

ROC AUC is not a sum: the rolling value is computed exactly on the last ``window`` rows at
the end of each batch, and the overall value from two 4,096-bin score histograms (exact to
the bin: scores that share a bin count as ties); every row of a batch carries the value
after the batch. The state (sums, the window's last rows, the histograms) is arrays.

Example:
    >>> import numpy as np
    >>> m = Prequential("classification", ["accuracy", "log_loss"], window=2, binary=True)
    >>> cols = m.update(np.array([1, 0, 1]), np.array([[0.2, 0.8], [0.6, 0.4], [0.7, 0.3]]))
    >>> cols["accuracy"].round(3).tolist(), cols["accuracy_rolling"].tolist()
    ([1.0, 1.0, 0.667], [1.0, 1.0, 0.5])
    >>> round(m.values()["log_loss"], 4)
    0.646
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError, StateError

__all__ = ["CLASSIFICATION", "METRICS", "REGRESSION", "Prequential"]

CLASSIFICATION = ("accuracy", "f1", "log_loss", "roc_auc")
REGRESSION = ("mae", "rmse", "r2")
METRICS = (*CLASSIFICATION, *REGRESSION)
_BINARY_ONLY = ("f1", "roc_auc")
# the running sums each metric needs: n, correct, tp, fp, fn, ll, abs, se, y, yy
_SUMS = ("n", "correct", "tp", "fp", "fn", "ll", "abs", "se", "y", "yy")
_BINS = 4096
_NEEDS = {
    "accuracy": (1,),
    "f1": (2, 3, 4),
    "log_loss": (5,),
    "roc_auc": (),
    "mae": (6,),
    "rmse": (7,),
    "r2": (7, 8, 9),
}


def _argmax(out: Array) -> Array:
    """``out.argmax(axis=1)`` (the first NaN, else the first largest); two columns compared.

    Example:
        >>> _argmax(np.array([[0.4, 0.6], [0.5, 0.5], [np.nan, 1.0], [1.0, np.nan]])).tolist()
        [1, 0, 0, 1]
    """
    if out.shape[1] != 2:  # noqa: PLR2004 - the two-class shortcut
        ids: Array = out.argmax(axis=1)
        return ids
    a, b = out[:, 0], out[:, 1]
    first_nan = np.isnan(a)
    return (~first_nan & (np.isnan(b) | (b > a))).astype(np.int64)


def _auc(pos: Array, neg: Array) -> float:
    """ROC AUC from per-bin counts of positives and negatives (ties count half)."""
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    below = np.cumsum(neg) - neg  # negatives in lower bins
    return float((pos * (below + 0.5 * neg)).sum() / (n_pos * n_neg))


class Prequential:
    """Running prequential metrics (see the module doc).

    Args:
        task: ``"classification"`` or ``"regression"``.
        metrics: metric names; ``None``: every metric of the task (F1 and ROC AUC only
            for binary classification).
        window: rows in the rolling window.
        binary: True for two-class classification (class 1 is the positive class).

    Raises:
        ConfigError: for an unknown metric or one that does not fit the task.
    """

    def __init__(
        self,
        task: str,
        metrics: Sequence[str] | None = None,
        *,
        window: int = 1000,
        binary: bool = False,
    ) -> None:
        allowed: tuple[str, ...] = CLASSIFICATION if task == "classification" else REGRESSION
        if not binary:
            allowed = tuple(m for m in allowed if m not in _BINARY_ONLY)
        names = list(allowed if metrics is None else metrics)
        bad = [m for m in names if m not in allowed]
        if bad or window < 1:
            msg = (
                f"metrics {bad} do not fit a {'binary ' if binary else ''}{task} learner; "
                f"choose from {list(allowed)} (and window >= 1)"
            )
            raise ConfigError(msg)
        self.task, self.metrics, self.window, self.binary = task, names, window, binary
        need = {0} | {j for m in names for j in _NEEDS[m]}
        self._idx = sorted(need)
        # the sums kept per row: those the metrics read, the count of right classes, and
        # every regression sum (what the state has always held)
        if task == "classification":
            binary_sums = {2, 3, 4} if binary and 2 in need else set()  # noqa: PLR2004
            self._filled = sorted({0, 1} | binary_sums | ({5} & need))
        else:
            self._filled = [0, 6, 7, 8, 9]
        self.totals = np.zeros(len(_SUMS))
        self.tail = np.zeros((0, len(_SUMS)))
        self.tail_score = np.zeros(0)
        self.tail_label = np.zeros(0)
        self.hist = np.zeros((2, _BINS))

    def params(self) -> dict[str, Any]:
        """The settings, as JSON."""
        return {
            "task": self.task,
            "metrics": self.metrics,
            "window": self.window,
            "binary": self.binary,
        }

    def _contrib(self, y: Array, out: Array) -> Array:
        """Each row's terms of the sums :attr:`_filled` (in that order), ``(n, len(filled))``."""
        at = {j: i for i, j in enumerate(self._filled)}
        c = np.empty((len(y), len(self._filled)))
        c[:, 0] = 1.0
        if self.task == "classification":
            yi = y.astype(np.int64)
            k = out.shape[1]
            pred = _argmax(out)
            c[:, 1] = pred == yi
            if 2 in at:  # noqa: PLR2004 - the tp/fp/fn sums (binary only)
                c[:, at[2]] = (pred == 1) & (yi == 1)
                c[:, at[3]] = (pred == 1) & (yi != 1)
                c[:, at[4]] = (pred != 1) & (yi == 1)
            if 5 in at:  # noqa: PLR2004 - the log-loss sum
                inside = yi < k
                p = np.full(len(y), 1e-15)
                p[inside] = out[np.flatnonzero(inside), yi[inside]]
                c[:, at[5]] = -np.log(np.clip(p, 1e-15, 1.0))
        else:
            e = out.reshape(len(y), -1)[:, 0] - y
            c[:, 1], c[:, 2], c[:, 3], c[:, 4] = np.abs(e), e * e, y, y * y
        return c

    @staticmethod
    def _values(
        s: Array, names: Sequence[str], idx: Sequence[int] | None = None
    ) -> dict[str, Array]:
        """Metric values from running sums ``s`` (whose last axis holds the sums ``idx``)."""
        pos = {j: i for i, j in enumerate(range(len(_SUMS)) if idx is None else idx)}

        def col(j: int) -> Array:
            return s[..., pos[j]]

        n = np.maximum(col(0), 1.0)
        out: dict[str, Array] = {}
        with np.errstate(divide="ignore", invalid="ignore"):
            for m in names:
                if m == "accuracy":
                    out[m] = col(1) / n
                elif m == "f1":
                    tp = col(2)
                    den = 2 * tp + col(3) + col(4)
                    out[m] = np.where(den > 0, 2 * tp / np.where(den > 0, den, 1.0), 0.0)
                elif m == "log_loss":
                    out[m] = col(5) / n
                elif m == "mae":
                    out[m] = col(6) / n
                elif m == "rmse":
                    out[m] = np.sqrt(col(7) / n)
                elif m == "r2":
                    sst = col(9) - col(8) ** 2 / n
                    out[m] = np.where(sst > 1e-12, 1.0 - col(7) / sst, np.nan)
        return out

    def update(self, y: Array, out: Array) -> dict[str, Array]:
        """Add a batch; per-row columns ``<metric>`` and ``<metric>_rolling``.

        ``y`` are the labels (class ids or values), ``out`` the predictions made before the
        rows were learned: ``(n, k)`` class probabilities, or ``(n,)`` values.
        """
        y = np.asarray(y, dtype=np.float64)
        out = np.asarray(out, dtype=np.float64)
        c = self._contrib(y, out if out.ndim == 2 else out.reshape(-1, 1))
        filled = self._filled  # the columns of ``c``: the sums that are not always 0
        n, t, w = len(c), len(self.tail), self.window
        overall = np.cumsum(c, axis=0)
        overall += self.totals[filled]
        # the rolling sums: prefix sums over the window's last rows and the batch, row i's
        # sum is prefix[t + 1 + i] - prefix[max(t + 1 + i - window, 0)] (slices, no gather)
        cum = np.empty((t + n + 1, len(filled)))
        cum[0] = 0.0
        np.cumsum(np.concatenate([self.tail[:, filled], c]), axis=0, out=cum[1:])
        lo = t + 1 - w
        if lo >= 0:
            start = cum[lo : lo + n]
        else:  # the first rows' windows reach back before the first row
            start = np.concatenate([np.repeat(cum[:1], min(-lo, n), axis=0), cum[: max(n + lo, 0)]])
        rolling = cum[t + 1 :] - start
        cols = self._values(overall, self.metrics, filled)
        rolled = self._values(rolling, self.metrics, filled)
        cols.update({f"{k}_rolling": v for k, v in rolled.items()})
        if n:
            self.totals[filled] = overall[-1]  # the totals plus the batch's sums
        keep = w - n
        new = np.zeros((min(n, w), len(_SUMS)))
        new[:, filled] = c[n - len(new) :]
        self.tail = np.concatenate([self.tail[-keep:] if keep > 0 else self.tail[:0], new])
        if "roc_auc" in self.metrics:
            score = out[:, 1]
            bins = np.clip((score * _BINS).astype(np.int64), 0, _BINS - 1)
            flat = y.astype(np.int64).clip(0, 1) * _BINS + bins
            self.hist += np.bincount(flat, minlength=2 * _BINS).reshape(2, _BINS)
            self.tail_score = np.concatenate([self.tail_score, score])[-self.window :]
            self.tail_label = np.concatenate([self.tail_label, y])[-self.window :]
            n = len(y)
            cols["roc_auc"] = np.full(n, _auc(self.hist[1], self.hist[0]))
            cols["roc_auc_rolling"] = np.full(n, self._rolling_auc())
        return {k: cols[k] for k in self.columns()}

    def _rolling_auc(self) -> float:
        lab = self.tail_label == 1
        n_pos, n_neg = int(lab.sum()), int((~lab).sum())
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        order = np.argsort(self.tail_score, kind="stable")
        s = self.tail_score[order]
        ranks = np.empty(len(s))
        _, first, counts = np.unique(s, return_index=True, return_counts=True)
        avg = first + (counts + 1) / 2.0  # mid-ranks of ties, 1-based
        ranks[order] = np.repeat(avg, counts)
        return float((ranks[lab].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))

    def columns(self) -> list[str]:
        """The output column names, in order."""
        return [c for m in self.metrics for c in (m, f"{m}_rolling")]

    def values(self) -> dict[str, float]:
        """The current overall and rolling value of every metric."""
        vals = {k: float(v) for k, v in self._values(self.totals, self.metrics).items()}
        rolling = self._values(self.tail.sum(axis=0), self.metrics)
        vals.update({f"{k}_rolling": float(v) for k, v in rolling.items()})
        if "roc_auc" in self.metrics:
            vals["roc_auc"] = _auc(self.hist[1], self.hist[0])
            vals["roc_auc_rolling"] = self._rolling_auc()
        return {k: vals[k] for k in self.columns()}

    @property
    def count(self) -> int:
        """Rows evaluated so far."""
        return int(self.totals[0])

    def snapshot(self) -> dict[str, Any]:
        """Running sums, the window's rows, the AUC histograms."""
        return {
            "params": self.params(),
            "totals": self.totals.copy(),
            "tail": self.tail.copy(),
            "tail_score": self.tail_score.copy(),
            "tail_label": self.tail_label.copy(),
            "hist": self.hist.copy(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`snapshot` wrote.

        Raises:
            StateError: if the snapshot is of other settings.
        """
        if state.get("params") != self.params():
            msg = f"metrics: the snapshot is of {state.get('params')}, these are {self.params()}"
            raise StateError(msg)
        for name in ("totals", "tail", "tail_score", "tail_label", "hist"):
            setattr(self, name, np.array(state[name], dtype=np.float64))
