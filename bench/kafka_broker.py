"""The project's Kafka broker: time and CPU to start, time to stop, memory.

``python bench/kafka_broker.py [--rounds 2]`` starts a fresh broker (new data directory, storage
formatted) with the default JVM options and with ``FAST_START`` (C1 JIT only, serial GC), in
alternating rounds, and prints per start: wall seconds until metadata answers, CPU seconds
the JVM used until then (``/proc/<pid>/stat``; less sensitive than wall time to other work on
the machine), seconds for a SIGTERM stop, resident memory when ready, and the load average.
The jars must be cached already (the first ``ensure_jars()`` takes 5-9 s more).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))


def _cpu_and_rss(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return cpu, rss


def run(rounds: int) -> list[dict[str, object]]:
    from tidal.io.kafka.broker import FAST_START, Broker, ensure_jars

    ensure_jars()
    rows: list[dict[str, object]] = []
    for _ in range(rounds):
        for name, options in (("default", ()), ("FAST_START", FAST_START)):
            folder = tempfile.mkdtemp(prefix="tidal-kafka-bench-")
            try:
                broker = Broker(folder, jvm_options=options)
                t0 = time.monotonic()
                broker.start()
                wall = time.monotonic() - t0
                assert broker.pid is not None
                cpu, rss = _cpu_and_rss(broker.pid)
                t1 = time.monotonic()
                broker.stop()
                rows.append(
                    {
                        "jvm": name,
                        "start_s": wall,
                        "cpu_s": cpu,
                        "stop_s": time.monotonic() - t1,
                        "rss_mb": rss,
                        "load": os.getloadavg()[0],
                    }
                )
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    return rows


def cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench/kafka_broker.py", description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    rows = run(args.rounds)
    print("| JVM options | start (s) | JVM CPU to ready (s) | stop (s) | RSS (MB) | load |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['jvm']} | {r['start_s']:.1f} | {r['cpu_s']:.1f} | {r['stop_s']:.1f} "
            f"| {r['rss_mb']:.0f} | {r['load']:.1f} |"
        )


if __name__ == "__main__":
    cli(sys.argv[1:])
