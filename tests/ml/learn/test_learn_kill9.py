"""Learner state is exactly-once through kill -9: no row learned twice, none skipped.

learn_worker.py learns a generated stream prequentially (exact per-sample mode, so results
do not depend on where batches are cut) and writes its predictions through an exactly-once
part-file sink, checkpointing every 50 ms. The test kills it with SIGKILL at seeded random
moments, and in some attempts makes it kill itself inside a checkpoint
(``TIDAL_TEST_CRASH_POINT``), restarting it each time until it finishes. Then the final
weights must equal an uninterrupted run's bit for bit, the optimizer must have taken exactly
one step per row, and the committed predictions must be the same multiset.
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

from tidal.io.parts import read_committed
from tidal.runtime.checkpoint import CRASH_ENV, CRASH_POINTS

WORKER = Path(__file__).with_name("learn_worker.py")
TOTAL = 40_000
RATE = 20_000
MIN_KILLS = 6
SEED = int(os.environ.get("TIDAL_FAULT_SEED", "20240101"))


def _start(out: Path, data: Path, rate: int, crash: str | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDAL_")}
    if crash is not None:
        env[CRASH_ENV] = crash
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(out), str(data), str(TOTAL), str(rate)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def _finish(out: Path, data: Path) -> tuple[dict[str, Any], int | None]:
    proc = _start(out, data, 0, None)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()
    lines = stdout.splitlines()
    return orjson.loads(lines[-1]), orjson.loads(lines[0])["restored_from"]


def _rows(out: Path) -> Counter[bytes]:
    return Counter(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in read_committed(out))


def test_kill_9_neither_repeats_nor_skips_learning(tmp_path: Path) -> None:
    ref, _ = _finish(tmp_path / "ref", tmp_path / "ref-data")
    assert ref["steps"] == TOTAL
    ref_rows = _rows(tmp_path / "ref")
    assert sum(ref_rows.values()) == TOTAL

    rng = random.Random(f"{SEED}-learn")
    out, data = tmp_path / "out", tmp_path / "data"
    kills: list[str] = []
    restored: list[int | None] = []
    for _attempt in range(100):
        if len(kills) >= MIN_KILLS:
            break
        crash = None
        if rng.random() < 0.4:
            crash = f"{rng.choice(CRASH_POINTS)}:{rng.randint(1, 4)}"
        proc = _start(out, data, RATE, crash)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # restored; the pipeline runs now
        assert line, proc.communicate()[1].decode()
        restored.append(orjson.loads(line)["restored_from"])
        if crash is None:
            time.sleep(rng.uniform(0.05, 0.4))  # a random moment to kill at, not a wait
            proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
        if proc.returncode == 0:  # finished before the kill came: start over elsewhere
            continue
        assert proc.returncode == -signal.SIGKILL, (crash, proc.returncode, stderr.decode())
        kills.append(crash or "running")
    final, resumed = _finish(out, data)
    restored.append(resumed)

    assert final["steps"] == TOTAL, "a row was learned twice or skipped"
    assert final["W"] == ref["W"]  # bit for bit
    rows = _rows(out)
    lost, extra = ref_rows - rows, rows - ref_rows
    assert not lost and not extra, f"{sum(lost.values())} lost, {sum(extra.values())} extra"
    assert len(kills) >= MIN_KILLS
    assert sum(r is not None for r in restored) >= len(restored) // 2
