"""Key indexes of the recommenders: :class:`KeyIndex` with a numpy table for integer keys.

Example:
    >>> import numpy as np
    >>> keys = Keys()
    >>> keys.ids(np.array([7, 3, 7])).tolist(), keys.lookup(np.array([3, 9])).tolist()
    ([1, 0, 1], [0, -1])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.core.keys import KeyIndex

__all__ = ["Keys"]


class Keys(KeyIndex):
    """A :class:`KeyIndex` with a numpy table for small non-negative integer keys.

    Known integer keys below ``2**26`` are looked up in an array (no Python per row or per
    distinct key); only keys never seen before go through the dict. Free ids are reused in
    the same order after a restore (the free list is kept sorted, as a restore rebuilds it).
    """

    _LIMIT = 1 << 26

    def __init__(self) -> None:
        super().__init__()
        self.table = np.full(0, -1, np.int64)

    def _small(self, values: Array) -> bool:
        return (
            values.dtype.kind in "iu"
            and len(values) > 0
            and self._kind in (None, "i", "u")
            and int(values.min()) >= 0
            and int(values.max()) < self._LIMIT
        )

    def ids(self, values: Array) -> Array:
        """Ids for a column of key values, adding keys not seen before."""
        if not self._small(values):
            return super().ids(values)
        top = int(values.max()) + 1
        if top > len(self.table):
            grown = max(top, 2 * len(self.table))
            self.table = np.r_[self.table, np.full(grown - len(self.table), -1, np.int64)]
        found: Array = self.table[values]
        new = found < 0
        if new.any():
            fresh = super().ids(values[new])
            self.table[values[new]] = fresh
            found[new] = fresh
        return found

    def lookup(self, values: Array) -> Array:
        """Ids for key values, ``-1`` for keys not in the index."""
        if not self._small(values):
            return super().lookup(values)
        inside = values < len(self.table)
        out: Array = np.where(inside, self.table[np.where(inside, values, 0)], -1)
        return out

    def release(self, ids: Array) -> None:
        """Forget the keys of ``ids``; their ids are reused for new keys."""
        if self._kind in ("i", "u") and len(self.table):
            keys = self.values(ids)
            keys = keys[keys < len(self.table)]
            self.table[keys] = -1
        super().release(ids)
        self._free.sort()

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot` (and rebuild the integer table)."""
        super().restore(snap)
        self.table = np.full(0, -1, np.int64)
        if self._kind in ("i", "u") and self._ids:
            keys = np.fromiter(self._ids.keys(), np.int64, len(self._ids))
            ids = np.fromiter(self._ids.values(), np.int64, len(self._ids))
            small = (keys >= 0) & (keys < self._LIMIT)
            if small.any():
                self.table = np.full(int(keys[small].max()) + 1, -1, np.int64)
                self.table[keys[small]] = ids[small]

    def live(self) -> Array:
        """Ids in use."""
        return np.fromiter(sorted(self._ids.values()), np.int64, len(self._ids))
