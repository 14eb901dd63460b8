"""The plan of a re-split: partition ownership before and after, and the new snapshots.

:class:`SplitPlan` turns the snapshots of the old workers (one per worker, ``None`` for a
worker that had no checkpoint) into one snapshot per new worker: source positions and
watermark marks of the partitions it now owns, node watermarks (the lowest of the old
workers that feed it), and each step's state, split by key with
:meth:`~tidal.core.operator.SplitsByKey.split_state` (a stateless step gets ``{}``; any
other step with state is refused). :mod:`tidal.runtime.workers.resplit` reads and writes
the checkpoints around it (decision 0052).

Example:
    >>> layout_name(None), layout_name(3)
    ('one process (no --workers)', '--workers 3')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.core.operator import SplitsByKey
from tidal.core.watermark import MIN_TIME
from tidal.errors import StateError
from tidal.io.log.sink import key_bytes, partition_of
from tidal.io.log.source import LogSource
from tidal.runtime.checkpoint import CommitsOutside
from tidal.runtime.executor import SNAPSHOT_VERSION
from tidal.runtime.graph import Graph, Node

__all__ = ["Layout", "SplitPlan", "layout_name"]

Layout = int | None
"""``None``: one process; ``N``: N workers."""


def layout_name(layout: Layout) -> str:
    """How a layout reads in messages."""
    return "one process (no --workers)" if layout is None else f"--workers {layout}"


class SplitPlan:
    """Who owned which partition, who owns it now, and the merge of the snapshots.

    Args:
        graph: a fresh copy of the pipeline (its sources not yet assigned to a worker).
        old: the layout the checkpoints were taken with.
        new: the layout to split them into.

    Raises:
        StateError: for a sink that commits outside the checkpoints.
    """

    def __init__(self, graph: Graph, old: Layout, new: Layout) -> None:
        self.graph = graph
        self.old, self.new = old, new
        self.n_old = 1 if old is None else old
        self.n_new = 1 if new is None else new
        for n in graph.nodes.values():
            if isinstance(n.sink, CommitsOutside):
                msg = (
                    f"sink {n.name!r} ({type(n.sink).__name__}) commits in transactions kept "
                    "outside the checkpoints, under one id per worker, so a job with it cannot "
                    f"be re-split: run it with {layout_name(old)} as before, or start over in a "
                    "new --data-dir"
                )
                raise StateError(msg)
        self.parts: dict[str, tuple[int, ...]] = {
            n.name: tuple(int(p) for p in n.source.partitions())
            for n in graph.nodes.values()
            if n.source is not None
        }

    def old_owner(self, index: int) -> int:
        """The old worker of the partition at ``index`` of a source's partitions."""
        return index % self.n_old

    def new_owner(self, index: int) -> int:
        """The new worker of the partition at ``index``."""
        return index % self.n_new

    def contributors(self, j: int) -> set[int]:
        """Old workers that owned a partition new worker ``j`` owns."""
        out = set()
        for parts in self.parts.values():
            for idx in range(len(parts)):
                if self.new_owner(idx) == j:
                    out.add(self.old_owner(idx))
        return out

    def ended(self, j: int, states: Sequence[Any]) -> str | None:
        """``ended`` of new worker ``j``: the old workers' if they all agree."""
        whys = {
            None if s is None else s.get("ended") for s in (states[i] for i in self.contributors(j))
        }
        return whys.pop() if len(whys) == 1 else None

    # -- the snapshots ------------------------------------------------------------------
    def split(
        self, snaps: Sequence[Mapping[str, Any] | None]
    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """One executor snapshot per new worker, and the live keys moved per keyed step.

        Raises:
            StateError: for a step whose state cannot be split (see the module docs).
        """
        graph = self.graph
        ops: dict[str, list[dict[str, Any]]] = {}
        keys: dict[str, int] = {}
        for node in graph.nodes.values():
            if node.op is not None:
                ops[node.name], moved = self._split_op(node, snaps)
                if moved is not None:
                    keys[node.name] = moved
        out = []
        events = self._events(snaps)
        for j in range(self.n_new):
            contributors = sorted(self.contributors(j))
            out.append(
                {
                    "version": SNAPSHOT_VERSION,
                    "pipeline": graph.name,
                    "events": events[j],
                    "operators": {
                        name: {"type": type(graph.nodes[name].op).__name__, "state": parts[j]}
                        for name, parts in ops.items()
                    },
                    "sources": {name: self._source(name, j, snaps) for name in self.parts},
                    "watermarks": self._watermarks([snaps[i] for i in contributors]),
                }
            )
        return out, keys

    def _events(self, snaps: Sequence[Mapping[str, Any] | None]) -> list[int]:
        """Each old worker's event count goes to the first new worker of its partitions."""
        events = [0] * self.n_new
        for i, snap in enumerate(snaps):
            if snap is None:
                continue
            takers = [j for j in range(self.n_new) if i in self.contributors(j)]
            events[min(takers) if takers else 0] += int(snap.get("events", 0))
        return events

    def _source(
        self, name: str, j: int, snaps: Sequence[Mapping[str, Any] | None]
    ) -> dict[str, Any]:
        positions: dict[str, Any] = {}
        high: dict[str, int] = {}
        emitted: list[int] = []
        finished: list[bool] = []
        for idx, p in enumerate(self.parts[name]):
            if self.new_owner(idx) != j:
                continue
            snap = snaps[self.old_owner(idx)]
            saved = None if snap is None else snap["sources"].get(name)
            if saved is None:
                emitted.append(MIN_TIME)
                finished.append(False)
                continue
            if str(p) in saved["positions"]:
                positions[str(p)] = saved["positions"][str(p)]
            mark = saved["watermark"]
            if str(p) in mark.get("high", {}):
                high[str(p)] = int(mark["high"][str(p)])
            emitted.append(int(mark.get("emitted", MIN_TIME)))
            finished.append(bool(saved["finished"]))
        return {
            "positions": positions,
            "watermark": {"high": high, "emitted": min(emitted, default=MIN_TIME)},
            "finished": bool(finished) and all(finished),
        }

    def _watermarks(self, snaps: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
        """Node and input watermarks: the lowest of the old workers that feed this one."""
        node: dict[str, int] = {}
        inputs: dict[str, list[int]] = {}
        for n in self.graph.nodes.values():
            width = max(1, len(n.inputs))
            marks, ins = [], []
            for snap in snaps:
                saved = None if snap is None else snap["watermarks"]
                if saved is None or n.name not in saved["node"]:
                    marks.append(MIN_TIME)
                    ins.append([MIN_TIME] * width)
                    continue
                marks.append(int(saved["node"][n.name]))
                got = [int(x) for x in saved["inputs"].get(n.name, [])]
                ins.append(got if len(got) == width else [MIN_TIME] * width)
            node[n.name] = min(marks, default=MIN_TIME)
            inputs[n.name] = (
                [min(col) for col in zip(*ins, strict=True)] if ins else [MIN_TIME] * width
            )
        return {"node": node, "inputs": inputs}

    # -- one operator -------------------------------------------------------------------
    def _split_op(
        self, node: Node, snaps: Sequence[Mapping[str, Any] | None]
    ) -> tuple[list[dict[str, Any]], int | None]:
        op = node.op
        assert op is not None
        kind = type(op).__name__
        states: list[dict[str, Any]] = []
        for i, snap in enumerate(snaps):
            if snap is None:
                states.append(op.snapshot())  # a worker without a checkpoint: empty state
                continue
            saved = snap["operators"].get(node.name)
            if saved is None or saved["type"] != kind:
                what = "no state" if saved is None else f"a {saved['type']}"
                msg = (
                    f"step {node.name!r} is a {kind} but worker {i}'s checkpoint has {what} "
                    f"for it; re-splitting needs the pipeline the checkpoints were taken with. "
                    f"Run it with {layout_name(self.old)} as it was, or start over in a new "
                    "--data-dir"
                )
                raise StateError(msg)
            states.append(saved["state"])
        if all(not s for s in states):
            return [{} for _ in range(self.n_new)], None
        if not isinstance(op, SplitsByKey):
            msg = (
                f"step {node.name!r} ({kind}) keeps state that is not split by key, so the "
                f"checkpoints taken with {layout_name(self.old)} cannot be re-split for "
                f"{layout_name(self.new)}: only keyed steps (windows, sessions) can move "
                f"between workers. Run it with {layout_name(self.old)} again, or start over "
                "in a new --data-dir (or replay with --from-offset 0)"
            )
            raise StateError(msg)
        parts = self._partitions_of(node)
        moved = [0]

        def route(i: int, keys: Array) -> Array:
            moved[0] += len(keys)
            return self._route(node, parts, i, keys)

        return op.split_state(states, route, self.n_new), moved[0]

    def _partitions_of(self, node: Node) -> tuple[int, ...]:
        """The partitions of the sources feeding ``node``; they must agree."""
        seen: dict[str, tuple[int, ...]] = {}
        todo = [node]
        while todo:
            n = todo.pop()
            if n.source is not None:
                if not isinstance(n.source, LogSource):
                    msg = (
                        f"step {node.name!r} reads source {n.name!r} "
                        f"({type(n.source).__name__}), and only the embedded log's "
                        "partitioner is known here: its keys cannot be mapped to partitions, "
                        f"so its state cannot be re-split; run it with {layout_name(self.old)}"
                    )
                    raise StateError(msg)
                seen[n.name] = self.parts[n.name]
            todo.extend(up for up, _ in n.inputs)
        kinds = set(seen.values())
        if len(kinds) != 1 or next(iter(kinds)) != tuple(range(len(next(iter(kinds))))):
            msg = (
                f"step {node.name!r} reads sources with different partitions "
                f"({', '.join(f'{k}: {len(v)}' for k, v in sorted(seen.items()))}), so its "
                f"keys cannot be mapped to partitions; run it with {layout_name(self.old)}"
            )
            raise StateError(msg)
        return next(iter(kinds))

    def _route(self, node: Node, parts: tuple[int, ...], i: int, keys: Array) -> Array:
        kb = np.empty(len(keys), dtype=object)
        kb[:] = _key_bytes(keys)
        index = partition_of(kb, len(parts))  # partitions are 0..P-1, so index == partition
        if self.old is not None and self.n_old > 1:
            bad = np.flatnonzero(index % self.n_old != i)
            if len(bad):
                k = keys[bad[0]]
                p = int(index[bad[0]])
                msg = (
                    f"step {node.name!r}: key {k!r} is in the state of worker {i} of "
                    f"{self.n_old}, but records with that key go to partition {p}, which "
                    f"worker {self.old_owner(p)} read: the input is not partitioned by the key "
                    "this step groups by (LogSink(key=...), tidal log produce --key), so its "
                    f"state cannot be re-split; run it with {layout_name(self.old)}"
                )
                raise StateError(msg)
        out: Array = index % self.n_new
        return out


def _key_bytes(keys: Array) -> list[bytes | None]:
    """``key_bytes`` of every key, with fast paths for numbers and plain strings.

    Example:
        >>> _key_bytes(np.array([7, 12])), _key_bytes(np.array(["a", None], dtype=object))
        ([b'7', b'12'], [b'a', None])
    """
    values = keys.tolist()
    if keys.dtype.kind in "iuf":
        return [str(k).encode() for k in values]  # what key_bytes does for numbers
    if all(type(k) is str for k in values):
        return [k.encode() for k in values]
    return [key_bytes(k) for k in values]
