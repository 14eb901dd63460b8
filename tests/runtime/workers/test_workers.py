"""``tidal run --workers N`` on the embedded log: same output as one process, through kills.

Every run is a real ``tidal run`` (supervisor + worker processes) over the pipeline of
scale_pipeline.py: a keyed 1 s tumbling window into exactly-once part files. The committed
output of each run is compared, as a multiset of records, with one uninterrupted
single-process run. Kills happen at moments the test knows (a crash point inside a
checkpoint, or a worker parked at a gate file), never after a timer.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tidal.cli import main
from tidal.io.parts import read_committed
from tidal.runtime.workers import CRASH_WORKER_ENV, worker_dir

HERE = Path(__file__).parent
PIPELINE = HERE / "scale_pipeline.py"
TOTAL = 24_000
PARTITIONS = 4
SEED = int(os.environ.get("TIDAL_FAULT_SEED", "20240101"))
WAIT_S = 120.0

sys.path.insert(0, str(HERE))
import scale_pipeline  # noqa: E402

pytestmark = pytest.mark.slow


def _canon(rows: list[dict[str, Any]]) -> Counter[bytes]:
    return Counter(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rows)


def _env(data: Path, out: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "SCALE_"))}
    env.update(SCALE_DATA=str(data), SCALE_OUT=str(out), **extra)
    return env


def _start(
    run_dir: Path, data: Path, out: Path, workers: int, *, session: bool = False, **extra: str
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "tidal.cli", "run", str(PIPELINE), "--json"]
    cmd += ["--checkpoint-interval", "1ms", "--max-batch", "500", "--max-wait", "0ms"]
    cmd += ["--data-dir", str(run_dir), "--workers", str(workers)]
    return subprocess.Popen(
        cmd,
        env=_env(data, out, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=session,
    )


def _finish(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    stdout, stderr = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 0, stderr.decode()
    summary: dict[str, Any] = orjson.loads(stdout.splitlines()[-1])
    return summary


def _wait_for(what: str, cond: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the run ended before {what}: {err.decode()[-2000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("input")
    scale_pipeline.produce(folder, TOTAL, PARTITIONS)
    return folder


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Counter[bytes]:
    """One process, uninterrupted."""
    base = tmp_path_factory.mktemp("reference")
    summary = _finish(_start(base / "run", data, base / "out", 1))
    assert "workers" not in summary and summary["events"] == TOTAL
    rows = _canon(read_committed(base / "out"))
    assert sum(rows.values()) > 1000 and max(rows.values()) == 1
    return rows


@pytest.mark.parametrize("workers", [2, 6])
def test_workers_give_the_output_of_one_process(
    workers: int, data: Path, reference: Counter[bytes], tmp_path: Path
) -> None:
    summary = _finish(_start(tmp_path / "run", data, tmp_path / "out", workers))
    started = min(workers, PARTITIONS)  # no worker without a partition
    assert summary["workers"] == started and summary["restarts"] == [0] * started
    assert summary["events"] == TOTAL
    assert all(w["events"] > 0 for w in summary["per_worker"])
    assert _canon(read_committed(tmp_path / "out")) == reference


_POINTS = ["after_prepare", "mid_state", "after_manifest", "mid_commit", "after_commit"]


@pytest.mark.parametrize("attempt", range(3))
def test_a_worker_that_kills_itself_inside_a_checkpoint_is_restarted_exactly_once(
    attempt: int, data: Path, reference: Counter[bytes], tmp_path: Path
) -> None:
    rng = random.Random(SEED + attempt)
    worker, point, nth = rng.randrange(2), rng.choice(_POINTS), rng.randrange(1, 8)
    crash = f"{worker}:{point}:{nth}"
    proc = _start(tmp_path / "run", data, tmp_path / "out", 2, **{CRASH_WORKER_ENV: crash})
    summary = _finish(proc)
    restarts = [0, 0]
    restarts[worker] = 1
    assert summary["restarts"] == restarts, crash
    assert _canon(read_committed(tmp_path / "out")) == reference, crash


def test_a_worker_sigkilled_mid_run_is_restarted_and_output_stays_exactly_once(
    data: Path, reference: Counter[bytes], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    proc = _start(tmp_path / "run", data, tmp_path / "out", 2, SCALE_GATE=str(gate))
    reached = Path(f"{gate}.reached")
    _wait_for("worker 1 parks at the gate", reached.exists, proc)
    os.kill(int(reached.read_text()), signal.SIGKILL)
    gate.unlink()  # its restart passes
    summary = _finish(proc)
    assert summary["restarts"] == [0, 1]
    assert _canon(read_committed(tmp_path / "out")) == reference


def _has_checkpoint(folder: Path) -> bool:
    chk = folder / "checkpoints" / "scaled"
    return chk.is_dir() and any(p.name.startswith("chk-") for p in chk.iterdir())


def _gone(pid: int) -> bool:
    """No such process, or a zombie (an orphan that init has not reaped yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    state = next((ln for ln in status.splitlines() if ln.startswith("State:")), "")
    return "Z" in state.split()[1:2]


def test_ctrl_c_stops_every_worker_and_a_rerun_finishes_the_job(
    data: Path, reference: Counter[bytes], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    proc = _start(run, data, tmp_path / "out", 2, session=True, SCALE_BOUNDED="0")
    dirs = [worker_dir(run, "scaled", i, 2) for i in range(2)]
    _wait_for("both workers checkpoint", lambda: all(_has_checkpoint(d) for d in dirs), proc)
    pids = [int((d / "PID").read_text()) for d in dirs]
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    summary = _finish(proc)
    assert summary["restarts"] == [0, 0]
    assert all(_gone(pid) for pid in pids)
    # the follow-up run resumes each worker from its checkpoint and drains the input
    _finish(_start(run, data, tmp_path / "out", 2))
    assert _canon(read_committed(tmp_path / "out")) == reference


def test_a_source_that_cannot_be_split_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "mem.py"
    file.write_text(
        "from tidal import Pipeline\n"
        "from tidal.io.memory import MemorySource\n"
        "from tidal.io.jsonl import JsonlPartSink\n"
        "pipeline = Pipeline('mem')\n"
        f"pipeline.source('in', MemorySource([{{'x': 1}}])).sink('out', "
        f"JsonlPartSink({str(tmp_path / 'o')!r}))\n"
    )
    assert main(["run", str(file), "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "'in'" in err and "MemorySource cannot be split across worker processes" in err


def test_workers_stop_when_the_supervisor_is_sigkilled(
    data: Path, reference: Counter[bytes], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    proc = _start(run, data, tmp_path / "out", 2, SCALE_BOUNDED="0")
    dirs = [worker_dir(run, "scaled", i, 2) for i in range(2)]
    _wait_for("both workers checkpoint", lambda: all(_has_checkpoint(d) for d in dirs), proc)
    pids = [int((d / "PID").read_text()) for d in dirs]
    proc.kill()  # the supervisor only: the kernel sends each worker SIGTERM (PDEATHSIG)
    proc.communicate(timeout=WAIT_S)
    deadline = time.monotonic() + WAIT_S
    while not all(_gone(pid) for pid in pids):
        assert time.monotonic() < deadline, "workers outlived their supervisor"
        time.sleep(0.01)
    _finish(_start(run, data, tmp_path / "out", 2))  # their last checkpoints resume
    assert _canon(read_committed(tmp_path / "out")) == reference
