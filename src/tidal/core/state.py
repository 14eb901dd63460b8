"""Columnar keyed state for users' own stateful operators, with an event-time TTL.

A :class:`KeyedState` is a small table with one row per live key and one numpy array per
column, indexed by the dense key ids of its :class:`~tidal.core.keys.KeyIndex`. Everything
is vectorized: look the ids of a whole batch's keys up once, then read, write and touch
columns with numpy fancy indexing. With a TTL, a key whose last touch (the highest event
time passed to :meth:`KeyedState.touch`) is ``ttl`` or more behind the watermark is
dropped by :meth:`KeyedState.expire`; its id is released and reused by the next new key,
so the table grows with live keys, never with every key ever seen.

Timeline, ``ttl_ms=5000``, one key (times in seconds)::

    touch at      10          12
    watermark   --8----11-----14-----16-----17----18--->
    expire(wm)                              ^ 12 + 5 <= 17: released
    state size    1    1      1      1      0     0

Snapshots hold numeric columns as numpy arrays and string/object columns as JSON lists
(:func:`snapshot_column`), never pickled objects.

Example:
    >>> import numpy as np
    >>> state = KeyedState({"count": np.int64, "total": np.float64}, ttl_ms=5_000)
    >>> ids = state.keys.ids(np.array(["a", "b", "a"], dtype=object))
    >>> np.add.at(state.column("count"), ids, 1)
    >>> state.set("total", ids[:2], [1.5, 2.0])
    >>> state.touch(ids, np.array([10_000, 11_000, 12_000]))
    >>> state.get("count", ids).tolist(), len(state)
    ([2, 1, 2], 2)
    >>> state.expire(16_000).tolist(), len(state)      # b (id 1) was last touched at 11s
    ([1], 1)
    >>> state.keys.ids(np.array(["c"], dtype=object)).tolist()   # c reuses b's id
    [1]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from tidal.core.batch import Array
from tidal.core.keys import KeyIndex
from tidal.errors import ConfigError, StateError

_I64 = np.int64
_UNTOUCHED = np.iinfo(np.int64).min
"""Last-touch value of a key that was never touched (it expires at the next ``expire``)."""


def snapshot_column(values: Array) -> dict[str, Any]:
    """A column in snapshot form: numeric arrays as arrays, anything else as a JSON list.

    Object (string) columns must hold JSON values: strings, numbers, booleans or ``None``.

    Example:
        >>> snapshot_column(np.array(["a", None], dtype=object))
        {'dtype': '|O', 'ndim': 1, 'data': ['a', None]}
        >>> restore_column(snapshot_column(np.arange(3))).tolist()
        [0, 1, 2]
    """
    if values.dtype.kind in "biufcmM":
        return {"dtype": values.dtype.str, "ndim": values.ndim, "data": values}
    return {"dtype": values.dtype.str, "ndim": values.ndim, "data": values.tolist()}


def restore_column(snap: Mapping[str, Any]) -> Array:
    """The column written by :func:`snapshot_column` (a fresh, writable array)."""
    dtype = np.dtype(snap["dtype"])
    data = snap["data"]
    if isinstance(data, np.ndarray):
        return data.astype(dtype, copy=True)
    if dtype.kind == "O" and int(snap["ndim"]) == 1:
        out = np.empty(len(data), dtype=object)
        out[:] = data
        return out
    return np.array(data, dtype=dtype)


class _TrackedKeys(KeyIndex):
    """A :class:`KeyIndex` that tells its table when ids are handed out or released."""

    def __init__(self, added: Callable[[int], None], released: Callable[[Array], None]) -> None:
        super().__init__()
        self._added = added
        self._released = released

    def _add(self, key: Any) -> int:
        i = super()._add(key)
        self._added(i)
        return i

    def release(self, ids: Array) -> None:
        """Forget the keys of ``ids`` and reset their rows in the table."""
        ids = np.asarray(ids, dtype=_I64)
        super().release(ids)
        self._released(ids)


class KeyedState:
    """A columnar per-key table: one row per live key, one numpy array per column.

    Args:
        columns: column name to numpy dtype (``np.int64``, ``np.float64``, ``bool``,
            ``object`` for strings). New keys start at zero (``None`` for object columns).
        ttl_ms: expire a key once the watermark is ``ttl_ms`` or more past its last touch
            (event time, ms). ``None``: keys live until released with :meth:`release`.

    Raises:
        ConfigError: if there are no columns or ``ttl_ms`` is negative.

    Example:
        >>> import numpy as np
        >>> seen = KeyedState({"last_value": np.float64})
        >>> ids = seen.keys.ids(np.array([7, 8]))
        >>> seen.set("last_value", ids, [0.5, 1.5])
        >>> seen.get("last_value", seen.keys.ids(np.array([8]))).tolist()
        [1.5]
    """

    def __init__(self, columns: Mapping[str, npt.DTypeLike], ttl_ms: int | None = None) -> None:
        if not columns:
            msg = "KeyedState needs at least one column, e.g. KeyedState({'count': np.int64})"
            raise ConfigError(msg)
        if ttl_ms is not None and ttl_ms < 0:
            msg = f"KeyedState's ttl_ms must be >= 0 (or None for no TTL), got {ttl_ms}"
            raise ConfigError(msg)
        self.ttl_ms = ttl_ms
        self._dtypes = {str(n): _storage_dtype(d) for n, d in columns.items()}
        self._cols: dict[str, Array] = {n: self._blank(n, 0) for n in self._dtypes}
        self._last = np.empty(0, dtype=_I64)
        self._alive = np.empty(0, dtype=bool)
        self.keys: KeyIndex = _TrackedKeys(self._on_add, self._on_release)

    # -- rows -----------------------------------------------------------------------------
    def _blank(self, name: str, n: int) -> Array:
        dtype = self._dtypes[name]
        if dtype.kind == "O":
            return np.full(n, None, dtype=object)
        return np.zeros(n, dtype=dtype)

    def _grow(self, need: int) -> None:
        have = len(self._alive)
        if need <= have:
            return
        size = max(need, 2 * have, 16)
        for name, col in self._cols.items():
            self._cols[name] = np.concatenate((col, self._blank(name, size - have)))
        self._last = np.concatenate((self._last, np.full(size - have, _UNTOUCHED, dtype=_I64)))
        self._alive = np.concatenate((self._alive, np.zeros(size - have, dtype=bool)))

    def _on_add(self, i: int) -> None:
        self._grow(i + 1)
        self._alive[i] = True

    def _on_release(self, ids: Array) -> None:
        if len(ids) == 0:
            return
        for name, col in self._cols.items():
            col[ids] = None if self._dtypes[name].kind == "O" else 0
        self._last[ids] = _UNTOUCHED
        self._alive[ids] = False

    # -- public API -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.keys)

    @property
    def names(self) -> list[str]:
        """Column names, in order."""
        return list(self._dtypes)

    def column(self, name: str) -> Array:
        """The whole column ``name`` indexed by key id (a view: writes go to the state).

        Handy for in-place ufuncs such as ``np.add.at(state.column("n"), ids, 1)``.
        Rows of ids not in use hold the column's zero value. Fetch the column after looking
        the ids up: new keys may reallocate the table, leaving an older array stale.
        """
        try:
            return self._cols[name]
        except KeyError:
            msg = f"no column {name!r} in this KeyedState; its columns are {self.names}"
            raise KeyError(msg) from None

    def get(self, name: str, ids: Array) -> Array:
        """Values of column ``name`` for key ids ``ids`` (a copy)."""
        return self.column(name)[np.asarray(ids, dtype=_I64)]

    def set(self, name: str, ids: Array, values: Any) -> None:
        """Write ``values`` to column ``name`` at key ids ``ids``.

        With repeated ids the last value written wins; to combine values per key use a
        ufunc on :meth:`column` (``np.add.at``, ``np.maximum.at``).
        """
        col = self.column(name)
        col[np.asarray(ids, dtype=_I64)] = values

    def touch(self, ids: Array, times: Array) -> None:
        """Record activity: a key's last touch becomes the highest event time given for it."""
        ids = np.asarray(ids, dtype=_I64)
        times = np.broadcast_to(np.asarray(times, dtype=_I64), ids.shape)
        np.maximum.at(self._last, ids, times)

    def last_touch(self, ids: Array) -> Array:
        """The last touch (event time, ms) of each id; int64 min for never-touched keys."""
        return self._last[np.asarray(ids, dtype=_I64)]

    def expire(self, wm: int) -> Array:
        """Release every key whose ``last touch + ttl <= wm``; return their (former) ids.

        A key that was given an id but never touched expires at the next call. Without a
        TTL nothing expires. Call it from ``Operator.on_watermark``.
        """
        if self.ttl_ms is None:
            return np.empty(0, dtype=_I64)
        cutoff = wm - self.ttl_ms
        dead = np.flatnonzero(self._alive & (self._last <= cutoff)).astype(_I64)
        if len(dead):
            self.keys.release(dead)
        return dead

    def release(self, ids: Array) -> None:
        """Drop keys now (their rows are reset and the ids reused)."""
        self.keys.release(np.asarray(ids, dtype=_I64))

    # -- snapshots ------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Keys, last touches and columns: numeric arrays and JSON lists only."""
        cap = self.keys.capacity
        return {
            "keys": self.keys.snapshot(),
            "last": self._last[:cap].copy(),
            "columns": {n: snapshot_column(c[:cap].copy()) for n, c in self._cols.items()},
        }

    def restore(self, snap: Mapping[str, Any]) -> None:
        """Restore from :meth:`snapshot` (into a state built with the same columns).

        Raises:
            StateError: if the snapshot's columns differ from this state's.
        """
        saved = list(snap["columns"])
        if saved != self.names:
            msg = f"KeyedState snapshot has columns {saved}, this state has {self.names}"
            raise StateError(msg)
        self.keys.restore(snap["keys"])
        alive = np.asarray([k is not None for k in snap["keys"]["keys"]], dtype=bool)
        cap = len(alive)
        self._alive = alive
        self._last = np.asarray(snap["last"], dtype=_I64).copy()
        for name in self.names:
            col = restore_column(snap["columns"][name])
            self._cols[name] = col.astype(self._dtypes[name], copy=False)
        if len(self._last) != cap or any(len(c) != cap for c in self._cols.values()):
            msg = "KeyedState snapshot is inconsistent: column lengths differ from the keys"
            raise StateError(msg)


def _storage_dtype(dtype: npt.DTypeLike) -> np.dtype[Any]:
    dt = np.dtype(dtype)
    return np.dtype(object) if dt.kind in "OUS" else dt
