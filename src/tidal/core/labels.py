"""Delayed labels: join feature rows to labels that arrive later on another stream, by event id.

A model scores an event now; whether it was right is known later (a confirmed fraud, a
click). :class:`LabelJoin` keeps each feature row by its event id and emits it with its
label when the label comes: the feature columns, the label columns and ``label_delay_ms``
(label time minus feature time). Port 0 is the features stream, port 1 the labels stream.

Rules, judged per record so that the result does not depend on batching or on how the two
streams interleave:

* **Match.** A label joins the feature row with its id when their event times are within
  ``ttl`` of each other (``|t_label - t_feature| <= ttl``). Labels may arrive before their
  features (a label is then buffered, like a feature).
* **First label wins.** Among the labels that match a feature, the first in the labels
  stream's order joins; every other matching label is a **duplicate**: counted
  (``<step>.duplicate_labels``) and dropped.
* **TTL.** A feature row waits until the operator's watermark passes ``t_feature + ttl``;
  if no label came, it leaves on the ``unlabeled`` output (counted ``<step>.unlabeled``). A
  buffered label that joined nothing leaves on the ``orphans`` output once the watermark
  passes ``t_label + ttl`` (counted ``<step>.orphan_labels``). Any record that could still
  match an evicted one would be late, so eviction never changes the result.
* **Late rows.** A row whose time is behind the watermark in force when it arrived goes to
  the ``late`` output with a ``side`` column and joins nothing (give the labels source a
  watermark with enough out-of-orderness, e.g. ``bounded("10m")``).
* **Ids are unique.** A second feature row with an id that is still held is dropped and
  counted (``<step>.duplicate_features``).

Timeline, ``ttl="10s"``, watermark ``bounded("0s")`` on each side (times in seconds)::

    features   e1@0    e2@1            e3@4
    labels          e1@2   e9@3  e1@5        e3@2  (e3's label arrives before e3)
    joined          (e1, delay 2s)           (e3, delay -2s)
    duplicate                    e1@5: e1 already joined
    unlabeled  e2 once the watermark passes 11
    orphans    e9 once the watermark passes 13

State: the feature rows by id (arrays indexed by the id's dense key id) and the buffered
labels (sorted arrays), in snapshots as arrays and JSON lists.

Example:
    >>> op = LabelJoin("j", on="id", ttl_ms=10_000)
    >>> op.process(Batch({"id": ["e1", "e2"], "x": [0.5, 0.7]}, time=[0, 1_000], wm=[0, 0]), 0)
    []
    >>> [(port, b.to_records()) for port, b in op.process(
    ...     Batch({"id": ["e1"], "y": [1]}, time=[2_000], wm=[0]), 1)]
    [(0, [{'id': 'e1', 'x': 0.5, 'y': 1, 'label_delay_ms': 2000}])]
    >>> [(port, b.to_records(), b.time.tolist()) for port, b in op.on_watermark(11_001)]
    [(1, [{'id': 'e2', 'x': 0.7}], [11000])]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.core.keys import KeyIndex
from tidal.core.operator import Emit, Operator
from tidal.core.state import restore_column, snapshot_column
from tidal.core.watermark import MIN_TIME
from tidal.errors import ConfigError, PipelineError, StateError

__all__ = ["LabelJoin"]

_I64 = np.int64
_NONE, _PENDING, _DONE = 0, 1, 2
_SIDES = ("features", "labels")


class LabelJoin(Operator):
    """Join feature rows to their delayed labels by event id, with a TTL (see the module).

    Args:
        name: the step's name.
        on: the event id column of the features stream.
        ttl_ms: how far apart (event time, ms) a feature and its label may be.
        label_on: the id column of the labels stream (default: ``on``); it is dropped
            from the output.
        suffix: appended to a label column whose name a feature column already has.

    Outputs: ``main`` (joined rows), ``unlabeled`` (feature rows whose label never came),
    ``orphans`` (labels that joined nothing), ``late``.
    """

    inputs = 2
    outputs = ("main", "unlabeled", "orphans", "late")

    def __init__(
        self,
        name: str,
        *,
        on: str,
        ttl_ms: int,
        label_on: str | None = None,
        suffix: str = "_label",
    ) -> None:
        super().__init__(name)
        if ttl_ms < 0:
            msg = f"step {name!r}: the label TTL must be >= 0, got {ttl_ms}ms"
            raise ConfigError(msg)
        if not suffix:
            msg = f"step {name!r}: the suffix for clashing label columns must not be empty"
            raise ConfigError(msg)
        self.on = on
        self.label_on = label_on or on
        self.ttl = int(ttl_ms)
        self.suffix = suffix
        self.keys = KeyIndex()
        # features: one row per key id
        self.f_status = np.zeros(0, dtype=np.int8)
        self.f_time = np.zeros(0, dtype=_I64)
        self.f_cols: dict[str, Array] | None = None
        # buffered labels, sorted by (key id, arrival sequence)
        self.l_kid = np.zeros(0, dtype=_I64)
        self.l_seq = np.zeros(0, dtype=_I64)
        self.l_time = np.zeros(0, dtype=_I64)
        self.l_cols: dict[str, Array] | None = None
        self.seq = 0
        self.wm = MIN_TIME

    # -- data ---------------------------------------------------------------------------
    def process(self, batch: Batch, port: int) -> Emit:
        """Join the batch against the other side's state, then keep what may still join."""
        if len(batch) == 0:
            return []
        key = self.on if port == 0 else self.label_on
        self._check(batch, key, port)
        assert batch.time is not None and batch.wm is not None
        out: Emit = []
        late = batch.time < batch.wm
        if late.any():
            self.ctx.count("late", int(late.sum()))
            side = np.full(int(late.sum()), _SIDES[port], dtype=object)
            out.append((3, batch.filter(late).with_columns(side=side)))
            batch = batch.filter(~late)
            if len(batch) == 0:
                return out
        kid = self.keys.ids(batch[key])
        self._grow()
        joined = self._features(batch, kid) if port == 0 else self._labels(batch, kid)
        if joined is not None and len(joined):
            out.insert(0, (0, joined))
        return out

    def _check(self, batch: Batch, key: str, port: int) -> None:
        if batch.time is None or batch.wm is None:
            msg = (
                f"step {self.name!r}: joining labels needs event time on both inputs; give "
                "the sources time=..."
            )
            raise PipelineError(msg)
        if key not in batch:
            msg = (
                f"step {self.name!r}: the {_SIDES[port]} input has no id column {key!r}; "
                f"its columns are {batch.names}"
            )
            raise PipelineError(msg)
        have = self.f_cols if port == 0 else self.l_cols
        if have is not None and list(have) != batch.names:
            msg = (
                f"step {self.name!r}: the {_SIDES[port]} input's columns changed from "
                f"{list(have)} to {batch.names}; a joined stream needs stable columns"
            )
            raise PipelineError(msg)

    def _grow(self) -> None:
        cap = self.keys.capacity
        have = len(self.f_status)
        if cap <= have:
            return
        size = max(cap, 2 * have, 16)
        self.f_status = np.concatenate((self.f_status, np.zeros(size - have, dtype=np.int8)))
        self.f_time = np.concatenate((self.f_time, np.zeros(size - have, dtype=_I64)))
        if self.f_cols is not None:
            self.f_cols = {c: _grown(v, size) for c, v in self.f_cols.items()}

    def _features(self, batch: Batch, kid: Array) -> Batch | None:
        assert batch.time is not None
        _, first = np.unique(kid, return_index=True)
        keep = np.zeros(len(kid), dtype=bool)
        keep[first] = True
        keep &= self.f_status[kid] == _NONE
        self.ctx.count(f"{self.name}.duplicate_features", int(len(kid) - keep.sum()))
        batch, kid = batch.filter(keep), kid[keep]
        t = batch.time
        assert t is not None
        if self.f_cols is None:
            size = len(self.f_status)
            self.f_cols = {c: _empty_like(v, size) for c, v in batch.columns.items()}
        for c, v in batch.columns.items():
            self.f_cols[c] = _put(self.f_cols[c], kid, v)
        self.f_time[kid] = t
        self.f_status[kid] = _PENDING
        if not len(self.l_kid) or not len(kid):
            return None
        # candidates: buffered labels with the same key id and a time within the TTL
        lo = np.searchsorted(self.l_kid, kid, side="left")
        hi = np.searchsorted(self.l_kid, kid, side="right")
        counts = hi - lo
        if not counts.any():
            return None
        row = np.repeat(np.arange(len(kid)), counts)
        cand = np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
        ok = np.abs(self.l_time[cand] - t[row]) <= self.ttl
        row, cand = row[ok], cand[ok]
        if not len(row):
            return None
        # labels are sorted by sequence within a key: the first candidate of a row wins
        head = np.ones(len(row), dtype=bool)
        head[1:] = row[1:] != row[:-1]
        win_row, win_lab = row[head], cand[head]
        self.ctx.count(f"{self.name}.duplicate_labels", int(len(row) - len(win_row)))
        self.f_status[kid[win_row]] = _DONE
        assert self.l_cols is not None
        labels = {c: v[win_lab] for c, v in self.l_cols.items()}
        out = self._combine(
            batch.take(win_row), labels, self.l_time[win_lab], t[win_row], new_is_label=False
        )
        drop = np.zeros(len(self.l_kid), dtype=bool)
        drop[cand] = True
        self._keep_labels(~drop)
        return out

    def _labels(self, batch: Batch, kid: Array) -> Batch | None:
        assert batch.time is not None
        t = batch.time
        order = np.argsort(kid, kind="stable")
        ks = kid[order]
        head = np.ones(len(ks), dtype=bool)
        head[1:] = ks[1:] != ks[:-1]
        rank = np.empty(len(kid), dtype=_I64)
        rank[order] = np.arange(len(ks)) - np.flatnonzero(head)[np.cumsum(head) - 1]
        parts: list[Batch] = []
        buffer = np.zeros(len(kid), dtype=bool)
        for r in range(int(rank.max()) + 1):  # one round per repeat of an id in the batch
            rows = np.flatnonzero(rank == r)
            k = kid[rows]
            status = self.f_status[k]
            near = np.abs(self.f_time[k] - t[rows]) <= self.ttl
            join = (status == _PENDING) & near
            dup = (status == _DONE) & near
            self.ctx.count(f"{self.name}.duplicate_labels", int(dup.sum()))
            buffer[rows[~(join | dup)]] = True
            jr = rows[join]
            if len(jr):
                jk = kid[jr]
                self.f_status[jk] = _DONE
                assert self.f_cols is not None
                feats = Batch({c: v[jk] for c, v in self.f_cols.items()})
                labs = batch.take(jr)
                parts.append(
                    self._combine(labs, feats.columns, self.f_time[jk], t[jr], new_is_label=True)
                )
        if buffer.any():
            self._buffer_labels(batch.filter(buffer), kid[buffer])
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else Batch.concat(parts)

    def _buffer_labels(self, batch: Batch, kid: Array) -> None:
        assert batch.time is not None
        seq = self.seq + np.arange(len(kid), dtype=_I64)
        self.seq += len(kid)
        all_kid = np.concatenate((self.l_kid, kid))
        all_seq = np.concatenate((self.l_seq, seq))
        order = np.lexsort((all_seq, all_kid))
        self.l_kid, self.l_seq = all_kid[order], all_seq[order]
        self.l_time = np.concatenate((self.l_time, batch.time))[order]
        if self.l_cols is None:
            self.l_cols = {c: v[order] for c, v in batch.columns.items()}
        else:
            self.l_cols = {c: _cat(v, batch[c])[order] for c, v in self.l_cols.items()}

    def _keep_labels(self, keep: Array) -> None:
        self.l_kid, self.l_seq, self.l_time = self.l_kid[keep], self.l_seq[keep], self.l_time[keep]
        if self.l_cols is not None:
            self.l_cols = {c: v[keep] for c, v in self.l_cols.items()}

    def _combine(
        self,
        new: Batch,
        other: Mapping[str, Array],
        other_time: Array,
        new_time: Array,
        *,
        new_is_label: bool,
    ) -> Batch:
        """Feature columns, then label columns (id dropped, clashes suffixed), then delay."""
        feats, labs = (other, new.columns) if new_is_label else (new.columns, other)
        t_f, t_l = (other_time, new_time) if new_is_label else (new_time, other_time)
        cols = dict(feats)
        for c, v in labs.items():
            if c == self.label_on:
                continue
            name = c + self.suffix if c in cols else c
            if name in cols or name == "label_delay_ms":
                msg = (
                    f"step {self.name!r}: the label column {c!r} would be named {name!r}, "
                    f"which is taken; rename it before the join or pass another suffix"
                )
                raise PipelineError(msg)
            cols[name] = v
        cols["label_delay_ms"] = (t_l - t_f).astype(_I64)
        return Batch(
            cols,
            time=np.maximum(t_f, t_l),
            wm=new.wm,
            ingest=new.ingest,
            partition=new.partition,
            offset=new.offset,
            length=len(new),
        )

    # -- time ---------------------------------------------------------------------------
    def on_watermark(self, wm: int) -> Emit:
        """Evict features and labels past their TTL; emit the unlabeled and the orphans.

        They leave with event time ``t + ttl`` (when they expired) and the previous
        watermark, so they are not late downstream.
        """
        out: Emit = []
        before, self.wm = self.wm, wm
        held = np.flatnonzero(self.f_status != _NONE)
        gone = held[self.f_time[held] + self.ttl < wm]
        if len(gone):
            pending = gone[self.f_status[gone] == _PENDING]
            if len(pending) and self.f_cols is not None:
                self.ctx.count(f"{self.name}.unlabeled", len(pending))
                cols = {c: v[pending] for c, v in self.f_cols.items()}
                out.append((1, self._expired(cols, self.f_time[pending], before)))
            self.f_status[gone] = _NONE
        expired = self.l_time + self.ttl < wm
        freed = gone
        if expired.any():
            assert self.l_cols is not None
            self.ctx.count(f"{self.name}.orphan_labels", int(expired.sum()))
            idx = np.flatnonzero(expired)
            idx = idx[np.argsort(self.l_seq[idx], kind="stable")]
            cols = {c: v[idx] for c, v in self.l_cols.items()}
            out.append((2, self._expired(cols, self.l_time[idx], before)))
            freed = np.concatenate((gone, self.l_kid[idx]))
            self._keep_labels(~expired)
        if len(freed):
            cand = np.unique(freed)
            still = self.f_status[cand] != _NONE
            i = np.searchsorted(self.l_kid, cand)
            ok = i < len(self.l_kid)
            still[ok] |= self.l_kid[i[ok]] == cand[ok]
            self.keys.release(cand[~still])
        return out

    def _expired(self, cols: dict[str, Array], time: Array, wm: int) -> Batch:
        n = len(time)
        return Batch(cols, time=time + self.ttl, wm=np.full(n, wm, dtype=_I64), length=n)

    def held(self) -> tuple[int, int]:
        """Feature rows and labels held (state size)."""
        return int((self.f_status != _NONE).sum()), len(self.l_kid)

    # -- snapshots ----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Keys, held feature rows and buffered labels (numeric arrays, others as JSON)."""
        held = np.flatnonzero(self.f_status != _NONE)
        return {
            "params": {"on": self.on, "label_on": self.label_on, "ttl_ms": self.ttl},
            "keys": self.keys.snapshot(),
            "wm": self.wm,
            "seq": self.seq,
            "f_kid": held.astype(_I64),
            "f_status": self.f_status[held].astype(_I64),
            "f_time": self.f_time[held],
            "f_names": None if self.f_cols is None else list(self.f_cols),
            "f_cols": []
            if self.f_cols is None
            else [snapshot_column(v[held]) for v in self.f_cols.values()],
            "l_kid": self.l_kid,
            "l_seq": self.l_seq,
            "l_time": self.l_time,
            "l_names": None if self.l_cols is None else list(self.l_cols),
            "l_cols": []
            if self.l_cols is None
            else [snapshot_column(v) for v in self.l_cols.values()],
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`.

        Raises:
            StateError: for a snapshot of a join with other parameters.
        """
        params = {"on": self.on, "label_on": self.label_on, "ttl_ms": self.ttl}
        if snap.get("params") != params:
            msg = (
                f"step {self.name!r}: the snapshot is of a label join with "
                f"{snap.get('params')}, this one has {params}; rename the step to start afresh"
            )
            raise StateError(msg)
        self.keys.restore(snap["keys"])
        self.wm, self.seq = int(snap["wm"]), int(snap["seq"])
        self.f_status = np.zeros(0, dtype=np.int8)
        self.f_time = np.zeros(0, dtype=_I64)
        self.f_cols = None
        self._grow()
        kid = np.asarray(snap["f_kid"], dtype=_I64)
        self.f_status[kid] = np.asarray(snap["f_status"], dtype=np.int8)
        self.f_time[kid] = np.asarray(snap["f_time"], dtype=_I64)
        if snap["f_names"] is not None:
            self.f_cols = {}
            for name, col in zip(snap["f_names"], snap["f_cols"], strict=True):
                values = restore_column(col)
                self.f_cols[str(name)] = _put(_empty_like(values, len(self.f_status)), kid, values)
        self.l_kid = np.asarray(snap["l_kid"], dtype=_I64).copy()
        self.l_seq = np.asarray(snap["l_seq"], dtype=_I64).copy()
        self.l_time = np.asarray(snap["l_time"], dtype=_I64).copy()
        names = snap["l_names"]
        self.l_cols = (
            None
            if names is None
            else {str(n): restore_column(c) for n, c in zip(names, snap["l_cols"], strict=True)}
        )


def _empty_like(values: Array, size: int) -> Array:
    if values.dtype.kind == "O":
        return np.full(size, None, dtype=object)
    return np.zeros(size, dtype=values.dtype)


def _grown(values: Array, size: int) -> Array:
    return np.concatenate((values, _empty_like(values, size - len(values))))


def _put(column: Array, kid: Array, values: Array) -> Array:
    """``column[kid] = values``, widening the column's dtype if the values need it."""
    if column.dtype != values.dtype:
        kind = (
            np.result_type(column.dtype, values.dtype)
            if "O"
            not in (
                column.dtype.kind,
                values.dtype.kind,
            )
            else np.dtype(object)
        )
        column = column.astype(kind)
    column[kid] = values
    return column


def _cat(old: Array, new: Array) -> Array:
    if (old.dtype.kind == "O") != (new.dtype.kind == "O"):
        return np.concatenate((old.astype(object), new.astype(object)))
    return np.concatenate((old, new))
