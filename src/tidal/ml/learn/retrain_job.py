"""The retrain job: train a candidate learner on recent history replayed from the log.

The retrain loop (:mod:`tidal.ml.learn.loop`) runs this module in a child process,
``python -m tidal.ml.learn.retrain_job JOB_DIR``, so training never blocks the pipeline. The
job directory holds ``job.json`` (what to train, on which rows of which log topic); the job

1. replays the history: per partition, the offsets from ``starts`` up to (not including)
   ``ends``, in the order the records were produced (timestamp, then partition and offset),
   keeping the last ``history`` rows; from the embedded log topic ``topic`` as stored, or,
   with ``pipeline``, through the pipeline built again (its source, Kafka or the log, and
   the feature steps before the loop; :mod:`tidal.runtime.history`); then through the
   policy's ``prepare`` function if it has one (``"module:function"``, ``Batch -> Batch``);
2. trains a fresh :class:`~tidal.ml.learn.step.LearnStep` with the same learner, features and
   class labels as the serving one, ``epochs`` passes over the rows (the metrics of the first
   pass are its prequential training metrics);
3. writes the step's state to ``candidate.npz`` (arrays, plus the JSON values in one
   ``__json__`` entry: nothing is pickled) and, last, ``done.json`` (rows, metrics, seconds),
   each through a temporary file renamed into place, so a reader sees a whole result or none.

With ``workers > 1`` (the PyTorch MLP), the job starts ``workers`` processes that train
data-parallel with ``torch.distributed`` (gloo on CPU): every rank reads the whole history and
fits the feature statistics on all of it, then learns its own rows (``rank::workers``, cut to
equal lengths) and averages the gradients of every step with the other ranks, so all ranks
hold the same weights; rank 0 writes the result.

The job is deterministic (same rows, same seed, same result), so a job that is run again
after a crash writes the same candidate. It exits when the process that started it dies.

Example:
    >>> import numpy as np
    >>> state = {"w": np.arange(3.0), "kind": "x", "nested": {"n": 2, "a": np.ones(2)}}
    >>> back = decode_state(encode_state(state))
    >>> back["w"].tolist(), back["kind"], back["nested"]["a"].tolist()
    ([0.0, 1.0, 2.0], 'x', [1.0, 1.0])
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from tidal.core.batch import Batch
from tidal.core.snapshot import decode, encode
from tidal.errors import StateError

__all__ = [
    "DONE_FILE",
    "JOB_FILE",
    "STATE_FILE",
    "decode_state",
    "encode_state",
    "history",
    "prepare",
    "read_history",
    "run_job",
    "write_atomic",
]

JOB_FILE = "job.json"
STATE_FILE = "candidate.npz"
DONE_FILE = "done.json"
_MODULE = "tidal.ml.learn.retrain_job"


def encode_state(state: dict[str, Any]) -> bytes:
    """A learner snapshot tree as bytes: the checkpoints' own codec (no pickle).

    Raises:
        StateError: for an array of objects (snapshots hold numbers, not Python objects).
    """
    return encode(state)


def decode_state(data: bytes) -> dict[str, Any]:
    """Read :func:`encode_state`'s bytes back (never unpickles).

    Raises:
        StateError: if the bytes are not such a file.
    """
    out = decode(data)
    if not isinstance(out, dict):
        msg = f"not a learner state file: it holds a {type(out).__name__}"
        raise StateError(msg)
    return out


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed into place (fsynced)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_history(spec: dict[str, Any]) -> Batch:
    """The rows ``spec`` names, replayed from the embedded log, oldest first.

    ``spec`` has ``data_dir``, ``topic``, ``starts`` and ``ends`` (partition -> offset, as
    JSON: string keys) and ``history`` (rows kept, the newest).
    """
    from tidal.io.log.source import LogSource

    starts = {int(p): int(o) for p, o in spec["starts"].items()}
    ends = {int(p): int(o) for p, o in spec["ends"].items()}
    parts = sorted(p for p in ends if ends[p] > starts.get(p, 0))
    if not parts:
        return Batch()
    src = LogSource(spec["data_dir"], spec["topic"], bounded=True, partitions=parts)
    got: list[Batch] = []
    try:
        src.open({p: starts.get(p, 0) for p in parts})
        while (b := src.poll(8192, 0.0)) is not None:
            if not len(b):
                continue
            assert b.partition is not None and b.offset is not None
            limit = np.array([ends[int(p)] for p in b.partition.tolist()], dtype=np.int64)
            got.append(b.filter(b.offset < limit))
    finally:
        src.close()
    if not got:
        return Batch()
    rows = Batch.concat(got)
    assert rows.ingest is not None and rows.partition is not None and rows.offset is not None
    order = np.lexsort((rows.offset, rows.partition, rows.ingest))
    keep = order[-int(spec["history"]) :]
    return rows.take(keep)


_PIPELINE_READER = "tidal.runtime.history"
"""Replays through the pipeline built again (a layer up: imported by name, at run time)."""


def history(spec: dict[str, Any]) -> Batch:
    """The job's rows, from the log or through the pipeline built again.

    :func:`read_history` (the log topic as stored), or, with ``spec["pipeline"]``,
    ``tidal.runtime.history.replay_history`` (imported by name: it is a layer up).
    """
    if spec.get("pipeline"):
        import importlib

        reader = importlib.import_module(_PIPELINE_READER).replay_history
        return reader(spec)  # type: ignore[no-any-return]
    return read_history(spec)


def prepare(spec: dict[str, Any], rows: Batch) -> Batch:
    """``rows`` through the job's ``prepare`` function (``"module:function"``), if any.

    Raises:
        StateError: if the function cannot be imported or does not return a batch.
    """
    target = spec.get("prepare")
    if not target or not len(rows):
        return rows
    import importlib

    module, attr = str(target).split(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        msg = f"retrain job: cannot import prepare={target!r}: {exc}"
        raise StateError(msg) from exc
    out = fn(rows)
    if not isinstance(out, Batch):
        msg = f"retrain job: prepare={target!r} returned {type(out).__name__}, not a Batch"
        raise StateError(msg)
    return out


def _step(spec: dict[str, Any]) -> Any:
    from tidal.ml.learn.catalog import make
    from tidal.ml.learn.features import Features
    from tidal.ml.learn.step import LearnStep

    learner = make(spec["learner"], seed=int(spec["seed"]), **spec["settings"])
    step = LearnStep(
        spec["id"],
        learner,
        features=Features(**spec["features"]),
        target=spec["target"],
        output=spec["output"],
        metrics=spec["metrics"],
        window=int(spec["window"]),
        weight=spec["weight"],
    )
    step.labels.restore(spec["labels"])
    return step


class _Parent:
    """Raises SystemExit when the process that started the job is gone."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid

    def check(self) -> None:
        if self.pid is not None and os.getppid() != self.pid:
            raise SystemExit(3)


def _train(spec: dict[str, Any], rows: Batch, parent: _Parent) -> tuple[Any, dict[str, float]]:
    step = _step(spec)
    metrics: dict[str, float] = {}
    chunk = 4096
    for epoch in range(int(spec["epochs"])):
        for start in range(0, len(rows), chunk):
            parent.check()
            step.learn(rows.slice(start, min(start + chunk, len(rows))))
        if epoch == 0 and step.metrics is not None:
            metrics = {k: float(v) for k, v in step.metrics.values().items()}
    return step, metrics


def _train_rank(spec: dict[str, Any], rows: Batch, rank: int, world: int, init: str) -> Any:
    """One rank of a data-parallel MLP job: returns the trained step (same on every rank)."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # ranks share the machine's cores
    step = _step(spec)
    learner = step.learner
    if not hasattr(learner, "grad_hook"):
        msg = f"retrain workers > 1 needs the 'mlp' learner (gradient sync), got {learner.kind!r}"
        raise StateError(msg)
    x = step.features.transform(rows, update=True)
    y = step.labels.ids(rows[spec["target"]]) if step.task == "classification" else None
    yy = y if y is not None else np.asarray(rows[spec["target"]], dtype=np.float64)
    per = len(x) // world
    mine = np.arange(rank, per * world, world)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:

        def average(net: Any) -> None:  # one all-reduce of all gradients per step
            grads = [p.grad for p in net.parameters() if p.grad is not None]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= world
            at = 0
            for g in grads:
                g.copy_(flat[at : at + g.numel()].view_as(g))
                at += g.numel()

        learner.grad_hook = average
        for _ in range(int(spec["epochs"])):
            learner.learn(x[mine], yy[mine])
        learner.grad_hook = None
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return step


def _digest(step: Any) -> str:
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(step.learner.snapshot().items()):
        if isinstance(v, np.ndarray):
            h.update(k.encode())
            h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()[:16]


def _distributed(spec: dict[str, Any], job: Path) -> None:
    """Start ``workers`` ranks (this process waits); fails if any rank fails."""
    import subprocess

    world = int(spec["workers"])
    init = f"file://{job / ('rendezvous-' + uuid.uuid4().hex)}"
    procs = [
        subprocess.Popen(  # noqa: S603 - our own module, no shell
            [sys.executable, "-m", _MODULE, str(job), "--rank", str(r), str(world), init],
            stderr=open(job / f"rank{r}.err", "wb"),  # noqa: SIM115 - closed with the process
        )
        for r in range(world)
    ]
    codes = [p.wait() for p in procs]
    if any(codes):
        msg = f"retrain ranks exited with {codes}; see {job}/rank*.err"
        raise StateError(msg)


def run_job(job: Path, rank: tuple[int, int, str] | None = None) -> None:
    """Run the job in directory ``job`` (what ``python -m`` runs; see the module doc)."""
    t0 = time.perf_counter()
    spec = json.loads((job / JOB_FILE).read_text())
    parent = _Parent(spec.get("parent") if rank is None else None)
    if rank is None and int(spec.get("workers", 1)) > 1:
        _distributed(spec, job)
        return
    rows = prepare(spec, history(spec))
    metrics: dict[str, float] = {}
    if rank is None:
        step, metrics = _train(spec, rows, parent)
    else:
        step = _train_rank(spec, rows, *rank)
        (job / f"rank{rank[0]}.digest").write_text(_digest(step))
        if rank[0] != 0:
            return
    write_atomic(job / STATE_FILE, encode_state(step.snapshot()))
    done = {
        "rows": len(rows),
        "metrics": metrics,
        "seconds": round(time.perf_counter() - t0, 3),
        "workers": int(spec.get("workers", 1)),
    }
    write_atomic(job / DONE_FILE, json.dumps(done).encode())


def main(argv: list[str] | None = None) -> int:
    """``python -m tidal.ml.learn.retrain_job JOB_DIR [--rank R WORLD INIT]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    rank = None
    if len(args) == 5 and args[1] == "--rank":
        rank = (int(args[2]), int(args[3]), args[4])
    run_job(Path(args[0]), rank)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
