"""Per-class resampling and weights: thin out a frequent class, weight a rare one.

A stream for training is often imbalanced (one fraud in a thousand payments). A
:class:`Resample` step keeps each row of class ``c`` with probability ``rates[c]`` (1 for a
class not named) and adds a ``weight`` column: ``weights[c]`` (1 if not named), divided by
the keep rate when ``reweight`` is on, so that weighted sums over the kept rows estimate
the sums over all rows (inverse-probability weighting).

The keep decision of the ``i``-th row the step has seen is ``u_i < rate``, where ``u_i`` is
a hash of ``(seed, i)`` (SplitMix64) mapped to ``[0, 1)``: seeded, independent of where
batches are cut, and the same after a restart (the count ``i`` is the step's state).

Example:
    >>> op = Resample("balance", by="label", rates={0: 0.25}, weights={1: 2.0}, seed=1)
    >>> b = Batch({"label": [0] * 8 + [1, 1]})
    >>> [(port, out["label"].tolist(), out["weight"].tolist()) for port, out in op.process(b, 0)]
    [(0, [0, 0, 0, 1, 1], [4.0, 4.0, 4.0, 2.0, 2.0])]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.core.operator import Emit, Operator
from tidal.errors import ConfigError, PipelineError, StateError

__all__ = ["Resample", "uniform_hash"]

_M = np.uint64(0xFFFFFFFFFFFFFFFF)


def uniform_hash(seed: int, index: Array) -> Array:
    """SplitMix64 of ``seed + index`` as floats in ``[0, 1)``: a counter-based generator.

    Example:
        >>> u = uniform_hash(0, np.arange(100_000))
        >>> bool(0.49 < u.mean() < 0.51), bool((u >= 0).all() and (u < 1).all())
        (True, True)
    """
    with np.errstate(over="ignore"):
        z = (np.asarray(index, dtype=np.uint64) + np.uint64(seed & 0xFFFFFFFF)) * np.uint64(
            0x9E3779B97F4A7C15
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    out: Array = (z >> np.uint64(11)).astype(np.float64) / float(2**53)
    return out


class Resample(Operator):
    """Keep rows of each class at a rate, and add a per-class ``weight`` column.

    Args:
        name: the step's name.
        by: the class column (e.g. the label).
        rates: keep probability per class value, in ``(0, 1]``; other classes are kept.
        weights: weight per class value (default 1).
        reweight: divide the weight by the class's keep rate.
        weight_column: name of the weight column.
        seed: seeds the keep decisions.

    Raises:
        ConfigError: for a rate outside ``(0, 1]`` or a weight that is not positive.
    """

    def __init__(
        self,
        name: str,
        *,
        by: str,
        rates: Mapping[Any, float] | None = None,
        weights: Mapping[Any, float] | None = None,
        reweight: bool = True,
        weight_column: str = "weight",
        seed: int = 0,
    ) -> None:
        super().__init__(name)
        self.rates = dict(rates or {})
        self.weights = dict(weights or {})
        for c, r in self.rates.items():
            if not 0 < r <= 1:
                msg = f"step {name!r}: the keep rate of class {c!r} must be in (0, 1], got {r}"
                raise ConfigError(msg)
        for c, w in self.weights.items():
            if not w > 0:
                msg = f"step {name!r}: the weight of class {c!r} must be > 0, got {w}"
                raise ConfigError(msg)
        self.by = by
        self.reweight = reweight
        self.weight_column = weight_column
        self.seed = int(seed)
        self.seen = 0

    def _per_row(self, cls: Array, table: Mapping[Any, float]) -> Array:
        out = np.ones(len(cls))
        for c, v in table.items():
            out[cls == c] = v
        return out

    def process(self, batch: Batch, port: int) -> Emit:
        """Drop rows by their class's rate; add the weights."""
        n = len(batch)
        if n == 0:
            return []
        if self.by not in batch:
            msg = f"step {self.name!r}: no class column {self.by!r}; columns are {batch.names}"
            raise PipelineError(msg)
        cls = batch[self.by]
        rate = self._per_row(cls, self.rates)
        u = uniform_hash(self.seed, np.arange(self.seen, self.seen + n))
        self.seen += n
        keep = u < rate
        weight = self._per_row(cls, self.weights)
        if self.reweight:
            weight = weight / rate
        self.ctx.count(f"{self.name}.dropped", int(n - keep.sum()))
        out = batch.with_columns(**{self.weight_column: weight})
        return [(0, out if keep.all() else out.filter(keep))] if keep.any() else []

    def snapshot(self) -> dict[str, Any]:
        """The number of rows seen (the generator's counter)."""
        return {"seen": self.seen, "seed": self.seed}

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`.

        Raises:
            StateError: for a snapshot taken with another seed.
        """
        if int(snap.get("seed", -1)) != self.seed:
            msg = f"step {self.name!r}: the snapshot was taken with seed {snap.get('seed')}"
            raise StateError(msg)
        self.seen = int(snap["seen"])
