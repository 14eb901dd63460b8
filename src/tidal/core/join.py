"""Keyed interval join of two event-time streams (Flink's interval join, in columns).

A left row ``a`` and a right row ``b`` with equal keys make a pair when::

    a.time + lower <= b.time <= a.time + upper

Timeline, ``between=("-1s", "2s")``, one key, watermark ``bounded("0s")`` on each side
(times in seconds)::

    left    a1@10                    a2@15
    right          b1@9    b2@12.5          b3@16   b4@8
    a1's band     [9 ......... 12]
    a2's band                        [14 ......... 17]
    pairs         (a1,b1)                   (a2,b3)        b2 is in no band: no pair
    late                                                   b4: 8 < 16, its arrival wm
    evicted       a1 once wm > 12 (a.time + upper); b1 once wm > 10 (b.time - lower)

Rules, all judged per record so that the result does not depend on batching:

* **Late rows.** A row with ``time < wm`` (the watermark in force when it arrived,
  ``Batch.wm``) is late: it goes to the ``late`` output with a ``side`` column
  (``"left"``/``"right"``), is counted as ``late``, and joins nothing.
* **Each pair once.** A batch is joined against the *other* side's buffer, then added to
  its own buffer; the later-arriving row of a pair finds the earlier one.
* **Buffers.** Each side keeps the rows that may still join, as sorted numpy columns
  (key id, time, arrival). The operator's watermark evicts a left row once
  ``wm > a.time + upper`` and a right row once ``wm > b.time - lower``; any row that could
  still have matched it would be late, so eviction never changes the result.
* **Output.** Left columns, then right columns (a right column whose name is taken gets
  ``suffix``; the right key column is dropped when both keys have the same name). Event
  time is ``max(a.time, b.time)``; the watermark, ingest time and source position are those
  of the later-arriving row, the one whose arrival made the pair.

Example:
    >>> import numpy as np
    >>> op = IntervalJoin("j", "user", "user", -1_000, 2_000)
    >>> clicks = Batch({"user": ["u"], "page": ["home"]}, time=[10_000], wm=[0])
    >>> buys = Batch({"user": ["u", "u"], "item": ["x", "y"]}, time=[9_000, 13_000], wm=[0, 0])
    >>> op.process(clicks, 0)
    []
    >>> [(port, b.to_records()) for port, b in op.process(buys, 1)]
    [(0, [{'user': 'u', 'page': 'home', 'item': 'x'}])]
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.core.duration import Duration, to_millis
from tidal.core.keys import KeyIndex
from tidal.core.operator import Emit, Operator
from tidal.core.state import restore_column, snapshot_column
from tidal.core.watermark import MIN_TIME
from tidal.errors import ConfigError, PipelineError, StateError

_I64 = np.int64
_SIDES = ("left", "right")


def signed_millis(value: Duration) -> int:
    """Parse a duration that may be negative (``"-5s"``, ``-timedelta(seconds=5)``) to ms.

    Interval bounds are offsets, not lengths, so a leading ``-`` (or ``+``) is allowed.

    Raises:
        ConfigError: if the rest is not a duration.

    Example:
        >>> signed_millis("-5s"), signed_millis("+250ms"), signed_millis(timedelta(seconds=-2))
        (-5000, 250, -2000)
    """
    if isinstance(value, timedelta) and value < timedelta(0):
        return -to_millis(-value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            return -to_millis(text[1:])
        if text.startswith("+"):
            return to_millis(text[1:])
    return to_millis(value)


def segment_search(values: Array, lo: Array, hi: Array, targets: Array, *, right: bool) -> Array:
    """Per row ``i``, ``np.searchsorted`` of ``targets[i]`` in ``values[lo[i]:hi[i]]``.

    ``values`` must be sorted within every ``[lo, hi)`` range. A vectorized bisection:
    one numpy pass per halving of the longest range. Returns absolute indices.

    Example:
        >>> v = np.array([1, 5, 9, 2, 2, 7])      # two sorted runs: [0, 3) and [3, 6)
        >>> segment_search(v, np.array([0, 3]), np.array([3, 6]), np.array([5, 2]),
        ...                right=True).tolist()
        [2, 5]
    """
    lo = np.array(lo, dtype=_I64)
    hi = np.array(hi, dtype=_I64)
    active = np.flatnonzero(lo < hi)
    while len(active):
        mid = (lo[active] + hi[active]) // 2
        v = values[mid]
        t = targets[active]
        go_right = v <= t if right else v < t
        lo[active[go_right]] = mid[go_right] + 1
        hi[active[~go_right]] = mid[~go_right]
        active = active[lo[active] < hi[active]]
    return lo


class _Buffer:
    """One side's rows that may still join, sorted by (key id, time, arrival)."""

    def __init__(self) -> None:
        self.kid = np.empty(0, dtype=_I64)
        self.time = np.empty(0, dtype=_I64)
        self.cols: dict[str, Array] | None = None  # None until the side's first row

    def __len__(self) -> int:
        return len(self.kid)

    def ranges(self, kid: Array, lo_t: Array, hi_t: Array) -> tuple[Array, Array]:
        """Per probe row, the buffer rows ``[start, stop)`` with its key and a time in range."""
        k_lo = np.searchsorted(self.kid, kid, side="left")
        k_hi = np.searchsorted(self.kid, kid, side="right")
        start = segment_search(self.time, k_lo, k_hi, lo_t, right=False)
        stop = segment_search(self.time, start, k_hi, hi_t, right=True)
        return start, np.maximum(start, stop)

    def insert(self, kid: Array, time: Array, cols: Mapping[str, Array]) -> None:
        """Add rows, keeping the order (rows of equal key and time stay in arrival order)."""
        order = np.lexsort((time, kid))
        kid, time = kid[order], time[order]
        k_lo = np.searchsorted(self.kid, kid, side="left")
        k_hi = np.searchsorted(self.kid, kid, side="right")
        pos = segment_search(self.time, k_lo, k_hi, time, right=True)
        n_old, n_new = len(self.kid), len(kid)
        dest = pos + np.arange(n_new, dtype=_I64)
        perm = np.empty(n_old + n_new, dtype=_I64)
        is_new = np.zeros(n_old + n_new, dtype=bool)
        is_new[dest] = True
        perm[dest] = np.arange(n_old, n_old + n_new, dtype=_I64)
        perm[~is_new] = np.arange(n_old, dtype=_I64)
        self.kid = np.concatenate((self.kid, kid))[perm]
        self.time = np.concatenate((self.time, time))[perm]
        if self.cols is None:
            self.cols = {c: v[order] for c, v in cols.items()}
        else:
            self.cols = {c: _cat(v, cols[c][order])[perm] for c, v in self.cols.items()}

    def evict(self, keep: Array) -> Array:
        """Drop the rows where ``keep`` is false; return their key ids."""
        if keep.all():
            return np.empty(0, dtype=_I64)
        gone = self.kid[~keep]
        self.kid, self.time = self.kid[keep], self.time[keep]
        if self.cols is not None:
            self.cols = {c: v[keep] for c, v in self.cols.items()}
        return gone

    def holds(self, kid: Array) -> Array:
        """Whether each key id still has a row here."""
        i = np.searchsorted(self.kid, kid)
        found = np.zeros(len(kid), dtype=bool)
        ok = i < len(self.kid)
        found[ok] = self.kid[i[ok]] == kid[ok]
        return found

    def snapshot(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "time": self.time,
            "names": None if self.cols is None else list(self.cols),
            "cols": [] if self.cols is None else [snapshot_column(v) for v in self.cols.values()],
        }

    def restore(self, snap: Mapping[str, Any]) -> None:
        self.kid = np.asarray(snap["kid"], dtype=_I64).copy()
        self.time = np.asarray(snap["time"], dtype=_I64).copy()
        names = snap["names"]
        if names is None:
            self.cols = None
            return
        self.cols = {str(n): restore_column(c) for n, c in zip(names, snap["cols"], strict=True)}
        if any(len(v) != len(self.kid) for v in self.cols.values()):
            msg = "interval join snapshot is inconsistent: buffer columns differ in length"
            raise StateError(msg)


class IntervalJoin(Operator):
    """Join rows of two keyed streams whose times lie within an interval of each other.

    Port 0 is the left stream, port 1 the right one. Outputs: ``main`` (the pairs) and
    ``late`` (rows of either side that arrived behind the watermark, with a ``side``
    column; each side's late rows keep that side's columns).

    Args:
        name: the step's name.
        left_key: key column of the left stream.
        right_key: key column of the right stream.
        lower_ms: lower bound of ``b.time - a.time`` (may be negative), inclusive.
        upper_ms: upper bound of ``b.time - a.time``, inclusive.
        suffix: appended to a right column whose name a left column already has.

    Raises:
        ConfigError: if ``lower_ms > upper_ms``.

    Example:
        >>> op = IntervalJoin("j", "k", "k", 0, 1_000)
        >>> op.process(Batch({"k": [1], "x": [1.0]}, time=[500], wm=[0]), 0)
        []
        >>> _, pairs = op.process(Batch({"k": [1, 1], "x": [2.0, 3.0]},
        ...                             time=[900, 1600], wm=[0, 0]), 1)[0]
        >>> pairs.to_records(), pairs.time.tolist()
        ([{'k': 1, 'x': 1.0, 'x_right': 2.0}], [900])
    """

    inputs = 2
    outputs = ("main", "late")

    def __init__(
        self,
        name: str,
        left_key: str,
        right_key: str,
        lower_ms: int,
        upper_ms: int,
        *,
        suffix: str = "_right",
    ) -> None:
        super().__init__(name)
        if lower_ms > upper_ms:
            msg = (
                f"step {name!r}: an interval join needs lower <= upper, got lower={lower_ms}ms "
                f"and upper={upper_ms}ms; e.g. between=('-5s', '5s')"
            )
            raise ConfigError(msg)
        if not suffix:
            msg = f"step {name!r}: the suffix for clashing right columns must not be empty"
            raise ConfigError(msg)
        self.left_key = left_key
        self.right_key = right_key
        self.lower = int(lower_ms)
        self.upper = int(upper_ms)
        self.suffix = suffix
        self.keys = KeyIndex()
        self.buffers = (_Buffer(), _Buffer())
        self.wm = MIN_TIME
        self._names: dict[tuple[tuple[str, ...], tuple[str, ...]], list[tuple[str, str]]] = {}

    # -- data ---------------------------------------------------------------------------
    def process(self, batch: Batch, port: int) -> Emit:
        """Join the batch against the other side's buffer, then buffer it."""
        if len(batch) == 0:
            return []
        key = self.left_key if port == 0 else self.right_key
        self._check(batch, key, port)
        assert batch.time is not None and batch.wm is not None
        out: Emit = []
        late = batch.time < batch.wm
        on_time = batch
        if late.any():
            n_late = int(late.sum())
            self.ctx.count("late", n_late)
            side = np.full(n_late, _SIDES[port], dtype=object)
            out.append((1, batch.filter(late).with_columns(side=side)))
            on_time = batch.filter(~late)
            if len(on_time) == 0:
                return out
        assert on_time.time is not None
        kid = self.keys.ids(on_time[key])
        pairs = self._probe(on_time, kid, port)
        if pairs is not None:
            out.insert(0, (0, pairs))
        buf = self.buffers[port]
        if buf.cols is not None and list(buf.cols) != on_time.names:
            msg = (
                f"step {self.name!r}: the {_SIDES[port]} input's columns changed from "
                f"{list(buf.cols)} to {on_time.names}; a joined stream needs stable columns"
            )
            raise PipelineError(msg)
        buf.insert(kid, on_time.time, on_time.columns)
        return out

    def _check(self, batch: Batch, key: str, port: int) -> None:
        if batch.time is None or batch.wm is None:
            msg = (
                f"step {self.name!r}: an interval join needs event time on both inputs; "
                "give the sources time=..."
            )
            raise PipelineError(msg)
        if key not in batch:
            msg = (
                f"step {self.name!r}: the {_SIDES[port]} input has no key column {key!r}; "
                f"its columns are {batch.names}"
            )
            raise PipelineError(msg)

    def _probe(self, new: Batch, kid: Array, port: int) -> Batch | None:
        """Pairs of the new rows with the other side's buffered rows."""
        other = self.buffers[1 - port]
        if other.cols is None or len(other) == 0:
            return None
        assert new.time is not None
        t = new.time
        if port == 0:  # new left rows a: b.time in [a.time + lower, a.time + upper]
            lo_t, hi_t = t + self.lower, t + self.upper
        else:  # new right rows b: a.time in [b.time - upper, b.time - lower]
            lo_t, hi_t = t - self.upper, t - self.lower
        start, stop = other.ranges(kid, lo_t, hi_t)
        counts = stop - start
        total = int(counts.sum())
        if total == 0:
            return None
        new_idx = np.repeat(np.arange(len(new), dtype=_I64), counts)
        first = np.cumsum(counts) - counts
        other_idx = np.repeat(start - first, counts) + np.arange(total, dtype=_I64)
        taken = new.take(new_idx)
        other_cols = {c: v[other_idx] for c, v in other.cols.items()}
        if port == 0:
            cols = self._combine(taken.columns, other_cols)
        else:
            cols = self._combine(other_cols, taken.columns)
        assert taken.time is not None
        return Batch(
            cols,
            time=np.maximum(taken.time, other.time[other_idx]),
            wm=taken.wm,
            ingest=taken.ingest,
            partition=taken.partition,
            offset=taken.offset,
            length=total,
        )

    def _combine(self, left: Mapping[str, Array], right: Mapping[str, Array]) -> dict[str, Array]:
        sig = (tuple(left), tuple(right))
        names = self._names.get(sig)
        if names is None:
            names = self._right_names(*sig)
            self._names[sig] = names
        cols = dict(left)
        for src, dst in names:
            cols[dst] = right[src]
        return cols

    def _right_names(self, left: tuple[str, ...], right: tuple[str, ...]) -> list[tuple[str, str]]:
        taken = set(left)
        out: list[tuple[str, str]] = []
        for c in right:
            if c == self.right_key and self.right_key == self.left_key:
                continue
            name = c + self.suffix if c in left else c
            if name in taken:
                msg = (
                    f"step {self.name!r}: the right column {c!r} would be named {name!r}, which "
                    f"is taken (left columns {list(left)}, right {list(right)}); rename a "
                    "column before the join or pass another suffix"
                )
                raise PipelineError(msg)
            taken.add(name)
            out.append((c, name))
        return out

    # -- time ---------------------------------------------------------------------------
    def on_watermark(self, wm: int) -> Emit:
        """Evict rows no on-time row can match any more; release their keys."""
        left, right = self.buffers
        gone = np.concatenate(
            (left.evict(left.time + self.upper >= wm), right.evict(right.time - self.lower >= wm))
        )
        if len(gone):
            cand = np.unique(gone)
            dead = cand[~(left.holds(cand) | right.holds(cand))]
            self.keys.release(dead)
        self.wm = wm
        return []

    def buffered(self) -> tuple[int, int]:
        """Rows held in the left and right buffers (state size)."""
        return len(self.buffers[0]), len(self.buffers[1])

    # -- snapshots ----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Keys and both buffers (numeric columns as arrays, others as JSON lists)."""
        return {
            "keys": self.keys.snapshot(),
            "wm": self.wm,
            "left": self.buffers[0].snapshot(),
            "right": self.buffers[1].snapshot(),
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`."""
        self.keys.restore(snap["keys"])
        self.wm = int(snap["wm"])
        self.buffers[0].restore(snap["left"])
        self.buffers[1].restore(snap["right"])


def _cat(old: Array, new: Array) -> Array:
    if (old.dtype.kind == "O") != (new.dtype.kind == "O"):
        return np.concatenate((old.astype(object), new.astype(object)))
    return np.concatenate((old, new))
