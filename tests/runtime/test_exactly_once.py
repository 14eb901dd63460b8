"""Exactly-once through kill -9: a real process is killed again and again, then compared.

The worker (exactly_once_worker.py) runs a source -> key_by -> 1 s tumbling window ->
exactly-once sinks, checkpointing every 50 ms, in two variants: a generator into part files
(JSON Lines for windows, Parquet for late records), and the embedded log (a topic produced
beforehand) into an exactly-once log topic (windows) and JSON Lines part files (late).
The test kills it with SIGKILL at seeded random moments (most while it runs, some while it
starts and restores), and, in some attempts, makes it kill itself *inside* a checkpoint
(``TIDAL_TEST_CRASH_POINT``: after the sinks prepared, with half a state file written, before
the manifest, before and between the sinks' commits, before old checkpoints are deleted).
Each time it is restarted until it finishes. The committed output must then be the same
multiset of records as an uninterrupted run's: nothing lost, nothing twice.

The seed is ``TIDAL_FAULT_SEED`` (default fixed) so a failure can be replayed.
"""

from __future__ import annotations

import importlib.util
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
import pytest

from tidal.io.log import Topic
from tidal.io.parts import read_committed
from tidal.runtime.checkpoint import CRASH_ENV, CRASH_POINTS

WORKER = Path(__file__).with_name("exactly_once_worker.py")
TOTAL = 160_000
RATE = 20_000  # events per second while kills happen: 8 s of input, far more than kills eat
MIN_KILLS = 12  # per source kind: 24 per run
SEED = int(os.environ.get("TIDAL_FAULT_SEED", "20240101"))


def _worker_module() -> Any:
    spec = importlib.util.spec_from_file_location("exactly_once_worker", WORKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _start(
    kind: str, out: Path, data: Path, rate: int, crash: str | None
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDAL_")}
    if crash is not None:
        env[CRASH_ENV] = crash
    return subprocess.Popen(
        [sys.executable, str(WORKER), kind, str(out), str(data), str(TOTAL), str(rate)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def _canon(rows: list[dict[str, Any]]) -> Counter[bytes]:
    return Counter(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rows)


def _topic_rows(data: Path, name: str) -> list[dict[str, Any]]:
    topic = Topic.open(data, name)
    rows: list[dict[str, Any]] = []
    for p in range(topic.partitions):
        at = 0
        while at < topic.end_offset(p):
            batch = topic.read(p, at, max_records=100_000)
            rows += [orjson.loads(v) for v in batch.values.tolist()]
            at = batch.next_offset
    topic.close()
    return rows


def _committed(kind: str, out: Path, data: Path) -> tuple[Counter[bytes], Counter[bytes]]:
    main = read_committed(out / "main") if kind == "gen" else _topic_rows(data, "windows")
    return _canon(main), _canon(read_committed(out / "late"))


def _setup(kind: str, data: Path) -> None:
    if kind == "log":
        _worker_module().produce(data, TOTAL)


def _reference(kind: str, tmp: Path) -> tuple[Counter[bytes], Counter[bytes]]:
    out, data = tmp / "ref", tmp / "ref-data"
    _setup(kind, data)
    proc = _start(kind, out, data, 0, None)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr.decode()
    summary = orjson.loads(stdout.splitlines()[-1])
    assert summary["events"] == TOTAL and summary["late"] > 0
    return _committed(kind, out, data)


@pytest.mark.parametrize("kind", ["gen", "log"])
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(kind: str, tmp_path: Path) -> None:
    started = time.monotonic()
    ref_main, ref_late = _reference(kind, tmp_path)
    assert len(ref_main) > 10_000 and len(ref_late) > 1_000
    assert max(ref_main.values()) == 1  # every window row is distinct

    rng = random.Random(f"{SEED}-{kind}")
    out, data = tmp_path / "out", tmp_path / "data"
    _setup(kind, data)
    kills: list[str] = []
    restored: list[int | None] = []
    finished = False
    for _attempt in range(200):
        if len(kills) >= MIN_KILLS:  # enough: let it finish, at full speed
            proc = _start(kind, out, data, 0, None)
            stdout, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, stderr.decode()
            restored.append(orjson.loads(stdout.splitlines()[0])["restored_from"])
            finished = True
            break
        crash, how = None, rng.random()
        if how < 0.4:
            crash = f"{rng.choice(CRASH_POINTS)}:{rng.randint(1, 4)}"
        proc = _start(kind, out, data, RATE, crash)
        assert proc.stdout is not None
        if how > 0.85:  # while it starts: importing, restoring, recovering the sinks
            time.sleep(rng.uniform(0.0, 0.5))
            proc.send_signal(signal.SIGKILL)
            moment = "starting"
        else:
            line = proc.stdout.readline()  # restored; now the pipeline runs
            assert line, proc.communicate()[1].decode()
            restored.append(orjson.loads(line)["restored_from"])
            if crash is None:
                time.sleep(rng.uniform(0.0, 0.3))
                proc.send_signal(signal.SIGKILL)
            moment = crash or "running"
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, (crash, proc.returncode, stderr.decode())
        kills.append(moment)
    assert finished, f"the run did not finish after {len(kills)} kills"

    main, late = _committed(kind, out, data)
    lost, extra = ref_main - main, main - ref_main
    assert not lost and not extra, f"{sum(lost.values())} lost, {sum(extra.values())} extra"
    assert late == ref_late
    for sink in ("main", "late"):
        staging = out / sink / ".staging"
        assert not staging.exists() or not list(staging.iterdir())

    # the kills were real: most restarts resumed from a checkpoint, some crashed inside one
    assert len(kills) >= MIN_KILLS
    assert sum(r is not None for r in restored) >= len(restored) // 2
    assert sum(k not in ("running", "starting") for k in kills) >= 3
    elapsed = time.monotonic() - started
    print(
        f"{kind}: {len(kills)} kills ({Counter(k.split(':')[0] for k in kills)}), {elapsed:.1f} s"
    )
