"""Durable checkpoints: operator state, source positions and sink transactions, atomically.

A checkpoint is taken at a batch boundary (see :class:`~tidal.runtime.executor.Executor`)
and stored under ``<data_dir>/checkpoints/<pipeline>/``::

    .tidal/checkpoints/iot-demo/
      LOCK                       held (flock) by the process running the pipeline
      chk-000000000041/
        state.npz                snapshot + pending sink transactions (no pickle)
        MANIFEST.json            {"id", "time", "sha256", "size", ...}, written last
      chk-000000000042/ ...

Writing checkpoint ``N``: ``state.npz`` goes to a temporary name, is fsynced and renamed;
then ``MANIFEST.json`` (holding the SHA-256 of ``state.npz``) the same way, and the
directories are fsynced. A checkpoint *exists* once its manifest does: a crash before that
leaves a torn directory that :meth:`CheckpointStore.latest_valid` skips (logging why), as it
skips one whose ``state.npz`` no longer matches its hash. After a checkpoint completes, all
but the newest ``keep`` complete checkpoints, and every torn one, are deleted.

For tests only, the environment variable ``TIDAL_TEST_CRASH_POINT`` makes the process kill
itself with SIGKILL at a named step of a checkpoint (see :data:`CRASH_POINTS`): the fault
tests use it to crash *inside* checkpoint writes, not only between them. It is read once,
when an executor with checkpoints starts; it does nothing when unset.

Example:
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> store = CheckpointStore(CheckpointConfig(data_dir=tmp.name), "orders")
    >>> store.write(1, b"state one").id, store.write(2, b"state two").id
    (1, 2)
    >>> (store.path / "chk-000000000002" / "state.npz").write_bytes(b"bit rot")  # damage
    7
    >>> store.latest_valid().id  # the damaged one is skipped
    1
    >>> tmp.cleanup()
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import orjson

from tidal.core.duration import Duration, to_seconds
from tidal.core.names import check_name
from tidal.errors import ConfigError, StateError, os_error_text

__all__ = [
    "CRASH_POINTS",
    "Checkpoint",
    "CheckpointConfig",
    "CheckpointStore",
    "CommitsOutside",
    "CrashHook",
    "default_data_dir",
]

log = logging.getLogger("tidal.checkpoint")

FORMAT = 1
"""Version of the checkpoint layout (in every manifest)."""

CRASH_ENV = "TIDAL_TEST_CRASH_POINT"
CRASH_POINTS = (
    "after_prepare",  # sinks prepared, nothing of the checkpoint written
    "mid_state",  # half of state.npz written and fsynced (a torn state file)
    "after_state",  # state.npz complete, no manifest yet
    "after_manifest",  # checkpoint complete, no sink committed yet
    "mid_commit",  # the first transactional sink committed, the others not
    "after_commit",  # every sink committed, old checkpoints not yet deleted
)
"""Where ``TIDAL_TEST_CRASH_POINT=<point>[:<n>]`` kills the process (at the n-th time, default
the first). Used by the fault tests only."""

_PREFIX = "chk-"
_STATE = "state.npz"
_MANIFEST = "MANIFEST.json"


def default_data_dir() -> str:
    """``$TIDAL_DATA_DIR``, or ``.tidal`` (in the working directory).

    Example:
        >>> import os
        >>> default_data_dir() == os.environ.get("TIDAL_DATA_DIR", ".tidal")
        True
    """
    return os.environ.get("TIDAL_DATA_DIR") or ".tidal"


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    """When and where an executor checkpoints.

    A checkpoint is taken at the first batch boundary after ``interval`` has passed since
    the last one, or after ``every_events`` events, whichever comes first (``None`` turns a
    trigger off; with both off, only the final checkpoint at a graceful stop is taken).

    Args:
        data_dir: the data directory; checkpoints go to ``<data_dir>/checkpoints/<pipeline>``.
            Default: ``$TIDAL_DATA_DIR`` or ``.tidal``.
        interval: time between checkpoints (``"1s"``, ``"250ms"``, a ``timedelta``).
        every_events: events between checkpoints.
        keep: complete checkpoints to keep (the older ones are deleted).
        drop_state: names of steps whose saved state is dropped on restore, so that they
            start empty: use it after changing or renaming a step on purpose (otherwise
            restoring raises :class:`~tidal.errors.StateError` naming the step). A source
            listed here starts from its beginning.

    Raises:
        ConfigError: for a bad interval, ``every_events < 1`` or ``keep < 1``.

    Example:
        >>> CheckpointConfig(data_dir="/tmp/x", interval="500ms", keep=2).interval_s
        0.5
    """

    data_dir: str | os.PathLike[str] = field(default_factory=default_data_dir)
    interval: Duration | None = "1s"
    every_events: int | None = None
    keep: int = 3
    drop_state: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.interval is not None:
            to_seconds(self.interval)  # raises ConfigError with the accepted forms
        if self.every_events is not None and self.every_events < 1:
            msg = f"CheckpointConfig: every_events must be >= 1 or None, got {self.every_events}"
            raise ConfigError(msg)
        if self.keep < 1:
            msg = f"CheckpointConfig: keep must be >= 1, got {self.keep}"
            raise ConfigError(msg)
        if isinstance(self.drop_state, str):
            msg = (
                "CheckpointConfig: drop_state is a list of step names, got the string "
                f"{self.drop_state!r}; write drop_state=[{self.drop_state!r}]"
            )
            raise ConfigError(msg)
        object.__setattr__(self, "drop_state", tuple(self.drop_state))

    @property
    def interval_s(self) -> float | None:
        """The interval in seconds (``None``: no time trigger)."""
        return None if self.interval is None else to_seconds(self.interval)


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint on disk (what its manifest says).

    Attributes:
        id: the checkpoint id (increasing).
        path: its directory.
        time: when it was written (Unix seconds).
        sha256: hash of ``state.npz``.
        size: bytes of ``state.npz``.
        final: taken after the input ended and every window fired (a drained run).
    """

    id: int
    path: Path
    time: float
    sha256: str
    size: int
    final: bool = False

    @property
    def state_path(self) -> Path:
        """The ``state.npz`` file."""
        return self.path / _STATE


@runtime_checkable
class CommitsOutside(Protocol):
    """A transactional sink whose commits are recorded outside the checkpoint store.

    A Kafka transaction left open by a crashed process cannot be committed by the next one
    (decision 0017), so after a crash the newest checkpoint's output may be gone. Such a
    sink records, inside each transaction, the id of the checkpoint it commits; on start
    the runtime restores exactly the checkpoint it names (and deletes newer ones, whose
    output was aborted) instead of the newest one.
    """

    def committed_checkpoint(self) -> int | None:
        """The id of the last checkpoint whose output committed (``None``: none yet)."""
        ...


class CrashHook:
    """Kills the process with SIGKILL at a named checkpoint step (tests only).

    Reads ``TIDAL_TEST_CRASH_POINT=<point>[:<n>]`` from ``environ``; ``hit(point)`` kills the
    process the n-th time ``point`` is reached. Unset, ``hit`` does nothing.

    Example:
        >>> hook = CrashHook({})
        >>> hook.hit("after_manifest")  # nothing happens
        >>> hook = CrashHook({"TIDAL_TEST_CRASH_POINT": "after_manifest:3"})
        >>> hook.point, hook.n
        ('after_manifest', 3)
    """

    def __init__(self, environ: Any = None) -> None:
        raw = (os.environ if environ is None else environ).get(CRASH_ENV, "")
        self.point: str | None = None
        self.n = 1
        self._seen = 0
        if not raw:
            return
        point, _, nth = raw.partition(":")
        if point not in CRASH_POINTS:
            msg = f"{CRASH_ENV}={raw!r}: the point must be one of {', '.join(CRASH_POINTS)}"
            raise ConfigError(msg)
        try:
            self.n = int(nth) if nth else 1
        except ValueError:
            msg = f"{CRASH_ENV}={raw!r}: after ':' give which occurrence, e.g. {point}:3"
            raise ConfigError(msg) from None
        self.point = point

    def hit(self, point: str) -> None:
        """Die here if this is the configured point and occurrence."""
        if point != self.point:
            return
        self._seen += 1
        if self._seen == self.n:
            os.kill(os.getpid(), signal.SIGKILL)


def lock_file(path: Path, busy: str) -> IO[bytes]:
    """An exclusive ``flock`` on ``path`` (created if missing), held while the file is open.

    The kernel releases it when the process dies, even by SIGKILL.

    Raises:
        StateError: ``busy`` if another process holds it; or why the file cannot be opened.
    """
    try:
        f = path.open("ab")
    except OSError as exc:
        msg = f"cannot lock '{path}': {os_error_text(exc)}"
        raise StateError(msg) from exc
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        f.close()
        raise StateError(busy) from exc
    return f


class CheckpointStore:
    """The checkpoints of one pipeline in a data directory.

    Args:
        config: where (``data_dir``) and how many to keep.
        pipeline: the pipeline's name (one folder per name).
        crash: the test crash hook (default: from the environment).
    """

    def __init__(
        self, config: CheckpointConfig, pipeline: str, *, crash: CrashHook | None = None
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.path = Path(config.data_dir) / "checkpoints" / check_name(pipeline, "pipeline")
        self.crash = crash or CrashHook({})
        self._lock: IO[bytes] | None = None

    # -- ownership -------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the store's lock, so that two processes never run one pipeline's checkpoints.

        The kernel releases it when the process dies (even by SIGKILL).

        Raises:
            StateError: if another process holds it.
        """
        if self._lock is not None:
            return
        self._mkdir()
        self._lock = lock_file(
            self.path / "LOCK",
            f"another process is running pipeline {self.pipeline!r} with checkpoints in "
            f"'{self.path}'; stop it first, or give this run another --data-dir",
        )

    def unlock(self) -> None:
        """Release the lock (closing the file releases it)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- reading ---------------------------------------------------------------------------
    def ids(self) -> list[int]:
        """Ids of every checkpoint directory, complete or torn, oldest first."""
        if not self.path.is_dir():
            return []
        out = []
        for p in self.path.iterdir():
            if p.name.startswith(_PREFIX) and p.is_dir():
                with contextlib.suppress(ValueError):
                    out.append(int(p.name[len(_PREFIX) :]))
        return sorted(out)

    def dir_of(self, checkpoint_id: int) -> Path:
        """The directory of checkpoint ``checkpoint_id``."""
        return self.path / f"{_PREFIX}{checkpoint_id:012d}"

    def manifest(self, checkpoint_id: int) -> Checkpoint | None:
        """The checkpoint as its manifest describes it; ``None`` if torn (no manifest)."""
        path = self.dir_of(checkpoint_id)
        try:
            meta = orjson.loads((path / _MANIFEST).read_bytes())
            return Checkpoint(
                id=int(meta["id"]),
                path=path,
                time=float(meta["time"]),
                sha256=str(meta["sha256"]),
                size=int(meta["size"]),
                final=bool(meta.get("final", False)),
            )
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("checkpoint %s: unreadable manifest (%s); skipping it", path, exc)
            return None

    def read(self, checkpoint: Checkpoint) -> bytes:
        """The verified bytes of a checkpoint's ``state.npz``.

        Raises:
            StateError: if the file is missing or does not match the manifest's hash.
        """
        try:
            data = checkpoint.state_path.read_bytes()
        except OSError as exc:
            msg = f"checkpoint {checkpoint.path}: cannot read {_STATE}: {exc}"
            raise StateError(msg) from exc
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != checkpoint.size or digest != checkpoint.sha256:
            msg = (
                f"checkpoint {checkpoint.path}: {_STATE} does not match its manifest "
                f"({len(data)} bytes, sha256 {digest[:12]}..., expected {checkpoint.size} "
                f"bytes, {checkpoint.sha256[:12]}...); the file is damaged"
            )
            raise StateError(msg)
        return data

    def latest_valid(self) -> Checkpoint | None:
        """The newest complete checkpoint whose state matches its hash, or ``None``.

        Torn and damaged checkpoints are skipped with a warning on the ``tidal.checkpoint``
        logger.
        """
        found = self.load_latest()
        return None if found is None else found[0]

    def load_latest(self) -> tuple[Checkpoint, bytes] | None:
        """The newest valid checkpoint and its verified ``state.npz`` bytes, or ``None``."""
        for cid in reversed(self.ids()):
            chk = self.manifest(cid)
            if chk is None:
                log.warning(
                    "checkpoint %s is incomplete (no %s: the process stopped while writing "
                    "it); using an older one",
                    self.dir_of(cid),
                    _MANIFEST,
                )
                continue
            try:
                return chk, self.read(chk)
            except StateError as exc:
                log.warning("%s; using an older checkpoint", exc)
        return None

    def load(self, checkpoint_id: int) -> tuple[Checkpoint, bytes]:
        """Checkpoint ``checkpoint_id`` and its verified ``state.npz`` bytes.

        Raises:
            StateError: if it is missing, torn or damaged.
        """
        chk = self.manifest(checkpoint_id)
        if chk is None:
            msg = (
                f"checkpoint {checkpoint_id} of pipeline {self.pipeline!r} is not in "
                f"'{self.path}' (or is incomplete), but the sink's output says it committed; "
                "was the data directory changed or deleted? Run with the data directory the "
                "output was written with, or replay (--from-offset / --from-time) to new output"
            )
            raise StateError(msg)
        return chk, self.read(chk)

    def discard_after(self, checkpoint_id: int) -> list[int]:
        """Delete every checkpoint newer than ``checkpoint_id``; returns their ids."""
        gone = [c for c in self.ids() if c > checkpoint_id]
        for cid in gone:
            shutil.rmtree(self.dir_of(cid), ignore_errors=True)
        if gone:
            _fsync_dir(self.path)
        return gone

    # -- writing ---------------------------------------------------------------------------
    def write(self, checkpoint_id: int, state: bytes, *, final: bool = False) -> Checkpoint:
        """Write checkpoint ``checkpoint_id`` atomically: state first, manifest last.

        Raises:
            StateError: if the id is not newer than every existing checkpoint, or on I/O
                errors.
        """
        existing = self.ids()
        if existing and checkpoint_id <= existing[-1]:
            msg = (
                f"checkpoint id {checkpoint_id} is not newer than the last one "
                f"({existing[-1]}) in '{self.path}'"
            )
            raise StateError(msg)
        path = self.dir_of(checkpoint_id)
        digest = hashlib.sha256(state).hexdigest()
        now = time.time()
        meta = {
            "format": FORMAT,
            "id": checkpoint_id,
            "pipeline": self.pipeline,
            "time": now,
            "sha256": digest,
            "size": len(state),
            "final": final,
        }
        try:
            self._mkdir()
            path.mkdir()
            if self.crash.point == "mid_state":
                _write_file(path / _STATE, state[: len(state) // 2])
                self.crash.hit("mid_state")
            _atomic_write(path / _STATE, state)
            self.crash.hit("after_state")
            _atomic_write(path / _MANIFEST, orjson.dumps(meta, option=orjson.OPT_INDENT_2))
            _fsync_dir(self.path)
        except OSError as exc:
            msg = f"cannot write checkpoint {checkpoint_id} to '{path}': {os_error_text(exc)}"
            raise StateError(msg) from exc
        return Checkpoint(checkpoint_id, path, now, digest, len(state), final)

    def prune(self) -> list[int]:
        """Delete all but the newest ``keep`` complete checkpoints, and every torn one.

        Returns:
            the ids deleted.
        """
        complete = [c for c in self.ids() if (self.dir_of(c) / _MANIFEST).exists()]
        kept = set(complete[-self.config.keep :])
        gone = [c for c in self.ids() if c not in kept]
        for cid in gone:
            shutil.rmtree(self.dir_of(cid), ignore_errors=True)
        return gone

    def clear(self) -> None:
        """Delete every checkpoint of this pipeline."""
        for cid in self.ids():
            shutil.rmtree(self.dir_of(cid), ignore_errors=True)

    def _mkdir(self) -> None:
        make_checkpoints_folder(self.path, self.pipeline)


def make_checkpoints_folder(path: Path, pipeline: str) -> None:
    """Create ``path`` (and its parents) for ``pipeline``'s checkpoints, if missing.

    Raises:
        StateError: saying why it cannot be created (read-only, full, forbidden).
    """
    if path.is_dir():
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
        _fsync_dir(path.parent)
    except OSError as exc:
        msg = (
            f"cannot create the checkpoints folder of pipeline {pipeline!r}: "
            f"{os_error_text(exc)}; give the run a writable --data-dir"
        )
        raise StateError(msg) from exc


def _write_file(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary name, fsync, rename over ``path``, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    _write_file(tmp, data)
    tmp.replace(path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """Make a directory's entries (created or renamed files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
