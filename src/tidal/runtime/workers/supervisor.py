"""The supervisor of ``tidal run FILE.py --workers N``: start, restart and stop N workers.

Each worker is a child process running the same command for its share of the partitions
(:mod:`tidal.runtime.workers.plan`); the supervisor only watches them:

- it waits for a child to exit on the children's *pidfds* (``os.pidfd_open``, Linux),
  so it sleeps in the kernel until something happens: no polling, no timers;
- a worker that exits with status 0 is done (its input ended, or it was told to stop);
- a worker killed by a signal, or failing with an unexpected status, is restarted at once
  (it resumes from its own last checkpoint, so the output stays exactly once); after
  ``max_restarts`` failures of one worker the supervisor stops all and fails;
- a worker that exits with status 2 (a Tidal error: bad configuration, a refused
  checkpoint) would fail the same way again: the supervisor stops the others and exits 2;
- SIGINT (Ctrl-C, which the terminal sends to the whole process group) or SIGTERM asks
  every worker to stop with SIGTERM: each finishes its batch and takes a last checkpoint.
  A second signal kills them (SIGKILL).

Children are started with SIGINT and SIGTERM *blocked* (the mask is inherited through fork
and exec; see :class:`tidal.io.log.feed.FeedProcess`), and unblock them once their own
handlers are in place (:func:`worker_signals`), so a Ctrl-C during their start-up is never
lost and never kills one half-way. They also ask the kernel to send them SIGTERM if the
supervisor dies (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the supervisor leaves no
worker behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import selectors
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any

import orjson

from tidal.errors import ConfigError, PipelineError

__all__ = ["Supervisor", "WorkerResult", "worker_signals"]

log = logging.getLogger("tidal.workers")

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_TIDAL_ERROR = 2
_PR_SET_PDEATHSIG = 1


@dataclass
class WorkerResult:
    """What one worker did, over all its starts.

    Attributes:
        index: the worker's index.
        starts: how many times it was started (1 + restarts).
        exit_codes: the exit status of each start (negative: killed by that signal).
        summary: the JSON summary its last successful start printed (``{}`` if none).
    """

    index: int
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def restarts(self) -> int:
        """Starts after the first."""
        return max(0, self.starts - 1)


class _Child:
    def __init__(self, proc: subprocess.Popen[bytes], out: IO[bytes]) -> None:
        self.proc = proc
        self.out = out
        self.fd = os.pidfd_open(proc.pid)


class Supervisor:
    r"""Run ``count`` worker commands, restart the ones that die, stop all on a signal.

    Args:
        command: the command line of worker ``index`` (its standard output must be one
            JSON summary, as ``tidal run --json`` prints).
        count: how many workers.
        env: the base environment of the workers (default: this process's).
        env_for: extra variables for a worker's start: ``(index, start number) -> dict``.
        max_restarts: failures of one worker after which the supervisor gives up.
        on_start: called with ``(index, pid)`` after each start (to report pids).

    Example:
        >>> import sys
        >>> code = "import os, sys; print('{\"w\": %s}' % os.environ['W'])"
        >>> sup = Supervisor(lambda i: [sys.executable, "-c", code], 2,
        ...                  env_for=lambda i, n: {"W": str(i)})
        >>> [r.summary for r in sup.run()], sup.status
        ([{'w': 0}, {'w': 1}], 0)
    """

    def __init__(
        self,
        command: Callable[[int], Sequence[str]],
        count: int,
        *,
        env: Mapping[str, str] | None = None,
        env_for: Callable[[int, int], Mapping[str, str]] | None = None,
        max_restarts: int = 10,
        on_start: Callable[[int, int], None] | None = None,
    ) -> None:
        if count < 1:
            msg = f"a supervisor needs >= 1 worker, got {count}"
            raise ConfigError(msg)
        self.command = command
        self.count = count
        self.env = dict(os.environ if env is None else env)
        self.env_for = env_for
        self.max_restarts = max_restarts
        self.on_start = on_start
        self.results = [WorkerResult(i) for i in range(count)]
        self.status = 0
        self.error: str | None = None
        self._children: dict[int, _Child] = {}
        self._stopping = False
        self._signals = 0

    # -- life cycle --------------------------------------------------------------------
    def run(self) -> list[WorkerResult]:
        """Start every worker and supervise until all have exited; returns their results.

        :attr:`status` is then 0 (all finished or stopped cleanly), 2 (a worker failed with
        a Tidal error) or 1 (a worker kept failing), and :attr:`error` says why.
        """
        with self._handlers(), selectors.DefaultSelector() as sel:
            try:
                for i in range(self.count):
                    self._start(i, sel)
                while self._children:
                    for key, _ in sel.select():
                        self._exited(int(key.data), sel)
            finally:
                self._kill_all(signal.SIGKILL)
                for i in list(self._children):
                    self._reap(i, sel)
        return self.results

    def stop(self) -> None:
        """Ask every worker to stop (SIGTERM); none is restarted from now on."""
        self._stopping = True
        self._kill_all(signal.SIGTERM)

    @contextlib.contextmanager
    def _handlers(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self._signals += 1
            if self._signals == 1:
                log.info("supervisor: %s, stopping the workers", signal.Signals(signum).name)
                self.stop()
            else:
                self._kill_all(signal.SIGKILL)

        old = {sig: signal.signal(sig, handler) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)

    def _start(self, index: int, sel: selectors.BaseSelector) -> None:
        result = self.results[index]
        env = dict(self.env)
        if self.env_for is not None:
            env.update(self.env_for(index, result.starts))
        out = tempfile.TemporaryFile()
        # blocked in the child until it installs its handlers (see the module docs); here
        # only deferred for the few ms of the fork, never lost
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            proc = subprocess.Popen(list(self.command(index)), stdout=out, env=env)  # noqa: S603
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        child = _Child(proc, out)
        self._children[index] = child
        sel.register(child.fd, selectors.EVENT_READ, index)
        result.starts += 1
        log.info("supervisor: worker %d started (pid %d)", index, proc.pid)
        if self.on_start is not None:
            self.on_start(index, proc.pid)
        if self._stopping:  # a signal came while it started: it unblocks and stops
            proc.send_signal(signal.SIGTERM)

    def _reap(self, index: int, sel: selectors.BaseSelector) -> tuple[int, bytes]:
        child = self._children.pop(index)
        sel.unregister(child.fd)
        os.close(child.fd)
        code = child.proc.wait()
        child.out.seek(0)
        text = child.out.read()
        child.out.close()
        self.results[index].exit_codes.append(code)
        return code, text

    def _exited(self, index: int, sel: selectors.BaseSelector) -> None:
        code, text = self._reap(index, sel)
        result = self.results[index]
        if code == 0:
            result.summary = _last_json(text)
            return
        if self._stopping:
            # Ctrl-C reaches every process of the group: a worker may also end by the
            # SIGINT itself (one on its way out, its handlers already reset); stopped all
            # the same, it resumes from its last checkpoint like one ended by SIGTERM
            stopped = (0, -signal.SIGTERM, -signal.SIGKILL, -signal.SIGINT)
            if code not in stopped and self.status == 0:
                self.status = 1
                self.error = f"worker {index} exited with status {code} while stopping"
            return
        if code == _TIDAL_ERROR or result.restarts >= self.max_restarts:
            self.status = _TIDAL_ERROR if code == _TIDAL_ERROR else 1
            why = (
                "failed with a Tidal error (printed above)"
                if code == _TIDAL_ERROR
                else f"failed {result.starts} times (last exit status {code})"
            )
            self.error = f"worker {index} {why}; the other workers were stopped"
            self.stop()
            return
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        log.warning("supervisor: worker %d %s; restarting it", index, how)
        self._start(index, sel)

    def _kill_all(self, sig: int) -> None:
        for child in self._children.values():
            if child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(sig)


def _last_json(text: bytes) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.strip().startswith(b"{"):
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return {}


def worker_signals(parent: int) -> Callable[[Callable[[], None]], None]:
    """Install a worker's stop handlers, then unblock SIGINT/SIGTERM; call it first thing.

    A SIGTERM (from the supervisor) or a SIGINT (Ctrl-C reaches the whole process group)
    that came while the worker started is kept until now, and then stops the worker as
    soon as it can. Also asks the kernel for a SIGTERM if ``parent`` (the supervisor) dies.

    Returns:
        ``attach(stop)``: hand it the function that stops the run once there is one (the
        executor's ``stop``); it is called at once if a signal came before.

    Raises:
        PipelineError: if the supervisor is already gone.
    """
    stop: list[Callable[[], None]] = []
    asked = [False]  # not a threading.Event: a second signal inside its set() deadlocks

    def handler(signum: int, frame: FrameType | None) -> None:
        asked[0] = True
        for fn in stop:
            fn()

    for sig in _STOP_SIGNALS:
        signal.signal(sig, handler)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    if os.getppid() != parent:
        msg = "the supervisor of this worker is gone; not starting"
        raise PipelineError(msg)

    def attach(fn: Callable[[], None]) -> None:
        stop.append(fn)
        if asked[0]:
            fn()

    return attach
