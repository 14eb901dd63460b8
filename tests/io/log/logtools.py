"""Helpers for the embedded-log tests (imported as ``logtools``)."""

from __future__ import annotations

from pathlib import Path

from tidal.io.log import Topic


def values(n: int, start: int = 0, size: int = 0) -> list[bytes]:
    """JSON values {"i": start..start+n-1}, padded to about ``size`` bytes."""
    pad = "x" * max(0, size - 20)
    return [f'{{"i":{i},"p":"{pad}"}}'.encode() for i in range(start, start + n)]


def segment_files(topic: Topic, partition: int = 0) -> list[Path]:
    return sorted(topic.folder(partition).glob("*.seg"))


def flip(path: Path, at: int, mask: int = 0xFF) -> None:
    """XOR one byte of a file."""
    with path.open("r+b") as f:
        f.seek(at)
        b = f.read(1)[0]
        f.seek(at)
        f.write(bytes([b ^ mask]))


def record_starts(path: Path) -> list[int]:
    """Byte positions of the records of a segment (from their size fields)."""
    data = path.read_bytes()
    out, at = [], 0
    while at + 8 <= len(data):
        out.append(at)
        at += int.from_bytes(data[at + 4 : at + 8], "little")
    return out


def produce(
    data_dir: str, topic: str, worker: int, batches: int, size: int, barrier: object
) -> None:
    """A producer process: ``batches`` appends of ``size`` records to every partition.

    Values are ``{"w": worker, "seq": n}`` with ``n`` counting per partition.
    """
    t = Topic.open(data_dir, topic, fsync="none")
    barrier.wait()  # type: ignore[attr-defined]
    for b in range(batches):
        for p in range(t.partitions):
            rows = [f'{{"w":{worker},"seq":{b * size + j}}}'.encode() for j in range(size)]
            t.append(p, rows)
    t.close()


def produce_forever(data_dir: str, topic: str, started: object) -> None:
    """Append 4 MB batches whose values name their offset, until killed."""
    t = Topic.open(data_dir, topic, fsync="none")
    seq = t.end_offset(0)
    while True:
        t.append(0, [b"%d:" % (seq + i) + b"v" * 1000 for i in range(4000)])
        seq += 4000
        started.set()  # type: ignore[attr-defined]
