"""The operator contract every step implements.

An operator receives batches on one or more input ports and emits batches on one or more
named output ports (``"main"`` first; side outputs such as ``"late"`` after it). Event-time
operators also react to the watermark: the runtime calls :meth:`Operator.on_watermark` when
the minimum watermark over the operator's inputs advances, and forwards it downstream after
whatever the call emitted.

Every operator can :meth:`~Operator.snapshot` its state to a dict of numpy arrays (numeric
dtypes only) and JSON values, and :meth:`~Operator.restore` it in a fresh pipeline. The
runtime snapshots only at batch boundaries, so the state is always consistent with the source
positions stored next to it. Nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tidal.core.batch import Array, Batch
from tidal.core.deadletter import DeadLetter

Emit = list[tuple[int, Batch]]
"""What an operator hands on: (output port index, batch) pairs, in order."""


@dataclass
class Context:
    """What an operator may ask of the runtime: dead letters, counters and gauges."""

    dead: Callable[[DeadLetter], None] = field(default=lambda _d: None)
    counters: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)

    def count(self, name: str, n: int) -> None:
        """Add ``n`` to the counter ``name`` (shown in the summary and metrics)."""
        if n:
            self.counters[name] = self.counters.get(name, 0) + n

    def gauge(self, name: str, value: float) -> None:
        """Set the gauge ``name`` (a current value, e.g. a metric; shown in the summary)."""
        self.gauges[name] = value


class Operator:
    """Base class: a stateless one-input, one-output operator that passes batches on."""

    inputs: int = 1
    outputs: tuple[str, ...] = ("main",)

    def __init__(self, name: str) -> None:
        self.name = name
        self.ctx = Context()

    def open(self, ctx: Context) -> None:
        """Called once before the first batch."""
        self.ctx = ctx

    def process(self, batch: Batch, port: int) -> Emit:
        """Handle one batch arriving on input ``port``."""
        return [(0, batch)]

    def on_watermark(self, wm: int) -> Emit:
        """The input watermark advanced to ``wm``; emit whatever is now complete."""
        return []

    def snapshot(self) -> dict[str, Any]:
        """State as numpy arrays and JSON values; ``{}`` for stateless operators."""
        return {}

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore state written by :meth:`snapshot` on a fresh instance."""

    def close(self) -> None:
        """Release resources at the end of the run."""


@runtime_checkable
class SplitsByKey(Protocol):
    """An operator whose state is keyed, so it can be re-split for another worker count.

    ``tidal run --workers M`` over the checkpoints of ``N`` workers (decision 0052) hands
    every old worker's snapshot of the step to :meth:`split_state`, with ``route(i,
    keys)``: the new worker (``0..count-1``) of each key found in old snapshot ``i`` (the
    owner of the partition the key's records go to). An operator with state that does
    not implement it (and whose snapshots are not all ``{}``) makes the re-split refuse,
    naming the step.
    """

    def split_state(
        self,
        snapshots: Sequence[Mapping[str, Any]],
        route: Callable[[int, Array], Array],
        count: int,
    ) -> list[dict[str, Any]]:
        """One snapshot per new worker, holding exactly the state of the keys routed to it."""
        ...
