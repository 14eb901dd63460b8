"""What two cores give: the same numpy work in one process, then split over two at once.

``python bench/run.py cores [--steps 600] [--repeat 3]``

Each step is the scale bench's model on a block of 4,096 events (an MLP 8-256-256-1,
float32, BLAS single-threaded). One process does ``steps`` steps; then two processes do
``steps / 2`` each at the same time. The ratio of the times is the best speed-up any
2-worker job doing this work can reach on this machine (caches, memory bandwidth and
frequency are shared), the ceiling to read ``python bench/run.py scale`` against.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from typing import Any

from bench.common import table


def _work(steps: int, out: Any) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 256)).astype(np.float32)
    w2 = rng.standard_normal((256, 256)).astype(np.float32)
    w3 = rng.standard_normal((256, 1)).astype(np.float32)
    x = rng.standard_normal((4096, 8)).astype(np.float32)
    t0 = time.perf_counter()
    for _ in range(steps):
        h = np.maximum(x @ w1, 0.0)
        h = np.maximum(h @ w2, 0.0)
        h @ w3
    out.put(time.perf_counter() - t0)


def _timed(procs: int, steps: int) -> float:
    # BLAS single-threaded in the children (read when their numpy loads, as in the scale
    # bench's workers): set in the environment they inherit
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    ps = [ctx.Process(target=_work, args=(steps // procs, out)) for _ in range(procs)]
    for p in ps:
        p.start()
    times = [out.get(timeout=600) for _ in ps]
    for p in ps:
        p.join()
    return max(times)


def main(steps: int = 600, repeat: int = 3) -> list[float]:
    """Print one row per repeat; return the speed-ups."""
    rows, ups = [], []
    for i in range(repeat):
        one, two = _timed(1, steps), _timed(2, steps)
        ups.append(one / two)
        rows.append(
            [i + 1, f"{one:.2f}", f"{two:.2f}", f"{one / two:.2f}x", f"{os.getloadavg()[0]:.2f}"]
        )
    table(
        f"the same numpy MLP work ({steps} steps of 4,096 events): 1 process, then 2 at once",
        ["run", "1 process s", "2 processes s (slower one)", "speed-up", "load"],
        rows,
    )
    return ups


def cli(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="bench cores", description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    main(args.steps, args.repeat)
