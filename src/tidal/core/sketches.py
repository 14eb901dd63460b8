"""The sketch aggregations' states, and the vectorized blocks they are built from.

:func:`~tidal.core.aggregations.quantile`, :func:`~tidal.core.aggregations.top_k` and
:func:`~tidal.core.aggregations.distinct` make their states here. Everything works on
whole numpy columns; Python loops only ever run over the *unique* values of a call
(string hashing, value dictionaries) or over a handful of constants.

``ranges``
    expand index ranges into flat arrays (the gather step of every sparse read);
``SparseCounts``
    a sparse ``(slot, key) -> count`` table, compacted with a sort when it grows;
``LogBuckets``
    DDSketch's logarithmic bucket mapping, with signs and a zero bucket;
``encode``, ``hash64``, ``splitmix64``
    value dictionaries and 64-bit hashing;
``hll_ranks``, ``hll_update``, ``hll_estimate``
    HyperLogLog registers.

Example:
    >>> table = SparseCounts()
    >>> table.add(np.array([1, 0, 1]), np.array([7, 7, 7]), np.array([1, 1, 1]))
    >>> table.compact()
    >>> table.slot.tolist(), table.key.tolist(), table.count.tolist()
    ([0, 1], [7, 7], [1, 2])
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import DTypeLike, NDArray

from tidal.core.aggstate import (
    AggState,
    Array,
    _array,
    _check,
    _column,
    _floats,
    _grow,
    _pair,
    _slots,
)
from tidal.errors import PipelineError, StateError

IntArray = NDArray[np.int64]
"""Slots, keys, counts and indices."""
HashArray = NDArray[np.uint64]
"""64-bit hashes."""


def ranges(lo: IntArray, hi: IntArray) -> tuple[IntArray, IntArray]:
    """Expand half-open ranges ``[lo[i], hi[i])`` into flat ``(group, index)`` arrays.

    Args:
        lo: first index of each range.
        hi: one past the last index of each range (``hi >= lo``).

    Returns:
        For every index of every range, in order: the range it belongs to and the index.

    Example:
        >>> group, index = ranges(np.array([0, 5]), np.array([2, 8]))
        >>> group.tolist(), index.tolist()
        ([0, 0, 1, 1, 1], [0, 1, 5, 6, 7])
    """
    lengths = (hi - lo).astype(np.int64)
    group = np.repeat(np.arange(len(lo), dtype=np.int64), lengths)
    shift = np.cumsum(lengths) - lengths - lo
    index = np.arange(len(group), dtype=np.int64) - np.repeat(shift, lengths)
    return group, index


class SparseCounts:
    """A sparse ``(slot, key) -> count`` table.

    New rows are appended to a pending list; :meth:`compact` sorts everything by
    ``(slot, key)`` and sums duplicates (a stable sort of packed keys, then
    ``np.add.reduceat``). It runs by itself once the pending rows outnumber the compacted
    ones, and before every read.
    After compaction :attr:`slot`, :attr:`key` and :attr:`count` are sorted and unique.

    Args:
        dtype: dtype of the counts: int64 for counts, float64 for weights.

    Example:
        >>> t = SparseCounts()
        >>> t.add(np.array([3, 3, 5]), np.array([1, 2, 1]), np.array([1, 1, 4]))
        >>> t.merge(np.array([5]), np.array([3]))   # fold slot 3 into slot 5
        >>> t.reset(np.array([3]))
        >>> group, index = t.rows(np.array([5]))
        >>> t.key[index].tolist(), t.count[index].tolist()
        ([1, 2], [5, 1])
    """

    def __init__(self, dtype: DTypeLike = np.int64) -> None:
        self.dtype = np.dtype(dtype)
        self.slot: IntArray = np.empty(0, dtype=np.int64)
        self.key: IntArray = np.empty(0, dtype=np.int64)
        self.count: NDArray[Any] = np.empty(0, dtype=self.dtype)
        self._pending: list[tuple[IntArray, IntArray, NDArray[Any]]] = []
        self._pending_rows = 0

    def __len__(self) -> int:
        return len(self.slot) + self._pending_rows

    def add(self, slots: IntArray, keys: IntArray, counts: NDArray[Any]) -> None:
        """Add ``counts[i]`` to the row ``(slots[i], keys[i])``; the arrays may repeat."""
        if not len(slots):
            return
        self._pending.append((slots, keys, counts.astype(self.dtype, copy=False)))
        self._pending_rows += len(slots)
        if self._pending_rows > max(1 << 16, len(self.slot)):
            self.compact()

    def compact(self) -> None:
        """Sort the table by ``(slot, key)`` and sum the counts of equal rows."""
        if not self._pending:
            return
        slot = np.concatenate([self.slot, *(p[0] for p in self._pending)])
        key = np.concatenate([self.key, *(p[1] for p in self._pending)])
        count = np.concatenate([self.count, *(p[2] for p in self._pending)])
        self._pending, self._pending_rows = [], 0
        if not len(slot):
            self.slot, self.key, self.count = slot, key, count
            return
        # One int64 sort key when (slot, key) packs into 62 bits: a stable sort then finds
        # the already sorted table as one run (timsort) and only really sorts the new rows.
        span = int(key.max()) - int(key.min()) + 1
        if (int(slot.max()) + 1) * span < 1 << 62:
            order = np.argsort(slot * span + (key - key.min()), kind="stable")
        else:
            order = np.lexsort((key, slot))
        slot, key, count = slot[order], key[order], count[order]
        first = np.ones(len(slot), dtype=np.bool_)
        first[1:] = (slot[1:] != slot[:-1]) | (key[1:] != key[:-1])
        starts = np.flatnonzero(first)
        self.slot, self.key = slot[starts], key[starts]
        self.count = np.add.reduceat(count, starts)

    def rows(self, slots: IntArray) -> tuple[IntArray, IntArray]:
        """The table rows of each of ``slots``, after compaction.

        Returns:
            ``(group, index)``: for each row found, the position in ``slots`` it was asked
            for and its index into :attr:`slot`, :attr:`key` and :attr:`count`. Rows come
            grouped by position and, within one, sorted by key.
        """
        self.compact()
        lo = np.searchsorted(self.slot, slots, side="left").astype(np.int64)
        hi = np.searchsorted(self.slot, slots, side="right").astype(np.int64)
        return ranges(lo, hi)

    def merge(self, dst: IntArray, src: IntArray) -> None:
        """Add the rows of slot ``src[i]`` to slot ``dst[i]``; ``src`` is left as it was."""
        group, index = self.rows(src)
        self.add(dst[group], self.key[index], self.count[index])

    def reset(self, slots: IntArray) -> None:
        """Drop every row of ``slots``."""
        _, index = ranges(
            np.searchsorted(self.slot, slots, side="left").astype(np.int64),
            np.searchsorted(self.slot, slots, side="right").astype(np.int64),
        )
        keep = np.ones(len(self.slot), dtype=np.bool_)
        keep[index] = False
        self.slot, self.key, self.count = self.slot[keep], self.key[keep], self.count[keep]
        pending = []
        for slot, key, count in self._pending:
            alive = ~np.isin(slot, slots)
            pending.append((slot[alive], key[alive], count[alive]))
        self._pending = pending
        self._pending_rows = sum(len(p[0]) for p in pending)

    def snapshot(self) -> dict[str, Any]:
        """The compacted table as three numeric arrays ``slot``, ``key`` and ``count``."""
        self.compact()
        return {"slot": self.slot.copy(), "key": self.key.copy(), "count": self.count.copy()}

    def restore(self, snap: dict[str, Any]) -> None:
        """Load a :meth:`snapshot` (made by a table with the same count dtype).

        Raises:
            StateError: if the arrays are missing or of the wrong dtype or length.
        """
        try:
            slot, key, count = (np.asarray(snap[f]) for f in ("slot", "key", "count"))
        except KeyError as exc:
            msg = f"a sparse table snapshot needs 'slot', 'key' and 'count'; missing {exc}"
            raise StateError(msg) from None
        if slot.dtype != np.int64 or key.dtype != np.int64 or count.dtype != self.dtype:
            msg = (
                f"sparse table snapshot dtypes must be int64/int64/{self.dtype}, "
                f"got {slot.dtype}/{key.dtype}/{count.dtype}"
            )
            raise StateError(msg)
        if not len(slot) == len(key) == len(count):
            msg = f"sparse table arrays differ in length: {len(slot)}, {len(key)}, {len(count)}"
            raise StateError(msg)
        self.slot, self.key, self.count = slot.copy(), key.copy(), count.copy()
        self._pending, self._pending_rows = [], 0


class LogBuckets:
    """DDSketch's logarithmic buckets, extended to negative values and zero.

    With ``gamma = (1 + a) / (1 - a)``, a positive ``x`` falls in bucket
    ``k = ceil(log_gamma(x))``, i.e. ``gamma**(k-1) < x <= gamma**k``, whose representative
    ``2 * gamma**k / (gamma + 1)`` is within relative error ``a`` of every value in it.
    Buckets are encoded as int64 *codes* that sort like the values they hold:
    ``OFFSET + k`` for ``x > 0``, ``-(OFFSET + k)`` for ``x < 0`` (bucket of ``|x|``) and
    ``0`` for zero. Infinities land in the outermost buckets and come back as infinities.

    Args:
        relative_accuracy: ``a``, in ``[1e-9, 1)``.

    Example:
        >>> b = LogBuckets(0.01)
        >>> codes = b.codes(np.array([-3.0, 0.0, 100.0]))
        >>> bool(codes[0] < codes[1] < codes[2])
        True
        >>> b.values(codes)[1], bool(abs(b.values(codes)[2] / 100 - 1) <= 0.01)
        (np.float64(0.0), True)
    """

    OFFSET = 1 << 40
    """Added to the bucket index so that every code of a non-zero value is away from zero."""

    def __init__(self, relative_accuracy: float) -> None:
        self.relative_accuracy = float(relative_accuracy)
        self.gamma = (1.0 + self.relative_accuracy) / (1.0 - self.relative_accuracy)
        self._log_gamma = math.log(self.gamma)
        self._log_scale = math.log(2.0 / (1.0 + self.gamma))

    def codes(self, x: NDArray[np.float64]) -> IntArray:
        """The bucket code of each value (no NaN)."""
        with np.errstate(divide="ignore"):
            k = np.ceil(np.log(np.abs(x)) / self._log_gamma)
        k = np.clip(k, 1 - self.OFFSET, self.OFFSET - 1)
        code = k.astype(np.int64) + self.OFFSET
        out: IntArray = np.where(x > 0, code, np.where(x < 0, -code, 0))
        return out

    def values(self, codes: IntArray) -> NDArray[np.float64]:
        """The representative value of each bucket code."""
        k = (np.abs(codes) - self.OFFSET).astype(np.float64)
        with np.errstate(over="ignore", under="ignore"):
            mag = np.exp(k * self._log_gamma + self._log_scale)
        out: NDArray[np.float64] = np.where(codes > 0, mag, np.where(codes < 0, -mag, 0.0))
        return out


def encode(values: NDArray[Any]) -> tuple[IntArray, NDArray[Any]]:
    """Dictionary-encode a column: an id per row and the unique values.

    Numbers go through ``np.unique``; strings and other objects through
    ``pyarrow``'s ``dictionary_encode``. Missing values (NaN, None) get the id ``-1``.

    Raises:
        PipelineError: if an object column mixes types Arrow cannot put in one column.

    Example:
        >>> ids, uniques = encode(np.array(["b", "a", None, "b"], dtype=object))
        >>> ids.tolist(), uniques.tolist()
        ([0, 1, -1, 0], ['b', 'a'])
    """
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        valid = ~np.isnan(arr) if arr.dtype.kind == "f" else np.ones(len(arr), dtype=np.bool_)
        uniques, inverse = np.unique(arr[valid], return_inverse=True)
        ids = np.full(len(arr), -1, dtype=np.int64)
        ids[valid] = inverse.reshape(-1)
        return ids, uniques
    try:
        column = pa.array(arr.astype(object), from_pandas=True)
        if column.type == pa.null():  # all None: nothing to encode
            return np.full(len(arr), -1, dtype=np.int64), np.empty(0, dtype=object)
        encoded = column.dictionary_encode()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        msg = (
            f"expected a column of numbers or of strings, got {arr.dtype} values that Arrow "
            f"cannot hold in one column ({exc}); convert the column to one type first"
        )
        raise PipelineError(msg) from exc
    ids = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    uniques = encoded.dictionary.to_numpy(zero_copy_only=False)
    return ids, uniques


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: HashArray) -> HashArray:
    """The splitmix64 finalizer of each 64-bit word (wrapping arithmetic, vectorized).

    Example:
        >>> hex(int(splitmix64(np.zeros(1, dtype=np.uint64))[0]))
        '0xe220a8397b1dcdaf'
    """
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    out: HashArray = z ^ (z >> np.uint64(31))
    return out


def _hash_numbers(x: NDArray[Any]) -> HashArray:
    floats = x.astype(np.float64) + 0.0  # -0.0 + 0.0 == +0.0: both zeros hash alike
    return splitmix64(floats.view(np.uint64))


def _blake(value: Any) -> int:
    data = value if isinstance(value, bytes) else str(value).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def hash64(values: NDArray[Any]) -> tuple[HashArray, NDArray[np.bool_]]:
    """Hash every non-missing value of a column to 64 bits, deterministically.

    Numbers (ints, floats, bools) are converted to float64 and their bits mixed with
    :func:`splitmix64`, so ``1``, ``1.0`` and ``True`` hash alike, as do ``0.0`` and
    ``-0.0`` (integers beyond 2**53 that round to the same float collide). Strings and
    bytes are hashed with ``blake2b(digest_size=8)`` of their UTF-8 bytes, once per
    distinct value of the call. NaN and None are missing.

    Returns:
        The hashes of the valid rows, and the mask of valid rows.

    Example:
        >>> h1, _ = hash64(np.array([1, 2]))
        >>> h2, valid = hash64(np.array([1.0, np.nan, 2.0]))
        >>> bool((h1 == h2).all()), valid.tolist()
        (True, [True, False, True])
    """
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        valid = ~np.isnan(arr) if arr.dtype.kind == "f" else np.ones(len(arr), dtype=np.bool_)
        return _hash_numbers(arr[valid]), valid
    ids, uniques = encode(arr)
    valid = ids >= 0
    if uniques.dtype.kind in "biuf":
        unique_hashes = _hash_numbers(uniques)
    else:
        unique_hashes = np.fromiter(
            (_blake(u) for u in uniques.tolist()), dtype=np.uint64, count=len(uniques)
        )
    return unique_hashes[ids[valid]], valid


def hll_ranks(hashes: HashArray, precision: int) -> tuple[IntArray, IntArray]:
    """Split hashes into a HyperLogLog register index and rank.

    The top ``precision`` bits choose the register; the rank is one plus the number of
    leading zeros of the remaining ``64 - precision`` bits (at most ``65 - precision``).

    Example:
        >>> idx, rank = hll_ranks(np.array([0xF000000000000000, 0x0800000000000000],
        ...                                dtype=np.uint64), 4)
        >>> idx.tolist(), rank.tolist()
        ([15, 0], [61, 1])
    """
    index = (hashes >> np.uint64(64 - precision)).astype(np.int64)
    rest = hashes << np.uint64(precision)
    zeros = np.zeros(len(hashes), dtype=np.int64)
    for shift in (32, 16, 8, 4, 2, 1):  # binary search for the leading one bit
        small = rest < np.uint64(1 << (64 - shift))
        zeros += np.where(small, shift, 0)
        rest = np.where(small, rest << np.uint64(shift), rest)
    rank = np.minimum(zeros + 1, 65 - precision)
    return index, rank


def hll_update(
    registers: NDArray[np.uint8], slots: IntArray, index: IntArray, rank: IntArray
) -> None:
    """Raise ``registers[slots[i], index[i]]`` to at least ``rank[i]``, in place.

    Repeated cells keep their largest rank (``np.maximum.at`` on the flat registers:
    unbuffered, exact and, on numpy >= 1.25, faster than sorting). ``registers`` must be
    C-contiguous.

    Example:
        >>> regs = np.zeros((2, 4), dtype=np.uint8)
        >>> hll_update(regs, np.array([1, 1, 0]), np.array([2, 2, 0]), np.array([3, 5, 1]))
        >>> regs.tolist()
        [[1, 0, 0, 0], [0, 0, 5, 0]]
    """
    flat = registers.reshape(-1)
    np.maximum.at(flat, slots * registers.shape[1] + index, rank.astype(np.uint8))


_POW2 = np.ldexp(1.0, -np.arange(66))


def hll_estimate(registers: NDArray[np.uint8]) -> IntArray:
    """The HyperLogLog distinct-count estimate of each row of registers.

    The raw estimate ``alpha_m * m**2 / sum(2**-M)``, with linear counting
    ``m * ln(m / V)`` instead when it is at most ``2.5 m`` and ``V`` registers are zero.
    With 64-bit hashes no large-range correction is needed. Rounded to the nearest int.

    Example:
        >>> hll_estimate(np.zeros((1, 16), dtype=np.uint8)).tolist()
        [0]
    """
    m = registers.shape[1]
    alpha = {16: 0.673, 32: 0.697, 64: 0.709}.get(m, 0.7213 / (1.0 + 1.079 / m))
    out = np.empty(len(registers), dtype=np.int64)
    block = max(1, (1 << 20) // m)
    for start in range(0, len(registers), block):  # bounded temporaries, not per slot
        regs = registers[start : start + block]
        raw = alpha * m * m / _POW2[regs].sum(axis=1)
        zeros = (regs == 0).sum(axis=1)
        linear = m * np.log(m / np.maximum(zeros, 1))
        est = np.where((raw <= 2.5 * m) & (zeros > 0), linear, raw)
        out[start : start + block] = np.rint(est).astype(np.int64)
    return out


# -- the states ------------------------------------------------------------------------


class _QuantileState(AggState):
    def __init__(self, what: str, q: float, relative_accuracy: float) -> None:
        self._what, self._q = what, q
        self._buckets = LogBuckets(relative_accuracy)
        self._table = SparseCounts(np.int64)

    def update(self, slots: IntArray, values: Array | None, weights: Array | None = None) -> None:
        slots = _slots(slots)
        v = _floats(values, len(slots), self._what)
        keep = ~np.isnan(v)
        codes = self._buckets.codes(v[keep])
        self._table.add(slots[keep], codes, np.ones(len(codes), dtype=np.int64))

    def merge(self, dst: IntArray, src: IntArray) -> None:
        self._table.merge(*_pair(dst, src))

    def copy_from(self, other: AggState, src: IntArray, dst: IntArray) -> None:
        dst, src = self._same_kind(other, src, dst)
        assert isinstance(other, _QuantileState)
        buckets, table = other._buckets, other._table  # noqa: SLF001 (a state of this class)
        if buckets.relative_accuracy != self._buckets.relative_accuracy:
            msg = "cannot copy quantile slots between sketches of different accuracy"
            raise StateError(msg)
        group, index = table.rows(src)
        self._table.add(dst[group], table.key[index], table.count[index])

    def result(self, slots: IntArray) -> Array:
        slots = _slots(slots)
        group, index = self._table.rows(slots)
        lengths = np.bincount(group, minlength=len(slots))
        start, end = np.cumsum(lengths) - lengths, np.cumsum(lengths)
        cum = np.concatenate([[0], np.cumsum(self._table.count[index])])
        n = cum[end] - cum[start]
        has = n > 0
        rank = np.clip(np.ceil(self._q * n[has]), 1, n[has]).astype(np.int64)
        pos = np.searchsorted(cum, cum[start[has]] + rank, side="left") - 1
        out = np.full(len(slots), np.nan)
        out[has] = self._buckets.values(self._table.key[index[pos]])
        return out

    def reset(self, slots: IntArray) -> None:
        self._table.reset(_slots(slots))

    def snapshot(self) -> dict[str, Any]:
        snap = {"kind": "quantile", "relative_accuracy": self._buckets.relative_accuracy}
        return {**snap, **self._table.snapshot()}

    def restore(self, snap: dict[str, Any]) -> None:
        _check(snap, "quantile", relative_accuracy=self._buckets.relative_accuracy)
        self._table.restore(snap)


class _TopKState(AggState):
    def __init__(self, what: str, k: int, weighted: bool) -> None:
        self._what, self._k, self._weighted = what, k, weighted
        self._table = SparseCounts(np.float64 if weighted else np.int64)
        self._ids: dict[Any, int] = {}
        self._values: list[Any] = []
        self._sorted: tuple[Array, IntArray] | None = None  # values as array, rank by value

    def update(self, slots: IntArray, values: Array | None, weights: Array | None = None) -> None:
        slots = _slots(slots)
        codes, uniques = encode(_column(values, len(slots), self._what))
        keep = codes >= 0
        if self._weighted:
            if weights is None:
                msg = f"{self._what} is weighted: pass the weight column as weights="
                raise PipelineError(msg)
            w = _floats(weights, len(slots), self._what)
            keep &= ~np.isnan(w)
            counts: Array = w[keep]
        else:
            counts = np.ones(int(keep.sum()), dtype=np.int64)
        self._table.add(slots[keep], self._intern(uniques.tolist())[codes[keep]], counts)

    def _intern(self, uniques: list[Any]) -> IntArray:
        """Dictionary ids of the unique values of one call (a loop over uniques only)."""
        before = len(self._ids)
        ids = np.fromiter(
            (self._ids.setdefault(u, len(self._ids)) for u in uniques),
            dtype=np.int64,
            count=len(uniques),
        )
        if len(self._ids) > before:
            new = zip(uniques, ids.tolist(), strict=True)
            self._values.extend(u for u, i in new if i >= before)
            self._sorted = None
        return ids

    def _ranked(self) -> tuple[Array, IntArray]:
        if self._sorted is None:
            values = np.empty(len(self._values), dtype=object)
            values[:] = self._values
            try:
                order = np.argsort(values, kind="stable")
            except TypeError as exc:
                msg = f"{self._what} needs values of one comparable type ({exc})"
                raise PipelineError(msg) from exc
            rank = np.empty(len(order), dtype=np.int64)
            rank[order] = np.arange(len(order))
            self._sorted = (values, rank)
        return self._sorted

    def merge(self, dst: IntArray, src: IntArray) -> None:
        self._table.merge(*_pair(dst, src))

    def copy_from(self, other: AggState, src: IntArray, dst: IntArray) -> None:
        dst, src = self._same_kind(other, src, dst)
        assert isinstance(other, _TopKState)
        table, values = other._table, other._values  # noqa: SLF001 (a state of this class)
        group, index = table.rows(src)
        if not len(index):
            return
        ids = self._intern(values)  # other's value id -> this state's
        self._table.add(dst[group], ids[table.key[index]], table.count[index])

    def result(self, slots: IntArray) -> Array:
        slots = _slots(slots)
        group, index = self._table.rows(slots)
        values, rank = self._ranked()
        ids, counts = self._table.key[index], self._table.count[index]
        order = np.lexsort((rank[ids], -counts, group))  # slot, count desc, value asc
        lengths = np.bincount(group, minlength=len(slots))
        start = np.cumsum(lengths) - lengths
        order = order[np.arange(len(order)) - start[group[order]] < self._k]
        pairs = list(zip(values[ids[order]].tolist(), counts[order].tolist(), strict=True))
        kept = np.minimum(lengths, self._k)
        ends = np.cumsum(kept).tolist()
        bounds = zip((np.asarray(ends) - kept).tolist(), ends, strict=True)
        return np.fromiter((pairs[b:e] for b, e in bounds), dtype=object, count=len(slots))

    def reset(self, slots: IntArray) -> None:
        self._table.reset(_slots(slots))
        if len(self._values) > 2 * len(self._table) + 1024:
            self._prune()

    def _prune(self) -> None:
        """Forget the values no slot counts any more, so the dictionary cannot grow forever."""
        self._table.compact()
        live, inverse = np.unique(self._table.key, return_inverse=True)
        self._table.key = inverse.reshape(-1).astype(np.int64)  # same order: ids stay sorted
        self._values = [self._values[i] for i in live.tolist()]
        self._ids = {v: i for i, v in enumerate(self._values)}
        self._sorted = None

    def snapshot(self) -> dict[str, Any]:
        snap = {"kind": "top_k", "weighted": self._weighted, "values": list(self._values)}
        return {**snap, **self._table.snapshot()}

    def restore(self, snap: dict[str, Any]) -> None:
        _check(snap, "top_k", weighted=self._weighted)
        values = list(snap.get("values") or [])
        ids = {v: i for i, v in enumerate(values)}
        if len(ids) != len(values):
            msg = "top_k snapshot: the value dictionary has duplicates"
            raise StateError(msg)
        self._table.restore(snap)
        self._ids, self._values, self._sorted = ids, values, None


class _DistinctState(AggState):
    def __init__(self, what: str, precision: int) -> None:
        self._what, self._p = what, precision
        self._regs: NDArray[np.uint8] = np.zeros((0, 1 << precision), dtype=np.uint8)

    def _ensure(self, slots: IntArray) -> None:
        if len(slots) and (top := int(slots.max())) >= len(self._regs):
            self._regs = _grow(self._regs, top, 0)

    def update(self, slots: IntArray, values: Array | None, weights: Array | None = None) -> None:
        slots = _slots(slots)
        hashes, valid = hash64(_column(values, len(slots), self._what))
        slots = slots[valid]
        if len(slots):
            self._ensure(slots)
            hll_update(self._regs, slots, *hll_ranks(hashes, self._p))

    def merge(self, dst: IntArray, src: IntArray) -> None:
        dst, src = _pair(dst, src)
        if not len(src):
            return
        self._ensure(np.concatenate([dst, src]))
        order = np.argsort(dst)
        ordered = dst[order]
        first = np.ones(len(ordered), dtype=np.bool_)
        first[1:] = ordered[1:] != ordered[:-1]
        starts = np.flatnonzero(first)
        part = np.maximum.reduceat(self._regs[src[order]], starts, axis=0)  # whole rows
        uniq = ordered[starts]
        self._regs[uniq] = np.maximum(self._regs[uniq], part)

    def copy_from(self, other: AggState, src: IntArray, dst: IntArray) -> None:
        dst, src = self._same_kind(other, src, dst)
        assert isinstance(other, _DistinctState)
        if other._p != self._p:  # noqa: SLF001 (a state of this class)
            msg = "cannot copy distinct slots between sketches of different precision"
            raise StateError(msg)
        other._ensure(src)  # noqa: SLF001
        self._ensure(dst)
        self._regs[dst] = other._regs[src]  # noqa: SLF001

    def result(self, slots: IntArray) -> Array:
        slots = _slots(slots)
        self._ensure(slots)
        return hll_estimate(self._regs[slots])

    def reset(self, slots: IntArray) -> None:
        slots = _slots(slots)
        self._regs[slots[slots < len(self._regs)]] = 0

    def snapshot(self) -> dict[str, Any]:
        return {"kind": "distinct", "precision": self._p, "registers": self._regs.copy()}

    def restore(self, snap: dict[str, Any]) -> None:
        _check(snap, "distinct", precision=self._p)
        regs = _array(snap, "registers", np.uint8, ndim=2)
        if regs.shape[1] != 1 << self._p:
            msg = f"distinct snapshot has {regs.shape[1]} registers per slot, not {1 << self._p}"
            raise StateError(msg)
        self._regs = np.ascontiguousarray(regs)
