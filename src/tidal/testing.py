"""Helpers for testing pipelines, the same ones Tidal's own tests use.

Example:
    >>> from tidal import Pipeline
    >>> p = Pipeline("t")
    >>> s = p.source("in", MemorySource([{"x": 1}, {"x": -2}, {"x": 3}]))
    >>> out = collect(s.filter("pos", lambda b: b["x"] > 0))
    >>> run(p).events, [r["x"] for r in out.records()]
    (3, [1, 3])
"""

from __future__ import annotations

from typing import Any

from tidal.io.memory import MemorySink, MemorySource
from tidal.pipeline import Pipeline, Stream
from tidal.runtime.executor import Executor, RunSummary

__all__ = ["MemorySink", "MemorySource", "collect", "run"]


def collect(stream: Stream, name: str | None = None) -> MemorySink:
    """Attach a :class:`MemorySink` to ``stream`` and return it."""
    sink = MemorySink()
    stream.sink(name or f"{stream.node.name}.collect.{stream.port}", sink)
    return sink


def run(pipeline: Pipeline, **options: Any) -> RunSummary:
    """Run a pipeline to the end of its (bounded) input.

    Defaults suit tests: no latency wait (each poll is a batch), no signal handlers.
    ``options`` go to :class:`~tidal.runtime.executor.Executor`.
    """
    options.setdefault("max_wait", "0ms")
    options.setdefault("handle_signals", False)
    return Executor(pipeline, **options).run()
