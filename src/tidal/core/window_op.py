"""Keyed window aggregation operators (tumbling/sliding in one, sessions in another).

State layout (see ``docs/decisions/0003-window-state.md``): every open (key, window) pair
owns a *slot*, a small dense int; each aggregation keeps its accumulators in arrays indexed
by slot. A tumbling/sliding window keeps a table ``key id -> slot`` per open window start;
sessions keep a table of open sessions (key, start, end, slot). Slots are recycled when a
window is purged and key ids are released when a key has no open window, so state grows
with live keys and open windows, never with events.

Lateness is judged per record against the watermark in force when it arrived
(``Batch.wm``), which makes results independent of batching:

* tumbling/sliding: a record is dropped from a window if ``window_end + allowed_lateness
  <= wm``; a record dropped from *any* of its windows goes to the ``late`` output and
  the ``late`` counter, even if newer sliding windows still counted it (Flink side-outputs
  only records dropped from every window; then a record late for its older windows would
  vanish from them silently: see ``docs/decisions/0012-bad-input.md``);
* sessions: a record is late if ``time + allowed_lateness < wm``.

A window fires when the watermark reaches its end. With ``allowed_lateness`` it stays open
that much longer and fires again, with the updated values of the keys that changed, when a
late-but-allowed record updates it; the last pane of each window is the same however the
input was batched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tidal.core.aggregations import Aggregation, AggState
from tidal.core.batch import Array, Batch
from tidal.core.keys import KeyIndex
from tidal.core.operator import Emit, Operator
from tidal.core.operators import key_ids
from tidal.core.watermark import MIN_TIME
from tidal.core.window_split import Route, split, take_sessions, take_windows
from tidal.core.windows import Session, Sliding, Tumbling
from tidal.errors import PipelineError

_I64 = np.int64


class SlotPool:
    """Hands out dense slot ids and takes them back."""

    def __init__(self) -> None:
        self.next = 0
        self.free = np.empty(0, dtype=_I64)

    def alloc(self, n: int) -> Array:
        """``n`` slot ids, reusing freed ones first."""
        take = min(n, len(self.free))
        reused = self.free[len(self.free) - take :]
        self.free = self.free[: len(self.free) - take]
        fresh = np.arange(self.next, self.next + n - take, dtype=_I64)
        self.next += n - take
        return np.concatenate((reused, fresh))

    def release(self, slots: Array) -> None:
        """Return slots for reuse."""
        self.free = np.concatenate((self.free, slots.astype(_I64)))

    def snapshot(self) -> dict[str, Any]:
        """Arrays and ints only."""
        return {"next": self.next, "free": self.free}

    def restore(self, snap: Mapping[str, Any]) -> None:
        """Restore from :meth:`snapshot`."""
        self.next = int(snap["next"])
        self.free = np.asarray(snap["free"], dtype=_I64)


class _KeyedAggregate(Operator):
    """What both window operators share: keys, slots, aggregation states, output rows."""

    outputs = ("main", "late")

    def __init__(
        self,
        name: str,
        key: str,
        aggs: Mapping[str, Aggregation],
        allowed_lateness_ms: int,
    ) -> None:
        super().__init__(name)
        if not aggs:
            msg = f"step {name!r}: a window needs at least one aggregation, e.g. {{'n': count()}}"
            raise PipelineError(msg)
        clash = {key, "window_start", "window_end"} & set(aggs)
        if clash:
            msg = f"step {name!r}: aggregation names {sorted(clash)} clash with output columns"
            raise PipelineError(msg)
        self.key = key
        self.aggs = dict(aggs)
        self.lateness = allowed_lateness_ms
        self.keys = KeyIndex()
        self.pool = SlotPool()
        self.states: dict[str, AggState] = {n: a.new_state() for n, a in self.aggs.items()}
        self.wm = MIN_TIME

    def _check(self, batch: Batch) -> None:
        if batch.time is None or batch.wm is None:
            msg = f"step {self.name!r}: windows need event time; give the source time=..."
            raise PipelineError(msg)
        needed = [c for a in self.aggs.values() for c in (a.column, a.weight) if c is not None]
        missing = [c for c in needed if c not in batch]
        if self.key not in batch or missing:
            msg = (
                f"step {self.name!r}: columns {[self.key, *missing]} are needed, "
                f"the batch has {batch.names}"
            )
            raise PipelineError(msg)

    def _key_ids(self, batch: Batch) -> tuple[Batch, Array]:
        """Key ids for the batch's rows, and the batch without the rows whose key is bad.

        A key that cannot be a key (a list, a dict, a missing value) sends its row to the
        dead letters; the rest of the batch goes on.
        """
        return key_ids(self, self.keys, self.key, batch)

    def _update(self, batch: Batch, rows: Array | None, slots: Array) -> None:
        """Add ``batch``'s rows ``rows`` (``None``: every row, in order) to ``slots``."""
        for name, agg in self.aggs.items():
            if agg.column is None:
                values = None
            else:
                column = batch[agg.column]
                values = column if rows is None else column[rows]
            weights = None
            if agg.weight is not None:
                w = batch[agg.weight]
                weights = w if rows is None else w[rows]
            self.states[name].update(slots, values, weights)

    def _results(self, key_ids: Array, slots: Array, start: Array, end: Array) -> Batch:
        cols: dict[str, Any] = {
            self.key: self.keys.values(key_ids),
            "window_start": start,
            "window_end": end,
        }
        for name in self.aggs:
            cols[name] = self.states[name].result(slots)
        n = len(slots)
        return Batch(cols, time=end - 1, wm=np.full(n, self.wm, dtype=_I64), length=n)

    def _reset(self, slots: Array) -> None:
        for st in self.states.values():
            st.reset(slots)
        self.pool.release(slots)

    def _base_snapshot(self) -> dict[str, Any]:
        return {
            "keys": self.keys.snapshot(),
            "pool": self.pool.snapshot(),
            "states": {n: s.snapshot() for n, s in self.states.items()},
            "wm": self.wm,
        }

    def _base_restore(self, snap: Mapping[str, Any]) -> None:
        self.keys.restore(snap["keys"])
        self.pool.restore(snap["pool"])
        for n, s in self.states.items():
            s.restore(snap["states"][n])
        self.wm = int(snap["wm"])


class WindowAggregate(_KeyedAggregate):
    """Keyed tumbling or sliding window aggregation."""

    def __init__(
        self,
        name: str,
        key: str,
        windower: Tumbling | Sliding,
        aggs: Mapping[str, Aggregation],
        allowed_lateness_ms: int = 0,
    ) -> None:
        super().__init__(name, key, aggs, allowed_lateness_ms)
        self.windower = windower
        self.size = windower.size_ms
        self.tables: dict[int, Array] = {}  # window start -> slot per key id (-1: none)
        self.fired: set[int] = set()
        self.dirty: dict[int, Array] = {}  # fired window start -> key ids updated since
        self.refs = np.zeros(0, dtype=_I64)  # open windows per key id

    def blank(self) -> WindowAggregate:
        """A new operator of the same step, without state."""
        return WindowAggregate(self.name, self.key, self.windower, self.aggs, self.lateness)

    def split_state(
        self, snapshots: Sequence[Mapping[str, Any]], route: Route, count: int
    ) -> list[dict[str, Any]]:
        """Old workers' snapshots split by key into ``count`` (:mod:`~tidal.core.window_split`)."""
        return split(self, snapshots, route, count, take_windows)

    def process(self, batch: Batch, port: int) -> Emit:
        """Add the batch's records to their windows; late records go to ``late``."""
        if len(batch) == 0:
            return []
        self._check(batch)
        batch, kid = self._key_ids(batch)
        if len(batch) == 0:
            return []
        assert batch.time is not None and batch.wm is not None
        if len(self.refs) < self.keys.capacity:
            self.refs = np.concatenate(
                (self.refs, np.zeros(self.keys.capacity - len(self.refs), dtype=_I64))
            )
        rows, starts = self.windower.assign(batch.time)
        # tumbling: one window per row and ``rows`` is 0..n-1, which saves gathers
        one_each = isinstance(self.windower, Tumbling)
        ok = starts + self.size + self.lateness > (batch.wm if one_each else batch.wm[rows])
        every = bool(ok.all())
        if one_each or every:
            late = ~ok
        else:  # late for at least one of its windows (it still counts in the newer ones)
            late = np.bincount(rows[~ok], minlength=len(batch)) > 0
        if not every:
            rows, starts = rows[ok], starts[ok]
        identity = one_each and every  # rows[i] == i
        slots = np.empty(len(rows), dtype=_I64)
        for start, seg in self._segments(starts):
            k = kid[seg] if identity else kid[rows[seg]]
            slots[seg] = self._slots_for(start, k)
        self._update(batch, None if identity else rows, slots)
        out: Emit = []
        if late.any():
            self.ctx.count("late", int(late.sum()))
            out.append((1, batch.filter(late)))
        return out

    def _segments(self, starts: Array) -> list[tuple[int, Array | slice]]:
        """(window start, positions in ``starts``) per distinct start, both ascending.

        A batch usually spans a few windows: then one comparison per window finds them,
        else a stable sort does.
        """
        if len(starts) == 0:
            return []
        lo, hi = int(starts.min()), int(starts.max())
        if lo == hi:
            return [(lo, slice(None))]
        slide = self.windower.slide_ms
        if (hi - lo) // slide < 8:
            found = [(s, np.flatnonzero(starts == s)) for s in range(lo, hi + 1, slide)]
            segs: list[tuple[int, Array | slice]] = [(s, seg) for s, seg in found if len(seg)]
            if sum(len(seg) for _, seg in found) == len(starts):
                return segs
        order = np.argsort(starts, kind="stable")
        cuts = np.flatnonzero(np.diff(starts[order])) + 1
        return [(int(starts[seg[0]]), seg) for seg in np.split(order, cuts)]

    def _slots_for(self, start: int, k: Array) -> Array:
        table = self.tables.get(start)
        cap = self.keys.capacity
        if table is None:
            table = np.full(cap, -1, dtype=_I64)
        elif len(table) < cap:
            table = np.concatenate((table, np.full(cap - len(table), -1, dtype=_I64)))
        self.tables[start] = table
        sl = table[k]
        missing = sl < 0
        if missing.any():
            new_keys = k[missing]
            if len(new_keys) * 16 >= cap:  # key ids are dense: flagging beats sorting
                seen = np.zeros(cap, dtype=bool)
                seen[new_keys] = True
                new_keys = np.flatnonzero(seen)
            else:
                new_keys = np.unique(new_keys)
            table[new_keys] = self.pool.alloc(len(new_keys))
            self.refs[new_keys] += 1
            sl = table[k]
        if start in self.fired:
            prev = self.dirty.get(start, np.empty(0, dtype=_I64))
            self.dirty[start] = np.union1d(prev, k)
        return sl

    def on_watermark(self, wm: int) -> Emit:
        """Fire windows whose end the watermark reached; purge those past lateness."""
        parts: list[Batch] = []
        for start in sorted(self.tables):
            end = start + self.size
            if end > wm:
                break
            table = self.tables[start]
            if start not in self.fired:
                key_ids = np.flatnonzero(table >= 0)
                self.fired.add(start)
            else:
                key_ids = self.dirty.pop(start, np.empty(0, dtype=_I64))
            if len(key_ids):
                slots = table[key_ids]
                n = len(slots)
                parts.append(
                    self._results(
                        key_ids, slots, np.full(n, start, dtype=_I64), np.full(n, end, _I64)
                    )
                )
            if end + self.lateness <= wm:
                self._purge(start)
        self.wm = wm
        return [(0, Batch.concat(parts))] if parts else []

    def _purge(self, start: int) -> None:
        table = self.tables.pop(start)
        key_ids = np.flatnonzero(table >= 0)
        self._reset(table[key_ids])
        self.fired.discard(start)
        self.dirty.pop(start, None)
        self.refs[key_ids] -= 1
        gone = key_ids[self.refs[key_ids] == 0]
        if len(gone):
            self.keys.release(gone)

    def snapshot(self) -> dict[str, Any]:
        """Keys, slots, open windows and accumulators."""
        starts = sorted(self.tables)
        pairs = [np.flatnonzero(self.tables[s] >= 0) for s in starts]
        return {
            **self._base_snapshot(),
            "win_start": np.repeat(np.asarray(starts, dtype=_I64), [len(p) for p in pairs]),
            "win_key": np.concatenate(pairs) if pairs else np.empty(0, dtype=_I64),
            "win_slot": (
                np.concatenate([self.tables[s][p] for s, p in zip(starts, pairs, strict=True)])
                if pairs
                else np.empty(0, dtype=_I64)
            ),
            "fired": sorted(self.fired),
            "dirty_start": np.repeat(
                np.asarray(list(self.dirty), dtype=_I64), [len(v) for v in self.dirty.values()]
            ),
            "dirty_key": (
                np.concatenate(list(self.dirty.values())) if self.dirty else np.empty(0, dtype=_I64)
            ),
            "refs": self.refs,
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`."""
        self._base_restore(snap)
        cap = self.keys.capacity
        self.tables = {}
        ws, wk, wsl = (
            np.asarray(snap[n], dtype=_I64) for n in ("win_start", "win_key", "win_slot")
        )
        for start in np.unique(ws).tolist():
            sel = ws == start
            table = np.full(cap, -1, dtype=_I64)
            table[wk[sel]] = wsl[sel]
            self.tables[int(start)] = table
        self.fired = {int(s) for s in snap["fired"]}
        ds, dk = np.asarray(snap["dirty_start"], _I64), np.asarray(snap["dirty_key"], _I64)
        self.dirty = {int(s): dk[ds == s] for s in np.unique(ds).tolist()}
        self.refs = np.asarray(snap["refs"], dtype=_I64).copy()


class SessionAggregate(_KeyedAggregate):
    """Keyed session window aggregation, merging sessions that come to overlap."""

    def __init__(
        self,
        name: str,
        key: str,
        windower: Session,
        aggs: Mapping[str, Aggregation],
        allowed_lateness_ms: int = 0,
    ) -> None:
        super().__init__(name, key, aggs, allowed_lateness_ms)
        self.windower = windower
        self.gap = windower.gap_ms
        empty = np.empty(0, dtype=_I64)
        self.s_key, self.s_start, self.s_end, self.s_slot = empty, empty, empty, empty
        self.s_fired = np.empty(0, dtype=bool)
        self.s_dirty = np.empty(0, dtype=bool)

    def blank(self) -> SessionAggregate:
        """A new operator of the same step, without state."""
        return SessionAggregate(self.name, self.key, self.windower, self.aggs, self.lateness)

    def split_state(
        self, snapshots: Sequence[Mapping[str, Any]], route: Route, count: int
    ) -> list[dict[str, Any]]:
        """Old workers' snapshots split by key into ``count`` (:mod:`~tidal.core.window_split`)."""
        return split(self, snapshots, route, count, take_sessions)

    def process(self, batch: Batch, port: int) -> Emit:
        """Add records to sessions, merging sessions that now overlap."""
        if len(batch) == 0:
            return []
        self._check(batch)
        assert batch.time is not None and batch.wm is not None
        late = batch.time + self.lateness < batch.wm
        out: Emit = []
        if late.any():
            self.ctx.count("late", int(late.sum()))
            out.append((1, batch.filter(late)))
            batch = batch.filter(~late)
        if len(batch) == 0:
            return out
        batch, kid = self._key_ids(batch)
        if len(batch) == 0:
            return out
        assert batch.time is not None
        rows = np.arange(len(batch))
        t = batch.time
        order = np.lexsort((t, kid))
        ks, ts = kid[order], t[order]
        first = np.ones(len(ks), dtype=bool)
        first[1:] = (ks[1:] != ks[:-1]) | (ts[1:] >= ts[:-1] + self.gap)
        local = np.cumsum(first) - 1
        heads = np.flatnonzero(first)
        tails = np.append(heads[1:] - 1, len(ks) - 1)
        l_key, l_start, l_end = ks[heads], ts[heads], ts[tails] + self.gap
        l_slot = self.pool.alloc(len(heads))
        row_slots = np.empty(len(rows), dtype=_I64)
        row_slots[order] = l_slot[local]
        self._update(batch, rows, row_slots)
        self._merge_in(l_key, l_start, l_end, l_slot)
        return out

    def _merge_in(self, l_key: Array, l_start: Array, l_end: Array, l_slot: Array) -> None:
        involved = np.isin(self.s_key, l_key)
        keep = ~involved
        n_old = int(involved.sum())
        key = np.concatenate((self.s_key[involved], l_key))
        start = np.concatenate((self.s_start[involved], l_start))
        end = np.concatenate((self.s_end[involved], l_end))
        slot = np.concatenate((self.s_slot[involved], l_slot))
        fired = np.concatenate((self.s_fired[involved], np.zeros(len(l_key), dtype=bool)))
        dirty = np.concatenate((self.s_dirty[involved], np.zeros(len(l_key), dtype=bool)))
        is_new = np.arange(len(key)) >= n_old
        order = np.lexsort((start, key))
        key, start, end, slot = key[order], start[order], end[order], slot[order]
        fired, dirty, is_new = fired[order], dirty[order], is_new[order]
        # running max of `end` within each key, over the sessions before this one
        base = int(start.min())
        span = int(end.max()) - base + 1
        _, rank = np.unique(key, return_inverse=True)
        shifted = (end - base) + rank.reshape(-1).astype(_I64) * span
        prev_max = np.concatenate(([-1], np.maximum.accumulate(shifted)[:-1]))
        opens = (start - base) + rank.reshape(-1).astype(_I64) * span >= prev_max
        opens[0] = True
        key_change = np.ones(len(key), dtype=bool)
        key_change[1:] = key[1:] != key[:-1]
        opens |= key_change
        gid = np.cumsum(opens) - 1
        heads = np.flatnonzero(opens)
        g_end = np.maximum.reduceat(end, heads)
        g_size = np.diff(np.append(heads, len(key)))
        dst = slot[heads][gid]
        src_mask = ~opens
        if src_mask.any():
            src, dst_of_src = slot[src_mask], dst[src_mask]
            for st in self.states.values():
                st.merge(dst_of_src, src)
            self._reset(src)
        g_fired = np.logical_or.reduceat(fired, heads)
        g_changed = (g_size > 1) | np.logical_or.reduceat(is_new, heads)
        g_dirty = np.logical_or.reduceat(dirty, heads) | (g_fired & g_changed)
        self.s_key = np.concatenate((self.s_key[keep], key[heads]))
        self.s_start = np.concatenate((self.s_start[keep], start[heads]))
        self.s_end = np.concatenate((self.s_end[keep], g_end))
        self.s_slot = np.concatenate((self.s_slot[keep], slot[heads]))
        self.s_fired = np.concatenate((self.s_fired[keep], g_fired))
        self.s_dirty = np.concatenate((self.s_dirty[keep], g_dirty))

    def on_watermark(self, wm: int) -> Emit:
        """Fire sessions whose end the watermark reached; purge those past lateness."""
        due = (self.s_end <= wm) & (~self.s_fired | self.s_dirty)
        out: Emit = []
        if due.any():
            idx = np.flatnonzero(due)
            idx = idx[np.lexsort((self.s_key[idx], self.s_end[idx]))]
            out.append(
                (
                    0,
                    self._results(
                        self.s_key[idx], self.s_slot[idx], self.s_start[idx], self.s_end[idx]
                    ),
                )
            )
            self.s_fired[idx] = True
            self.s_dirty[idx] = False
        purge = self.s_end + self.lateness <= wm
        if purge.any():
            self._reset(self.s_slot[purge])
            gone_keys = np.unique(self.s_key[purge])
            keep = ~purge
            for name in ("s_key", "s_start", "s_end", "s_slot", "s_fired", "s_dirty"):
                setattr(self, name, getattr(self, name)[keep])
            gone_keys = gone_keys[~np.isin(gone_keys, self.s_key)]
            self.keys.release(gone_keys)
        self.wm = wm
        return out

    def snapshot(self) -> dict[str, Any]:
        """Keys, slots, open sessions and accumulators."""
        return {
            **self._base_snapshot(),
            "s_key": self.s_key,
            "s_start": self.s_start,
            "s_end": self.s_end,
            "s_slot": self.s_slot,
            "s_fired": self.s_fired,
            "s_dirty": self.s_dirty,
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`."""
        self._base_restore(snap)
        for name in ("s_key", "s_start", "s_end", "s_slot"):
            setattr(self, name, np.asarray(snap[name], dtype=_I64).copy())
        self.s_fired = np.asarray(snap["s_fired"], dtype=bool).copy()
        self.s_dirty = np.asarray(snap["s_dirty"], dtype=bool).copy()
