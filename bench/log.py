"""Embedded log: produce and consume rates for 100-byte and 1 KB records, fsync per batch vs none.

One partition, one process, one core. Values are JSON objects padded to the record size
(``{"sensor":"s123","value":...,"seq":...,"pad":"xxx..."}``). The data directory is a
temporary directory on the disk that holds ``/tmp``; its filesystem is printed with the
tables, since fsync costs are the disk's.

- **produce**: ``Topic.append`` of ``batch`` records at a time (one ``write`` per append),
  with ``fsync="batch"`` (an fsync after every append: durable when ``append`` returns) or
  ``fsync="none"`` (one ``sync()`` at the end, as a checkpoint would).
- **consume raw**: ``PartitionReader.read(8192)`` to the end: values as an object array of
  ``bytes``, offsets/timestamps/keys as arrays; every record's CRC verified. The data was
  just written, so it is read from the page cache.
- **LogSource raw**: the same through the pipeline source: a ``Batch`` with a ``value``
  column, partition/offset/ingest arrays.
- **LogSource json**: values decoded into columns (orjson per value, then Arrow), as a
  pipeline reads JSON topics.

MB/s counts value bytes (the payload); each record takes 40 more bytes in the log.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from functools import partial
from pathlib import Path

from bench.common import best_of, rate, table
from tidal.io.log import LogSource, Topic


def payloads(n: int, size: int) -> list[bytes]:
    """``n`` JSON objects of exactly ``size`` bytes."""
    out = []
    for i in range(n):
        head = f'{{"sensor":"s{i % 1000}","value":{(i % 997) * 0.5},"seq":{i},"pad":"'
        out.append((head + "x" * max(0, size - len(head) - 2) + '"}').encode())
    return out


def filesystem(path: str) -> str:
    """The filesystem type and device of ``path`` (from /proc/mounts)."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                dev, mount, fstype = line.split()[:3]
                if path.startswith(mount) and len(mount) > len(best):
                    best, kind = mount, f"{fstype} ({dev} on {mount})"
    except OSError:
        pass
    return kind


def produce(root: Path, values: list[bytes], batch: int, fsync: str) -> float:
    """Seconds to append ``values`` to a fresh topic, ``batch`` per append."""
    name = f"p{time.perf_counter_ns()}"
    topic = Topic.create(root, name, fsync=fsync)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    for i in range(0, len(values), batch):
        topic.append(0, values[i : i + batch])
    topic.sync()
    seconds = time.perf_counter() - t0
    topic.close()
    return seconds


def consume_raw(root: Path, name: str, n: int) -> int:
    reader = Topic.open(root, name).reader(0, 0)
    got = 0
    while got < n:
        got += len(reader.read(8192))
    reader.close()
    return got


def consume_source(root: Path, name: str, n: int, fmt: str) -> int:
    src = LogSource(root, name, value_format=fmt, bounded=True)  # type: ignore[arg-type]
    src.open({})
    got = 0
    while (batch := src.poll(8192, 0.0)) is not None:
        got += len(batch)
    src.close()
    assert got == n, (got, n)
    return got


def one_size(root: Path, size: int, n: int, runs: int, batch: int) -> list[list[object]]:
    """The table rows for one record size."""
    values = payloads(n, size)
    mb = n * size / 1e6
    rows: list[list[object]] = []

    def row(label: str, fsync: str, secs: float) -> None:
        rows.append(
            [label, f"{size} B", fsync, rate(n / secs), f"{mb / secs:,.0f}", f"{secs * 1e3:,.0f}"]
        )

    for per in (batch, 256):
        for fsync in ("batch", "none"):
            secs, _ = best_of(runs, partial(produce, root, values, per, fsync))
            row(f"produce, {per} per append", fsync, secs)
    name = f"c{size}"
    topic = Topic.create(root, name, fsync="none")
    for i in range(0, n, batch):
        topic.append(0, values[i : i + batch])
    topic.close()
    for label, fn in (
        ("consume raw (PartitionReader)", partial(consume_raw, root, name, n)),
        ("LogSource raw", partial(consume_source, root, name, n, "raw")),
        ("LogSource json -> columns", partial(consume_source, root, name, n, "json")),
    ):
        secs, got = best_of(runs, fn)
        assert got >= n
        row(label, "", secs)
    return rows


def main(records: int = 1_000_000, runs: int = 3, batch: int = 8192) -> list[list[object]]:
    """Run the benchmark and print its table; return the rows."""
    with tempfile.TemporaryDirectory(prefix="tidal-bench-log-") as tmp:
        root = Path(tmp)
        rows = one_size(root, 100, records, runs, batch)
        rows += one_size(root, 1024, max(1, records // 5), runs, batch)
        fs = filesystem(os.path.realpath(tmp))
    table(
        f"Embedded log, 1 partition, one core: {records:,} records of 100 B, "
        f"{max(1, records // 5):,} of 1 KB; best of {runs}; data dir on {fs}",
        ["operation", "record", "fsync", "records/s", "MB/s (values)", "best ms"],
        rows,
    )
    return rows


def cli(argv: list[str] | None = None) -> None:
    """``python bench/run.py log [--records N] [--runs N] [--batch N]``."""
    ap = argparse.ArgumentParser(prog="bench log", description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000, help="100-byte records (1 KB: N/5)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8192, help="records per append")
    args = ap.parse_args(argv)
    main(args.records, args.runs, args.batch)


if __name__ == "__main__":
    cli()
