"""Disk errors (full, read-only, forbidden) give one line on stderr and status 2.

The faults are real: as root, a 2 MiB tmpfs is mounted for a full disk (``ENOSPC``) and a
read-only tmpfs for ``EROFS``; each mount is undone by its fixture. Where mounting is not
possible (not root, or no ``CAP_SYS_ADMIN``), a full disk is a file-size limit instead
(``RLIMIT_FSIZE``: the kernel fails the write with ``EFBIG``), and a read-only folder is
``chmod 555`` (``EACCES``; root is not stopped by modes, so then those tests are skipped).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tidal.cli import main
from tidal.errors import ConnectorError
from tidal.io.log import Topic
from tidal.io.log.segment import write_atomic
from tidal.io.parts import read_committed

DISK = 2 << 20  # bytes of the small disk


@pytest.fixture(autouse=True)
def _no_tidal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TIDAL_"):
            monkeypatch.delenv(name)


def _mount(path: Path, options: str) -> bool:
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def _umount(path: Path) -> None:
    done = subprocess.run(["umount", str(path)], capture_output=True, check=False)
    if done.returncode:  # a file still open there: detach it now, freed when closed
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=True)
        pytest.fail(f"a file was left open on {path}: {done.stderr.decode().strip()}")


@dataclass
class SmallDisk:
    """A folder where writes fail past about :data:`DISK` bytes."""

    path: Path
    tmpfs: bool

    @contextlib.contextmanager
    def limited(self) -> Iterator[None]:
        """Where there is no tmpfs: a file-size limit while the block runs."""
        if self.tmpfs:
            yield
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (DISK, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, old)

    @property
    def reason(self) -> str:
        return os.strerror(errno.ENOSPC if self.tmpfs else errno.EFBIG)

    def fill(self) -> None:
        """Fill the disk to the last byte (a file at the size limit, without tmpfs)."""
        with self.limited(), (self.path / "filler").open("wb") as f:
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    path = tmp_path / "disk"
    path.mkdir()
    mounted = _mount(path, f"size={DISK}")
    try:
        yield SmallDisk(path, mounted)
    finally:
        if mounted:
            _umount(path)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder holding a topic ``t`` with 3 records, then made read-only."""
    path = tmp_path / "ro"
    path.mkdir()
    mounted = _mount(path, "size=1m")
    try:
        with Topic.create(path, "t") as t:
            t.append(0, [b'{"i":1}', b'{"i":2}', b'{"i":3}'])
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
            reason = os.strerror(errno.EROFS)
        elif os.geteuid() == 0:
            pytest.skip("root ignores file modes and cannot mount a read-only tmpfs here")
        else:
            for folder in (path, *path.rglob("*")):
                if folder.is_dir():
                    folder.chmod(0o555)
            reason = os.strerror(errno.EACCES)
        yield path, reason
    finally:
        if mounted:
            _umount(path)
        else:
            for folder in (path, *path.rglob("*")):
                if folder.is_dir():
                    folder.chmod(0o755)


def _one_line(err: str, *words: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tidal: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], err
    return lines[0]


def _jsonl(path: Path, first: int, n: int) -> None:
    pad = "x" * 400
    with path.open("w") as f:
        for i in range(first, first + n):
            f.write(f'{{"i": {i}, "pad": "{pad}"}}\n')


# -- the embedded log --------------------------------------------------------------------------


def test_produce_on_a_full_disk_says_how_many_records_went_in(
    small_disk: SmallDisk, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(small_disk.path)
    assert main(["log", "create", "t", "--data-dir", data]) == 0
    big = tmp_path / "big.jsonl"
    _jsonl(big, 0, 12_000)  # 5 MiB: blocks of 1 MiB, the second does not fit
    with small_disk.limited():
        status = main(["log", "produce", "t", "--file", str(big), "--data-dir", data])
    assert status == 2
    line = _one_line(capsys.readouterr().err, small_disk.reason, "topic 't' partition 0")
    went = int(line.rsplit("; ", 1)[1].split()[0].replace(",", ""))
    assert 0 < went < 12_000, line
    # exactly those records are in the log, whole, and nothing half-written follows them
    with Topic.open(data, "t") as t:
        assert t.end_offset(0) == went
        batch = t.read(0, 0, max_records=20_000)
        assert batch.offsets.tolist() == list(range(went))
        assert not batch.dead_letters
        assert not list(t.folder(0).glob(".*.tmp"))


def test_an_append_that_fails_leaves_the_partition_as_it_was(small_disk: SmallDisk) -> None:
    with Topic.create(small_disk.path, "t") as t:
        t.append(0, [b'{"i":0}'] * 10)
        before = sorted((p.name, p.stat().st_size) for p in t.folder(0).iterdir())
        with small_disk.limited(), pytest.raises(ConnectorError) as caught:
            t.append(0, [b'{"i":1}' + b" " * 1000] * 3000)  # 3 MiB in one write
        assert small_disk.reason in str(caught.value)
        assert sorted((p.name, p.stat().st_size) for p in t.folder(0).iterdir()) == before
        assert t.append(0, [b'{"i":2}']) == 10  # the next offset, as if nothing happened


def test_write_atomic_on_a_full_disk_leaves_no_temp_file(small_disk: SmallDisk) -> None:
    small_disk.fill()
    target = small_disk.path / "00000000000000000000.idx"
    with small_disk.limited(), pytest.raises(OSError) as caught:
        write_atomic(target, np.zeros(DISK // 4, dtype=np.int64).tobytes())  # 2x the disk
    assert caught.value.errno in (errno.ENOSPC, errno.EFBIG)
    assert sorted(p.name for p in small_disk.path.iterdir()) == ["filler"]


def test_produce_create_and_consume_group_on_a_read_only_disk(
    read_only: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, reason = read_only
    data = ["--data-dir", str(path)]
    assert main(["log", "create", "u", *data]) == 2
    _one_line(capsys.readouterr().err, "cannot create topic 'u'", reason)

    stdin = path.parent / "one.jsonl"
    stdin.write_text('{"i": 4}\n')
    assert main(["log", "produce", "t", "--file", str(stdin), *data]) == 2
    _one_line(capsys.readouterr().err, "topic 't' partition 0", reason, "0 records went in")

    assert main(["log", "consume", "t", "--group", "g", *data]) == 2
    captured = capsys.readouterr()
    _one_line(captured.err, "group 'g'", reason)

    # without a group nothing is written, so reading a read-only log works
    assert main(["log", "consume", "t", *data]) == 0
    assert capsys.readouterr().err == ""


# -- tidal run: a part sink and the checkpoints folder -----------------------------------------

JOB = """
import tidal
from tidal.io.generator import GeneratorSource
from tidal.io.jsonl import JsonlPartSink

pipeline = tidal.Pipeline("job")
(
    pipeline.source("gen", GeneratorSource(lambda seq: {{"seq": seq, "pad": seq * 0 + 10**17}}))
    .sink("out", JsonlPartSink({out!r}))
)
"""


def test_a_part_sink_on_a_full_disk(
    small_disk: SmallDisk, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = small_disk.path / "out"
    job = tmp_path / "job.py"
    job.write_text(JOB.format(out=str(out)))
    every = "10ms" if small_disk.tmpfs else "1h"  # (a file-size limit needs one large file)
    args = ["run", str(job), "--events", "400000", "--checkpoint-interval", every]
    with small_disk.limited():
        status = main([*args, "--data-dir", str(tmp_path / "state"), "--json"])
    assert status == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    _one_line(captured.err, "JsonlPartSink", "cannot write the staged file", small_disk.reason)
    rows = read_committed(out)  # what the checkpoints committed is whole
    assert [r["seq"] for r in rows] == list(range(len(rows)))


def test_the_checkpoints_folder_on_a_read_only_disk(
    read_only: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, reason = read_only
    job = tmp_path / "job.py"
    job.write_text(JOB.format(out=str(tmp_path / "out")))
    args = ["run", str(job), "--events", "100", "--checkpoint-interval", "1s"]
    assert main([*args, "--data-dir", str(path / "state")]) == 2
    _one_line(capsys.readouterr().err, "cannot create the checkpoints folder", reason)


def test_any_os_error_in_a_command_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last net in ``main``: an OSError no one translated is one line and status 2."""
    from tidal.io.log import commands

    def fails(*args: object, **kwargs: object) -> int:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/srv/tidal/log")

    monkeypatch.setattr(commands, "topics", fails)
    assert main(["log", "topics"]) == 2
    _one_line(capsys.readouterr().err, "Permission denied: '/srv/tidal/log'", "permissions")


def _reading(seq: np.ndarray) -> dict[str, np.ndarray]:
    return {"key": seq % 7, "pad": np.full(len(seq), "x" * 200)}


def test_a_feed_process_on_a_full_disk_fails_in_one_line(
    small_disk: SmallDisk, capfd: pytest.CaptureFixture[str]
) -> None:
    """The demo's feed child: one line on stderr and status 2, not a traceback."""
    from tidal.io.log.feed import FeedProcess, LogFeed

    process = FeedProcess(LogFeed(_reading, small_disk.path, "t", key="key"))
    with small_disk.limited():  # (a limit and an ignored SIGXFSZ pass to the child)
        process.start()
    # it stops by itself (the disk is full); wait through the watcher, which reaps it: a
    # second waiter (_proc.join) raced the watcher's waitpid and read no exit code (ECHILD)
    process._watcher.join(120)  # noqa: SLF001
    assert process.failed == "the feed process exited with status 2"
    assert process._proc.exitcode == 2  # noqa: SLF001
    with pytest.raises(ConnectorError, match="status 2"):
        process.stop()
    err = capfd.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("tidal feed: ")]
    assert len(lines) == 1 and lines[0].startswith("tidal feed: error: cannot append"), err
    assert small_disk.reason in lines[0] and "00000000000000000000.seg" in lines[0]
