"""Static partition ownership for ``tidal run --workers N`` on one machine.

Worker ``i`` of ``N`` runs the whole pipeline on its share of every source's partitions
(``parts[j]`` for ``j % N == i``; :meth:`~tidal.io.base.SplitsAcrossWorkers.assign_worker`).
Keyed state is correct only if every record of a key reaches one worker, i.e. if the input
is partitioned by the key the pipeline groups by (``tidal log produce --key``, or a
:class:`~tidal.io.log.LogSink` with ``key=``): the same rule as Kafka Streams' co-partitioning.

Each worker checkpoints in its own directory::

    <data dir>/workers/<pipeline>/<i>-of-<N>/checkpoints/<pipeline>/chk-.../

so the state of a worker is the state of its partitions. A run with another N (or a
single-process run over a multi-worker job, and the reverse) first re-splits that state by
key into the new layout (:mod:`tidal.runtime.workers.resplit`, decision 0052).

Example:
    >>> import tempfile
    >>> from tidal import Pipeline
    >>> from tidal.io.jsonl import JsonlPartSink
    >>> from tidal.io.log import LogSource, Topic
    >>> tmp = tempfile.TemporaryDirectory()
    >>> Topic.create(tmp.name, "events", partitions=3).close()
    >>> p = Pipeline("scaled")
    >>> _ = p.source("in", LogSource(tmp.name, "events")).sink("out", JsonlPartSink(tmp.name))
    >>> worker_count(p, 8)  # no more workers than partitions
    3
    >>> assign(p, 1, 2)
    >>> p.nodes["in"].source.partitions()
    (1,)
    >>> worker_dir(tmp.name, "scaled", 1, 2).relative_to(tmp.name).as_posix()
    'workers/scaled/1-of-2'
    >>> tmp.cleanup()
"""

from __future__ import annotations

import os
from pathlib import Path

from tidal.core.names import check_name
from tidal.errors import ConfigError
from tidal.io.base import SplitsAcrossWorkers
from tidal.runtime.graph import Graph

__all__ = [
    "CRASH_WORKER_ENV",
    "WORKER_ENV",
    "assign",
    "parse_worker",
    "worker_count",
    "worker_dir",
]

WORKER_ENV = "TIDAL_WORKER"
"""Set by the supervisor in each worker's environment: ``"<index>/<count>"``."""

CRASH_WORKER_ENV = "TIDAL_TEST_WORKER_CRASH"
"""Tests only: ``<index>:<point>[:<n>]`` gives worker ``index``'s first start
``TIDAL_TEST_CRASH_POINT=<point>[:<n>]`` (it kills itself there); restarts run clean."""

def parse_worker(text: str) -> tuple[int, int]:
    """``"1/4"`` -> ``(1, 4)``.

    Raises:
        ConfigError: for anything else.

    Example:
        >>> parse_worker("1/4")
        (1, 4)
    """
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not sep or not 0 <= i < n:
        msg = f"{WORKER_ENV}={text!r}: expected '<index>/<count>' with 0 <= index < count"
        raise ConfigError(msg)
    return i, n


def _steps(pipeline: Graph) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for node in pipeline.nodes.values():
        if node.source is not None:
            out.append((node.name, node.source))
        if node.sink is not None:
            out.append((node.name, node.sink))
    if pipeline.dead_letters is not None:
        out.append(("<dead letters>", pipeline.dead_letters))
    return out


def worker_count(pipeline: Graph, requested: int) -> int:
    """How many workers to start: ``requested``, at most the largest partition count.

    A worker without partitions would idle (the hang of Faust's "more workers than
    partitions"), so none is started.

    Raises:
        ConfigError: if a source or sink cannot be split across workers.
    """
    if requested < 1:
        msg = f"--workers must be >= 1, got {requested}"
        raise ConfigError(msg)
    most = 1
    sources = {id(n.source): n.source for n in pipeline.nodes.values() if n.source is not None}
    for name, conn in _steps(pipeline):
        if not isinstance(conn, SplitsAcrossWorkers):
            what = "source" if id(conn) in sources else "sink"
            hint = (
                "read a partitioned input such as tidal.io.log.LogSource"
                if what == "source"
                else "write part files (tidal.io.jsonl.JsonlPartSink) or a LogSink"
            )
            msg = (
                f"step {name!r} of pipeline {pipeline.name!r}: its {what} "
                f"{type(conn).__name__} cannot be split across worker processes; run without "
                f"--workers, or {hint}"
            )
            raise ConfigError(msg)
        source = sources.get(id(conn))
        if source is not None:
            most = max(most, len(source.partitions()))
    return min(requested, most)


def assign(pipeline: Graph, index: int, count: int) -> None:
    """Make this process worker ``index`` of ``count``: tell every source and sink.

    Raises:
        ConfigError: if a connector cannot be split (see :func:`worker_count`).
    """
    worker_count(pipeline, count)
    seen: set[int] = set()
    for _, conn in _steps(pipeline):
        if id(conn) not in seen:  # one sink object may serve two steps
            seen.add(id(conn))
            assert isinstance(conn, SplitsAcrossWorkers)
            conn.assign_worker(index, count)


def worker_dir(data_dir: str | os.PathLike[str], pipeline: str, index: int, count: int) -> Path:
    """The data directory of worker ``index`` of ``count`` (its checkpoints go below)."""
    return Path(data_dir) / "workers" / check_name(pipeline, "pipeline") / f"{index}-of-{count}"
