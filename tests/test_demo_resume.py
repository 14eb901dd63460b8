"""``tidal demo`` on the embedded log, killed with SIGKILL and started again: no alert lost
or repeated.

The demo runs as a user runs it (``python -m tidal demo``, here with 100 sensors and the
feed as fast as the pipeline reads), in a fresh data directory. The test kills it with
SIGKILL at seeded random moments (each once it has checkpointed progress, however busy the
machine), stops it once with Ctrl-C (SIGINT) on the way, and finally
stops it with SIGINT and reads its JSON summary. The committed alerts (the part files of
``--out``) are then compared with the alerts of an uninterrupted in-process run of the same
pipeline over the same readings (the generator, no log, no checkpoints): every alert of a
window that ended well before where the last run stopped is there exactly once, and no
alert is there that the uninterrupted run did not raise.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from tidal.apps.demo import EPOCH_MS, build_demo
from tidal.io.parts import read_committed
from tidal.runtime.snapshot import decode

SENSORS = 100
KILLS = 5
SEED = int(os.environ.get("TIDAL_FAULT_SEED", "20240101"))


def _start(data: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDAL_")}
    cmd = [sys.executable, "-m", "tidal", "demo", "--rate", "max", "--sensors", str(SENSORS)]
    cmd += ["--data-dir", str(data), "--out", str(out), "--checkpoint-interval", "100ms"]
    return subprocess.Popen(
        [*cmd, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, as a shell gives a job
    )


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(c) for c in text.split()]


def _gone(pid: int) -> bool:
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def _parts(out: Path) -> int:
    return len(list(out.glob("part-*"))) if out.is_dir() else 0


def _progress(data: Path) -> int:
    """Readings counted by the demo's newest complete checkpoint (0 for none)."""
    done = sorted((data / "checkpoints" / "iot-demo-log").glob("chk-*/MANIFEST.json"))
    if not done:
        return 0
    state = decode((done[-1].parent / "state.npz").read_bytes())
    return int(state["snapshot"]["events"])


def _wait_for_progress(proc: subprocess.Popen[str], data: Path, before: int) -> None:
    """Wait until the demo checkpointed more readings than ``before`` (60 s at most).

    On a busy machine the demo may take seconds to start its feed process; a kill before
    that would test nothing.
    """
    deadline = time.monotonic() + 60
    while _progress(data) <= before:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the demo checkpointed no progress in 60 s"
        time.sleep(0.02)


def _key(alert: dict[str, Any]) -> tuple[int, int, int, int]:
    return alert["sensor"], alert["window_start"], alert["window_end"], alert["count"]


def test_demo_killed_and_restarted_loses_and_repeats_no_alert(tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}-demo")
    data, out = tmp_path / "data", tmp_path / "alerts"
    progress = []
    for attempt in range(KILLS + 1):
        before = _progress(data)
        proc = _start(data, out)
        assert proc.stdout is not None
        header = proc.stdout.readline()  # printed when the pipeline starts
        assert header.startswith(f"tidal demo: {SENSORS} sensors"), proc.communicate()[1]
        readings = ""  # where the readings come from (wrapped at words, a long path)
        while not readings.endswith("readings\n") and "(new)" not in readings:
            line = proc.stdout.readline()
            assert line and not line.startswith("  alerts:"), readings
            readings += line
        assert readings.startswith("  readings: log topic demo-sensors"), readings
        words = " ".join(readings.split())  # as a reader sees it, however it wrapped
        assert ("resuming after" in words) == (attempt > 0), readings
        _wait_for_progress(proc, data, before)  # it runs, however busy the machine
        time.sleep(rng.uniform(0.3, 1.5))  # then a random moment
        if attempt == 2:  # Ctrl-C on the way (to the process group, as a terminal sends it)
            os.killpg(proc.pid, signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=180)
            assert proc.returncode == 0, stderr
            continue
        feeds = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)  # the demo only: its feed process must notice
        proc.communicate(timeout=180)
        assert proc.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while not all(_gone(c) for c in feeds):  # the feed process exits with its parent
            assert time.monotonic() < deadline, "a feed process outlived the demo"
            time.sleep(0.02)
        progress.append(_progress(data))

    before = _progress(data)
    proc = _start(data, out, "--json")
    _wait_for_progress(proc, data, before)  # not still importing: SIGINT stops a run
    deadline = time.monotonic() + 120
    while len(read_committed(out)) < 25:  # enough incidents to compare (one alert each)
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the demo committed under 25 alerts in 120 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    summary = orjson.loads(stdout)
    position = summary["position"]
    assert summary["restored_from"] is not None and summary["restored_events"] > 0, summary

    # the kills were real: every run read and checkpointed readings before it was killed
    assert progress == sorted(set(progress)) and _parts(out) > 0

    committed = read_committed(out)
    counts = Counter(_key(a) for a in committed)
    repeated = [k for k, n in counts.items() if n > 1]
    assert not repeated, f"{len(repeated)} alerts committed twice, e.g. {repeated[:3]}"

    pipeline, handles = build_demo(sensors=SENSORS, rate=None, keep_alerts=True)
    pipeline.run(max_events=position + 50_000, max_wait="0ms", handle_signals=False)
    assert handles.alerts is not None
    reference = {_key(a): a for a in handles.alerts.records()}
    # the log is read in batches of up to 8,192 readings round-robin over 4 partitions,
    # so where the last run stopped, partitions may differ by a few seconds of event time
    cutoff = EPOCH_MS + int((position / (SENSORS * 10.0) - 60.0) * 1000)
    due = {k for k, a in reference.items() if a["window_end"] <= cutoff}
    assert len(due) >= 10  # enough faults went by to make the comparison mean something
    lost = due - set(counts)
    extra = set(counts) - set(reference)
    assert not lost, f"{len(lost)} alerts lost, e.g. {sorted(lost)[:3]}"
    assert not extra, f"{len(extra)} alerts the uninterrupted run did not raise"
    for alert in committed:
        ref = reference[_key(alert)]
        assert abs(alert["mean"] - ref["mean"]) <= 1e-9 * abs(ref["mean"])
        assert abs(alert["score"] - ref["score"]) <= 1e-6 * abs(ref["score"])
