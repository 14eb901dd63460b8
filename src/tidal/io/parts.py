"""Exactly-once file output: part files staged between checkpoints, committed with them.

A part sink writes to a directory, never to one file::

    out/
      .staging/3f2a...e1.part          being written, or prepared and not yet committed
      part-000000000007-0.jsonl        committed by checkpoint 7
      part-000000000008-0.jsonl        committed by checkpoint 8 (first file)
      part-000000000008-1.jsonl        ... and its second (after ``roll_bytes``)

It implements :class:`~tidal.io.base.TransactionalSink`, the two-phase commit of Flink's
file sinks:

- ``write`` appends to a staged file under ``.staging/`` (invisible to readers);
- ``prepare(N)`` closes the staged files, fsyncs them and returns
  ``{"checkpoint": N, "files": [{"file": ".staging/<uuid>.part", "final":
  "part-<N>-<n>.jsonl"}, ...]}`` (paths relative to the directory), which the runtime stores
  in checkpoint ``N``;
- ``commit(N, pending)`` renames each staged file to its final name (atomic), then fsyncs
  the directory; a file already renamed is skipped, so a repeated commit changes nothing;
- ``recover(pending)``, on restart, commits the transactions of the restored checkpoint and
  deletes every other staged file: the output of the attempt that crashed, which will be
  produced again from the restored positions.

Readers list ``part-*`` files only (:func:`committed_files`, :func:`read_committed`): they
never see a staged, half-written or duplicated record. Give every sink its own directory.
Under ``tidal run --workers N`` the N copies of a sink share it: worker ``i`` stages in
``.staging-w<i>/`` and commits ``part-<N>-w<i>-<n>.<ext>`` (:meth:`PartSink.assign_worker`).

The formats: :class:`tidal.io.jsonl.JsonlPartSink`, :class:`tidal.io.csv.CsvPartSink`,
:class:`tidal.io.parquet.ParquetPartSink`.

Example:
    >>> import tempfile
    >>> from tidal.io.jsonl import JsonlPartSink
    >>> tmp = tempfile.TemporaryDirectory()
    >>> sink = JsonlPartSink(tmp.name)
    >>> sink.recover([]); sink.open()
    >>> sink.write(Batch({"x": [1, 2]}))
    >>> pending = sink.prepare(1)
    >>> pending["files"][0]["final"], read_committed(tmp.name)  # prepared, not visible
    ('part-000000000001-0.jsonl', [])
    >>> sink.commit(1, pending); sink.commit(1, pending)  # the second call changes nothing
    >>> read_committed(tmp.name)
    [{'x': 1}, {'x': 2}]
    >>> sink.close(); tmp.cleanup()
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tidal.core.batch import Batch
from tidal.errors import ConnectorError, os_error_text
from tidal.io.base import BaseSink
from tidal.io.fileutil import FileSink

__all__ = ["PartSink", "committed_files", "read_committed", "STAGING"]

STAGING = ".staging"
"""The folder of staged files inside a part sink's directory."""

_PART = re.compile(r"^part-(\d+)-(?:w(\d+)-)?(\d+)(\.[A-Za-z0-9]+)$")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PartSink(BaseSink):
    """Base of the exactly-once file sinks: staging, prepare, commit, recover.

    A subclass sets ``suffix`` and implements ``_file_sink(path)``, returning the
    single-file sink that writes one staged file (its ``close()`` must finish the file).

    Args:
        directory: where committed part files go (created if missing).
        roll_bytes: start a new staged file after this many bytes (``None``: one file per
            checkpoint); a checkpoint may then commit several files.
    """

    suffix = ".part"

    def __init__(self, directory: str | Path, *, roll_bytes: int | None = 256 << 20) -> None:
        self.directory = Path(directory)
        self.staging = self.directory / STAGING
        self.worker: int | None = None
        self.roll_bytes = roll_bytes
        self._current: FileSink | None = None
        self._current_name = ""
        self._done: list[str] = []  # staged files closed, waiting for prepare
        self._closed = False

    @property
    def label(self) -> str:
        """The sink for messages, e.g. ``JsonlPartSink('out')``."""
        return f"{type(self).__name__}('{self.directory}')"

    def _file_sink(self, path: Path) -> FileSink:  # pragma: no cover
        raise NotImplementedError

    def assign_worker(self, index: int, count: int) -> None:
        """Be worker ``index``'s copy: its own staging folder, its index in file names.

        Worker ``i`` of ``tidal run --workers N`` stages in ``.staging-w<i>/`` (so its
        ``recover`` never touches another worker's staged files) and commits
        ``part-<checkpoint>-w<i>-<n>.<ext>`` (checkpoint ids of different workers collide).
        With one worker nothing changes.

        Example:
            >>> from tidal.io.jsonl import JsonlPartSink
            >>> sink = JsonlPartSink("out")
            >>> sink.assign_worker(1, 2)
            >>> sink.staging.name, sink.prepare(7)["checkpoint"]
            ('.staging-w1', 7)
        """
        if count > 1:
            self.worker = index
            self.staging = self.directory / f"{STAGING}-w{index}"

    # -- Sink --------------------------------------------------------------------------------
    def open(self) -> None:
        """Create the directory and its staging folder.

        Raises:
            ConnectorError: if they cannot be created.
        """
        try:
            self.staging.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"{self.label}: cannot create '{self.staging}': {exc.strerror or exc}"
            raise ConnectorError(msg) from exc
        self._closed = False

    def write(self, batch: Batch) -> None:
        """Append the batch to the current staged file (readers do not see it yet).

        Raises:
            ConnectorError: after ``close``, or when the batch cannot be written.
        """
        if self._closed:
            msg = f"{self.label} is closed; call open() before writing to it again"
            raise ConnectorError(msg)
        if not len(batch):
            return
        if self._current is None:
            self.open()
            self._current_name = f"{uuid.uuid4().hex}.part"
            self._current = self._file_sink(self.staging / self._current_name)
            self._current.open()
        try:
            self._current.write(batch)
        except OSError as exc:
            raise self._write_error(exc) from exc
        if self.roll_bytes is not None and self._size() >= self.roll_bytes:
            self._roll()

    def _write_error(self, exc: OSError) -> ConnectorError:
        """The error for a failed write; the staged file is given up (recover deletes it)."""
        current, self._current = self._current, None
        if current is not None:
            with contextlib.suppress(OSError):
                current.close()
        msg = (
            f"{self.label}: cannot write the staged file '{self.staging / self._current_name}': "
            f"{os_error_text(exc)}; what the last checkpoint committed is intact"
        )
        return ConnectorError(msg)

    def _size(self) -> int:
        assert self._current is not None
        try:
            self._current.flush()  # one large write per batch anyway
        except OSError as exc:
            raise self._write_error(exc) from exc
        try:
            return (self.staging / self._current_name).stat().st_size
        except OSError:
            return 0

    def _roll(self) -> None:
        if self._current is not None:
            current, self._current = self._current, None
            try:
                current.close()
            except OSError as exc:
                raise self._write_error(exc) from exc
            self._done.append(self._current_name)

    def flush(self) -> None:
        """Hand buffered bytes to the operating system (they stay invisible until commit).

        Raises:
            ConnectorError: when they cannot be written (a full disk, say).
        """
        if self._current is not None:
            try:
                self._current.flush()
            except OSError as exc:
                raise self._write_error(exc) from exc

    def close(self) -> None:
        """Finish the current staged file; it stays staged until ``prepare`` and commit.

        Output written after the last prepare and never committed is discarded by the
        next ``recover``.
        """
        self._roll()
        self._closed = True

    # -- TransactionalSink -------------------------------------------------------------------
    def prepare(self, checkpoint_id: int) -> dict[str, Any]:
        """Close and fsync the files written since the last prepare; describe them.

        Raises:
            ConnectorError: if a staged file cannot be synced.
        """
        self._roll()
        files = []
        for n, name in enumerate(self._done):
            try:
                _fsync(self.staging / name)
            except OSError as exc:
                msg = f"{self.label}: cannot sync staged file '{self.staging / name}': {exc}"
                raise ConnectorError(msg) from exc
            tag = "" if self.worker is None else f"w{self.worker}-"
            final = f"part-{checkpoint_id:012d}-{tag}{n}{self.suffix}"
            files.append({"file": f"{self.staging.name}/{name}", "final": final})
        if files:
            _fsync(self.staging)
        self._done = []
        return {"checkpoint": checkpoint_id, "files": files}

    def commit(self, checkpoint_id: int, pending: dict[str, Any]) -> None:
        """Rename the prepared files to their final names; a repeated call changes nothing.

        Raises:
            ConnectorError: if a prepared file is gone and was never committed (its output
                would be lost).
        """
        renamed = False
        for entry in pending.get("files", ()):
            staged = self.directory / entry["file"]
            final = self.directory / entry["final"]
            try:
                staged.replace(final)
                renamed = True
            except FileNotFoundError:
                if not final.exists():
                    msg = (
                        f"{self.label}: checkpoint {checkpoint_id} prepared '{staged}', but it "
                        f"is gone and '{final}' does not exist; the output of that checkpoint "
                        "is lost (was the staging folder cleaned by hand, or shared with "
                        "another sink?)"
                    )
                    raise ConnectorError(msg) from None
            except OSError as exc:
                msg = f"{self.label}: cannot commit '{staged}' as '{final}': {exc}"
                raise ConnectorError(msg) from exc
        if renamed:
            _fsync(self.directory)

    def recover(self, pending: Sequence[dict[str, Any]]) -> None:
        """Commit ``pending`` (from the restored checkpoint); delete every other staged file."""
        self.open()
        keep = {self._current_name} if self._current is not None else set()
        keep.update(self._done)
        for info in pending:
            self.commit(int(info["checkpoint"]), info)
        removed = False
        for path in self.staging.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)
                removed = True
        if removed:
            _fsync(self.staging)


def committed_files(directory: str | Path, suffix: str | None = None) -> list[Path]:
    """The committed part files of a directory, in commit order (checkpoint, then number).

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> for name in ("part-000000000002-0.csv", "part-000000000001-10.csv",
        ...              "part-000000000001-9.csv", "notes.txt"):
        ...     _ = (Path(tmp.name) / name).write_text("")
        >>> [p.name for p in committed_files(tmp.name)]
        ['part-000000000001-9.csv', 'part-000000000001-10.csv', 'part-000000000002-0.csv']
        >>> tmp.cleanup()
    """
    folder = Path(directory)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        m = _PART.match(path.name)
        if m and (suffix is None or m.group(4) == suffix):
            found.append((int(m.group(1)), int(m.group(2) or -1), int(m.group(3)), path))
    return [p for *_, p in sorted(found)]


def read_committed(directory: str | Path) -> list[dict[str, Any]]:
    """Every committed record of a part sink's directory, as dicts, in commit order.

    Reads ``.jsonl``, ``.csv`` and ``.parquet`` part files; staged files are never read.

    Raises:
        ConnectorError: for a part file that cannot be read.
    """
    out: list[dict[str, Any]] = []
    for path in committed_files(directory):
        try:
            out.extend(_read(path))
        except (OSError, ValueError) as exc:
            msg = f"cannot read committed part file '{path}': {exc}"
            raise ConnectorError(msg) from exc
    return out


def _read(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        import orjson

        return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    if path.suffix == ".csv":
        import pyarrow.csv as pa_csv

        rows: list[dict[str, Any]] = pa_csv.read_csv(path).to_pylist()
        return rows
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        records: list[dict[str, Any]] = pq.read_table(path).to_pylist()
        return records
    msg = f"part file '{path}' has no format Tidal reads (.jsonl, .csv, .parquet)"
    raise ConnectorError(msg)
