"""Run Tidal's benchmarks: ``python bench/run.py`` (all) or ``python bench/run.py w1 latency``.

Options after a benchmark's name go to that benchmark, e.g.
``python bench/run.py w1 --events 200000``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def flink(args: list[str]) -> None:
    """Run bench/flink.py in the PyFlink environment (.venv-flink: `make flink-env`)."""
    import subprocess

    python = ROOT / ".venv-flink" / "bin" / "python"
    if not python.exists():
        print("flink: no .venv-flink here; build it with `make flink-env` (skipped)")
        return
    env = {**os.environ, "PATH": f"{python.parent}:{os.environ.get('PATH', '')}"}
    subprocess.run([str(python), str(ROOT / "bench" / "flink.py"), *args], env=env, check=True)


def main(argv: list[str]) -> int:
    from bench import (
        checkpoint,
        compression,
        cores,
        detect,
        drift,
        formats,
        kafka,
        latency,
        learn,
        log,
        metrics_overhead,
        models,
        reco,
        repartition,
        resplit,
        retrain_loop,
        scale,
        state_move,
        w1,
    )

    benches = {
        "w1": w1.cli,
        "latency": latency.cli,
        "checkpoint": checkpoint.cli,
        "log": log.cli,
        "models": models.cli,
        "compression": compression.cli,
        "detect": detect.cli,
        "drift": drift.cli,
        "learn": learn.cli,
        "formats": formats.cli,
        "kafka": kafka.cli,
        "reco": reco.cli,
        "retrain-loop": retrain_loop.cli,
        "scale": scale.cli,
        "cores": cores.cli,
        "state-move": state_move.cli,
        "resplit": resplit.cli,
        "repartition": repartition.cli,
        "metrics": metrics_overhead.cli,
        "flink": flink,
    }
    if any(a in ("-h", "--help") for a in argv[:1]):
        print(__doc__)
        print("benchmarks:", ", ".join(benches))
        return 0
    plan: list[tuple[str, list[str]]] = []
    for arg in argv:
        if arg in benches:
            plan.append((arg, []))
        elif plan:
            plan[-1][1].append(arg)
        else:
            print(f"unknown benchmark {arg!r}; choose from {', '.join(benches)}", file=sys.stderr)
            return 2
    for name, args in plan or [(n, []) for n in benches]:
        benches[name](args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
