"""Changing ``--workers`` over a job's checkpoints: the state is re-split, exactly once.

Every run is a real ``tidal run`` over the pipeline of scale_pipeline.py (a keyed 1 s
tumbling window into exactly-once part files). A job is stopped mid-run (Ctrl-C to the
process group, or SIGKILL of every process) at a moment the test knows (a process parked
at a gate file in its third batch), then resumed with another number of workers. Its
committed output, as a multiset of records, must equal one uninterrupted single-process
run: nothing lost, nothing twice, the same aggregates. No test waits on a timer.
"""

from __future__ import annotations

import os
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

from tidal.errors import StateError
from tidal.io.parts import read_committed
from tidal.runtime.workers import worker_dir
from tidal.runtime.workers.resplit import LAYOUT, RESPLIT_CRASH_ENV, RESPLIT_POINTS, JobLayout

HERE = Path(__file__).parent
PIPELINE = HERE / "scale_pipeline.py"
TOTAL = 24_000
PARTITIONS = 4
WAIT_S = 120.0

sys.path.insert(0, str(HERE))
import scale_pipeline  # noqa: E402

pytestmark = pytest.mark.slow


def _canon(rows: list[dict[str, Any]]) -> Counter[bytes]:
    return Counter(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rows)


def _start(
    run_dir: Path, data: Path, out: Path, workers: int | None, **extra: str
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "tidal.cli", "run", str(PIPELINE), "--json"]
    cmd += ["--checkpoint-interval", "1ms", "--max-batch", "500", "--max-wait", "0ms"]
    cmd += ["--data-dir", str(run_dir)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL_", "SCALE_"))}
    env.update(SCALE_DATA=str(data), SCALE_OUT=str(out), **extra)
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )


def _finish(proc: subprocess.Popen[bytes]) -> tuple[dict[str, Any], str]:
    stdout, stderr = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 0, stderr.decode()
    summary: dict[str, Any] = orjson.loads(stdout.splitlines()[-1])
    return summary, stderr.decode()


def _wait_for(what: str, cond: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the run ended before {what}: {err.decode()[-2000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _layout(run: Path) -> Any:
    return orjson.loads((run / "workers" / "scaled" / LAYOUT).read_bytes())["workers"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("input")
    scale_pipeline.produce(folder, TOTAL, PARTITIONS)
    return folder


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Counter[bytes]:
    """One process, uninterrupted."""
    base = tmp_path_factory.mktemp("reference")
    summary, _ = _finish(_start(base / "run", data, base / "out", None))
    assert summary["events"] == TOTAL
    rows = _canon(read_committed(base / "out"))
    assert sum(rows.values()) > 1000 and max(rows.values()) == 1
    return rows


def _worker_pids(run: Path, workers: int) -> list[int]:
    dirs = [worker_dir(run, "scaled", i, workers) for i in range(workers)]
    return [int((d / "PID").read_text()) for d in dirs]


def _gone(pid: int) -> bool:
    """No such process, or a zombie (its files, and so its locks, are closed)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    state = next((ln for ln in status.splitlines() if ln.startswith("State:")), "")
    return "Z" in state.split()[1:2]


def _stopped_mid_run(
    run: Path, data: Path, out: Path, workers: int | None, how: str, **extra: str
) -> None:
    """Run the job until one process is parked mid-run, then stop every process ``how``."""
    gate = run.parent / f"gate-{run.name}"
    gate.touch()
    who = "-" if workers is None else "1/"
    proc = _start(run, data, out, workers, SCALE_GATE=str(gate), SCALE_GATE_WHO=who, **extra)
    _wait_for("a process parks at the gate", Path(f"{gate}.reached").exists, proc)
    if how == "sigkill":
        pids = [] if workers is None else _worker_pids(run, workers)
        os.killpg(proc.pid, signal.SIGKILL)  # the supervisor and every worker at once
        proc.communicate(timeout=WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while not all(_gone(pid) for pid in pids):  # their checkpoint locks are free then
            assert time.monotonic() < deadline, "killed workers did not go away"
            time.sleep(0.01)
    else:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: every process checkpoints and stops
        gate.unlink()  # the parked one finishes its batch, then sees the stop
        try:
            _, err = proc.communicate(timeout=WAIT_S)
        except subprocess.TimeoutExpired:  # say what it printed, leave nothing running
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
            pytest.fail(f"the job did not stop after Ctrl-C: {err.decode()[-3000:]}")
        assert proc.returncode == 0, err.decode()
    if gate.exists():
        gate.unlink()


@pytest.mark.parametrize("how", ["ctrl-c", "sigkill"])
@pytest.mark.parametrize("resume", [1, 3])
def test_two_workers_resumed_with_another_count_give_the_output_of_one_process(
    how: str, resume: int, data: Path, reference: Counter[bytes], tmp_path: Path
) -> None:
    run, out = tmp_path / "run", tmp_path / "out"
    _stopped_mid_run(run, data, out, 2, how)
    assert any((worker_dir(run, "scaled", 1, 2) / "checkpoints" / "scaled").glob("chk-*"))
    summary, err = _finish(_start(run, data, out, None if resume == 1 else resume))
    new = None if resume == 1 else resume
    assert "re-split the state of --workers 2 into" in err, err
    assert _layout(run) == new
    assert not worker_dir(run, "scaled", 0, 2).exists()  # the old layout is gone
    if new is not None:
        assert summary["workers"] == new and summary["restarts"] == [0] * new
    assert _canon(read_committed(out)) == reference, (how, resume)
    # and back: the job, now finished, goes to 2 workers again and adds nothing
    _finish(_start(run, data, out, 2))
    assert _layout(run) == 2
    assert _canon(read_committed(out)) == reference


def test_one_process_killed_mid_run_resumes_with_two_workers(
    data: Path, reference: Counter[bytes], tmp_path: Path
) -> None:
    run, out = tmp_path / "run", tmp_path / "out"
    _stopped_mid_run(run, data, out, None, "sigkill")
    summary, err = _finish(_start(run, data, out, 2))
    assert "re-split the state of one process (no --workers) into --workers 2" in err, err
    assert summary["workers"] == 2
    assert _canon(read_committed(out)) == reference


@pytest.mark.parametrize("point", RESPLIT_POINTS)
def test_a_kill_during_the_resplit_leaves_the_old_or_the_new_layout(
    point: str, data: Path, reference: Counter[bytes], tmp_path: Path
) -> None:
    run, out = tmp_path / "run", tmp_path / "out"
    _stopped_mid_run(run, data, out, 2, "ctrl-c")
    proc = _start(run, data, out, 3, **{RESPLIT_CRASH_ENV: point})
    proc.communicate(timeout=WAIT_S)
    assert proc.returncode == -signal.SIGKILL, point
    assert _layout(run) == (3 if point == "after_layout" else 2), point
    # the next start finishes (or redoes) the re-split; the job ends exactly once
    _finish(_start(run, data, out, 3))
    assert _layout(run) == 3
    assert not worker_dir(run, "scaled", 0, 2).exists()
    assert _canon(read_committed(out)) == reference, point


def test_state_that_is_not_split_by_key_is_refused_and_stays_usable(
    data: Path, tmp_path: Path
) -> None:
    run, out = tmp_path / "run", tmp_path / "out"
    _stopped_mid_run(run, data, out, 2, "ctrl-c", SCALE_DEDUPE="1")
    proc = _start(run, data, out, 3, SCALE_DEDUPE="1")
    _, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 2
    text = err.decode()
    assert "step 'once' (Dedupe) keeps state that is not split by key" in text, text
    assert "Run it with --workers 2 again" in text
    assert _layout(run) == 2 and not worker_dir(run, "scaled", 0, 3).exists()
    _finish(_start(run, data, out, 2, SCALE_DEDUPE="1"))  # the old count still runs


def test_a_window_over_input_not_partitioned_by_its_key_is_refused(
    data: Path, tmp_path: Path
) -> None:
    run, out = tmp_path / "run", tmp_path / "out"
    _stopped_mid_run(run, data, out, 2, "ctrl-c", SCALE_KEY="v")
    proc = _start(run, data, out, None, SCALE_KEY="v")
    _, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 2
    text = err.decode()
    assert "the input is not partitioned by the key" in text, text
    assert "step 'per_second'" in text


def test_a_second_run_of_the_same_job_is_refused_while_the_first_holds_it(tmp_path: Path) -> None:
    first, second = JobLayout(tmp_path, "scaled"), JobLayout(tmp_path, "scaled")
    first.lock()
    try:
        with pytest.raises(StateError, match="another tidal run of pipeline 'scaled'"):
            second.lock()
    finally:
        first.unlock()
    second.lock()  # free again once the first lets go
    second.unlock()
