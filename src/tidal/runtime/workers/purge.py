"""Purging the repartition topic behind stage 2, as Kafka Streams does (decision 0056).

The repartition topic of a ``--group`` job (:mod:`tidal.runtime.workers.repartition`) keeps
its records for ever (``retention.ms = -1``: their timestamps are event times, which a
time-based retention would delete under the reader). Once a stage 2 task's transaction has
committed its position in a repartition partition, no reader needs the records below it:
stage 2 restores exactly the committed checkpoint, whose position is that offset, and
nothing else reads the topic. So, after each commit, :class:`PurgingStore` hands the
committed offset to the worker's :class:`Purger`, which deletes the records below it with
the AdminClient's ``delete_records``:

- **never past the commit**: the offset comes from the transaction that just committed
  (``KafkaTransactionalSink.committed_offsets``, set only after ``commit_transaction``
  returned), or from a restored checkpoint (committed by definition). A kill -9 between
  the commit and the purge loses only the purge; the partition's next owner asks again
  when it restores it.
- **throttled**: at most one request per partition per ``every`` seconds (Kafka Streams'
  ``repartition.purge.interval.ms``, 30 s by default there and here), except that a task's
  final checkpoint always asks (the input ended: the topic is emptied up to it).
- **asynchronous, never fatal**: the request runs in librdkafka's background thread; the
  worker looks at the answers between batches (:meth:`Purger.poll`). A failed purge is
  logged and counted (``purge_errors`` in the worker's summary), and the next commit
  asks again.

Example (a fake admin; a real one is :class:`~tidal.io.kafka.admin.KafkaAdmin`):
    >>> from concurrent.futures import Future
    >>> class Admin:
    ...     def request_delete_records(self, topic, before):
    ...         out = {}
    ...         for p, off in before.items():
    ...             f = Future()
    ...             f.set_result(type("Deleted", (), {"low_watermark": off})())
    ...             out[p] = f
    ...         return out
    >>> now = [0.0]
    >>> purger = Purger(Admin(), "g.p.repartition", every=30.0, clock=lambda: now[0])
    >>> purger.committed(0, 100)   # the first commit of partition 0 asks at once
    >>> purger.committed(0, 250)   # 0 s later: throttled
    >>> purger.poll(); purger.purged
    {0: 100}
    >>> now[0] = 31.0
    >>> purger.committed(0, 400); purger.poll(); purger.purged
    {0: 400}
    >>> purger.committed(0, 500, final=True); purger.poll(); purger.purged  # not throttled
    {0: 500}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from typing import Any, Protocol

from tidal.runtime.checkpoint import Checkpoint
from tidal.runtime.workers.kafka_state import KafkaStateStore

__all__ = ["PURGE_INTERVAL", "Purger", "PurgingStore"]

log = logging.getLogger("tidal.workers")

PURGE_INTERVAL = "30s"
"""How often a repartition partition is purged at most (Kafka Streams' default too)."""


class _DeletesRecords(Protocol):
    def request_delete_records(
        self, topic: str, before: Mapping[int, int]
    ) -> dict[int, Future[Any]]: ...


class Purger:
    """Deletes the records of a repartition topic that stage 2 committed past.

    One per worker, shared by its stage 2 tasks (a request outlives the task that made it,
    e.g. one revoked right after its last commit).

    Args:
        admin: what sends the requests (a :class:`~tidal.io.kafka.admin.KafkaAdmin`).
        topic: the repartition topic.
        every: seconds between two requests for one partition (a final checkpoint's
            request is not held back).
        clock: monotonic seconds (tests pass their own).

    Attributes:
        purged: per partition, its first offset after the newest purge that succeeded.
        requests: how many requests were sent.
        errors: the failed ones, as ``"<partition>@<offset>: <reason>"``.
    """

    def __init__(
        self,
        admin: _DeletesRecords,
        topic: str,
        *,
        every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.admin = admin
        self.topic = topic
        self.every = every
        self.clock = clock
        self.purged: dict[int, int] = {}
        self.requests = 0
        self.errors: list[str] = []
        self._asked: dict[int, tuple[float, int]] = {}  # partition -> (when, offset)
        self._pending: list[tuple[int, int, Future[Any]]] = []

    def committed(self, partition: int, offset: int, *, final: bool = False) -> None:
        """Stage 2 committed ``offset`` in ``partition``: purge below it, unless throttled.

        Call it only with an offset that a committed transaction carried.
        """
        self.poll()
        when, asked = self._asked.get(partition, (None, -1))
        if offset <= max(asked, self.purged.get(partition, 0)):
            return  # nothing new below it
        if not final and when is not None and self.clock() - when < self.every:
            return
        self._asked[partition] = (self.clock(), offset)
        self.requests += 1
        try:
            futures = self.admin.request_delete_records(self.topic, {partition: offset})
        except Exception as exc:  # e.g. a closed client: report, never stop the task
            self._failed(partition, offset, exc)
            return
        self._pending += [(p, offset, f) for p, f in futures.items()]

    def poll(self) -> None:
        """Take in the answers that came (non-blocking)."""
        still: list[tuple[int, int, Future[Any]]] = []
        for partition, offset, future in self._pending:
            if not future.done():
                still.append((partition, offset, future))
                continue
            try:
                low = int(future.result().low_watermark)
            except Exception as exc:
                self._failed(partition, offset, exc)
                continue
            self.purged[partition] = max(self.purged.get(partition, 0), low)
        self._pending = still

    def close(self, timeout: float = 10.0) -> None:
        """Wait up to ``timeout`` seconds for the requests in flight, then take their answers."""
        if self._pending:
            wait_futures([f for _, _, f in self._pending], timeout=timeout)
        self.poll()
        for partition, offset, _ in self._pending:
            self._failed(partition, offset, TimeoutError(f"no answer within {timeout:g} s"))
        self._pending = []

    def _failed(self, partition: int, offset: int, exc: BaseException) -> None:
        err: Any = exc.args[0] if exc.args else exc
        said = err.str() if hasattr(err, "str") else str(exc)
        self.errors.append(f"{partition}@{offset}: {said}")
        log.warning(
            "purging %s[%d] below offset %d failed: %s; the records stay until a later "
            "commit purges them (exactly-once is not affected)",
            self.topic,
            partition,
            offset,
            said,
        )
        # ask again at the next commit, throttle or not
        self._asked.pop(partition, None)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready figures (the partitions as stage 2 labels, ``"r<n>"``)."""
        return {
            "purged": {f"r{p}": off for p, off in sorted(self.purged.items())},
            "purge_requests": self.requests,
            "purge_errors": list(self.errors),
        }


class PurgingStore(KafkaStateStore):
    """A stage 2 task's state store: after each commit, the purge of what it committed past.

    The executor calls :meth:`prune` once every sink of the checkpoint committed (never
    after an aborted one), so the offsets the sink recorded are committed.

    Args:
        *args: as :class:`~tidal.runtime.workers.kafka_state.KafkaStateStore`.
        purger: the worker's purger.
        purge_topic: the repartition topic (the partition is the task's).
        **kwargs: as :class:`~tidal.runtime.workers.kafka_state.KafkaStateStore`.
    """

    def __init__(self, *args: Any, purger: Purger, purge_topic: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.purger = purger
        self.purge_topic = purge_topic
        self._final = False

    def write(self, checkpoint_id: int, state: bytes, *, final: bool = False) -> Checkpoint:
        """Produce the state (as the base class); remember whether it is the final one."""
        self._final = final
        return super().write(checkpoint_id, state, final=final)

    def prune(self) -> list[int]:
        """Purge the repartition records below the offset that just committed."""
        offset = self.sink.committed_offsets.get((self.purge_topic, self.partition))
        if offset is not None:
            self.purger.committed(self.partition, offset, final=self._final)
        return super().prune()
