"""From batch columns to a feature matrix: numeric columns, one-hot and hashed categoricals.

A :class:`Features` spec names the columns a learner sees and how each becomes numbers:

``numeric``
    taken as they are, optionally standardized online (running mean and variance, updated
    from each batch before it is transformed: Chan's parallel update, so the statistics are
    those of all the rows seen, whatever the batch sizes);
``categorical``
    one-hot, one slot per value in order of first appearance, up to ``max_categories``
    slots per column; later new values share the column's last slot ("other");
``hashed``
    the hashing trick: ``crc32("column=value") % buckets`` into one shared block of
    ``buckets`` slots (no vocabulary to keep; collisions possible).

The matrix is ``len(numeric) + max_categories * len(categorical) + (buckets if hashed)``
wide, fixed from the start, so a learner's weights never change shape. The state (running
moments, vocabularies) is arrays and JSON lists.

Example:
    >>> spec = Features(numeric=["x"], categorical=["colour"], max_categories=3)
    >>> X = spec.transform({"x": np.array([1.0, 3.0]), "colour": np.array(["red", "blue"], object)})
    >>> X.tolist()
    [[-1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]]
    >>> spec.names
    ['x', 'colour=red', 'colour=blue', 'colour=<other>']
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.errors import ModelError, StateError
from tidal.ml.learn import kernels

__all__ = ["Features"]


class Features:
    """Which columns become the feature matrix, and how (see the module doc).

    Args:
        numeric: numeric columns, in order.
        categorical: columns to one-hot encode.
        hashed: columns to hash into ``buckets`` shared slots.
        standardize: standardize the numeric columns online.
        max_categories: one-hot slots per categorical column (the last one is "other").
        buckets: slots for the hashed columns.

    Raises:
        ModelError: if no column is named, or a column is named twice.
    """

    def __init__(  # noqa: PLR0913 - keyword settings
        self,
        numeric: Sequence[str] = (),
        categorical: Sequence[str] = (),
        hashed: Sequence[str] = (),
        *,
        standardize: bool = True,
        max_categories: int = 32,
        buckets: int = 1024,
    ) -> None:
        self.numeric, self.categorical, self.hashed = list(numeric), list(categorical), list(hashed)
        columns = self.columns
        if not columns:
            msg = "Features: name at least one numeric, categorical or hashed column"
            raise ModelError(msg)
        if len(set(columns)) != len(columns):
            msg = f"Features: a column is named twice in {columns}"
            raise ModelError(msg)
        if max_categories < 2 or buckets < 1:
            msg = "Features: max_categories must be >= 2 and buckets >= 1"
            raise ModelError(msg)
        self.standardize, self.max_categories, self.buckets = standardize, max_categories, buckets
        k = len(self.numeric)
        self.count = 0
        self.mean, self.m2 = np.zeros(k), np.zeros(k)
        self.vocab: dict[str, dict[str, int]] = {c: {} for c in self.categorical}

    @property
    def columns(self) -> list[str]:
        """Every input column."""
        return [*self.numeric, *self.categorical, *self.hashed]

    @property
    def dim(self) -> int:
        """The width of the feature matrix."""
        width = len(self.numeric) + self.max_categories * len(self.categorical)
        return width + (self.buckets if self.hashed else 0)

    @property
    def names(self) -> list[str]:
        """A name per feature-matrix column (one-hot slots not yet taken: ``column=?k``)."""
        names = list(self.numeric)
        for c in self.categorical:
            by_slot = {v: k for k, v in self.vocab[c].items()}
            names += [f"{c}={by_slot.get(i, f'?{i}')}" for i in range(self.max_categories - 1)]
            names.append(f"{c}=<other>")
        return names + [f"hash[{i}]" for i in range(self.buckets if self.hashed else 0)]

    def params(self) -> dict[str, Any]:
        """The settings, as JSON."""
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "hashed": self.hashed,
            "standardize": self.standardize,
            "max_categories": self.max_categories,
            "buckets": self.buckets,
        }

    def transform(self, batch: Mapping[str, Any] | Batch, *, update: bool = True) -> Array:
        """The ``(n, dim)`` feature matrix of ``batch``; ``update`` first learns its statistics.

        Raises:
            ModelError: if a column is missing or a numeric column is not numeric.
        """
        return self.transform_rows(batch, update=update)[0]

    def transform_rows(
        self, batch: Mapping[str, Any] | Batch, *, update: bool = True
    ) -> tuple[Array, Array]:
        """:meth:`transform`, and which rows of the matrix are all finite (no NaN or inf).

        The standardization and the finite check are one pass over the matrix (with numba).

        Raises:
            ModelError: if a column is missing or a numeric column is not numeric.

        Example:
            >>> spec = Features(numeric=["x"], standardize=False)
            >>> spec.transform_rows({"x": np.array([1.0, np.nan])})[1].tolist()
            [True, False]
        """
        missing = [c for c in self.columns if c not in batch]
        if missing:
            have = list(batch.keys()) if hasattr(batch, "keys") else []
            msg = f"Features: columns {missing} are missing; the batch has {have}"
            raise ModelError(msg)
        num = self._numeric(batch)
        n = len(num)
        if update and self.standardize and n:
            self._update(num)
        if self.standardize and self.numeric:
            var = self.m2 / max(self.count, 1)
            # in place (``num`` is a fresh matrix), with the finite check in the same pass
            ok = kernels.standardize(num, self.mean, np.where(var > 0, np.sqrt(var), 1.0))
        else:
            ok = np.asarray(np.isfinite(num).all(axis=1), dtype=bool)
        if not self.categorical and not self.hashed:
            return num, ok  # one-hot and hashed slots are always finite
        parts = [num]
        for c in self.categorical:
            parts.append(self._one_hot(c, np.asarray(batch[c]), update=update))
        if self.hashed:
            parts.append(self._hash(batch, n))
        return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float64), ok

    def _numeric(self, batch: Mapping[str, Any] | Batch) -> Array:
        """A fresh C-contiguous float64 matrix of the numeric columns (one copy each)."""
        n = len(np.asarray(batch[self.columns[0]]))
        out = np.empty((n, len(self.numeric)), dtype=np.float64)
        for j, c in enumerate(self.numeric):
            col = np.asarray(batch[c])
            if col.dtype.kind not in "iufb":
                msg = (
                    f"Features: column {c!r} must be numeric, got {col.dtype} (e.g. "
                    f"{col[:1].tolist()}); list it as categorical, or cast it first"
                )
                raise ModelError(msg)
            out[:, j] = col
        return out

    def _update(self, x: Array) -> None:
        n = len(x)
        mean, m2 = kernels.moments(x)  # x.mean(axis=0), ((x - mean) ** 2).sum(axis=0)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def _one_hot(self, column: str, values: Array, *, update: bool) -> Array:
        vocab = self.vocab[column]
        uniq, first, inverse = np.unique(values.astype(str), return_index=True, return_inverse=True)
        other = self.max_categories - 1
        slots = np.empty(len(uniq), dtype=np.int64)
        for i in np.argsort(first, kind="stable").tolist():  # per distinct value, in row order
            v = str(uniq[i])
            if v not in vocab and update and len(vocab) < other:
                vocab[v] = len(vocab)
            slots[i] = vocab.get(v, other)
        out = np.zeros((len(values), self.max_categories))
        out[np.arange(len(values)), slots[inverse.reshape(-1)]] = 1.0
        return out

    def _hash(self, batch: Mapping[str, Any] | Batch, n: int) -> Array:
        out = np.zeros((n, self.buckets))
        for c in self.hashed:
            uniq, inverse = np.unique(np.asarray(batch[c]).astype(str), return_inverse=True)
            slots = np.array(
                [zlib.crc32(f"{c}={v}".encode()) % self.buckets for v in uniq.tolist()],
                dtype=np.int64,
            )
            np.add.at(out, (np.arange(n), slots[inverse.reshape(-1)]), 1.0)
        return out

    def snapshot(self) -> dict[str, Any]:
        """Running moments and vocabularies."""
        return {
            "params": self.params(),
            "count": self.count,
            "mean": self.mean.copy(),
            "m2": self.m2.copy(),
            "vocab": {c: sorted(v, key=v.__getitem__) for c, v in self.vocab.items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`snapshot` wrote.

        Raises:
            StateError: if the snapshot is of another spec.
        """
        if state.get("params") != self.params():
            msg = f"Features: the snapshot is of {state.get('params')}, this is {self.params()}"
            raise StateError(msg)
        self.count = int(state["count"])
        self.mean = np.array(state["mean"], dtype=np.float64)
        self.m2 = np.array(state["m2"], dtype=np.float64)
        self.vocab = {c: {v: i for i, v in enumerate(vs)} for c, vs in state["vocab"].items()}
