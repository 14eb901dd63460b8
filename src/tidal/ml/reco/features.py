"""Content features for cold start: a ridge map from a key's features to its factors and bias.

A :class:`FeatureTable` holds one feature vector per user (or per item) id. Users and items
with history have learned factors ``P[u]`` (``Q[i]``) and a bias; :meth:`FeatureTable.fit`
regresses ``[factors | bias]`` on ``[features | 1]`` over the keys that have features and
at least ``min_count`` interactions (ridge, penalty ``reg``, the intercept unpenalized):
``W = (X'X + reg I)^-1 X'T``. A key with features and **no** history then gets
``features @ W`` as its factors and bias: a new item that looks like the popular ones
scores like them, a new user who looks like some group gets that group's taste. This is
the "features predict the embedding" form of feature-based MF (as in LightFM, where the
embedding is the sum of feature embeddings), learned here as a post-hoc regression on the
current factors instead of through the SGD, so the per-sample kernel stays the same.

The map is a pure function of the state (features, counts, factors), recomputed when the
state changed since the last fit, so it needs no place in checkpoints: only the feature
vectors do (arrays).

Example:
    >>> import numpy as np
    >>> table = FeatureTable(dim=1, reg=1e-6)
    >>> table.grow(3)
    >>> table.set(np.array([0, 1, 2]), np.array([[1.0], [2.0], [3.0]]))
    >>> factors = np.array([[2.0], [4.0], [0.0]])  # id 2 has no history
    >>> W = table.fit(np.array([5, 5, 0]), factors, np.zeros(3), key=1)
    >>> np.round(table.predict(np.array([2]), W)[0], 3).tolist()
    [[6.0]]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError

__all__ = ["FeatureTable"]


class FeatureTable:
    """Feature vectors per id and the ridge map from them to ``[factors | bias]``.

    Args:
        dim: features per key.
        reg: ridge penalty of the map.
        min_count: interactions a key needs to be a training row of the map.
    """

    def __init__(self, dim: int, reg: float = 1.0, min_count: int = 3) -> None:
        self.dim, self.reg, self.min_count = dim, reg, min_count
        self.X = np.zeros((0, dim))
        self.has = np.zeros(0, bool)
        self._key: Any = None
        self._W: Array | None = None

    def grow(self, capacity: int) -> None:
        """Make room for ids below ``capacity``."""
        if capacity > len(self.has):
            new = capacity - len(self.has)
            self.X = np.vstack([self.X, np.zeros((new, self.dim))])
            self.has = np.r_[self.has, np.zeros(new, bool)]

    def set(self, ids: Array, features: Array, where: str = "features") -> None:
        """Set the feature vectors of ``ids`` (rows of ``features``; the last row wins).

        Raises:
            ConfigError: if ``features`` is not ``(len(ids), dim)`` finite numbers.
        """
        x = np.asarray(features, dtype=np.float64)
        if x.ndim == 1 and self.dim == 1:
            x = x[:, None]
        if x.shape != (len(ids), self.dim):
            msg = f"{where} must be {len(ids)} rows of {self.dim} numbers, got shape {x.shape}"
            raise ConfigError(msg)
        if not np.isfinite(x).all():
            row = int(np.argmin(np.isfinite(x).all(axis=1)))
            msg = f"{where} must be finite numbers; row {row} is not"
            raise ConfigError(msg)
        self.X[ids] = x
        self.has[ids] = True
        self._key = None

    def clear(self, ids: Array) -> None:
        """Forget the features of ``ids`` (evicted keys)."""
        self.X[ids] = 0.0
        self.has[ids] = False
        self._key = None

    def fit(self, counts: Array, factors: Array, bias: Array, key: Any) -> Array:
        """The ``(dim + 1, f + 1)`` map, refitted unless ``key`` (the state's version) is the same.

        Zero (every prediction zero) until some key has features and ``min_count``
        interactions.
        """
        if self._W is not None and key == self._key:
            return self._W
        n = min(len(self.has), len(counts))
        rows = np.flatnonzero(self.has[:n] & (counts[:n] >= self.min_count))
        f = factors.shape[1]
        W = np.zeros((self.dim + 1, f + 1))
        if len(rows):
            x = np.c_[self.X[rows], np.ones(len(rows))]
            t = np.c_[factors[rows], bias[rows]]
            gram = x.T @ x
            gram[np.arange(self.dim), np.arange(self.dim)] += self.reg
            gram[self.dim, self.dim] += 1e-9  # the intercept: unpenalized, kept solvable
            W = np.linalg.solve(gram, x.T @ t)
        self._W, self._key = W, key
        return W

    def predict(self, ids: Array, W: Array) -> tuple[Array, Array]:
        """Factors ``(len(ids), f)`` and biases predicted from the stored features of ``ids``."""
        return self.predict_from(self.X[ids], W)

    @staticmethod
    def predict_from(x: Array, W: Array) -> tuple[Array, Array]:
        """Factors and biases predicted from feature rows ``x``."""
        out = x @ W[:-1] + W[-1]
        return out[:, :-1], out[:, -1]

    def snapshot(self, capacity: int) -> dict[str, Any]:
        """Feature vectors and flags of the first ``capacity`` ids (arrays)."""
        return {"X": self.X[:capacity].copy(), "has": self.has[:capacity].astype(np.int8)}

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`."""
        self.X = np.asarray(snap["X"], np.float64).reshape(-1, self.dim).copy()
        self.has = np.asarray(snap["has"]).astype(bool)
        self._key, self._W = None, None
