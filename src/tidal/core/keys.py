"""Dense ids for key values, so keyed state lives in arrays indexed by key id.

A :class:`KeyIndex` maps key values (ints, floats or strings) to small dense int64 ids,
touching Python only once per *distinct* key in a batch, never once per record. Ids of
keys whose state is gone can be released and are reused, so the index grows with live keys,
not with every key ever seen.

Example:
    >>> import numpy as np
    >>> index = KeyIndex()
    >>> index.ids(np.array(["b", "a", "b"], dtype=object)).tolist()
    [0, 1, 0]
    >>> index.values(np.array([1, 0])).tolist()
    ['a', 'b']
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from tidal.core.batch import Array
from tidal.errors import StateError


class KeyValuesError(StateError):
    """Some values of a key column cannot be keys: lists, dicts, missing values.

    Attributes:
        rows: the positions of those values in the column given.
        reasons: one reason per row, e.g. ``"a key must be a string, number or boolean,
            got a list: [1, 2]"``.
    """

    def __init__(self, rows: list[int], reasons: list[str]) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)
        self.reasons = reasons
        more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
        super().__init__(
            f"row {rows[0]} of the key column: {reasons[0]}{more}; filter such rows, or turn "
            "the value into a string, before key_by"
        )


_KEY_TYPES = (str, int, float, bool, bytes, np.generic)
_NAMES = {list: "a list", dict: "a dict", tuple: "a tuple", set: "a set", np.ndarray: "an array"}


def _key_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a key, or ``None`` if it can."""
    if value is None or (isinstance(value, float | np.floating) and value != value):
        return "a key must not be missing (null or NaN)"
    if isinstance(value, _KEY_TYPES) and not isinstance(value, np.ndarray):
        return None
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    kind = _NAMES.get(type(value), f"a {type(value).__name__}")
    return f"a key must be a string, number or boolean, got {kind}: {shown}"


def unique_inverse(values: Array) -> tuple[list[Any], Array]:
    """Distinct values (as Python objects) and, per row, the index of its distinct value.

    Integers spanning a range not much wider than the column are counted, not sorted (the
    same result as ``np.unique``, in linear time); other numbers go through ``np.unique``;
    strings and other objects through Arrow's hash-based dictionary encoding. A column
    mixing strings and numbers keeps each value's type (hashed in Python: the slow path).

    Raises:
        KeyValuesError: for values that cannot be keys (lists, dicts, missing values),
            naming their rows.

    Example:
        >>> uniq, inv = unique_inverse(np.array([7, 3, 7, 5]))
        >>> uniq, inv.tolist()
        ([3, 5, 7], [2, 0, 2, 1])
        >>> unique_inverse(np.array(["a", [1, 2]], dtype=object))
        Traceback (most recent call last):
        ...
        tidal.core.keys.KeyValuesError: row 1 of the key column: a key must be a string, number or boolean, got a list: [1, 2]; filter such rows, or turn the value into a string, before key_by
    """  # noqa: E501
    if values.dtype.kind in "iu" and len(values):
        dense = _dense_unique_inverse(values)
        if dense is not None:
            return dense
    if values.dtype.kind in "iufb" and values.ndim == 1:
        uniq, inv = np.unique(values, return_inverse=True)
        return uniq.tolist(), inv.reshape(-1).astype(np.int64, copy=False)
    try:
        arr = pa.array(values, from_pandas=True) if values.ndim == 1 else None
        if arr is None or arr.null_count or pa.types.is_nested(arr.type):
            return _python_unique_inverse(values)
        encoded = arr.dictionary_encode()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        return _python_unique_inverse(values)
    return (
        encoded.dictionary.to_pylist(),
        encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64),
    )


def _python_unique_inverse(values: Array) -> tuple[list[Any], Array]:
    """The slow path for mixed or bad key columns: one dict lookup per row."""
    items = list(values) if values.ndim > 1 else values.tolist()
    bad_rows: list[int] = []
    reasons: list[str] = []
    for i, value in enumerate(items):
        problem = _key_problem(value)
        if problem is not None:
            bad_rows.append(i)
            reasons.append(problem)
    if bad_rows:
        raise KeyValuesError(bad_rows, reasons)
    index: dict[Any, int] = {}
    inv = np.fromiter((index.setdefault(v, len(index)) for v in items), np.int64, len(items))
    return list(index), inv


def _dense_unique_inverse(values: Array) -> tuple[list[Any], Array] | None:
    """``np.unique(values, return_inverse=True)`` by counting, for ints of a narrow range.

    ``None`` when the range is too wide for that to pay (then sorting is cheaper).
    """
    lo, hi = int(values.min()), int(values.max())
    span = hi - lo + 1
    if span > 4 * len(values) + 4096:
        return None
    wide = values.dtype == np.uint64  # may not fit int64; the offsets from ``lo`` do
    if wide:
        shifted: Array = (values - np.uint64(lo)).astype(np.intp)
    else:
        shifted = values.astype(np.int64, copy=False) - lo
    present = np.zeros(span, dtype=bool)
    present[shifted] = True
    offsets = np.flatnonzero(present)
    remap = np.cumsum(present, dtype=np.int64) - 1
    uniq: Array = offsets.astype(np.uint64) + np.uint64(lo) if wide else offsets + lo
    return uniq.tolist(), remap[shifted]


class KeyIndex:
    """Key value to dense id, with release and reuse of ids."""

    def __init__(self) -> None:
        self._ids: dict[Any, int] = {}
        self._keys: list[Any] = []
        self._free: list[int] = []
        self._kind: str | None = None

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def capacity(self) -> int:
        """One more than the largest id ever handed out (size arrays indexed by id with it)."""
        return len(self._keys)

    def ids(self, values: Array) -> Array:
        """Ids for a column of key values, adding keys not seen before."""
        if len(values) == 0:
            return np.empty(0, dtype=np.int64)
        if self._kind is None:
            self._kind = values.dtype.kind
        uniq, inv = unique_inverse(values)
        get = self._ids.get
        found = [get(u, -1) for u in uniq]
        if -1 in found:
            for i, u in enumerate(uniq):
                if found[i] == -1:
                    found[i] = self._add(u)
        return np.asarray(found, dtype=np.int64)[inv]

    def lookup(self, values: Array) -> Array:
        """Ids for key values, ``-1`` for keys not in the index (nothing is added)."""
        if len(values) == 0:
            return np.empty(0, dtype=np.int64)
        uniq, inv = unique_inverse(values)
        get = self._ids.get
        return np.asarray([get(u, -1) for u in uniq], dtype=np.int64)[inv]

    def _add(self, key: Any) -> int:
        if self._free:
            i = self._free.pop()
            self._keys[i] = key
        else:
            i = len(self._keys)
            self._keys.append(key)
        self._ids[key] = i
        return i

    def values(self, ids: Array) -> Array:
        """Key values for ids, as a column (object dtype for strings)."""
        keys = self._keys
        out = [keys[i] for i in ids.tolist()]
        if self._kind in ("i", "u"):
            return np.asarray(out, dtype=np.int64)
        if self._kind == "f":
            return np.asarray(out, dtype=np.float64)
        if self._kind == "b":
            return np.asarray(out, dtype=bool)
        arr = np.empty(len(out), dtype=object)
        arr[:] = out
        return arr

    def live_ids(self) -> Array:
        """The ids in use, ascending (the keys the index holds now).

        Example:
            >>> index = KeyIndex()
            >>> _ = index.ids(np.array(["a", "b", "c"], dtype=object))
            >>> index.release(np.array([1]))
            >>> index.live_ids().tolist()
            [0, 2]
        """
        alive = np.ones(len(self._keys), dtype=bool)
        alive[np.asarray(self._free, dtype=np.int64)] = False
        return np.flatnonzero(alive).astype(np.int64)

    def release(self, ids: Array) -> None:
        """Forget the keys of ``ids``; their ids are reused for new keys."""
        for i in ids.tolist():
            key = self._keys[i]
            if self._ids.pop(key, None) is not None:
                self._keys[i] = None
                self._free.append(i)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state: keys by id (``None`` for free ids)."""
        return {"keys": list(self._keys), "kind": self._kind}

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`."""
        self._keys = list(snap["keys"])
        self._kind = snap["kind"]
        self._ids = {k: i for i, k in enumerate(self._keys) if k is not None}
        self._free = [i for i, k in enumerate(self._keys) if k is None]
