"""Changing the number of workers of a job: its committed state is re-split by key.

A job's checkpoints live in one *layout*: one process (``<data dir>/checkpoints/<pipeline>/``,
``tidal run`` without ``--workers``) or ``N`` workers (``<data dir>/workers/<pipeline>/
<i>-of-<N>/checkpoints/<pipeline>/``, :mod:`~tidal.runtime.workers.plan`). When a run asks
for another layout, :meth:`JobLayout.ensure` re-splits the state once, offline, before any
worker starts (decision 0052):

1. lock the job (``workers/<pipeline>/LOCK``, held for the whole run by the caller) and
   every old worker's checkpoint store (a running worker holds its store: refused);
2. read each old worker's newest valid checkpoint: together they are one consistent cut
   (each is a consistent cut of its own partitions, and the partitions are disjoint);
3. commit the sink transactions those checkpoints prepared and discard everything else the
   old workers staged (what each old worker's restart would do, idempotent);
4. for each new worker, build the snapshot of exactly its partitions: the source positions
   and per-partition watermarks of the partitions it now owns, and for each keyed step the
   state of the keys whose records go to those partitions (``partition_of(key bytes)``, the
   log's own partitioner), by the step's
   :meth:`~tidal.core.operator.SplitsByKey.split_state`;
5. write them as complete checkpoints (id: one more than any old one) of the new layout,
   then switch ``workers/<pipeline>/LAYOUT.json`` to the new layout by an atomic rename:
   **that rename is the commit point**; finally delete the old layout.

A crash (``kill -9``) before the rename leaves the old layout in force (the next start
deletes the half-written new one and re-splits again); after it, the new one (the next
start deletes what is left of the old one). ``LAYOUT.json`` is written (naming the old
layout) before anything of a new layout exists, so two layouts on disk always come with
the file that says which one counts.

What cannot be re-split is refused with a :class:`~tidal.errors.StateError` naming the
step, before anything is written: a step whose state is not keyed (any operator with
state that does not implement ``split_state``, e.g. a learner or a dedupe); a keyed step
fed by sources with different partitionings, or by a source other than the embedded log
(whose partitioner is the one known here); a key found in an old worker that did not own
its partition (the input was not partitioned by the key the step groups by); and a sink
that commits outside the checkpoints (Kafka transactions, one id per worker).

Example:
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> layout = JobLayout(tmp.name, "job")
    >>> layout.current() is None  # no checkpoints yet: nothing to re-split
    True
    >>> tmp.cleanup()
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from tidal.core.names import check_name
from tidal.errors import ConfigError, StateError
from tidal.io.base import TransactionalSink
from tidal.runtime.checkpoint import (
    CheckpointConfig,
    CheckpointStore,
    lock_file,
    make_checkpoints_folder,
)
from tidal.runtime.executor import DEAD_LETTERS
from tidal.runtime.graph import Graph
from tidal.runtime.snapshot import decode, encode
from tidal.runtime.workers.plan import assign, worker_dir
from tidal.runtime.workers.split_plan import Layout, SplitPlan, layout_name

__all__ = ["LAYOUT", "RESPLIT_CRASH_ENV", "RESPLIT_POINTS", "JobLayout", "Resplit", "layout_name"]

log = logging.getLogger("tidal.workers")

LAYOUT = "LAYOUT.json"
RESPLIT_CRASH_ENV = "TIDAL_TEST_RESPLIT_CRASH"
RESPLIT_POINTS = ("after_sinks", "mid_write", "after_write", "after_layout")
"""Where ``TIDAL_TEST_RESPLIT_CRASH=<point>`` kills the re-splitting process (tests only):
old transactions committed / the first new checkpoint written / all written, no switch
yet / switched, old layout not yet deleted."""

_DIR = re.compile(r"^(\d+)-of-(\d+)$")
_ABSENT = -1


@dataclass
class Resplit:
    """What a re-split did.

    Attributes:
        old: the layout before.
        new: the layout after.
        checkpoint: the id of the new layout's checkpoints.
        keys: live keys moved, per keyed step.
        seconds: how long it took (reading, splitting, writing, switching).
    """

    old: Layout
    new: Layout
    checkpoint: int
    keys: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        """One line for the terminal."""
        keys = sum(self.keys.values())
        return (
            f"re-split the state of {layout_name(self.old)} into {layout_name(self.new)} "
            f"(checkpoint {self.checkpoint}, {keys:,} keys, {self.seconds:.2f} s)"
        )


class JobLayout:
    """The checkpoint layout of one pipeline in a data directory; re-splits it on demand.

    Args:
        data_dir: the run's data directory.
        pipeline: the pipeline's name.
        environ: where the test crash point is read (default: ``os.environ``).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        pipeline: str,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.pipeline = check_name(pipeline, "pipeline")
        self.root = self.data_dir / "workers" / self.pipeline
        self._lock: IO[bytes] | None = None
        point = (os.environ if environ is None else environ).get(RESPLIT_CRASH_ENV, "")
        if point and point not in RESPLIT_POINTS:
            msg = f"{RESPLIT_CRASH_ENV}={point!r}: the point must be one of {RESPLIT_POINTS}"
            raise ConfigError(msg)
        self._crash = point or None

    # -- the job lock ---------------------------------------------------------------------
    def lock(self) -> None:
        """Hold the job: no other ``tidal run`` of it may change its layout meanwhile.

        Raises:
            StateError: if another process holds it.
        """
        if self._lock is not None:
            return
        make_checkpoints_folder(self.root, self.pipeline)
        self._lock = lock_file(
            self.root / "LOCK",
            f"another tidal run of pipeline {self.pipeline!r} is using '{self.data_dir}'; "
            "stop it first, or give this run another --data-dir",
        )

    def unlock(self) -> None:
        """Release the job lock."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- where things are -----------------------------------------------------------------
    def store(self, layout: Layout, index: int = 0) -> CheckpointStore:
        """The checkpoint store of worker ``index`` of ``layout``."""
        base = (
            self.data_dir
            if layout is None
            else worker_dir(self.data_dir, self.pipeline, index, layout)
        )
        return CheckpointStore(CheckpointConfig(data_dir=base, interval=None), self.pipeline)

    def _stores(self, layout: Layout) -> list[CheckpointStore]:
        return [self.store(layout, i) for i in range(1 if layout is None else layout)]

    def _written(self) -> Layout | int:
        """The layout ``LAYOUT.json`` names, or ``_ABSENT``."""
        try:
            meta = orjson.loads((self.root / LAYOUT).read_bytes())
        except FileNotFoundError:
            return _ABSENT
        except (OSError, orjson.JSONDecodeError) as exc:
            msg = f"'{self.root / LAYOUT}' is unreadable ({exc}); it names the job's layout"
            raise StateError(msg) from exc
        workers = meta.get("workers")
        return None if workers is None else int(workers)

    def _write_layout(self, layout: Layout) -> None:
        tmp = self.root / (LAYOUT + ".tmp")
        with tmp.open("wb") as f:
            f.write(orjson.dumps({"workers": layout}))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.root / LAYOUT)
        _fsync_dir(self.root)

    def _found(self) -> set[Layout]:
        """Layouts that hold checkpoints on disk."""
        found: set[Layout] = set()
        if self.store(None).ids():
            found.add(None)
        if self.root.is_dir():
            for sub in self.root.iterdir():
                m = _DIR.match(sub.name)
                if m and (sub / "checkpoints" / self.pipeline).is_dir():
                    store = self.store(int(m.group(2)), int(m.group(1)))
                    if store.ids():
                        found.add(int(m.group(2)))
        return found

    def current(self) -> Layout:
        """The layout in force (``None`` also when there are no checkpoints).

        Raises:
            StateError: if checkpoints of several layouts exist without ``LAYOUT.json``.
        """
        written = self._written()
        if written != _ABSENT:
            return written
        found = self._found()
        if len(found) > 1:
            names = ", ".join(layout_name(x) for x in sorted(found, key=lambda x: x or 0))
            msg = (
                f"'{self.data_dir}' holds checkpoints of pipeline {self.pipeline!r} taken "
                f"with {names}, and no {LAYOUT} says which counts; delete the ones to drop"
            )
            raise StateError(msg)
        return next(iter(found)) if found else None

    def _tidy(self, layout: Layout) -> None:
        """Delete what is left of every other layout (a re-split that ended or crashed)."""
        if layout is not None:
            self.store(None).clear()
        if not self.root.is_dir():
            return
        for sub in self.root.iterdir():
            m = _DIR.match(sub.name)
            if m and (layout is None or int(m.group(2)) != layout):
                shutil.rmtree(sub, ignore_errors=True)

    # -- the re-split ---------------------------------------------------------------------
    def ensure(self, target: Layout, build: Callable[[], Graph]) -> Resplit | None:
        """Make ``target`` the layout in force, re-splitting the state if it is not.

        Call :meth:`lock` first and keep it for the run.

        Args:
            target: ``None`` (one process) or the number of workers.
            build: makes a fresh copy of the pipeline (called once per old worker, to
                commit its sinks' transactions, and once more as a template).

        Returns:
            what the re-split did, or ``None`` if nothing had to change.

        Raises:
            StateError: if the state cannot be re-split (the message says why and how to go
                on), or an old worker is still running.
        """
        if self._lock is None:
            self.lock()
        written = self._written()
        current = self.current()
        if written != _ABSENT:
            self._tidy(current)
        if current == target:
            return None
        old_stores = self._stores(current)
        if not any(s.ids() for s in old_stores):  # nothing to carry over
            if written != _ABSENT:
                self._write_layout(target)
                self._tidy(target)
            return None
        if written == _ABSENT:
            self._write_layout(current)  # two layouts never exist without this file
        return self._resplit(current, target, old_stores, build)

    def _hit(self, point: str) -> None:
        if self._crash == point:
            os.kill(os.getpid(), signal.SIGKILL)

    def _resplit(
        self,
        old: Layout,
        new: Layout,
        old_stores: list[CheckpointStore],
        build: Callable[[], Graph],
    ) -> Resplit:
        t0 = time.perf_counter()
        new_stores = self._stores(new)
        try:
            for store in old_stores:
                store.lock()  # refused while an old worker runs
            loaded = [_load(s) for s in old_stores]
            plan = SplitPlan(build(), old, new)
            snapshots, keys = plan.split([x[1] for x in loaded])  # refuses before any write
            for store in new_stores:
                store.lock()
            self._commit_old_sinks(old, loaded, build)
            self._hit("after_sinks")
            cid = 1 + max((max(s.ids(), default=0) for s in old_stores), default=0)
            for j, (store, snap) in enumerate(zip(new_stores, snapshots, strict=True)):
                store.clear()  # a re-split that crashed before its switch left these
                ended = plan.ended(j, [x[2] for x in loaded])
                state = encode({"snapshot": snap, "sinks": {}, "ended": ended})
                store.write(cid, state, final=ended is not None)
                if j == 0:
                    self._hit("mid_write")
            self._hit("after_write")
            self._write_layout(new)  # the commit point
            self._hit("after_layout")
            self._tidy(new)
        finally:
            for store in (*old_stores, *new_stores):
                store.unlock()
        done = Resplit(old, new, cid, keys, time.perf_counter() - t0)
        log.info("pipeline %r: %s", self.pipeline, done.line())
        return done

    def _commit_old_sinks(
        self,
        old: Layout,
        loaded: list[tuple[int | None, Mapping[str, Any] | None, Any]],
        build: Callable[[], Graph],
    ) -> None:
        """Commit what each old checkpoint prepared; discard the rest the old workers staged."""
        for i, (_, _, state) in enumerate(loaded):
            pending: Mapping[str, Any] = (state or {}).get("sinks") or {}
            graph = build()
            if old is not None:
                assign(graph, i, old)
            sinks: dict[str, TransactionalSink] = {
                n.name: n.sink
                for n in graph.nodes.values()
                if isinstance(n.sink, TransactionalSink)
            }
            if isinstance(graph.dead_letters, TransactionalSink):
                sinks[DEAD_LETTERS] = graph.dead_letters
            for name, sink in sinks.items():
                info = pending.get(name)
                sink.recover([info] if info is not None else [])
                with contextlib.suppress(Exception):
                    sink.close()
            for name in set(pending) - set(sinks):
                log.warning(
                    "worker %d's checkpoint holds a transaction of sink %r, which pipeline %r "
                    "no longer has; its staged output is left as it is",
                    i,
                    name,
                    self.pipeline,
                )


def _load(store: CheckpointStore) -> tuple[int | None, Mapping[str, Any] | None, Any]:
    """(checkpoint id, snapshot, whole state) of a store's newest valid checkpoint."""
    found = store.load_latest()
    if found is None:
        return None, None, None
    chk, data = found
    state = decode(data)
    if not isinstance(state, dict) or "snapshot" not in state:
        msg = f"checkpoint {chk.path} holds no pipeline snapshot; was it written by Tidal?"
        raise StateError(msg)
    return chk.id, state["snapshot"], state


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
