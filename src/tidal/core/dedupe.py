"""Keyed de-duplication in event time: drop a key's repeats while its state is alive.

A record ``r`` is a duplicate, and is dropped, when an earlier-arriving record with the same
key has a time ``t'`` with ``t' + within > wm_r``, where ``wm_r`` is the watermark in force
when ``r`` arrived (``Batch.wm``). Per key the operator keeps only the highest time seen
(dropped records count too); once the watermark reaches ``max_t + within`` the key's state
expires and its id is released, so state grows with live keys, not with events.

Timeline, ``within="5s"``, watermark ``bounded("0s")`` (times in seconds)::

    arrivals       k@10   k@12   x@40   k@41   k@43
    wm before       -inf   10     12     40     41
    k's max seen    -      10     12     12     41
    dropped?        no     yes    no     no     yes
                           10+5 > 10     12+5 <= 40: k's state had expired
    k's state       alive while wm < 12+5 = 17; released at wm 17; k@41 starts it anew

Because expiry happens only when ``max_t + within <= wm`` and every later record arrives
with a watermark at least that high, expiring state never changes which records are dropped:
the result is the same however the input was batched.

Example:
    >>> op = Dedupe("once", "id", within_ms=5_000)
    >>> b = Batch({"id": ["a", "b", "a"]}, time=[10_000, 10_500, 11_000], wm=[0, 0, 0])
    >>> [r["id"] for _, out in op.process(b, 0) for r in out.to_records()]
    ['a', 'b']
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.core.keys import KeyIndex
from tidal.core.operator import Emit, Operator
from tidal.core.watermark import MIN_TIME
from tidal.errors import ConfigError, PipelineError

_I64 = np.int64
_NONE = int(np.iinfo(np.int64).min)
"""Max time of an id with no key (below any ``wm - within``, so never a duplicate)."""


def segment_running_max(values: Array, segment: Array) -> Array:
    """Inclusive running maximum of int64 ``values`` restarting at every new ``segment``.

    ``segment`` is non-decreasing (0, 0, 1, 1, 1, 2, ...). Each segment is lifted above
    all earlier ones by an offset, so one ``np.maximum.accumulate`` does every segment.

    Example:
        >>> segment_running_max(np.array([3, 1, 5, 2, 9, 4]), np.array([0, 0, 0, 1, 1, 1]))
        array([3, 3, 5, 2, 9, 9])
    """
    n = len(values)
    if n == 0:
        return values.astype(_I64)
    seg = segment.astype(_I64)
    base = int(values.min())
    span = int(values.max()) - base + 1
    if span * (int(seg[-1]) + 1) < 2**62:
        lift = seg * span
        return np.maximum.accumulate((values - base) + lift) - lift + base
    # times too far apart to lift without overflow: work on their ranks instead
    uniq, rank = np.unique(values, return_inverse=True)
    lift = seg * n
    out: Array = uniq[np.maximum.accumulate(rank.reshape(-1) + lift) - lift]
    return out


class Dedupe(Operator):
    """Drop records whose key was seen within ``within_ms`` of the watermark.

    Args:
        name: the step's name.
        key: the key column.
        within_ms: how long (event time, ms) a key's highest time keeps its repeats out.

    Raises:
        ConfigError: if ``within_ms`` is negative.

    Example:
        >>> op = Dedupe("d", "k", within_ms=1_000)
        >>> _ = op.process(Batch({"k": [1]}, time=[0], wm=[0]), 0)
        >>> op.on_watermark(1_000)
        []
        >>> len(op.keys)
        0
    """

    def __init__(self, name: str, key: str, within_ms: int) -> None:
        super().__init__(name)
        if within_ms < 0:
            msg = f"step {name!r}: dedupe's within must be >= 0, got {within_ms}ms"
            raise ConfigError(msg)
        self.key = key
        self.within = int(within_ms)
        self.keys = KeyIndex()
        self.max_t = np.empty(0, dtype=_I64)  # highest time seen per key id (_NONE: free id)
        self.wm = MIN_TIME

    def process(self, batch: Batch, port: int) -> Emit:
        """Drop the batch's duplicates (against state and earlier rows of the batch)."""
        n = len(batch)
        if n == 0:
            return []
        if batch.time is None or batch.wm is None:
            msg = f"step {self.name!r}: dedupe needs event time; give the source time=..."
            raise PipelineError(msg)
        if self.key not in batch:
            msg = f"step {self.name!r}: no key column {self.key!r}; columns are {batch.names}"
            raise PipelineError(msg)
        kid = self.keys.ids(batch[self.key])
        cap = self.keys.capacity
        if len(self.max_t) < cap:
            grow = np.full(max(cap, 2 * len(self.max_t)) - len(self.max_t), _NONE, dtype=_I64)
            self.max_t = np.concatenate((self.max_t, grow))
        order = np.argsort(kid, kind="stable")  # by (key, arrival)
        ks, ts = kid[order], batch.time[order]
        first = np.ones(n, dtype=bool)
        first[1:] = ks[1:] != ks[:-1]
        running = segment_running_max(ts, np.cumsum(first) - 1)
        earlier = np.empty(n, dtype=_I64)
        earlier[0] = _NONE
        earlier[1:] = running[:-1]
        earlier[first] = _NONE
        prior = np.maximum(earlier, self.max_t[ks])
        dup_sorted = prior > batch.wm[order] - self.within
        heads = np.flatnonzero(first)
        seg_keys = ks[heads]
        self.max_t[seg_keys] = np.maximum(self.max_t[seg_keys], np.maximum.reduceat(ts, heads))
        dup = np.empty(n, dtype=bool)
        dup[order] = dup_sorted
        n_dup = int(dup.sum())
        if n_dup == 0:
            return [(0, batch)]
        self.ctx.count("duplicates", n_dup)
        return [(0, batch.filter(~dup))]

    def on_watermark(self, wm: int) -> Emit:
        """Release keys whose ``max_t + within <= wm``."""
        expired = np.flatnonzero((self.max_t != _NONE) & (self.max_t <= wm - self.within))
        if len(expired):
            self.keys.release(expired)
            self.max_t[expired] = _NONE
        self.wm = wm
        return []

    def snapshot(self) -> dict[str, Any]:
        """Keys and their highest times."""
        return {
            "keys": self.keys.snapshot(),
            "max_t": self.max_t[: self.keys.capacity].copy(),
            "wm": self.wm,
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`."""
        self.keys.restore(snap["keys"])
        self.max_t = np.asarray(snap["max_t"], dtype=_I64).copy()
        self.wm = int(snap["wm"])
