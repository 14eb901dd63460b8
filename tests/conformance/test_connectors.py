"""Every built-in source keeps the shared Source contract (see connector_contract.py).

Kafka's case runs with the broker, in tests/integration/test_kafka_connectors.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tidal.core.batch import Batch
from tidal.io.base import Source
from tidal.io.csv import CsvSource
from tidal.io.generator import GeneratorSource
from tidal.io.jsonl import JsonlSource
from tidal.io.log import LogSource, Topic
from tidal.io.memory import MemorySource
from tidal.io.parquet import ParquetSource

_spec = importlib.util.spec_from_file_location(
    "connector_contract", Path(__file__).with_name("connector_contract.py")
)
assert _spec is not None and _spec.loader is not None
contract = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(contract)

N = 40


def _hash(path: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(path.rglob("*.log")))).hexdigest()


def _memory(tmp: Path) -> tuple[Callable[[], Source], Callable[[], Any]]:
    batches = [
        Batch({"n": np.arange(i, i + 10), "s": [f"x{j}" for j in range(10)]})
        for i in range(0, N, 10)
    ]

    def fingerprint() -> Any:
        return [(b["n"].tolist(), b["s"].tolist()) for b in batches]

    return (lambda: MemorySource(batches)), fingerprint


def _generator(tmp: Path) -> tuple[Callable[[], Source], Callable[[], Any]]:
    return (lambda: GeneratorSource(lambda seq: {"n": seq * 3}, total=N)), lambda: None


def _log(tmp: Path) -> tuple[Callable[[], Source], Callable[[], Any]]:
    topic = Topic.create(tmp, "events", partitions=3)
    for p in range(3):
        topic.append(p, [orjson.dumps({"p": p, "i": i}) for i in range(N // 3 + 2)])
    topic.close()
    return (lambda: LogSource(tmp, "events", bounded=True)), lambda: _hash(tmp)


def _jsonl(tmp: Path) -> tuple[Callable[[], Source], Callable[[], Any]]:
    path = tmp / "in.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"n": i, "s": f"v{i}"}) + b"\n" for i in range(N)))
    return (lambda: JsonlSource(path, block_bytes=64)), path.read_bytes


def _csv(tmp: Path) -> tuple[Callable[[], Source], Callable[[], Any]]:
    path = tmp / "in.csv"
    path.write_text("n,s\n" + "".join(f"{i},v{i}\n" for i in range(N)))
    return (lambda: CsvSource(path)), path.read_bytes


def _parquet(tmp: Path) -> tuple[Callable[[], Source], Callable[[], Any]]:
    path = tmp / "in.parquet"
    pq.write_table(
        pa.table({"n": list(range(N)), "s": [f"v{i}" for i in range(N)]}), path, row_group_size=8
    )
    return (lambda: ParquetSource(path)), path.read_bytes


CASES = {
    "memory": _memory,
    "generator": _generator,
    "log": _log,
    "jsonl": _jsonl,
    "csv": _csv,
    "parquet": _parquet,
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_source_contract(kind: str, tmp_path: Path) -> None:
    make, fingerprint = CASES[kind](tmp_path)
    contract.check_source(make, fingerprint)


class _SkipsOne(GeneratorSource):
    """A broken source: its position is one record ahead of what it returned."""

    def position(self) -> dict[int, Any]:
        return {0: self.seq + 1}


def test_the_contract_catches_a_source_that_loses_records() -> None:
    with pytest.raises(AssertionError, match="resume lost or repeated"):
        contract.check_source(lambda: _SkipsOne(lambda s: {"n": s}, total=N), lambda: None)
