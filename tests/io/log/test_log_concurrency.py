"""Two producer processes append to the same partitions while a consumer reads.

The file lock serializes appends per partition, so every partition's offsets are dense
(0, 1, 2, ... with no gap or repeat), each producer's records keep their order within a
partition, and the consumer, reading while segments roll underneath it, gets every record
exactly once.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from logtools import produce

from tidal.io.log import LogSource, Topic

BATCHES, SIZE, PARTITIONS = 400, 10, 2


def test_two_producer_processes_one_consumer(tmp_path: Path) -> None:
    Topic.create(tmp_path, "shared", partitions=PARTITIONS, segment_bytes=32 << 10)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    workers = [
        ctx.Process(target=produce, args=(str(tmp_path), "shared", w, BATCHES, SIZE, barrier))
        for w in (1, 2)
    ]
    for w in workers:
        w.start()
    src = LogSource(tmp_path, "shared")  # unbounded: follows the producers
    src.open({})
    barrier.wait(timeout=60)
    expected = 2 * BATCHES * SIZE * PARTITIONS
    seen: dict[int, list[tuple[int, int, int]]] = {p: [] for p in range(PARTITIONS)}
    got = 0
    deadline = time.monotonic() + 60
    while got < expected and time.monotonic() < deadline:
        batch = src.poll(5_000, 0.05)
        assert batch is not None
        assert not src.dead_letters()
        if not len(batch):  # nothing new within the timeout (busy producers): poll again
            continue
        for p, o, w, s in zip(
            batch.partition.tolist(),
            batch.offset.tolist(),
            batch["w"].tolist(),
            batch["seq"].tolist(),
            strict=True,
        ):
            seen[p].append((o, w, s))
        got += len(batch)
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert got == expected
    rest = src.poll(10, 0.0)
    assert rest is not None and len(rest) == 0  # nothing more, nothing twice
    per_producer = BATCHES * SIZE
    switches = 0
    for rows in seen.values():
        assert [o for o, _, _ in rows] == list(range(2 * per_producer))  # dense, in order
        for worker in (1, 2):
            assert [s for _, w, s in rows if w == worker] == list(range(per_producer))
        switches += sum(a[1] != b[1] for a, b in zip(rows, rows[1:], strict=False))
    print(f"producer switches along the partitions: {switches}")
    assert switches > 2  # the producers really did interleave
    assert len(list((tmp_path / "log" / "shared" / "0").glob("*.seg"))) > 3  # and rolled
