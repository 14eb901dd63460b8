"""The shared Source contract, as checks any connector's test can run (River's ``checks`` idea).

:func:`check_source` takes a factory that makes a fresh, bounded source over the same input
and a fingerprint of that input, and checks what the runtime relies on:

- ``partitions()`` names every partition ``position()`` reports;
- positions are JSON-like: they round-trip through a checkpoint snapshot unchanged;
- a source opened at a saved position continues exactly where the first one stopped:
  the records before plus the records after are the records of one full read, none lost,
  none twice, in the same order within each partition;
- reading does not change the input (its fingerprint: the batches of a memory source, the
  bytes of a file or a log, the records of a topic).

Used by tests/conformance/test_connectors.py (memory, generator, log, files) and by
tests/integration/test_kafka_connectors.py (Kafka, which needs the broker fixture).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from tidal.core.batch import Batch
from tidal.io.base import Source
from tidal.runtime.snapshot import decode, encode


def _rows(batch: Batch) -> list[tuple[int, bytes]]:
    part = batch.partition.tolist() if batch.partition is not None else [0] * len(batch)
    recs = batch.to_records()
    return [
        (p, orjson.dumps(r, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY, default=str))
        for p, r in zip(part, recs, strict=True)
    ]


def read_to_end(src: Source, max_records: int = 1000) -> list[tuple[int, bytes]]:
    """Every remaining row of a bounded source as ``(partition, canonical JSON)``."""
    out: list[tuple[int, bytes]] = []
    for _ in range(100_000):
        batch = src.poll(max_records, 1.0)
        if batch is None:
            return out
        out += _rows(batch)
    msg = "the bounded source never ended"
    raise AssertionError(msg)


def _by_partition(rows: list[tuple[int, bytes]]) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    for p, r in rows:
        out.setdefault(p, []).append(r)
    return out


def check_source(
    make: Callable[[], Source], fingerprint: Callable[[], Any], *, stop_after: int = 7
) -> None:
    """Run the contract checks on the sources ``make()`` builds (see the module docs)."""
    before = fingerprint()
    full_src = make()
    full_src.open({})
    full = read_to_end(full_src)
    full_src.close()
    assert len(full) > stop_after, "give the check more input than stop_after records"

    first = make()
    first.open({})
    head: list[tuple[int, bytes]] = []
    while len(head) < stop_after:
        batch = first.poll(3, 1.0)
        assert batch is not None, "the source ended early"
        head += _rows(batch)
    saved = first.position()
    assert set(saved) <= {int(p) for p in first.partitions()}
    snap = {"positions": {str(k): v for k, v in saved.items()}}
    restored = {int(k): v for k, v in decode(encode(snap))["positions"].items()}
    assert restored == {int(k): v for k, v in saved.items()}, "positions changed in a snapshot"
    first.close()

    second = make()
    second.open(restored)
    tail = read_to_end(second)
    second.close()
    assert _by_partition(head + tail) == _by_partition(full), "resume lost or repeated records"
    assert sorted(head + tail) == sorted(full)
    assert fingerprint() == before, "reading changed the input"
