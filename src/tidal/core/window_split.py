"""Re-splitting the state of the keyed window operators by key, for another worker count.

``tidal run --workers M`` over checkpoints written by ``N`` workers (decision 0052) gives
each new worker the state of the keys it now owns. The window operators
(:class:`~tidal.core.window_op.WindowAggregate`, :class:`~tidal.core.window_op.SessionAggregate`)
do it with :func:`split`: every old snapshot is restored into a blank operator, its live
keys are routed (``route(old index, key values) -> new index per key``), and each new
operator *takes* its keys: their ids, their open windows (or sessions) and the
accumulators of those windows, copied slot by slot with
:meth:`~tidal.core.aggstate.AggState.copy_from`. Slots and key ids are renumbered densely.

Old workers may have had different watermarks. A tumbling/sliding window that one old
worker already fired (its keys are then only re-emitted when a late record changes them)
and another had not is kept *fired* in the merged operator, with the keys that had not
fired marked *dirty*: they fire once, when the merged watermark passes the window's end,
and the keys that fired before fire again only if they change. Sessions carry their own
fired flags. The merged operator's watermark is the lowest of the old ones.

This module works on the operators by duck typing (the window module imports it, not
the other way round).

Example:
    >>> import numpy as np
    >>> from tidal.core.aggregations import count
    >>> from tidal.core.batch import Batch
    >>> from tidal.core.window_op import WindowAggregate
    >>> from tidal.core.windows import tumbling
    >>> op = WindowAggregate("w", "k", tumbling("1s"), {"n": count()})
    >>> _ = op.process(Batch({"k": [1, 2, 2, 3]}, time=[5, 6, 7, 8], wm=[0, 0, 0, 0]), 0)
    >>> parts = op.split_state([op.snapshot()], lambda i, keys: keys % 2, 2)
    >>> for part in parts:
    ...     new = op.blank()
    ...     new.restore(part)
    ...     print([row["n"] for row in new.on_watermark(1000)[0][1].to_records()])
    [2]
    [1, 1]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.core.watermark import MIN_TIME
from tidal.errors import StateError

__all__ = ["Route", "split", "take_sessions", "take_windows"]

_I64 = np.int64

Route = Callable[[int, Array], Array]
"""``route(old index, key values) -> new index per key`` (int64, in ``0..count-1``)."""


def split(
    op: Any,
    snapshots: Sequence[Mapping[str, Any]],
    route: Route,
    count: int,
    take: Callable[[Any, Any, Array], None],
) -> list[dict[str, Any]]:
    """The state of ``count`` new operators from the snapshots of the old ones.

    Args:
        op: any operator of the step (only its ``blank()`` is used).
        snapshots: one snapshot per old worker (a blank operator's for a worker that had
            none).
        route: where each key of old snapshot ``i`` goes.
        count: how many new operators.
        take: moves the given key ids of an old operator into a new one.

    Raises:
        StateError: if ``route`` answers outside ``0..count-1``, or a key is in two old
            snapshots.
    """
    outs = [op.blank() for _ in range(count)]
    wms = []
    for i, snap in enumerate(snapshots):
        old = op.blank()
        old.restore(dict(snap))
        wms.append(int(old.wm))
        ids = old.keys.live_ids()
        if not len(ids):
            continue
        dest = np.asarray(route(i, old.keys.values(ids)), dtype=_I64)
        if dest.shape != ids.shape or (len(dest) and (dest.min() < 0 or dest.max() >= count)):
            msg = f"step {op.name!r}: routing keys to {count} workers gave {dest[:5]}..."
            raise StateError(msg)
        for j in range(count):
            mine = ids[dest == j]
            if len(mine):
                take(outs[j], old, mine)
    wm = min(wms) if wms else MIN_TIME
    for out in outs:
        out.wm = wm
    return [out.snapshot() for out in outs]


def _new_ids(new: Any, old: Any, ids: Array) -> tuple[Array, Array]:
    """Add the keys of ``old``'s ``ids`` to ``new``; their new ids and an old->new map."""
    values = old.keys.values(ids)
    before = len(new.keys)
    nid = new.keys.ids(values)
    if len(new.keys) != before + len(ids):
        msg = (
            f"step {new.name!r}: a key is in the state of two old workers; the input was not "
            "partitioned by the key this step groups by, so its state cannot be re-split"
        )
        raise StateError(msg)
    remap = np.full(old.keys.capacity, -1, dtype=_I64)
    remap[ids] = nid
    return nid, remap


def _copy_slots(new: Any, old: Any, src: Array) -> Array:
    """Copy the accumulators of ``old``'s slots ``src`` into fresh slots of ``new``."""
    dst: Array = new.pool.alloc(len(src))
    for name, state in new.states.items():
        state.copy_from(old.states[name], src, dst)
    return dst


def _grown(table: Array | None, cap: int) -> Array:
    if table is None:
        return np.full(cap, -1, dtype=_I64)
    if len(table) < cap:
        return np.concatenate((table, np.full(cap - len(table), -1, dtype=_I64)))
    return table


def take_windows(new: Any, old: Any, ids: Array) -> None:
    """Move keys ``ids`` of tumbling/sliding operator ``old`` into ``new``."""
    _, remap = _new_ids(new, old, ids)
    cap = new.keys.capacity
    if len(new.refs) < cap:
        new.refs = np.concatenate((new.refs, np.zeros(cap - len(new.refs), dtype=_I64)))
    empty = np.empty(0, dtype=_I64)
    for start in sorted(old.tables):
        table_old = old.tables[start]
        here = ids[ids < len(table_old)]
        src = table_old[here]
        has = src >= 0
        keys_old, src = here[has], src[has]
        if not len(src):
            continue
        moved = remap[keys_old]
        table = _grown(new.tables.get(start), cap)
        earlier = np.flatnonzero(table >= 0)  # taken from other old workers before
        table[moved] = _copy_slots(new, old, src)
        new.tables[start] = table
        new.refs[moved] += 1
        if start in old.fired:
            dirty_old = old.dirty.get(start, empty)
            dirty = remap[dirty_old[remap[dirty_old] >= 0]] if len(dirty_old) else empty
            if start not in new.fired:  # the keys taken before had not fired: they will
                new.fired.add(start)
                dirty = np.union1d(dirty, earlier)
            new.dirty[start] = np.union1d(new.dirty.get(start, empty), dirty)
        elif start in new.fired:  # these keys have not fired yet: they will, once
            new.dirty[start] = np.union1d(new.dirty.get(start, empty), moved)


def take_sessions(new: Any, old: Any, ids: Array) -> None:
    """Move keys ``ids`` of session operator ``old`` into ``new``."""
    _, remap = _new_ids(new, old, ids)
    sel = remap[old.s_key] >= 0
    if not sel.any():
        return
    dst = _copy_slots(new, old, old.s_slot[sel])
    new.s_key = np.concatenate((new.s_key, remap[old.s_key[sel]]))
    new.s_start = np.concatenate((new.s_start, old.s_start[sel]))
    new.s_end = np.concatenate((new.s_end, old.s_end[sel]))
    new.s_slot = np.concatenate((new.s_slot, dst))
    new.s_fired = np.concatenate((new.s_fired, old.s_fired[sel]))
    new.s_dirty = np.concatenate((new.s_dirty, old.s_dirty[sel]))
