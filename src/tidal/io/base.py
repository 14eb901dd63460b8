"""The connector protocols: a partitioned :class:`Source`, a :class:`Sink`, dead letters.

A source owns one or more partitions, opens them at positions, and returns columnar
:class:`~tidal.core.batch.Batch` objects from ``poll``. A position is any JSON-serialisable
value (an offset, a line number); the runtime stores what ``position()`` returns and hands
it back to ``open`` on restore. Records that cannot be decoded never stop the source: they
are returned by ``dead_letters()`` with their reason and position.

Kafka's coordinates (topics, groups) live in the Kafka connector, not here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from tidal.core.batch import Batch
from tidal.core.deadletter import DeadLetter
from tidal.errors import ConnectorError

__all__ = [
    "BaseSink",
    "BaseSource",
    "DeadLetter",
    "Sink",
    "Source",
    "SplitsAcrossWorkers",
    "TransactionAborted",
    "TransactionalSink",
]


@runtime_checkable
class Source(Protocol):
    """A partitioned source of columnar batches.

    ``poll`` returns a batch (possibly empty when nothing arrived within ``timeout``
    seconds), or ``None`` once a bounded source is exhausted. Batches may mix partitions;
    then ``Batch.partition`` says which row came from where. ``Batch.offset`` gives each
    row's position in its partition when the source knows it; ``Batch.ingest`` may carry
    the time each record was produced (wall-clock ns), otherwise the runtime stamps it.
    """

    def partitions(self) -> Sequence[int]:
        """The partition ids this source has."""
        ...

    def open(self, positions: Mapping[int, Any]) -> None:
        """Start reading; partitions in ``positions`` resume after that position."""
        ...

    def poll(self, max_records: int, timeout: float) -> Batch | None:
        """Up to ``max_records`` records, waiting at most ``timeout`` seconds for the first."""
        ...

    def position(self) -> dict[int, Any]:
        """The position after the last record returned, per partition (JSON-serialisable)."""
        ...

    def dead_letters(self) -> list[DeadLetter]:
        """Records that failed to decode since the last call (the list is drained)."""
        ...

    def close(self) -> None:
        """Release files, sockets and threads."""
        ...


@runtime_checkable
class Sink(Protocol):
    """A destination for batches. ``flush`` makes written batches durable/visible."""

    def open(self) -> None:
        """Prepare to write (create files, connect)."""
        ...

    def write(self, batch: Batch) -> None:
        """Write one batch; may block (that is how backpressure reaches the source)."""
        ...

    def flush(self) -> None:
        """Make everything written so far durable or visible."""
        ...

    def close(self) -> None:
        """Flush and release resources."""
        ...


@runtime_checkable
class TransactionalSink(Sink, Protocol):
    """A sink that commits with the checkpoint (two-phase commit, as Flink's file sinks).

    Between checkpoints, ``write`` stages output where readers cannot see it. At a
    checkpoint the runtime calls :meth:`prepare` (make the staged output durable, still
    invisible; return a JSON description of the pending transaction), stores that
    description *inside* the checkpoint, writes the checkpoint atomically, and then calls
    :meth:`commit`. After a crash the runtime restores the newest complete checkpoint and
    calls :meth:`recover` with the transactions recorded in it: they are committed (again,
    idempotently) and any other staged output, from the attempt that crashed, is discarded.
    Readers therefore never see uncommitted or duplicated output.
    """

    def prepare(self, checkpoint_id: int) -> dict[str, Any]:
        """Pre-commit everything written since the last prepare; return its description."""
        ...

    def commit(self, checkpoint_id: int, pending: dict[str, Any]) -> None:
        """Make a prepared transaction visible; a repeated call must change nothing."""
        ...

    def recover(self, pending: Sequence[dict[str, Any]]) -> None:
        """On restore: commit ``pending`` idempotently; discard all other staged output."""
        ...


@runtime_checkable
class SplitsAcrossWorkers(Protocol):
    """A source or sink that can be one of ``count`` copies in as many worker processes.

    ``tidal run FILE.py --workers N`` (:mod:`tidal.runtime.workers`) runs the same pipeline
    in N processes and calls :meth:`assign_worker` on every source and sink of worker
    ``index`` before it opens them: a source then reads only the share of its partitions
    that worker owns, and a sink writes so that N copies never collide (part files get the
    worker in their names, for instance). A connector without this method cannot be split,
    and ``--workers`` refuses the pipeline with an error naming the step.
    """

    def assign_worker(self, index: int, count: int) -> None:
        """Become the copy of worker ``index`` of ``count`` (``0 <= index < count``)."""
        ...


class TransactionAborted(ConnectorError):
    """A transactional sink's ``commit`` failed for good: the prepared output is gone.

    Raised by sinks whose system may abort a prepared transaction (Kafka's coordinator does,
    e.g. after an outage). A runtime that knows which checkpoint committed last (decision
    0017) rewinds to it and processes the input again; otherwise the run stops, and a
    restart resumes from that checkpoint.
    """


class BaseSource:
    """Defaults for a one-partition source: override ``poll`` (and ``position``/``open``)."""

    def __init__(self) -> None:
        self._dead: list[DeadLetter] = []

    def partitions(self) -> Sequence[int]:
        """One partition, ``0``."""
        return (0,)

    def open(self, positions: Mapping[int, Any]) -> None:
        """Nothing to open by default."""

    def poll(self, max_records: int, timeout: float) -> Batch | None:  # pragma: no cover
        """Subclasses return data here."""
        raise NotImplementedError

    def position(self) -> dict[int, Any]:
        """No position by default."""
        return {}

    def dead_letters(self) -> list[DeadLetter]:
        """Drain the dead letters recorded with :meth:`reject`."""
        out, self._dead = self._dead, []
        return out

    def reject(self, dead: DeadLetter) -> None:
        """Record a record that failed to decode."""
        self._dead.append(dead)

    def close(self) -> None:
        """Nothing to close by default."""


class BaseSink:
    """Defaults for a sink: override ``write``."""

    def open(self) -> None:
        """Nothing to open by default."""

    def write(self, batch: Batch) -> None:  # pragma: no cover
        """Subclasses write here."""
        raise NotImplementedError

    def flush(self) -> None:
        """Nothing to flush by default."""

    def resume(self) -> None:
        """The run goes on from a checkpoint (called before ``open``); nothing by default.

        A sink that would otherwise start its output afresh (a file sink truncates its
        file) keeps what the earlier runs wrote: at-least-once output must survive a
        restart.
        """

    def close(self) -> None:
        """Flush by default."""
        self.flush()
