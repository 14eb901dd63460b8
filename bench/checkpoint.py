"""Checkpoints: cost per checkpoint, and recovery time after kill -9, for 1M keys of window state.

The state: a generator makes ``keys`` distinct keys (int, or str with ``--str-keys``) with
event times inside one 1-hour tumbling window, so after ``keys`` events the window operator
holds one open window per key (count, sum, max of a float column) and nothing fires.

1. **cost**: in process, ``Executor.checkpoint()`` repeated ``runs`` times on that state,
   with its parts timed separately: ``snapshot()`` (operator state to arrays), ``encode``
   (npz in memory), and the store's write (sha256, ``state.npz`` + manifest with fsync,
   rename, directory fsync). The checkpoint also prepares and commits an exactly-once
   JSON Lines part sink (a few rows per checkpoint).
2. **recovery**: a worker process builds the state, checkpoints it, keeps running (writing
   output that is never committed) and is killed with SIGKILL. A new process is started on
   the same data directory; the times are measured from the moment it was spawned:
   *imported* (Python + Tidal loaded), *restored* (newest checkpoint read, hash-checked,
   decoded and installed in the operators; sinks recovered), *first output* (the first
   micro-batch after the restore went through the window and reached the sinks, staged),
   *first commit* (the first checkpoint after the restart committed it: output visible to
   readers; this includes one full checkpoint of the 1M-key state).

The data directory is a temporary directory on the disk that holds ``/tmp`` (fsync costs are
the disk's).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.common import table

EPOCH_MS = 1_704_067_200_000
ROOT = Path(__file__).resolve().parent.parent


def build(out: Path, data: Path, keys: int, *, str_keys: bool, rate: float | None) -> Any:
    """The pipeline and an executor with checkpoints (no automatic ones)."""
    from tidal import Executor, Pipeline, bounded, tumbling
    from tidal import aggregations as agg
    from tidal.io.generator import GeneratorSource
    from tidal.io.jsonl import JsonlPartSink
    from tidal.runtime.checkpoint import CheckpointConfig

    def make(seq: np.ndarray) -> dict[str, Any]:
        k = seq % keys
        return {
            "key": k.astype(str).astype(object) if str_keys else k,
            "value": (seq % 997).astype(np.float64),
            "ts": EPOCH_MS + (seq % keys) * 1_000 // max(keys, 1),  # within the first second
        }

    p = Pipeline("bench-checkpoint")
    src = p.source("gen", GeneratorSource(make, rate=rate), time="ts", watermark=bounded("1s"))
    src.key_by("key").window(
        "w", tumbling("1h"), {"n": agg.count(), "sum": agg.sum("value"), "max": agg.max("value")}
    ).sink("windows", JsonlPartSink(out / "windows"))
    src.filter("sample", lambda b: b.offset % 10_000 == 0).map(
        "sample.cols", lambda b: b.select(["key", "value"])
    ).sink("probe", JsonlPartSink(out / "probe"))
    return Executor(
        p,
        max_batch=65_536,
        max_wait="0ms",
        handle_signals=False,
        checkpoint=CheckpointConfig(data_dir=data, interval=None, keep=2),
    )


def fill(executor: Any, keys: int) -> None:
    """Steps until ``keys`` events went in (every key has an open window)."""
    while executor.events < keys:
        executor.step()


def cost(keys: int, runs: int, *, str_keys: bool) -> dict[str, Any]:
    """Checkpoint cost on a state of ``keys`` keys, in process."""
    from tidal.runtime.snapshot import encode

    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        ex = build(Path(tmp) / "out", Path(tmp) / "data", keys, str_keys=str_keys, rate=None)
        ex.open()
        t0 = time.perf_counter()
        fill(ex, keys)
        fill_s = time.perf_counter() - t0
        op = ex.pipeline.nodes["w"].op
        assert len(op.keys.snapshot()["keys"]) == keys
        parts: dict[str, list[float]] = {"snapshot": [], "encode": [], "write": [], "total": []}
        size = 0
        for _ in range(runs):
            t0 = time.perf_counter()
            snap = ex.snapshot()
            t1 = time.perf_counter()
            data = encode({"snapshot": snap, "sinks": {}})
            t2 = time.perf_counter()
            ex.store.write(ex._next_id, data)  # noqa: SLF001 - timing the store alone
            ex._next_id += 1  # noqa: SLF001
            t3 = time.perf_counter()
            parts["snapshot"].append(t1 - t0)
            parts["encode"].append(t2 - t1)
            parts["write"].append(t3 - t2)
            size = len(data)
            ex.step()  # a batch in between, as in a run
            t0 = time.perf_counter()
            ex.checkpoint()
            parts["total"].append(time.perf_counter() - t0)
        ex.finish(drain=False)
    med = {k: statistics.median(v) * 1000 for k, v in parts.items()}
    return {"keys": keys, "str": str_keys, "fill_s": fill_s, "mb": size / 1e6, **med}


# -- recovery: the worker side ------------------------------------------------------------------
def worker(argv: list[str]) -> int:
    """``python bench/checkpoint.py --worker MODE OUT DATA KEYS STR SPAWNED``."""
    mode, out, data, keys, str_keys, spawned = argv
    imported = time.time()
    ex = build(Path(out), Path(data), int(keys), str_keys=str_keys == "1", rate=None)

    def say(**fields: Any) -> None:
        sys.stdout.write(orjson.dumps(fields).decode() + "\n")
        sys.stdout.flush()

    t0 = float(spawned)
    ex.open()
    restored = time.time()
    if mode == "fill":
        fill(ex, int(keys))
        ex.checkpoint()
        say(checkpointed=ex.events)
        while True:  # until killed: output staged after the checkpoint, never committed
            ex.step()
            time.sleep(0.001)
    ex.step()
    first = time.time()
    ex.checkpoint()
    committed = time.time()
    say(
        imported=imported - t0,
        restored=restored - t0,
        first_output=first - t0,
        first_commit=committed - t0,
        restored_from=ex.restored_from,
        events=ex.events,
    )
    ex.finish(drain=False)
    return 0


def _spawn(mode: str, out: Path, data: Path, keys: int, str_keys: bool) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, str(out), str(data)]
    cmd += [str(keys), "1" if str_keys else "0", repr(time.time())]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)


def recovery(keys: int, *, str_keys: bool) -> dict[str, Any]:
    """Kill -9 a worker holding ``keys`` keys of state after a checkpoint; time the restart."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        out, data = Path(tmp) / "out", Path(tmp) / "data"
        proc = _spawn("fill", out, data, keys, str_keys)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "the worker died before its checkpoint"
        time.sleep(0.2)  # it runs on; what it writes now is staged, never committed
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        staged = len(list((out / "probe" / ".staging").iterdir()))
        proc = _spawn("restart", out, data, keys, str_keys)
        stdout, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, "the restarted worker failed"
        res = orjson.loads(stdout.splitlines()[-1])
        res.update(keys=keys, str=str_keys, staged_before=staged)
        return dict(res)


def _ms(x: float) -> str:
    return f"{x * 1000:,.0f}" if x >= 0.1 else f"{x * 1000:,.1f}"


def main(keys: int, runs: int, *, str_keys: tuple[bool, ...] = (False, True)) -> list[Any]:
    """Print both tables; return the measurements."""
    costs = [cost(keys, runs, str_keys=s) for s in str_keys]
    table(
        f"Checkpoint cost: window state of {keys:,} keys (median of {runs})",
        ["keys", "state.npz MB", "snapshot ms", "encode ms", "write+fsync ms", "checkpoint ms"],
        [
            [
                "str" if c["str"] else "int",
                f"{c['mb']:.1f}",
                f"{c['snapshot']:.0f}",
                f"{c['encode']:.0f}",
                f"{c['write']:.0f}",
                f"{c['total']:.0f}",
            ]
            for c in costs
        ],
    )
    recs = [recovery(keys, str_keys=s) for s in str_keys]
    table(
        f"Recovery after kill -9: {keys:,} keys of window state (seconds since the restart)",
        ["keys", "imported", "restored", "first output", "first commit", "target"],
        [
            [
                "str" if r["str"] else "int",
                f"{r['imported']:.2f}",
                f"{r['restored']:.2f}",
                f"{r['first_output']:.2f}",
                f"{r['first_commit']:.2f}",
                "<= 2 s (first output)",
            ]
            for r in recs
        ],
    )
    return [*costs, *recs]


def cli(argv: list[str] | None = None) -> None:
    """``python bench/run.py checkpoint [--keys N] [--runs N] [--int-only]``."""
    ap = argparse.ArgumentParser(prog="bench checkpoint", description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--int-only", action="store_true", help="skip the str-key rows")
    args = ap.parse_args(argv)
    main(args.keys, args.runs, str_keys=(False,) if args.int_only else (False, True))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        sys.exit(worker(sys.argv[2:]))
    cli(sys.argv[1:])
