"""The contract of a window aggregation, shared by the dense and the sketch aggregations.

:class:`AggState` is the mutable state of one aggregation over integer *slots*;
:class:`Aggregation` is the immutable spec a user writes, which makes states. The helpers
below (slot and column checks, array growth, snapshot checks) serve every state:
:mod:`tidal.core.aggregations` (the dense states and the constructors) and
:mod:`tidal.core.sketches` (quantile, top-k and distinct) both build on this module, so
neither has to import the other's internals.

Example:
    >>> from tidal.core.aggregations import count
    >>> s = count().new_state()
    >>> isinstance(s, AggState)
    True
"""

from __future__ import annotations

import builtins
import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar, cast

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from tidal.errors import PipelineError, StateError

__all__ = ["AggState", "Aggregation", "Array", "FloatArray", "IntArray"]

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
Array = NDArray[Any]


class AggState(ABC):
    """The mutable state of one aggregation for many slots, updated a column at a time.

    Slots are non-negative ints; a slot never touched (or :meth:`reset`) is empty.
    Capacity grows by itself (amortized doubling) to the largest slot seen.

    Example:
        >>> from tidal.core.aggregations import count
        >>> s = count().new_state()
        >>> s.update(np.array([0, 0, 1]), None)
        >>> s.merge(np.array([0]), np.array([1]))
        >>> s.reset(np.array([1]))
        >>> s.result(np.array([0, 1])).tolist()
        [3, 0]
    """

    @abstractmethod
    def update(self, slots: IntArray, values: Array | None, weights: Array | None = None) -> None:
        """Add ``values[i]`` to slot ``slots[i]``; slots may repeat.

        Args:
            slots: int64 slot per row.
            values: the aggregation's input column (``None`` for :func:`count`).
            weights: per-row weights, for aggregations whose spec has ``weight`` set (a
                weighted :func:`top_k`); ignored by the others.
        """

    @abstractmethod
    def merge(self, dst: IntArray, src: IntArray) -> None:
        """Fold the state of slot ``src[i]`` into slot ``dst[i]``.

        ``dst`` may repeat; ``src`` never overlaps ``dst`` and is left unchanged (the
        caller resets it).
        """

    @abstractmethod
    def result(self, slots: IntArray) -> Array:
        """One result per requested slot (see the module table for dtypes)."""

    @abstractmethod
    def reset(self, slots: IntArray) -> None:
        """Empty ``slots`` so they can be reused."""

    def copy_from(self, other: AggState, src: IntArray, dst: IntArray) -> None:
        """Copy slot ``src[i]`` of ``other`` (a state of the same spec) into empty slot ``dst[i]``.

        What moving keyed state between workers needs (re-splitting the checkpoints of
        ``tidal run --workers N`` for another N): the slots of the keys a worker keeps are
        copied from the old workers' states into its new one. The built-in states implement
        it; a custom state that does not is refused there with this error.

        Raises:
            StateError: if this state cannot copy slots, or ``other`` is of another kind.

        Example:
            >>> from tidal.core.aggregations import count
            >>> a, b = count().new_state(), count().new_state()
            >>> a.update(np.array([0, 1, 1]), None)
            >>> b.copy_from(a, np.array([1]), np.array([5]))
            >>> b.result(np.array([5])).tolist()
            [2]
        """
        msg = (
            f"aggregation state {type(self).__name__} cannot copy slots between states, so its "
            "window cannot be re-split across another number of workers; implement "
            "AggState.copy_from, or keep the earlier worker count"
        )
        raise StateError(msg)

    def _same_kind(self, other: AggState, src: Any, dst: Any) -> tuple[IntArray, IntArray]:
        """Checks for :meth:`copy_from`: the same state type, as many ``src`` as ``dst``."""
        if type(other) is not type(self):
            msg = f"cannot copy slots of a {type(other).__name__} into a {type(self).__name__}"
            raise StateError(msg)
        return _pair(dst, src)

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """The state as numeric numpy arrays and JSON values (never object arrays)."""

    @abstractmethod
    def restore(self, snap: dict[str, Any]) -> None:
        """Load a :meth:`snapshot` into a fresh state from the same spec, exactly.

        Raises:
            StateError: if the snapshot is not one of this aggregation.
        """


class Aggregation(ABC):
    """An immutable aggregation spec; make one with :func:`mean`, :func:`top_k` and so on.

    Attributes:
        column: the input column, ``None`` for :func:`count`.
        weight: a column of per-row weights (only a weighted :func:`top_k`), else ``None``;
            the window operator passes it to :meth:`AggState.update` as ``weights``.

    Example:
        >>> from tidal.core.aggregations import var
        >>> spec = var("latency", ddof=0)
        >>> spec.column, spec.describe(), spec
        ('latency', 'var(latency, ddof=0)', var(latency, ddof=0))
    """

    column: str | None
    weight: str | None = None
    _name: ClassVar[str]

    def new_state(self) -> AggState:
        """A fresh, empty state for this aggregation."""
        return self._state()

    @abstractmethod
    def _state(self) -> AggState: ...

    def describe(self) -> str:
        """The spec as a call, e.g. ``"quantile(value, q=0.9)"``."""
        args = [] if self.column is None else [self.column]
        for field in dataclasses.fields(cast(Any, self)):
            value = getattr(self, field.name)
            if field.name != "column" and value != field.default:
                args.append(f"{field.name}={value!r}")
        return f"{self._name}({', '.join(args)})"

    def __repr__(self) -> str:
        return self.describe()


# -- helpers --------------------------------------------------------------------------


def _slots(slots: Any) -> IntArray:
    arr = np.asarray(slots, dtype=np.int64).reshape(-1)
    if len(arr) and arr.min() < 0:
        msg = f"slots must be non-negative ints, got {arr.min()}"
        raise PipelineError(msg)
    return arr


def _pair(dst: Any, src: Any) -> tuple[IntArray, IntArray]:
    dst, src = _slots(dst), _slots(src)
    if len(dst) != len(src):
        msg = f"merge needs as many dst as src slots, got {len(dst)} and {len(src)}"
        raise PipelineError(msg)
    return dst, src


def _column(values: Array | None, n: int, what: str) -> Array:
    if values is None:
        msg = f"{what} needs an input column, got None"
        raise PipelineError(msg)
    arr = np.asarray(values)
    if arr.ndim != 1 or len(arr) != n:
        msg = f"{what} got {arr.shape} values for {n} slots; pass one value per slot"
        raise PipelineError(msg)
    return arr


def _floats(values: Array | None, n: int, what: str) -> FloatArray:
    arr = _column(values, n, what)
    if arr.dtype.kind in "biuf":
        return arr.astype(np.float64, copy=False)
    error: Exception | None = None
    try:  # objects: numbers with None, say
        column = pa.array(arr.astype(object), from_pandas=True)
        if not (pa.types.is_string(column.type) or pa.types.is_binary(column.type)):
            out: FloatArray = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
            return out
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        error = exc
    detail = "strings" if error is None else str(error)
    msg = f"{what} needs numbers, got {arr.dtype} values ({detail}); convert the column first"
    raise PipelineError(msg) from error


def _ids(keys: IntArray) -> tuple[IntArray, IntArray]:
    """Groups of rows by key for ``np.bincount``: the keys, and a group id per row.

    Dense keys (max below 8 rows + 64) are their own ids, with every key up to the max as
    a group (empty ones included); sparse keys go through ``np.unique``.
    """
    top = int(keys.max())
    if top < 8 * len(keys) + 64:
        return np.arange(top + 1, dtype=np.int64), keys
    uniq, inverse = np.unique(keys, return_inverse=True)
    return uniq, inverse.reshape(-1)


def _grow(arr: Array, top: int, fill: Any) -> Array:
    """``arr`` with room for index ``top`` along axis 0 (at least doubled), new rows filled."""
    new = np.full((builtins.max(top + 1, 2 * len(arr), 16), *arr.shape[1:]), fill, arr.dtype)
    new[: len(arr)] = arr
    return new


def _check(snap: dict[str, Any], kind: str, **params: Any) -> None:
    got = {k: snap.get(k) for k in ("kind", *params)}
    want = {"kind": kind, **params}
    if got != want:
        msg = f"snapshot is not a {kind} state with {want}: got {got}"
        raise StateError(msg)


def _array(snap: dict[str, Any], name: str, dtype: Any, ndim: int = 1) -> Array:
    arr = snap.get(name)
    if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != ndim:
        got = getattr(arr, "dtype", type(arr).__name__)
        msg = f"snapshot field {name!r} must be a {ndim}-D {np.dtype(dtype)} array, got {got}"
        raise StateError(msg)
    return arr.copy()
