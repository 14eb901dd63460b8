"""Keyed lag: each row gets its key's previous values of some columns (SQL's ``LAG``).

``stream.key_by("sensor").lag("prev", ["value"], periods=[1, 2])`` adds ``value_lag1`` and
``value_lag2``: the value of the same sensor's previous row and the one before it, in the
order rows reach the step (arrival order: within a batch its row order, across batches the
batch order). Without ``key_by`` the whole stream is one key. A key's first rows, which
have no earlier row that far back, get ``fill`` (default: a missing value, NaN or None).

Timeline, ``periods=[1, 2]``, one key, batches split at ``|``::

    arrivals        5     7  |  9     4  |  6
    value_lag1      -     5  |  7     9  |  4        (- = fill)
    value_lag2      -     -  |  5     7  |  9

Vectorized: a batch's rows are sorted by key (stably, so each key keeps its arrival
order), shifted within each key's run of rows, and the first rows of each run are filled
from the state; nothing runs per row in Python. State per key: the last ``max(periods)``
values of every lagged column and how many of them are real, in arrays indexed by the key's
dense id (:class:`~tidal.core.keys.KeyIndex`). Snapshots hold those arrays (text columns as
JSON lists), so a pipeline restored from a checkpoint lags exactly as one that never
stopped. State grows with the number of keys, not with events.

Output types: with ``fill=None``, float columns keep their type (NaN fills), integer and
boolean columns become float64 (NaN fills), other columns (text) become ``object`` (None
fills), like pandas' ``shift``. With a ``fill`` value the type is the one numpy gives the
column's values and the fill together (``fill=0`` keeps an integer column integer).

Order is arrival order, not event time: a row that arrives late is lagged where it arrived.
Sort upstream (a window, or an event-time-ordered source) when event order matters.
See ``docs/decisions/0040-streaming-lag.md``.

Example:
    >>> op = Lag("prev", ["v"], periods=[1, 2], key="k")
    >>> out = op.process(Batch({"k": ["a", "b", "a", "a"], "v": [1, 10, 2, 3]}), 0)[0][1]
    >>> out["v_lag1"].tolist(), out["v_lag2"].tolist()
    ([nan, nan, 1.0, 2.0], [nan, nan, nan, 1.0])
    >>> out = op.process(Batch({"k": ["b", "a"], "v": [11, 4]}), 0)[0][1]
    >>> out["v_lag1"].tolist(), out["v_lag2"].tolist()
    ([10.0, 3.0], [nan, 2.0])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.core.keys import KeyIndex
from tidal.core.operator import Emit, Operator
from tidal.core.operators import key_ids
from tidal.errors import ConfigError, PipelineError, StateError

__all__ = ["Lag", "lag_names"]

_STATE_KIND = "lag/1"


def lag_names(columns: Sequence[str], periods: Sequence[int]) -> list[str]:
    """The columns a lag step adds, in order: ``<column>_lag<period>``.

    Example:
        >>> lag_names(["price", "y"], [1, 2])
        ['price_lag1', 'price_lag2', 'y_lag1', 'y_lag2']
    """
    return [f"{c}_lag{k}" for c in columns for k in periods]


def _out_dtype(col: np.dtype[Any], hist: np.dtype[Any] | None, fill: Any) -> np.dtype[Any]:
    """The dtype of a lag column for a batch column, the state's values and ``fill``."""
    kinds = {col.kind} | ({hist.kind} if hist is not None else set())
    if not kinds <= set("iufb"):
        return np.dtype(object)
    base = col if hist is None else np.result_type(col, hist)
    if fill is None:
        return base if base.kind == "f" else np.dtype(np.float64)
    fill_arr = np.asarray(fill)
    if fill_arr.dtype.kind not in "iufb":
        return np.dtype(object)
    return np.result_type(base, fill_arr)


def _missing(dtype: np.dtype[Any]) -> Any:
    return np.nan if dtype.kind == "f" else None


class Lag(Operator):
    """Add each key's previous values of ``columns`` (see the module doc).

    Args:
        name: the step's name (keys its state).
        columns: the columns to lag.
        periods: how many rows back, one output column per column and period (each >= 1).
        key: the key column (``None``: the whole stream is one key).
        fill: the value of a lag that has no earlier row (default: NaN, or None for text).

    Raises:
        ConfigError: for no columns, a period below 1, or repeated columns or periods.

    Example:
        >>> op = Lag("prev", "y", fill=0)
        >>> op.process(Batch({"y": [1, 0, 1]}), 0)[0][1]["y_lag1"].tolist()
        [0, 1, 0]
    """

    def __init__(
        self,
        name: str,
        columns: str | Sequence[str],
        *,
        periods: int | Sequence[int] = 1,
        key: str | None = None,
        fill: Any = None,
    ) -> None:
        super().__init__(name)
        cols = [columns] if isinstance(columns, str) else list(columns)
        pers = [periods] if isinstance(periods, int | np.integer) else list(periods)
        if not cols or not all(isinstance(c, str) and c for c in cols):
            msg = f"step {name!r}: lag needs column names to lag, e.g. ['price'], got {columns!r}"
            raise ConfigError(msg)
        if not pers or not all(isinstance(k, int | np.integer) and k >= 1 for k in pers):
            msg = f"step {name!r}: lag periods must be whole numbers >= 1, got {periods!r}"
            raise ConfigError(msg)
        if len(set(cols)) != len(cols) or len(set(pers)) != len(pers):
            msg = f"step {name!r}: lag columns and periods must not repeat: {cols}, {pers}"
            raise ConfigError(msg)
        self.columns = cols
        self.periods = [int(k) for k in pers]
        self.depth = max(self.periods)
        self.key = key
        self.fill = fill
        self.names = lag_names(cols, self.periods)
        self.keys = KeyIndex()
        self.count = np.zeros(0, dtype=np.int64)  # real values held per key id (<= depth)
        self.hist: dict[str, Array] = {}  # column -> (key ids, depth): [:, 0] the newest

    # -- per batch ----------------------------------------------------------------------
    def _check(self, batch: Batch) -> None:
        need = [*self.columns, *([self.key] if self.key is not None else [])]
        missing = [c for c in need if c not in batch]
        if missing:
            what = "the key column" if missing == [self.key] else "columns"
            msg = (
                f"step {self.name!r}: {what} {missing} to lag by are not in the batch; its "
                f"columns are {batch.names} (check the names given to lag/key_by, or the "
                "steps before)"
            )
            raise PipelineError(msg)
        clash = [c for c in self.names if c in batch]
        if clash:
            msg = (
                f"step {self.name!r}: the batch already has columns {clash} that lag would "
                "write; rename them, or lag under other column names"
            )
            raise PipelineError(msg)
        for c in self.columns:
            if batch[c].ndim != 1:
                msg = f"step {self.name!r}: column {c!r} has vectors per row; lag takes scalars"
                raise PipelineError(msg)

    def _key_ids(self, batch: Batch) -> tuple[Batch, Array]:
        """Dense key ids; rows whose key cannot be a key go to the dead letters."""
        if self.key is None:
            if not len(self.keys):
                self.keys.ids(np.zeros(1, dtype=np.int64))
            return batch, np.zeros(len(batch), dtype=np.int64)
        return key_ids(self, self.keys, self.key, batch)

    def _grow(self) -> None:
        cap = self.keys.capacity
        have = len(self.count)
        if have >= cap:
            return
        size = max(cap, 2 * have)
        self.count = np.concatenate((self.count, np.zeros(size - have, dtype=np.int64)))
        for c, h in self.hist.items():
            more = np.zeros((size - have, self.depth), dtype=h.dtype)
            if h.dtype.kind == "O":
                more[:] = None
            self.hist[c] = np.concatenate((h, more))

    def _hist_for(self, c: str, col: Array) -> Array:
        """The state of column ``c``, in a type that also holds ``col``'s values."""
        h = self.hist.get(c)
        if h is None:
            dt = col.dtype if col.dtype.kind in "iufb" else np.dtype(object)
            h = np.zeros((len(self.count), self.depth), dtype=dt)
            if dt.kind == "O":
                h[:] = None
        elif h.dtype != col.dtype:
            both = {h.dtype.kind, col.dtype.kind} <= set("iufb")
            dt = np.result_type(h.dtype, col.dtype) if both else np.dtype(object)
            if dt != h.dtype:
                h = h.astype(dt)
        self.hist[c] = h
        return h

    def process(self, batch: Batch, port: int) -> Emit:
        """Add the lag columns to the batch and remember each key's newest values."""
        self._check(batch)
        batch, kid = self._key_ids(batch)
        n = len(batch)
        self._grow()
        if self.key is None and n:
            return [(0, batch.with_columns(**self._one_key(batch, n)))]
        if self.key is None:  # one key: the batch is already in key order
            order = None
            ks = kid
            heads = np.zeros(1 if n else 0, dtype=np.int64)
        else:
            order = np.argsort(kid, kind="stable")  # by (key, arrival)
            ks = kid[order]
            first = np.ones(n, dtype=bool)
            first[1:] = ks[1:] != ks[:-1]
            heads = np.flatnonzero(first)
        seg_len = np.diff(np.append(heads, n))
        seg_keys = ks[heads]
        pos = held = None
        if order is not None:
            pos = np.arange(n) - np.repeat(heads, seg_len)  # place of each row in its key's run
            held = self.count[ks]
        out: dict[str, Any] = {}
        for c in self.columns:
            col = batch[c]
            h = self._hist_for(c, col)
            dt = _out_dtype(col.dtype, h.dtype, self.fill)
            sorted_col = col if order is None else col[order]
            for k in self.periods:
                if order is None or pos is None or held is None:
                    lagged = self._shift_one_key(sorted_col, h, k, dt)
                else:
                    lagged = np.empty(n, dtype=dt)
                    lagged[order] = self._shift_runs(sorted_col, h, k, dt, ks, pos, held)
                out[f"{c}_lag{k}"] = lagged
            self.hist[c] = self._remember(h, sorted_col, heads, seg_len, seg_keys)
        if n:
            self.count[seg_keys] = np.minimum(self.depth, self.count[seg_keys] + seg_len)
        return [(0, batch.with_columns(**{name: out[name] for name in self.names}))]

    def _one_key(self, batch: Batch, n: int) -> dict[str, Array]:
        """The lag columns of an unkeyed stream: shifted copies, the first rows from state.

        Slices only (the same values as the keyed path); the state becomes the batch's
        last ``depth`` values, newest first.
        """
        held = int(self.count[0])
        depth = self.depth
        out: dict[str, Array] = {}
        for c in self.columns:
            col = batch[c]
            h = self._hist_for(c, col)
            dt = _out_dtype(col.dtype, h.dtype, self.fill)
            newest = h[0]  # newest first
            for k in self.periods:
                lagged = np.empty(n, dtype=dt)
                m = min(k, n)
                lagged[m:] = col[: n - m]
                lagged[:m] = newest[k - m : k][::-1]  # row r: the value k - 1 - r back
                unknown = min(m, max(0, k - held))  # rows reaching past what is held
                if unknown:
                    lagged[:unknown] = _missing(dt) if self.fill is None else self.fill
                out[f"{c}_lag{k}"] = lagged
            if n >= depth:
                newest[:] = col[n - depth :][::-1]
            else:
                newest[n:] = newest[: depth - n].copy()
                newest[:n] = col[::-1]
        self.count[0] = min(depth, held + n)
        return {name: out[name] for name in self.names}

    def _shift_runs(  # noqa: PLR0913 - the runs' arrays, computed once per batch
        self, col: Array, h: Array, k: int, dt: np.dtype[Any], ks: Array, pos: Array, held: Array
    ) -> Array:
        """Lag ``k`` of key-sorted rows: shift within each key's run, its head from state."""
        lagged = np.empty(len(col), dtype=dt)
        inside = pos >= k
        idx = np.flatnonzero(inside)
        lagged[idx] = col[idx - k]
        back = k - pos - 1  # how far back in the state (0: the newest held)
        from_state = ~inside & (back < held)
        if from_state.any():
            lagged[from_state] = h[ks[from_state], back[from_state]]
        fill_rows = ~inside & ~from_state
        if fill_rows.any():
            lagged[fill_rows] = _missing(dt) if self.fill is None else self.fill
        return lagged

    def _shift_one_key(self, col: Array, h: Array, k: int, dt: np.dtype[Any]) -> Array:
        """Lag ``k`` of a batch of one key (key id 0): a shifted copy, the head from state."""
        n = len(col)
        lagged = np.empty(n, dtype=dt)
        m = min(k, n)
        lagged[m:] = col[: n - m]
        back = k - 1 - np.arange(m)  # rows 0..m-1 reach this far back into the state
        known = back < self.count[0]
        head = lagged[:m]  # a view: writing it writes ``lagged``
        head[known] = h[0, back[known]]
        if not known.all():
            head[~known] = _missing(dt) if self.fill is None else self.fill
        return lagged

    def _remember(
        self, h: Array, sorted_col: Array, heads: Array, seg_len: Array, seg_keys: Array
    ) -> Array:
        """Shift each key's held values back by its new rows and put the newest in front."""
        if not len(heads):
            return h
        old = h[seg_keys]  # (keys in batch, depth), a copy
        new = np.empty_like(old)
        ends = heads + seg_len  # one past each key's last row
        for j in range(self.depth):
            fresh = j < seg_len
            new[fresh, j] = sorted_col[ends[fresh] - 1 - j]
            stale = np.flatnonzero(~fresh)  # a key with fewer new rows than j: older values
            if len(stale):
                new[stale, j] = old[stale, j - seg_len[stale]]
        h[seg_keys] = new
        return h

    # -- state --------------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {"columns": self.columns, "periods": self.periods, "key": self.key}

    def snapshot(self) -> dict[str, Any]:
        """Keys, how many values each holds, and the values (text columns as JSON lists)."""
        cap = self.keys.capacity
        hist: dict[str, Any] = {}
        for c, h in self.hist.items():
            part = h[:cap]
            if part.dtype.kind == "O":
                hist[c] = {"dtype": "object", "values": part.tolist()}
            else:
                hist[c] = {"dtype": part.dtype.str, "values": part.copy()}
        return {
            "kind": _STATE_KIND,
            "params": self._params(),
            "keys": self.keys.snapshot(),
            "count": self.count[:cap].copy(),
            "hist": hist,
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`.

        Raises:
            StateError: if the snapshot is another step's or of other columns or periods.
        """
        if snap.get("kind") != _STATE_KIND or snap.get("params") != self._params():
            msg = (
                f"step {self.name!r}: the snapshot is of a lag step with {snap.get('params')}, "
                f"this one has {self._params()}; rename the step to start afresh"
            )
            raise StateError(msg)
        self.keys.restore(snap["keys"])
        self.count = np.asarray(snap["count"], dtype=np.int64).copy()
        self.hist = {}
        cap = len(self.count)
        for c, part in snap["hist"].items():
            if part["dtype"] == "object":
                h = np.empty((cap, self.depth), dtype=object)
                if cap:
                    h[:] = part["values"]
            else:
                h = np.asarray(part["values"], dtype=np.dtype(part["dtype"])).copy()
            self.hist[c] = h.reshape(cap, self.depth)
