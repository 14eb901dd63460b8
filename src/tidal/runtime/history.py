r"""Replay a pipeline's recent history through its own source and feature steps.

The retrain loop (:mod:`tidal.ml.learn.loop`) trains candidates in a child process on the
rows that reached it before a trigger. Where those rows are not plain log records (a Kafka
source, a value format, steps that add features before the loop), the child builds the
pipeline again from its factory (``RetrainPolicy(pipeline="features.py:build")``, the way
``tidal run`` workers do) and replays, per partition of its one source, the offsets
``starts`` up to (not including) ``ends`` through the steps between the source and the
loop: the *feature prefix*. So the candidate learns from rows decoded by the same format
and made by the same functions as the serving model's, and the source connects with the
same settings (a :class:`~tidal.io.kafka.KafkaConfig` with its TLS and SASL options, built
by the user's code from the environment the child inherits: nothing secret is written to
the job's files or its command line).

The replay reads with the source's own client calls (a Kafka consumer assigned at the start
offsets, the log's readers) and runs the prefix under the :class:`Executor` (event time,
watermarks, keyed state as in the pipeline, from empty state): the same offsets give the
same rows, so a job that runs again after a crash trains on the same rows. It has no side
effects: the pipeline's sinks, its dead-letter sink, a Kafka source's dead-letter topic and
consumer group are left out.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from tidal.core.batch import Batch
    >>> from tidal.io.log import LogSink
    >>> tmp = tempfile.TemporaryDirectory()
    >>> sink = LogSink(tmp.name, "t", partitions=1)
    >>> sink.write(Batch({"x": [1.0, 2.0, 3.0, 4.0]})); sink.close()
    >>> _ = Path(tmp.name, "p.py").write_text(f'''
    ... from tidal import Pipeline
    ... from tidal.io.log import LogSource
    ... def build():
    ...     p = Pipeline("p")
    ...     s = p.source("in", LogSource({tmp.name!r}, "t"))
    ...     s.map("double", lambda b: {{"x2": b["x"] * 2}}).map("loop", lambda b: b)
    ...     return p
    ... ''')
    >>> spec = {"pipeline": f"{tmp.name}/p.py:build", "step": "loop",
    ...         "starts": {"0": 1}, "ends": {"0": 3}, "history": 10}
    >>> replay_history(spec)["x2"].tolist()  # offsets 1 and 2, through the steps before
    [4.0, 6.0]
    >>> tmp.cleanup()
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tidal.core.batch import Batch
from tidal.errors import ConfigError, PipelineError
from tidal.io.base import DeadLetter, Sink, Source
from tidal.io.memory import MemorySink
from tidal.runtime.graph import Graph, Node

__all__ = ["HistorySource", "load_graph", "replay_history"]


def load_graph(target: str) -> Graph:
    """Build a pipeline from ``target``: ``"pkg.module:build"`` or ``"path/file.py[:build]"``.

    The attribute is called if it is callable (a factory), else used as it is; without one
    a file's ``build()`` or ``pipeline`` is taken, as ``tidal run FILE.py`` does.

    Raises:
        ConfigError: if the module, file or attribute is missing, or it is not a pipeline.
    """
    where, _, attr = target.partition(":")
    try:
        if where.endswith(".py") or "/" in where:
            path = Path(where)
            name = f"__tidal_history_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None or not path.is_file():
                msg = f"retrain replay: no pipeline file {where!r} (from policy.pipeline)"
                raise ConfigError(msg)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # as an import would (dataclasses look it up)
            sys.path.insert(0, str(path.resolve().parent))
            try:
                spec.loader.exec_module(module)
            finally:
                sys.path.remove(str(path.resolve().parent))
        else:
            module = importlib.import_module(where)
    except ImportError as exc:
        msg = f"retrain replay: cannot import {where!r} (policy.pipeline={target!r}): {exc}"
        raise ConfigError(msg) from exc
    names = [attr] if attr else ["build", "pipeline"]
    obj: Any = next((getattr(module, n) for n in names if hasattr(module, n)), None)
    if callable(obj):
        obj = obj()
    if not isinstance(getattr(obj, "nodes", None), dict):
        msg = (
            f"retrain replay: {target!r} must name a pipeline or a function that builds one "
            f"(module:function or file.py:function), got {type(obj).__name__}"
        )
        raise ConfigError(msg)
    return obj  # type: ignore[no-any-return]


class HistorySource:
    """A source read between offsets: per partition from ``starts`` up to ``ends``.

    It wraps the pipeline's own source: opens it at ``starts`` (only the partitions in
    ``ends``), drops rows at or past ``ends``, and ends (``poll`` returns ``None``) once
    every partition's position reached its end. A source with a ``replaying()`` method (the
    Kafka source) is asked to read without side effects first.

    Args:
        inner: the source to read.
        starts: first offset per partition id.
        ends: end offset (exclusive) per partition id.
    """

    def __init__(self, inner: Source, starts: Mapping[int, int], ends: Mapping[int, int]) -> None:
        self.inner = inner
        first = {int(p): int(o) for p, o in starts.items()}
        self.ends = {int(p): int(e) for p, e in ends.items() if int(e) > first.get(int(p), 0)}
        self.starts = {p: first.get(p, 0) for p in self.ends}
        quiet = getattr(inner, "replaying", None)
        if callable(quiet):
            quiet()
        restrict = getattr(inner, "restrict", None)
        if callable(restrict) and self.ends:
            restrict(sorted(self.ends))
        self.name = getattr(inner, "name", "history")

    def partitions(self) -> Sequence[int]:
        """The partitions with rows to replay."""
        return tuple(sorted(self.ends))

    def open(self, positions: Mapping[int, Any]) -> None:
        """Open the inner source at ``starts`` (``positions`` are ignored)."""
        if self.ends:
            self.inner.open(dict(self.starts))

    def _done(self) -> bool:
        pos = self.inner.position()
        for p, end in self.ends.items():
            at = pos.get(p)
            at = at.get("offset") if isinstance(at, Mapping) else at
            if at is None or int(at) < end:
                return False
        return True

    def poll(self, max_records: int, timeout: float) -> Batch | None:
        """The inner source's next rows before the ends; ``None`` once all are read."""
        if not self.ends or self._done():
            return None
        b = self.inner.poll(max_records, timeout)
        if b is None:
            return None
        if not len(b):
            return b
        if b.partition is None or b.offset is None:
            msg = f"{self.name}: a replayed source must give partitions and offsets"
            raise PipelineError(msg)
        limit = np.array([self.ends.get(int(p), -1) for p in b.partition.tolist()], np.int64)
        return b.filter(b.offset < limit)

    def position(self) -> dict[int, Any]:
        """The inner source's position."""
        return self.inner.position()

    def dead_letters(self) -> list[DeadLetter]:
        """The inner source's dead letters (counted by the replay, not written anywhere)."""
        return self.inner.dead_letters()

    def close(self) -> None:
        """Close the inner source."""
        self.inner.close()


def _prefix(graph: Graph, step: str) -> tuple[list[Node], Node]:
    """The steps the loop ``step`` reads from (transitively), in order, and its one source."""
    if step not in graph.nodes:
        msg = (
            f"retrain replay: pipeline {graph.name!r} built again has no step {step!r}; "
            "policy.pipeline must build the pipeline that runs the loop"
        )
        raise ConfigError(msg)
    loop = graph.nodes[step]
    need: set[str] = set()
    todo = [n for n, _ in loop.inputs[:1]]
    while todo:
        n = todo.pop()
        if n.name not in need:
            need.add(n.name)
            todo += [m for m, _ in n.inputs]
    nodes = [n for n in graph.nodes.values() if n.name in need]
    sources = [n for n in nodes if n.source is not None]
    if len(sources) != 1:
        msg = (
            f"retrain replay: step {step!r} reads from {len(sources)} sources "
            f"({[n.name for n in sources]}); history is replayed from one"
        )
        raise ConfigError(msg)
    return nodes, sources[0]


class _Graph:
    def __init__(self, name: str, nodes: dict[str, Node]) -> None:
        self.name = name
        self.nodes = nodes
        self.dead_letters: Sink | None = None  # dead letters are counted, not written


def replay_history(spec: dict[str, Any]) -> Batch:
    """The rows that reached step ``spec["step"]``, replayed through the feature prefix.

    ``spec`` has ``pipeline`` (a :func:`load_graph` target), ``step`` (the loop's name),
    ``starts`` and ``ends`` (partition id -> offset, JSON: string keys) and ``history``
    (rows kept, the newest by ingest time, partition and offset). Oldest first.

    Raises:
        ConfigError: if the pipeline cannot be built or the step has not one source.
    """
    from tidal.runtime.executor import Executor

    graph = load_graph(str(spec["pipeline"]))
    nodes, source = _prefix(graph, str(spec["step"]))
    starts = {int(p): int(o) for p, o in spec["starts"].items()}
    ends = {int(p): int(o) for p, o in spec["ends"].items()}
    assert source.source is not None
    copies: dict[str, Node] = {}
    for n in nodes:
        copies[n.name] = Node(
            n.name,
            op=n.op,
            source=HistorySource(source.source, starts, ends) if n is source else None,
            time=n.time,
            time_unit=n.time_unit,
            watermark=n.watermark,
            inputs=[(copies[m.name], port) for m, port in n.inputs],
        )
    feed, port = graph.nodes[str(spec["step"])].inputs[0]
    out = MemorySink()
    copies["__history__"] = Node("__history__", sink=out, inputs=[(copies[feed.name], port)])
    Executor(_Graph(graph.name, copies), handle_signals=False).run()
    if not out.batches:
        return Batch()
    rows = out.batch()
    if rows.partition is None or rows.offset is None:
        msg = f"retrain replay: the rows reaching step {spec['step']!r} lost their offsets"
        raise PipelineError(msg)
    keys = (rows.offset, rows.partition) + (() if rows.ingest is None else (rows.ingest,))
    order = np.lexsort(keys)
    return rows.take(order[-int(spec["history"]) :])
