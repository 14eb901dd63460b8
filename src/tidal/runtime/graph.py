"""The pipeline graph as the runtime sees it: named steps wired port to port.

The :class:`~tidal.pipeline.Pipeline` builder (one layer up) makes these :class:`Node` s;
the :class:`~tidal.runtime.executor.Executor` runs anything shaped like a :class:`Graph`.
Keeping the description here lets the runtime depend on it without reaching up into the
builder.

Example:
    >>> from tidal.io.memory import MemorySink, MemorySource
    >>> source = Node("in", source=MemorySource([{"x": 1}]))
    >>> sink = Node("out", sink=MemorySink(), inputs=[(source, 0)])
    >>> source.outputs, sink.outputs
    (('main',), ())
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from tidal.core.operator import Operator
from tidal.core.watermark import WatermarkStrategy
from tidal.io.base import Sink, Source

__all__ = ["Graph", "Node", "TimeUnit"]

TimeUnit = Literal["ms", "s", "us", "ns"]
"""The unit of a numeric event-time column."""


@dataclass(eq=False)
class Node:
    """A step of the pipeline graph: a source, an operator or a sink.

    Attributes:
        name: the step's stable name (it keys state, checkpoints and metrics).
        op: the operator of an operator step.
        source: the source of a source step.
        sink: the sink of a sink step.
        time: a source's event-time column (``None``: processing time).
        time_unit: the unit of a numeric ``time`` column.
        watermark: a source's watermark strategy.
        inputs: ``(upstream node, its output port)`` per input port.
    """

    name: str
    op: Operator | None = None
    source: Source | None = None
    sink: Sink | None = None
    time: str | None = None
    time_unit: TimeUnit = "ms"
    watermark: WatermarkStrategy | None = None
    inputs: list[tuple[Node, int]] = field(default_factory=list)

    @property
    def outputs(self) -> tuple[str, ...]:
        """Output port names."""
        if self.op is not None:
            return self.op.outputs
        return () if self.sink is not None else ("main",)


class Graph(Protocol):
    """What the executor runs: a named graph of :class:`Node` s and a dead-letter sink.

    :class:`~tidal.pipeline.Pipeline` is one.

    Attributes:
        name: the graph's name (in checkpoints and metrics).
        nodes: the steps by name, each after the steps it reads from.
        dead_letters: where records that failed to decode or validate go (``None``: they
            are counted and the last ones kept in memory).
    """

    name: str
    nodes: dict[str, Node]
    dead_letters: Sink | None
