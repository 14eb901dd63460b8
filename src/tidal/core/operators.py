"""Stateless operators over whole batches: map, filter, flat_map, validate, union, branch.

Each callback shape has its own operator; none takes a flag that changes what the callback
receives. ``map_records`` is the per-record escape hatch and is slow by design: it builds a
Python dict per record (use it for logic that cannot be written over columns).

Example:
    >>> import numpy as np
    >>> op = Filter("positive", lambda b: b["x"] > 0)
    >>> [len(b) for _, b in op.process(Batch({"x": np.array([-1, 2, 3])}), 0)]
    [2]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import orjson

from tidal.core.batch import Array, Batch
from tidal.core.deadletter import DeadLetter
from tidal.core.keys import KeyIndex, KeyValuesError
from tidal.core.operator import Emit, Operator
from tidal.errors import PipelineError, where

BatchFn = Callable[[Batch], Any]


def _call(step: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:
        msg = f"step {step!r}: the function {where(fn)} raised {type(exc).__name__}: {exc}"
        raise PipelineError(msg) from exc


def _as_batch(step: str, fn: Callable[..., Any], out: Any, like: Batch | None) -> Batch:
    if isinstance(out, Batch):
        result = out
    elif isinstance(out, Mapping):
        result = Batch(out)
    else:
        msg = (
            f"step {step!r}: the function {where(fn)} must return a Batch or a mapping of "
            f"columns, got {type(out).__name__}"
        )
        raise PipelineError(msg)
    if like is not None:
        if len(result) != len(like):
            msg = (
                f"step {step!r}: map must keep one output row per input row "
                f"({len(like)} in, {len(result)} out) in {where(fn)}; "
                "use filter to drop rows or flat_map to make several"
            )
            raise PipelineError(msg)
        if result.time is None and result.wm is None:
            result = like.with_data(result.columns)
    return result


def position_of(batch: Batch, i: int) -> dict[str, Any]:
    """The source position of row ``i`` (partition and offset, where known)."""
    pos: dict[str, Any] = {}
    if batch.partition is not None:
        pos["partition"] = int(batch.partition[i])
    if batch.offset is not None:
        pos["offset"] = int(batch.offset[i])
    return pos


def raw_of(batch: Batch, i: int) -> str:
    """Row ``i`` as a JSON string, for dead letters."""
    row = {k: v[i] for k, v in batch.columns.items()}
    try:
        return orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode()
    except TypeError:  # e.g. an integer beyond 64 bits: JSON with such values as strings
        safe = {k: v if isinstance(v, str | float | bool) else str(v) for k, v in row.items()}
        return orjson.dumps(safe).decode()


def key_ids(op: Operator, keys: KeyIndex, key: str, batch: Batch) -> tuple[Batch, Array]:
    """The batch's dense key ids; rows whose key cannot be a key go to ``op``'s dead letters.

    Returns the batch without those rows, and the ids of the rest.
    """
    try:
        return batch, keys.ids(batch[key])
    except KeyValuesError as exc:
        for i, reason in zip(exc.rows.tolist(), exc.reasons, strict=True):
            op.ctx.dead(
                DeadLetter(
                    op.name,
                    f"key column {key!r}: {reason}",
                    position_of(batch, i),
                    raw_of(batch, i),
                )
            )
        keep = np.ones(len(batch), dtype=bool)
        keep[exc.rows] = False
        batch = batch.filter(keep)
        return batch, keys.ids(batch[key])


class Map(Operator):
    """``fn(batch) -> batch``: one output row per input row; columns may change."""

    def __init__(self, name: str, fn: BatchFn) -> None:
        super().__init__(name)
        self.fn = fn

    def process(self, batch: Batch, port: int) -> Emit:
        """Apply the function to the whole batch."""
        out = _as_batch(self.name, self.fn, _call(self.name, self.fn, batch), batch)
        return [(0, out)]


class Filter(Operator):
    """``fn(batch) -> bool mask``: keep the rows where the mask is true."""

    def __init__(self, name: str, fn: BatchFn) -> None:
        super().__init__(name)
        self.fn = fn

    def process(self, batch: Batch, port: int) -> Emit:
        """Keep the rows the predicate accepts."""
        mask = np.asarray(_call(self.name, self.fn, batch))
        if mask.dtype != np.bool_ or mask.shape != (len(batch),):
            msg = (
                f"step {self.name!r}: the predicate {where(self.fn)} must return a boolean "
                f"array of {len(batch)} rows, got {mask.dtype} of shape {mask.shape}"
            )
            raise PipelineError(msg)
        return [(0, batch.filter(mask))]


class FlatMap(Operator):
    """``fn(batch) -> (batch, parent)``: any number of rows per input row.

    ``parent[j]`` is the input row that output row ``j`` came from; its event time,
    watermark and position carry over.
    """

    def __init__(self, name: str, fn: Callable[[Batch], tuple[Any, Array]]) -> None:
        super().__init__(name)
        self.fn = fn

    def process(self, batch: Batch, port: int) -> Emit:
        """Expand the batch."""
        result = _call(self.name, self.fn, batch)
        if not (isinstance(result, tuple) and len(result) == 2):
            msg = (
                f"step {self.name!r}: flat_map's function {where(self.fn)} must return "
                "(columns, parent_index)"
            )
            raise PipelineError(msg)
        out = _as_batch(self.name, self.fn, result[0], None)
        parent = np.asarray(result[1], dtype=np.int64)
        if len(parent) != len(out):
            msg = f"step {self.name!r}: parent index has {len(parent)} rows, output {len(out)}"
            raise PipelineError(msg)
        return [(0, batch.take(parent).with_data(out.columns))]


class MapRecords(Operator):
    """``fn(record: dict) -> dict | None`` per record: the documented slow path.

    A record for which ``fn`` raises goes to the dead letters with the error as reason;
    ``None`` drops the record.
    """

    def __init__(self, name: str, fn: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
        super().__init__(name)
        self.fn = fn

    def process(self, batch: Batch, port: int) -> Emit:
        """Call the function once per record."""
        keep: list[int] = []
        rows: list[dict[str, Any]] = []
        for i, rec in enumerate(batch.to_records()):
            try:
                res = self.fn(rec)
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the stream
                reason = f"{where(self.fn)} raised {type(exc).__name__}: {exc}"
                self.ctx.dead(
                    DeadLetter(self.name, reason, position_of(batch, i), raw_of(batch, i))
                )
                continue
            if res is not None:
                keep.append(i)
                rows.append(res)
        kept = batch.take(np.asarray(keep, dtype=np.int64))
        names = list(dict.fromkeys(k for r in rows for k in r)) or batch.names
        return [
            (
                0,
                kept.with_data(
                    Batch.from_records(rows, names).columns
                    if rows
                    else {n: batch[n][:0] for n in names if n in batch}
                ),
            )
        ]


class Validate(Operator):
    """Route rows that fail a check to the dead letters, with the check's name as reason.

    ``checks`` maps a reason (e.g. ``"value must be finite"``) to ``fn(batch) -> mask`` that
    is true for *valid* rows.
    """

    def __init__(self, name: str, checks: Mapping[str, BatchFn]) -> None:
        super().__init__(name)
        self.checks = dict(checks)

    def process(self, batch: Batch, port: int) -> Emit:
        """Keep valid rows; dead-letter the rest with the first failed check."""
        ok = np.ones(len(batch), dtype=bool)
        reasons = np.full(len(batch), -1, dtype=np.int64)
        names = list(self.checks)
        for r, fn in enumerate(self.checks.values()):
            mask = np.asarray(_call(self.name, fn, batch), dtype=bool)
            reasons[(~mask) & ok] = r
            ok &= mask
        for i in np.flatnonzero(~ok).tolist():
            reason = names[int(reasons[i])]
            self.ctx.dead(DeadLetter(self.name, reason, position_of(batch, i), raw_of(batch, i)))
        self.ctx.count("invalid", int((~ok).sum()))
        return [(0, batch.filter(ok))]


class Union(Operator):
    """Merge several streams with the same columns; the watermark is their minimum."""

    def __init__(self, name: str, inputs: int) -> None:
        super().__init__(name)
        self.inputs = inputs


class Branch(Operator):
    """Send each row to the first branch whose predicate accepts it, else to ``"rest"``."""

    def __init__(self, name: str, branches: Mapping[str, BatchFn]) -> None:
        super().__init__(name)
        self.branches = dict(branches)
        self.outputs = (*self.branches, "rest")

    def process(self, batch: Batch, port: int) -> Emit:
        """Split the batch by the predicates, in order."""
        left = np.ones(len(batch), dtype=bool)
        out: Emit = []
        for i, fn in enumerate(self.branches.values()):
            mask = np.asarray(_call(self.name, fn, batch), dtype=bool) & left
            left &= ~mask
            out.append((i, batch.filter(mask)))
        out.append((len(self.branches), batch.filter(left)))
        return out
