"""Feed a topic of the embedded log from a generator function: :class:`LogFeed`.

A feed turns ``make(seq) -> columns`` (the function a
:class:`~tidal.io.generator.GeneratorSource` takes) into records of a topic, keyed by a
column, at a target rate or as fast as a consumer keeps up. It is how ``tidal demo`` puts
its simulated sensors in front of the pipeline: producer and consumer meet only in the log,
as they would with Kafka.

Every record carries its sequence number in a column (``seq``), so a feed resumes exactly
where it stopped, even after ``kill -9``. A chunk of numbers ``[a, b)`` is split by
partition and appended partition by partition, so a crash can leave a chunk in some
partitions only. On start, each partition's last record names the last number written
there; the feed resumes at the smallest ``last + 1`` over the partitions (``0`` for an empty
one) and skips, per partition, the numbers that partition already holds. Every number is
then in the topic exactly once, in order within each partition. (A partition no key has
reached yet makes the feed start over from ``0``, skipping everything already written:
correct, only slower.)

Durability: appends are not fsynced one by one; the feed syncs every ``sync_every``
(and when it stops). A process crash loses nothing (the data is in the page cache); a power
failure may lose the last ``sync_every`` of records, which the feed then writes again.

Example:
    >>> import tempfile
    >>> from tidal.io.log import Topic
    >>> tmp = tempfile.TemporaryDirectory()
    >>> make = lambda seq: {"k": seq, "x": seq * 10}
    >>> feed = LogFeed(make, tmp.name, "nums", key="k", partitions=2)
    >>> feed.open(); feed.produce(6); feed.close()
    6
    >>> feed = LogFeed(make, tmp.name, "nums", key="k", partitions=2)
    >>> feed.open(); feed.next_seq  # partition 1 ends with 4, partition 0 with 5
    5
    >>> feed.produce(8)  # 5 is in the log already: only 6 and 7 are appended
    2
    >>> feed.close()
    >>> topic = Topic.open(tmp.name, "nums")
    >>> sorted(orjson.loads(v)["seq"] for p in (0, 1) for v in topic.read(p, 0).values)
    [0, 1, 2, 3, 4, 5, 6, 7]
    >>> topic.close(); tmp.cleanup()
"""

from __future__ import annotations

import fcntl
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import numpy as np
import orjson

from tidal.core.batch import Array, Batch
from tidal.core.duration import Duration, to_seconds
from tidal.errors import ConfigError, ConnectorError, TidalError, os_error_text
from tidal.io.jsonl import dumps_rows
from tidal.io.log.sink import route_keys
from tidal.io.log.topic import DEFAULT_SEGMENT_BYTES, Topic

__all__ = ["FeedProcess", "LogFeed"]

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}

_LIVE = ("topic", "_lock_fd", "_stop", "_thread", "error", "_held")

log = logging.getLogger("tidal.io.log.feed")

MakeColumns = Callable[[Array], Mapping[str, Any] | Batch]


class LogFeed:
    """Write ``make(seq)`` for seq = 0, 1, 2, ... into a topic, resumably.

    Args:
        make: builds the columns of the events with the given int64 sequence numbers.
        data_dir: the data directory (``None``: ``$TIDAL_DATA_DIR`` or ``./.tidal``).
        topic: the topic (created with ``partitions`` if missing).
        key: the column whose value keys each record (and picks its partition).
        partitions: partitions of a new topic; an existing one must have as many.
        rate: records per second (wall clock) in :meth:`start`; ``None``: as fast as the
            ``lead`` allows.
        lead: in :meth:`start` with a ``consumed`` function, the most records the feed
            may be ahead of its consumer (bounds the disk a fast feed fills); default
            ``max(10 * rate, 262,144)``.
        chunk: the most records one append round writes.
        seq_column: the column that holds each record's sequence number.
        sync_every: how often :meth:`start`'s thread fsyncs what it appended.
        retention_bytes: per partition, for a new topic (see :meth:`Topic.create`).
        segment_bytes: segment size of a new topic.

    Raises:
        ConfigError: for bad settings.
    """

    def __init__(
        self,
        make: MakeColumns,
        data_dir: str | os.PathLike[str] | None,
        topic: str,
        *,
        key: str,
        partitions: int = 1,
        rate: float | None = None,
        lead: int | None = None,
        chunk: int = 8192,
        seq_column: str = "seq",
        sync_every: Duration = "200ms",
        retention_bytes: int | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        if rate is not None and rate <= 0:
            msg = f"rate must be > 0 records/s (or None for as fast as possible), got {rate}"
            raise ConfigError(msg)
        if chunk < 1:
            msg = f"chunk must be >= 1, got {chunk}"
            raise ConfigError(msg)
        self.make = make
        self.data_dir = data_dir
        self.topic_name = topic
        self.key = key
        self.partitions = partitions
        self.rate = rate
        self.lead = lead if lead is not None else max(int(10 * (rate or 0)), 1 << 18)
        self.chunk = chunk
        self.seq_column = seq_column
        self.sync_every = to_seconds(sync_every)
        self.retention_bytes = retention_bytes
        self.segment_bytes = segment_bytes
        self.topic: Topic | None = None
        self.next_seq = 0
        self.error: BaseException | None = None
        self._held: dict[int, int] = {}  # partition -> last seq it holds, while ahead
        self._lock_fd = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- opening ------------------------------------------------------------------------
    def open(self) -> None:
        """Open (or create) the topic and find where to resume."""
        if self.topic is not None:
            return
        topic = Topic.create(
            self.data_dir,
            self.topic_name,
            partitions=self.partitions,
            retention_bytes=self.retention_bytes,
            segment_bytes=self.segment_bytes,
            exist_ok=True,
            fsync="none",
        )
        self.topic = topic
        self._resume()
        if self.next_seq:
            log.info("feed %r resumes at sequence number %d", self.topic_name, self.next_seq)

    def _resume(self) -> None:
        assert self.topic is not None
        last = {p: self._last_seq(self.topic, p) for p in range(self.topic.partitions)}
        self.next_seq = min(v + 1 for v in last.values())
        self._held = {p: v for p, v in last.items() if v >= self.next_seq}

    def _lock(self, timeout: float = 10.0, stopped: Callable[[], bool] | None = None) -> None:
        """Become the topic's only feed (a file lock), then find where to resume again.

        Waits up to ``timeout`` seconds for another feed to finish (e.g. the child process
        of a demo that was killed, which exits as soon as it notices); gives up without the
        lock as soon as ``stopped()``.
        """
        assert self.topic is not None
        if self._lock_fd >= 0:
            return
        path = self.topic.path / "feed.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if stopped is not None and stopped():
                    os.close(fd)
                    return
                if time.monotonic() >= deadline:
                    os.close(fd)
                    msg = (
                        f"another feed is writing topic {self.topic_name!r} (it holds {path}); "
                        "stop it first"
                    )
                    raise ConnectorError(msg) from None
                time.sleep(0.01)
        self._lock_fd = fd
        self._resume()

    def _last_seq(self, topic: Topic, partition: int) -> int:
        end = topic.end_offset(partition)
        if end <= topic.start_offset(partition):
            return -1
        batch = topic.read(partition, end - 1, 1)
        try:
            value = orjson.loads(batch.values[-1])
            return int(value[self.seq_column])
        except (IndexError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            msg = (
                f"topic {self.topic_name!r} partition {partition}: the last record (offset "
                f"{end - 1}) has no {self.seq_column!r} number, so this feed cannot resume "
                f"it ({exc}); was the topic written by something else?"
            )
            raise ConnectorError(msg) from exc

    # -- writing ------------------------------------------------------------------------
    def produce(self, upto: int) -> int:
        """Append the records ``next_seq .. upto - 1`` now; return how many were appended."""
        self.open()
        self._lock()
        assert self.topic is not None
        lo = self.next_seq
        if upto <= lo:
            return 0
        seq = np.arange(lo, upto, dtype=np.int64)
        made = self.make(seq)
        cols = dict(made.columns) if isinstance(made, Batch) else dict(made)
        cols[self.seq_column] = seq
        batch = Batch(cols)
        keys, parts = route_keys(batch[self.key], self.topic.partitions)
        lines = np.empty(len(seq), dtype=object)
        lines[:] = dumps_rows(batch, f"feed {self.topic_name!r}").split(b"\n")[:-1]
        stamps = np.full(len(seq), self.topic.clock(), dtype=np.int64)
        written = 0
        for p in range(self.topic.partitions):
            rows = parts == p
            held = self._held.get(p)
            if held is not None:
                rows &= seq > held
            if rows.any():
                self.topic.append(p, lines[rows], keys=keys[rows], timestamps=stamps[rows])
                written += int(rows.sum())
        self.next_seq = upto
        self._held = {p: v for p, v in self._held.items() if v >= upto}
        return written

    def sync(self) -> None:
        """Fsync what was appended."""
        if self.topic is not None:
            self.topic.sync()

    def close(self) -> None:
        """Stop the thread (if any), sync and close the topic."""
        self.stop()
        if self.topic is not None:
            self.topic.close()
            self.topic = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- the background thread ----------------------------------------------------------
    def start(
        self,
        consumed: Callable[[], int] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Produce in a daemon thread of this process until :meth:`stop`.

        The thread shares the GIL with the consumer; :class:`FeedProcess` runs the feed in
        a child process instead, as a real producer would be.

        Args:
            consumed: how many records the consumer has read (it may not fall more than
                ``lead`` behind); ``None`` for no bound.
            on_error: called (in the thread) if producing fails; the error is kept in
                :attr:`error` and raised again by :meth:`stop`.
            clock: a ``time.monotonic``-like function.
        """
        self.open()
        self._lock()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._guarded,
            args=(consumed, on_error, clock),
            name="tidal-feed",
            daemon=True,
        )
        self._thread.start()

    def _guarded(
        self,
        consumed: Callable[[], int] | None,
        on_error: Callable[[BaseException], None] | None,
        clock: Callable[[], float],
    ) -> None:
        try:
            self.run(consumed, self._stop.is_set, clock)
        except BaseException as exc:  # noqa: BLE001 - reported to the owner, not lost
            self.error = exc
            log.error("feed %r failed: %s", self.topic_name, exc)
            if on_error is not None:
                on_error(exc)

    def run(
        self,
        consumed: Callable[[], int] | None,
        stopped: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Produce in this thread until ``stopped()``: at ``rate``, at most ``lead`` ahead."""
        self._lock(stopped=stopped)
        if self._lock_fd < 0:
            return  # stopped while another feed held the topic
        t0, s0 = clock(), self.next_seq
        synced = t0
        while not stopped():
            now = clock()
            target = self.next_seq + self.chunk
            if self.rate is not None:
                target = min(target, s0 + math.floor((now - t0) * self.rate))
            if consumed is not None:
                target = min(target, consumed() + self.lead)
            before = self.next_seq
            self.produce(target)
            if self.next_seq == before:  # nothing due yet, or the consumer is behind
                time.sleep(0.001)
            if now - synced >= self.sync_every:
                self.sync()
                synced = now
        self.sync()

    def stop(self) -> None:
        """Stop the thread and wait for it.

        Raises:
            ConnectorError: if the thread failed (chained to its error).
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.error is not None:
            error, self.error = self.error, None
            msg = f"feed {self.topic_name!r} failed: {error}"
            raise ConnectorError(msg) from error

    def __getstate__(self) -> dict[str, Any]:
        """What a child process needs: the settings, not the open files or the thread."""
        return {k: v for k, v in self.__dict__.items() if k not in _LIVE}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.topic = None
        self._lock_fd = -1
        self._held = {}
        self._stop = threading.Event()
        self._thread = None
        self.error = None

    def __enter__(self) -> LogFeed:
        self.open()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class FeedProcess:
    """Run a :class:`LogFeed` in a child process: producer and consumer share no GIL.

    The child (started with ``spawn``) opens the topic, takes the feed's lock and produces
    until :meth:`stop`, or until its parent dies: it checks every loop (a few ms) and exits,
    so a ``kill -9`` of the parent leaves no writer behind (the next feed waits for the
    lock in the meantime). The consumer's position reaches the child through shared
    memory, updated every few milliseconds by a thread here.

    Args:
        feed: the feed to run (pickled to the child: its ``make`` must be picklable).
        consumed: how many records the consumer has read (see :meth:`LogFeed.run`).
        on_error: called (in a thread) if the child fails; :meth:`stop` raises then.
    """

    def __init__(
        self,
        feed: LogFeed,
        consumed: Callable[[], int] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.feed = feed
        self.consumed = consumed
        self.on_error = on_error
        ctx = multiprocessing.get_context("spawn")
        self._shared = ctx.Value("q", 0, lock=False)
        self._produced = ctx.Value("q", feed.next_seq, lock=False)
        self._stopping = ctx.Event()
        self._started = ctx.Event()
        self._proc = ctx.Process(
            target=_child,
            args=(
                feed,
                self._shared,
                self._produced,
                self._stopping,
                self._started,
                os.getpid(),
                consumed is not None,
            ),
            name="tidal-feed",
            daemon=True,
        )
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="tidal-feed-watch", daemon=True)
        self.failed: str | None = None

    @property
    def produced(self) -> int:
        """The child's next sequence number (records produced since the topic began)."""
        return int(self._produced.value)

    def start(self) -> None:
        """Start the child and the thread that passes it the consumer's position."""
        if self.consumed is not None:
            self._shared.value = self.consumed()
        # The child must not die of a Ctrl-C (sent to the whole process group) or a SIGTERM
        # that arrives while it still imports numpy, before it can install its handlers:
        # a blocked signal stays pending and the mask is inherited through fork and exec,
        # so the child starts immune and unblocks them once its handlers are in place.
        # Here the signals are only deferred (for the few ms of the fork), never lost.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            self._proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._done.wait(0.002):
            if self.consumed is not None:
                self._shared.value = self.consumed()
            if not self._proc.is_alive() and not self._stopping.is_set():
                if self._proc.exitcode == 0:  # a SIGTERM of its own: a clean stop, not a
                    log.info("feed %r: the feed process stopped", self.feed.topic_name)
                    return  # failure (a SIGTERM to the process group stops the parent too)
                self.failed = f"the feed process exited with status {self._proc.exitcode}"
                log.error("feed %r: %s", self.feed.topic_name, self.failed)
                if self.on_error is not None:
                    self.on_error(ConnectorError(self.failed))
                return

    def stop(self, timeout: float = 60.0, start_timeout: float = 300.0) -> None:
        """Ask the child to stop, wait for it (killing it after ``timeout`` s).

        The ``timeout`` counts from the moment the child is running its loop, where it sees
        the request within milliseconds: a child still starting (importing numpy on a busy
        machine can take seconds) is waited for, up to ``start_timeout`` s, rather than
        killed in the middle of its start.

        Raises:
            ConnectorError: if the child failed.
        """
        self._stopping.set()
        self._done.set()
        if self._watcher.is_alive():
            self._watcher.join()
        if self._proc.pid is not None:
            start_deadline = time.monotonic() + start_timeout
            while not self._started.wait(0.05) and self._proc.is_alive():
                if time.monotonic() >= start_deadline:
                    break
            self._proc.join(timeout)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
        failed = self.failed or (
            None if self._proc.exitcode in (0, None) else f"exit status {self._proc.exitcode}"
        )
        if failed:
            msg = f"feed {self.feed.topic_name!r} failed: {failed} (its error is on stderr)"
            raise ConnectorError(msg)

    def __enter__(self) -> FeedProcess:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _child(
    feed: LogFeed,
    consumed: Any,
    produced: Any,
    stopping: Any,
    started: Any,
    parent: int,
    bounded: bool,
) -> None:
    """The feed process: produce until told to stop (or SIGTERM), or orphaned.

    Ctrl-C reaches the whole process group; the parent handles it and stops the child
    through ``stopping``, so the child ignores SIGINT rather than dying mid-append.
    """
    logging.basicConfig(level=logging.WARNING, format="tidal feed: %(message)s")
    terminated = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: terminated.set())
    # Started with both blocked (see FeedProcess.start): a pending SIGINT is discarded here,
    # a pending SIGTERM runs the handler above.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    def stopped() -> bool:
        produced.value = feed.next_seq
        return stopping.is_set() or terminated.is_set() or os.getppid() != parent

    try:
        feed.open()
        # From here on the child answers a stop within milliseconds: the parent's kill
        # deadline starts now (see FeedProcess.stop).
        started.set()
        try:
            feed.run((lambda: int(consumed.value)) if bounded else None, stopped)
        finally:
            produced.value = feed.next_seq
            feed.close()
    except (TidalError, OSError) as exc:  # a full disk, say: one line, not a traceback
        text = os_error_text(exc) if isinstance(exc, OSError) else str(exc)
        print(f"tidal feed: error: {text}", file=sys.stderr, flush=True)
        sys.exit(2)
