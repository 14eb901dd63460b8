"""The :class:`Detector` protocol and the vectorized helpers every detector shares.

A detector scores rows of many keyed series at once. The step that runs it
(:class:`~tidal.ml.detect.step.DetectStep`) owns the key index and hands the detector the
rows of a batch with dense key ids; the detector scores each row against the state learned
from that key's rows *before* it (test-then-train), then learns from the rows. Scores are a
deviation ``d >= 0`` in the detector's own "sigmas" (how far outside the expected range the
value is); :func:`to_score` maps it to ``[0, 1]``.

Rows are processed in per-key order without a Python loop per row: :func:`layout` groups the
rows by key (a stable sort), and detectors run cumulative sums, running minima and gathers
over the grouped rows, with the state carried in from the previous batch. The arithmetic per
row depends only on the key's sequence of values, never on where the batch boundaries fall
(the conformance suite in ``tests/conformance/test_detectors.py`` checks this for every
detector).

Example:
    >>> lay = layout(np.array([3, 1, 3, 3]))
    >>> lay.order.tolist(), lay.ukeys.tolist(), lay.counts.tolist(), lay.rank.tolist()
    ([1, 0, 2, 3], [1, 3], [1, 3], [0, 0, 1, 2])
    >>> [round(float(s), 4) for s in to_score(np.array([0.0, 1.0, 4.0]))]
    [0.0, 0.6827, 0.9999]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tidal.core.batch import Array
from tidal.errors import StateError

__all__ = [
    "Detector",
    "Layout",
    "Scored",
    "check_params",
    "grow",
    "layout",
    "seg_cumsum",
    "seg_running_min",
    "to_score",
]


@dataclass
class Scored:
    """What a detector says about each row (all arrays of the rows' length).

    Attributes:
        deviation: how far the value is from what was expected, in the detector's robust
            standard deviations (0 during warm-up; never negative).
        low: lower end of the expected range (NaN where the detector has no range).
        high: upper end of the expected range.
        member: for an ensemble, the index of the member that gave the row its score
            (``None`` for a single detector).
    """

    deviation: Array
    low: Array
    high: Array
    member: Array | None = None


@runtime_checkable
class Detector(Protocol):
    """A keyed, causal, vectorized anomaly detector.

    ``score`` gets the values of a batch's rows (``x``: shape ``(n, d)``, finite for
    univariate detectors; a multivariate one may see NaN) and each row's dense key id, in
    arrival order. It returns a :class:`Scored` for every row, computed only from the rows
    of the same key before it, and then learns from the rows. It must not modify ``x`` or
    ``keys``. ``snapshot`` returns the state as numeric numpy arrays and JSON values (no
    pickle); ``restore`` loads it into a detector built with the same parameters. ``range``
    is the deviation at which a value leaves the expected range (``low``/``high``).

    Example:
        >>> from tidal.ml.detect import MedianMAD
        >>> isinstance(MedianMAD(), Detector)
        True
    """

    kind: str
    multivariate: bool
    range: float

    def score(self, x: Array, keys: Array) -> Scored:
        """Score every row against its key's past, then learn from the rows."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The state: numeric arrays and JSON values."""
        ...

    def restore(self, snap: dict[str, Any]) -> None:
        """Load a :meth:`snapshot` (same parameters)."""
        ...

    def params(self) -> dict[str, Any]:
        """The parameters (JSON values), stored with snapshots and checked on restore."""
        ...


@dataclass
class Layout:
    """Rows grouped by key: ``x[order]`` lists each key's rows together, in arrival order.

    Attributes:
        order: row indices sorted by key (stable, so arrival order within a key).
        ukeys: the distinct key ids, ascending.
        starts: where each key's run begins in the sorted order.
        counts: rows per key.
        seg: for each sorted row, the index of its key in ``ukeys``.
        rank: for each sorted row, how many earlier rows of the batch have its key.
    """

    order: Array
    ukeys: Array
    starts: Array
    counts: Array
    seg: Array
    rank: Array

    @property
    def keys(self) -> Array:
        """The key id of each sorted row."""
        return self.ukeys[self.seg]


def layout(keys: Array) -> Layout:
    """Group rows by key id (see :class:`Layout`)."""
    n = len(keys)
    if n and keys[0] == keys[-1] and (n < 2 or bool((keys == keys[0]).all())):
        order = np.arange(n)
        z = np.zeros(1, dtype=np.int64)
        return Layout(
            order, keys[:1].astype(np.int64), z, np.array([n]), np.zeros(n, np.int64), order
        )
    order = _stable_order(keys)
    ks = keys[order]
    head = np.ones(n, dtype=bool)
    head[1:] = ks[1:] != ks[:-1]
    starts = np.flatnonzero(head)
    counts = np.diff(np.append(starts, n))
    seg = np.cumsum(head) - 1
    rank = np.arange(n) - starts[seg]
    return Layout(order, ks[starts].astype(np.int64), starts, counts, seg, rank)


def _stable_order(keys: Array) -> Array:
    """``np.argsort(keys, kind="stable")``, by radix sort for ids below ``2**32``.

    numpy radix-sorts 16-bit integers only (wider ones by timsort); ids below ``2**32`` are
    sorted by their low 16 bits, then stably by their high 16 bits (least significant digit
    first), which yields the one stable order.
    """
    if len(keys) < 256 or keys.dtype.kind not in "iu":
        return np.argsort(keys, kind="stable")
    lo, hi = int(keys.min()), int(keys.max())
    if lo < 0 or hi >= 1 << 32:
        return np.argsort(keys, kind="stable")
    order = np.argsort(keys.astype(np.uint16), kind="stable")  # the low 16 bits
    if hi >= 1 << 16:
        high = (keys[order] >> 16).astype(np.uint16)
        order = order[np.argsort(high, kind="stable")]
    return order


def seg_cumsum(values: Array, lay: Layout) -> Array:
    """Cumulative sums restarting at every key's first sorted row (``values`` sorted)."""
    c = np.cumsum(values, axis=0)
    base = c[lay.starts] - values[lay.starts]
    out: Array = c - base[lay.seg]
    return out


def seg_running_min(values: Array, lay: Layout) -> Array:
    """Running minimum restarting at every key's first sorted row (``values`` sorted)."""
    if len(values) == 0:
        return values.copy()
    lo, hi = float(values.min()), float(values.max())
    span = (hi - lo) * 2.0 + 1.0
    shift = lay.seg.astype(np.float64) * span
    return np.minimum.accumulate(values - shift) + shift


def to_score(deviation: Array) -> Array:
    """Map a deviation ``d`` (in standard deviations) to ``P(|Z| < d)`` for a normal ``Z``.

    ``erf(d / sqrt(2))`` (Abramowitz & Stegun 7.1.26, error below 2e-7): 1 sigma is
    0.68, 3 sigmas 0.997, 4 sigmas 0.99994. NaN stays NaN.
    """
    d = np.abs(np.asarray(deviation, dtype=np.float64)) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * d)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    out: Array = np.where(d > 0, 1.0 - poly * np.exp(-d * d), np.where(d == 0, 0.0, d))
    return np.clip(out, 0.0, 1.0)


def grow(arr: Array, cap: int, fill: float = 0.0) -> Array:
    """``arr`` with its first axis grown to at least ``cap`` (doubling), new rows ``fill``."""
    have = arr.shape[0]
    if cap <= have:
        return arr
    size = max(cap, 2 * have, 16)
    extra = np.full((size - have, *arr.shape[1:]), fill, dtype=arr.dtype)
    return np.concatenate((arr, extra))


def check_params(kind: str, snap: dict[str, Any], params: dict[str, Any]) -> None:
    """Raise :class:`StateError` unless ``snap`` is a ``kind`` snapshot with ``params``."""
    if snap.get("kind") != kind:
        msg = f"not a {kind!r} detector snapshot (kind {snap.get('kind')!r})"
        raise StateError(msg)
    if snap.get("params") != params:
        msg = (
            f"the {kind!r} snapshot was taken with {snap.get('params')}, the detector has "
            f"{params}; restore into a detector with the same parameters"
        )
        raise StateError(msg)


def array_state(det: Any, *names: str) -> dict[str, Any]:
    """A detector's snapshot: its ``kind``, ``params()`` and a copy of each named array.

    Example:
        >>> from tidal.ml.detect import GatedZ
        >>> sorted(array_state(GatedZ(), "n", "mean"))
        ['kind', 'mean', 'n', 'params']
    """
    arrays = {name: np.array(getattr(det, name), copy=True) for name in names}
    return {"kind": det.kind, "params": det.params(), **arrays}


def load_arrays(det: Any, snap: dict[str, Any], **layout: tuple[Any, tuple[int, ...]]) -> None:
    """Check ``snap`` is ``det``'s kind with its parameters, then load each named array.

    ``layout`` maps an attribute to ``(dtype, shape of one key's entry)``; the first axis
    (keys) is free. Raises :class:`~tidal.errors.StateError` on a mismatch.
    """
    check_params(det.kind, snap, det.params())
    for name, (dtype, tail) in layout.items():
        setattr(det, name, np.asarray(snap[name], dtype=dtype).reshape(-1, *tail).copy())

