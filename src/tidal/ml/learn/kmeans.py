"""Online k-means: centres that follow the stream, updated per mini-batch or per row.

Each row is assigned to its nearest centre, and the centre moves towards it by
``1 / count`` (MacQueen's rule: every centre stays the mean of the rows it has taken), or
by ``decay`` when ``decay`` is set (an exponential forgetting rate, for drifting streams).
``mode="exact"`` assigns and moves one row at a time in row order; ``"minibatch"`` assigns
``batch_size`` rows to the centres as they stand, then moves each centre once towards
their mean (Sculley's mini-batch k-means). The centres are seeded farthest-first from the
first rows (deterministic: the first row, then each time the row farthest from every centre
so far).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-5, 1, (500, 2)), rng.normal(5, 1, (500, 2))])[
    ...     rng.permutation(1_000)]
    >>> km = KMeans(k=2); km.learn(X)
    >>> sorted(np.round(km.centers[:, 0]).tolist())
    [-5.0, 5.0]
    >>> len(set(km.predict(np.array([[-4.0, -4.0], [4.0, 4.0]])).tolist()))
    2
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError
from tidal.ml.learn.base import Task, check_state, check_xy, json_state

__all__ = ["KMeans"]


class KMeans:
    """Online k-means (see the module doc).

    Args:
        k: number of centres.
        mode: ``"minibatch"`` or ``"exact"``.
        batch_size: rows per update in mini-batch mode.
        decay: ``None`` for running means, or a rate in ``(0, 1]`` for moving centres.

    Raises:
        ConfigError: for ``k < 1``, an unknown mode, or a decay outside ``(0, 1]``.
    """

    kind: ClassVar[str] = "kmeans"
    task: ClassVar[Task] = "clustering"
    checkpointable: ClassVar[bool] = True

    def __init__(
        self,
        k: int = 8,
        *,
        mode: Literal["minibatch", "exact"] = "minibatch",
        batch_size: int = 256,
        decay: float | None = None,
    ) -> None:
        if k < 1 or mode not in ("minibatch", "exact") or batch_size < 1:
            msg = f"kmeans: need k >= 1, mode 'minibatch' or 'exact', batch_size >= 1; got {k}"
            raise ConfigError(msg)
        if decay is not None and not 0 < decay <= 1:
            msg = f"kmeans: decay must be in (0, 1], got {decay}"
            raise ConfigError(msg)
        self.params: dict[str, Any] = {
            "k": k,
            "mode": mode,
            "batch_size": batch_size,
            "decay": decay,
        }
        self.centers = np.zeros((0, 0))
        self.counts = np.zeros(0)

    @property
    def n_classes(self) -> int:
        """The number of centres (cluster ids are ``0..k-1``)."""
        return int(self.params["k"])

    def _assign(self, x: Array) -> Array:
        d2 = (x * x).sum(axis=1)[:, None] - 2 * x @ self.centers.T + (self.centers**2).sum(axis=1)
        out: Array = d2.argmin(axis=1).astype(np.int64)
        return out

    def _seed(self, x: Array) -> Array:
        """Farthest-first centres from the rows of the first batch(es); the rest of ``x``."""
        k = self.params["k"]
        if len(self.centers) == 0:
            self.centers, self.counts = np.zeros((0, x.shape[1])), np.zeros(0)
        if len(self.centers) >= k or len(x) == 0:
            return x
        if len(self.centers) == 0:
            self.centers, self.counts = x[:1].copy(), np.ones(1)
        d2 = ((x[:, None, :] - self.centers[None]) ** 2).sum(axis=2).min(axis=1)
        while len(self.centers) < k and d2.max() > 0:
            i = int(d2.argmax())
            self.centers = np.vstack([self.centers, x[i]])
            self.counts = np.append(self.counts, 1.0)
            d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(axis=1))
        return x

    def predict_learn(self, X: Array, y: Array | None = None, weight: Array | None = None) -> Array:
        """Each row's cluster before it was learned (seeding rows: their own centre)."""
        x = check_xy(self.kind, X, dim=self.centers.shape[1] if self.centers.size else None)[0]
        rest = self._seed(x)
        out = np.empty(len(x), dtype=np.int64)
        chunk = 1 if self.params["mode"] == "exact" else self.params["batch_size"]
        decay = self.params["decay"]
        for start in range(0, len(rest), chunk):
            xc = rest[start : start + chunk]
            a = self._assign(xc)
            out[start : start + len(xc)] = a
            n = np.bincount(a, minlength=len(self.centers)).astype(np.float64)
            sums = np.zeros_like(self.centers)
            np.add.at(sums, a, xc)
            hit = n > 0
            self.counts += n
            rate = (
                np.full(len(n), float(decay))
                if decay is not None
                else n / np.maximum(self.counts, 1)
            )
            mean = sums[hit] / n[hit, None]
            self.centers[hit] += rate[hit, None] * (mean - self.centers[hit])
        return out

    def learn(self, X: Array, y: Array | None = None, weight: Array | None = None) -> None:
        """Move the centres towards the rows of ``X`` (``y`` and ``weight`` are ignored)."""
        self.predict_learn(X)

    def predict(self, X: Array) -> Array:
        """The nearest centre of each row (0 before anything was learned)."""
        x = check_xy(self.kind, X, dim=self.centers.shape[1] if self.centers.size else None)[0]
        if len(self.centers) == 0:
            return np.zeros(len(x), dtype=np.int64)
        return self._assign(x)

    def snapshot(self) -> dict[str, Any]:
        """Centres and their counts."""
        return {
            "kind": self.kind,
            "params": json_state(self.params),
            "centers": self.centers.copy(),
            "counts": self.counts.copy(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`snapshot` wrote.

        Raises:
            StateError: if the snapshot is of another learner or other settings.
        """
        check_state(self.kind, state, self.params)
        self.centers = np.array(state["centers"], dtype=np.float64)
        self.counts = np.array(state["counts"], dtype=np.float64)
