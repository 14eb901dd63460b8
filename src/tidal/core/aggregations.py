"""Vectorized, mergeable aggregations over integer *slots*.

A window operator gives each live (key, window) pair a small dense non-negative int64
*slot* (recycled once the window fires) and hands whole columns to an :class:`AggState`:
``update`` adds rows to slots, ``merge`` folds slots into other slots, ``result`` reads
slots out and ``reset`` clears them for reuse. No path loops over rows or slots in Python.

An :class:`Aggregation` is the immutable spec a user writes (``mean("value")``);
``new_state()`` makes its state. Dense states keep arrays indexed by slot and grow them
by doubling; the sketch states (in :mod:`tidal.core.sketches`) keep sparse
``(slot, key, count)`` tables or HyperLogLog registers.

=====================  =======  ==========================================================
constructor            result   state (arrays indexed by slot unless noted)
=====================  =======  ==========================================================
``count()``            int64    ``n`` int64
``sum(c)``             float64  ``s`` float64 (empty slot: 0.0)
``mean(c)``            float64  ``n`` int64, ``s`` float64
``min(c)``/``max(c)``  float64  ``v`` float64 (NaN when empty; ``np.fmin``/``fmax``)
``var(c)``/``std(c)``  float64  ``n`` int64, ``mean``, ``m2`` float64 (Chan et al.)
``quantile(c, q)``     float64  sparse ``(slot, bucket code, count)``, DDSketch buckets
``top_k(c, k)``        object   sparse ``(slot, value id, count)`` + value dictionary
``distinct(c)``        int64    HyperLogLog registers, uint8 ``capacity x 2**precision``
=====================  =======  ==========================================================

A snapshot is a flat dict: ``kind`` plus the parameters that shape the state
(``relative_accuracy``, ``weighted``, ``precision``) as JSON values, the arrays above as
numeric numpy arrays (``slot``/``key``/``count`` for sparse tables, ``registers`` for
HyperLogLog) and, for ``top_k``, the value dictionary as the JSON list ``values`` (a
value's id is its index). No object arrays, so checkpoints need no pickle.

Empty slots give NaN, except ``count`` and ``distinct`` (0), ``sum`` (0.0) and ``top_k``
(``[]``). Numeric inputs may be any int, float or bool dtype and are cast to float64; NaN
(and None in object columns) is skipped by every aggregation except ``count``, which
counts rows.

Example:
    >>> state = mean("value").new_state()
    >>> state.update(np.array([0, 1, 0]), np.array([1.0, 5.0, 3.0]))
    >>> state.result(np.array([0, 1, 2])).tolist()
    [2.0, 5.0, nan]
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from tidal.core.aggstate import (
    Aggregation,
    AggState,
    Array,
    IntArray,
    _array,
    _check,
    _floats,
    _grow,
    _ids,
    _pair,
    _slots,
)
from tidal.core.sketches import _DistinctState, _QuantileState, _TopKState
from tidal.errors import ConfigError, StateError

__all__ = [
    "AggState",
    "Aggregation",
    "count",
    "distinct",
    "max",
    "mean",
    "min",
    "quantile",
    "std",
    "sum",
    "top_k",
    "var",
]

# -- dense states ---------------------------------------------------------------------


class _Dense(AggState):
    """Per-slot arrays; update and merge both reduce rows of fields grouped by slot."""

    kind: ClassVar[str]
    fields: ClassVar[dict[str, tuple[type, float]]]  # name -> (dtype, empty value)

    def __init__(self, what: str) -> None:
        self._what = what
        self._arrays: dict[str, Array] = {f: np.empty(0, t) for f, (t, _) in self.fields.items()}

    @property
    def _cap(self) -> int:
        return len(next(iter(self._arrays.values())))

    def _ensure(self, slots: IntArray) -> None:
        if len(slots) and (top := int(slots.max())) >= self._cap:
            self._arrays = {f: _grow(self._arrays[f], top, e) for f, (_, e) in self.fields.items()}

    def _rows(self, values: Array | None, n: int) -> tuple[dict[str, Array], Array | None]:
        """Per-row fields of an update, and the mask of rows kept (None: all)."""
        v = _floats(values, n, self._what)
        keep = ~np.isnan(v)
        v = v[keep]
        ones = np.ones(len(v), dtype=np.int64)
        rows = {"n": ones, "s": v, "v": v, "mean": v, "m2": np.zeros(len(v))}
        return {f: rows[f] for f in self.fields}, keep

    def _reduce(self, keys: IntArray, rows: dict[str, Array]) -> tuple[IntArray, dict[str, Array]]:
        """Reduce rows to one partial per key (sums with ``np.bincount``)."""
        uniq, ids = _ids(keys)
        sums = {f: np.bincount(ids, weights=r, minlength=len(uniq)) for f, r in rows.items()}
        return uniq, {f: sums[f].astype(self.fields[f][0], copy=False) for f in rows}

    def _combine(self, uniq: IntArray, part: dict[str, Array]) -> None:
        for f, p in part.items():
            self._arrays[f][uniq] += p  # uniq has no repeats

    def _fold(self, keys: IntArray, rows: dict[str, Array]) -> None:
        if not len(keys):
            return
        self._ensure(keys)
        self._combine(*self._reduce(keys, rows))

    def update(self, slots: IntArray, values: Array | None, weights: Array | None = None) -> None:
        slots = _slots(slots)
        rows, keep = self._rows(values, len(slots))
        self._fold(slots if keep is None else slots[keep], rows)

    def merge(self, dst: IntArray, src: IntArray) -> None:
        dst, src = _pair(dst, src)
        self._ensure(src)
        self._fold(dst, {f: a[src] for f, a in self._arrays.items()})

    def copy_from(self, other: AggState, src: IntArray, dst: IntArray) -> None:
        dst, src = self._same_kind(other, src, dst)
        assert isinstance(other, _Dense)
        other._ensure(src)  # noqa: SLF001 (a state of this class)
        self._ensure(dst)
        for f, a in other._arrays.items():  # noqa: SLF001
            self._arrays[f][dst] = a[src]

    def result(self, slots: IntArray) -> Array:
        slots = _slots(slots)
        self._ensure(slots)
        with np.errstate(divide="ignore", invalid="ignore"):
            return self._value({f: a[slots] for f, a in self._arrays.items()})

    @abstractmethod
    def _value(self, at: dict[str, Array]) -> Array: ...

    def reset(self, slots: IntArray) -> None:
        slots = _slots(slots)
        slots = slots[slots < self._cap]
        for f, (_, empty) in self.fields.items():
            self._arrays[f][slots] = empty

    def snapshot(self) -> dict[str, Any]:
        return {"kind": self.kind, **{f: a.copy() for f, a in self._arrays.items()}}

    def restore(self, snap: dict[str, Any]) -> None:
        _check(snap, self.kind)
        arrays = {f: _array(snap, f, t) for f, (t, _) in self.fields.items()}
        if len({len(a) for a in arrays.values()}) != 1:
            msg = f"{self.kind} snapshot arrays differ in length"
            raise StateError(msg)
        self._arrays = arrays


class _CountState(_Dense):
    kind, fields = "count", {"n": (np.int64, 0)}

    def _rows(self, values: Array | None, n: int) -> tuple[dict[str, Array], Array | None]:
        return {"n": np.ones(n, dtype=np.int64)}, None

    def _value(self, at: dict[str, Array]) -> Array:
        return at["n"]


class _SumState(_Dense):
    kind, fields = "sum", {"s": (np.float64, 0.0)}

    def _value(self, at: dict[str, Array]) -> Array:
        return at["s"]


class _MeanState(_Dense):
    kind, fields = "mean", {"n": (np.int64, 0), "s": (np.float64, 0.0)}

    def _value(self, at: dict[str, Array]) -> Array:
        return np.where(at["n"] > 0, at["s"] / at["n"], np.nan)


class _MinState(_Dense):
    """Empty slots hold NaN, which ``np.fmin`` ignores, so no count is needed."""

    kind, fields = "min", {"v": (np.float64, np.nan)}
    op: ClassVar[np.ufunc] = np.fmin

    def _fold(self, keys: IntArray, rows: dict[str, Array]) -> None:
        # Unbuffered ``ufunc.at``: exact, order-free and, on numpy >= 1.25, some 20x faster
        # than a sort + ``reduceat`` (measured: 0.25 ms against 5 ms for 100k rows).
        if len(keys):
            self._ensure(keys)
            self.op.at(self._arrays["v"], keys, rows["v"])

    def _value(self, at: dict[str, Array]) -> Array:
        return at["v"]


class _MaxState(_MinState):
    kind, op = "max", np.fmax


class _VarState(_Dense):
    """Count, mean and M2 per slot; Chan et al.'s parallel combine, two-pass in a batch."""

    kind = "var"
    fields = {"n": (np.int64, 0), "mean": (np.float64, 0.0), "m2": (np.float64, 0.0)}

    def __init__(self, what: str, ddof: int, root: bool) -> None:
        super().__init__(what)
        self._ddof, self._root = ddof, root

    def _reduce(self, keys: IntArray, rows: dict[str, Array]) -> tuple[IntArray, dict[str, Array]]:
        # Many partials (n_i, mean_i, m2_i) of one slot: the grand mean first, then
        # M2 = sum(m2_i + n_i * (mean_i - mean)**2). For single rows it is the two-pass
        # formula; deviations from the final mean keep it stable.
        uniq, ids = _ids(keys)
        n_rows, mean_rows = rows["n"], rows["mean"]
        n = np.bincount(ids, weights=n_rows, minlength=len(uniq))
        total = np.bincount(ids, weights=n_rows * mean_rows, minlength=len(uniq))
        mean = np.divide(total, n, out=np.zeros(len(n)), where=n > 0)
        dev = mean_rows - mean[ids]
        m2 = np.bincount(ids, weights=rows["m2"] + n_rows * dev * dev, minlength=len(uniq))
        return uniq, {"n": n.astype(np.int64), "mean": mean, "m2": m2}

    def _combine(self, uniq: IntArray, part: dict[str, Array]) -> None:
        a = self._arrays
        na, ma, qa = a["n"][uniq], a["mean"][uniq], a["m2"][uniq]
        n = na + part["n"]
        frac = np.divide(part["n"], n, out=np.zeros(len(n)), where=n > 0)
        delta = part["mean"] - ma
        a["n"][uniq] = n
        a["mean"][uniq] = ma + delta * frac
        a["m2"][uniq] = qa + part["m2"] + delta * delta * na * frac

    def _value(self, at: dict[str, Array]) -> Array:
        n = at["n"]
        v = np.where(n > self._ddof, at["m2"] / (n - self._ddof), np.nan)
        return np.sqrt(v) if self._root else v


# -- specs and constructors -----------------------------------------------------------


def _need_column(column: str, name: str) -> None:
    if not isinstance(column, str) or not column:
        msg = f"{name}() needs the name of an input column, got {column!r}"
        raise ConfigError(msg)


@dataclass(frozen=True, repr=False)
class _Column(Aggregation):
    """A spec over one column whose state takes no parameters."""

    column: str
    _states: ClassVar[dict[str, type[_Dense]]] = {
        "sum": _SumState,
        "mean": _MeanState,
        "min": _MinState,
        "max": _MaxState,
    }

    def __post_init__(self) -> None:
        _need_column(self.column, self._name)

    def _state(self) -> AggState:
        return self._states[self._name](self.describe())


@dataclass(frozen=True, repr=False)
class _Count(Aggregation):
    column: None = None
    _name = "count"

    def _state(self) -> AggState:
        return _CountState(self.describe())


class _Sum(_Column):
    _name = "sum"


class _Mean(_Column):
    _name = "mean"


class _Min(_Column):
    _name = "min"


class _Max(_Column):
    _name = "max"


@dataclass(frozen=True, repr=False)
class _Var(Aggregation):
    column: str
    ddof: int = 1
    _name = "var"

    def __post_init__(self) -> None:
        _need_column(self.column, self._name)
        if not isinstance(self.ddof, int) or self.ddof < 0:
            msg = f"{self._name}() needs ddof >= 0 (an int), got {self.ddof!r}"
            raise ConfigError(msg)

    def _state(self) -> AggState:
        return _VarState(self.describe(), self.ddof, root=self._name == "std")


class _Std(_Var):
    _name = "std"


@dataclass(frozen=True, repr=False)
class _Quantile(Aggregation):
    column: str
    q: float
    relative_accuracy: float = 0.01
    _name = "quantile"

    def __post_init__(self) -> None:
        _need_column(self.column, self._name)
        if not 0.0 <= self.q <= 1.0:
            msg = f"quantile() needs 0 <= q <= 1, got q={self.q!r}"
            raise ConfigError(msg)
        if not 1e-9 <= self.relative_accuracy < 1.0:
            msg = f"quantile() needs 1e-9 <= relative_accuracy < 1, got {self.relative_accuracy!r}"
            raise ConfigError(msg)

    def _state(self) -> AggState:
        return _QuantileState(self.describe(), float(self.q), float(self.relative_accuracy))


@dataclass(frozen=True, repr=False)
class _TopK(Aggregation):
    column: str
    k: int
    weight: str | None = None
    _name = "top_k"

    def __post_init__(self) -> None:
        _need_column(self.column, self._name)
        if not isinstance(self.k, int) or self.k < 1:
            msg = f"top_k() needs k >= 1 (an int), got k={self.k!r}"
            raise ConfigError(msg)
        if self.weight is not None:
            _need_column(self.weight, self._name)

    def _state(self) -> AggState:
        return _TopKState(self.describe(), self.k, weighted=self.weight is not None)


@dataclass(frozen=True, repr=False)
class _Distinct(Aggregation):
    column: str
    precision: int = 12
    _name = "distinct"

    def __post_init__(self) -> None:
        _need_column(self.column, self._name)
        if not isinstance(self.precision, int) or not 4 <= self.precision <= 18:
            msg = f"distinct() needs an int precision in [4, 18], got {self.precision!r}"
            raise ConfigError(msg)

    def _state(self) -> AggState:
        return _DistinctState(self.describe(), self.precision)


def count() -> Aggregation:
    """Rows per slot (NaN values count too); int64, 0 for an empty slot.

    Example:
        >>> s = count().new_state()
        >>> s.update(np.array([0, 0, 2]), None)
        >>> s.result(np.array([0, 1, 2])).tolist()
        [2, 0, 1]
    """
    return _Count()


def sum(column: str) -> Aggregation:
    """Sum of ``column`` per slot; float64, 0.0 for an empty slot.

    Example:
        >>> s = sum("x").new_state()
        >>> s.update(np.array([0, 0]), np.array([1, 2]))
        >>> s.result(np.array([0, 1])).tolist()
        [3.0, 0.0]
    """
    return _Sum(column)


def mean(column: str) -> Aggregation:
    """Mean of ``column`` per slot; float64, NaN for an empty slot.

    Example:
        >>> s = mean("x").new_state()
        >>> s.update(np.array([0, 0, 0]), np.array([1.0, np.nan, 2.0]))
        >>> s.result(np.array([0])).tolist()
        [1.5]
    """
    return _Mean(column)


def min(column: str) -> Aggregation:
    """Smallest value of ``column`` per slot; float64, NaN for an empty slot.

    Example:
        >>> s = min("x").new_state()
        >>> s.update(np.array([0, 0, 1]), np.array([3, -1, 7]))
        >>> s.result(np.array([0, 1, 2])).tolist()
        [-1.0, 7.0, nan]
    """
    return _Min(column)


def max(column: str) -> Aggregation:
    """Largest value of ``column`` per slot; float64, NaN for an empty slot.

    Example:
        >>> s = max("x").new_state()
        >>> s.update(np.array([0, 0]), np.array([3.5, -1.0]))
        >>> s.result(np.array([0])).tolist()
        [3.5]
    """
    return _Max(column)


def var(column: str, ddof: int = 1) -> Aggregation:
    """Variance of ``column`` per slot: ``M2 / (n - ddof)``; float64, NaN when ``n <= ddof``.

    Numerically stable: each update is reduced two-pass per slot and partials are combined
    with Chan et al.'s parallel formula (no sum of squares).

    Example:
        >>> s = var("x").new_state()
        >>> s.update(np.array([0, 0, 0, 1]), np.array([1e9 + 1, 1e9 + 2, 1e9 + 3, 5.0]))
        >>> s.result(np.array([0, 1])).tolist()
        [1.0, nan]
    """
    return _Var(column, ddof)


def std(column: str, ddof: int = 1) -> Aggregation:
    """Standard deviation of ``column`` per slot, the square root of :func:`var`.

    Example:
        >>> s = std("x", ddof=0).new_state()
        >>> s.update(np.array([0, 0]), np.array([1.0, 3.0]))
        >>> s.result(np.array([0])).tolist()
        [1.0]
    """
    return _Std(column, ddof)


def quantile(column: str, q: float, relative_accuracy: float = 0.01) -> Aggregation:
    """The ``q``-quantile of ``column`` per slot, from a DDSketch-style sketch; float64.

    The quantile is the *lower* one: with ``n`` values sorted ascending, the value of
    rank ``max(1, ceil(q * n))`` (``np.quantile(..., method="inverted_cdf")``). The
    sketch counts values exactly per log bucket (:class:`~tidal.core.sketches.LogBuckets`)
    and returns the representative of that value's bucket, within ``relative_accuracy``
    of it. Since counts are exact, the result is bit-identical however the rows were split
    into updates and merges. Positive, negative and zero values are all handled; NaN is
    skipped; an empty slot gives NaN.

    Example:
        >>> s = quantile("x", 0.5).new_state()
        >>> s.update(np.zeros(5, dtype=np.int64), np.array([10.0, 20, 30, 40, 50]))
        >>> bool(abs(s.result(np.array([0]))[0] / 30 - 1) <= 0.01)
        True
    """
    return _Quantile(column, q, relative_accuracy)


def top_k(column: str, k: int, weight: str | None = None) -> Aggregation:
    """The ``k`` most frequent values of ``column`` per slot, counted exactly.

    Each result is a list of ``(value, count)`` tuples, most frequent first, ties broken
    by value ascending; with ``weight`` (a column name) the count is the float sum of the
    weights instead. Values may be numbers, bools or strings; None and NaN are skipped.
    The result dtype is ``object``.

    Example:
        >>> s = top_k("word", 2).new_state()
        >>> words = np.array(["b", "a", "c", "a", "b", "z"], dtype=object)
        >>> s.update(np.array([0, 0, 0, 0, 0, 1]), words)
        >>> s.result(np.array([0, 1, 2])).tolist()
        [[('a', 2), ('b', 2)], [('z', 1)], []]
    """
    return _TopK(column, k, weight)


def distinct(column: str, precision: int = 12) -> Aggregation:
    """Approximate distinct count of ``column`` per slot with HyperLogLog; int64.

    ``2**precision`` uint8 registers per slot; standard error about
    ``1.04 / sqrt(2**precision)`` (1.6% at 12), with linear counting for small counts.
    Numbers are compared as float64 (``1 == 1.0``); see
    :func:`~tidal.core.sketches.hash64`. Deterministic; None and NaN are skipped.

    Example:
        >>> s = distinct("user").new_state()
        >>> s.update(np.zeros(6, dtype=np.int64), np.array([1, 2, 2, 3, 1, 3]))
        >>> s.result(np.array([0, 1])).tolist()
        [3, 0]
    """
    return _Distinct(column, precision)
