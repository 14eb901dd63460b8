"""Value formats: values -> columns (decode) and columns -> values (encode), one core.

The same records in every format: ``{"sensor": "s123", "value": 61.5, "seq": 7, "pad":
"xxx..."}``, padded so that the JSON value is 100 bytes (the embedded-log benchmark's
records); Avro and Protobuf hold them in fewer bytes, Arrow IPC as one value per chunk.

- **decode**: ``fmt.decode(values)`` of one poll (``--chunk`` values, 8,192 by default) at
  a time, to the end; records/s counts rows. ``json (reference)`` is the decoder the
  embedded log used until now (orjson per value, then Arrow: ``JsonColumns``); ``json``
  is :class:`~tidal.io.formats.JsonFormat` (pyarrow.json over the joined values when that
  is certain to give the same columns, else the reference).
- **encode**: ``fmt.encode(batch)`` of a chunk at a time (one value per row; Arrow: one
  value per chunk).
- **log**: the embedded log end to end, one partition: ``LogSink(format=...)`` writes
  the records (``fsync="none"``, chunks of ``--chunk`` rows), ``LogSource(format=...)``
  polls them back into columns (``max_records`` = ``--chunk``).

Every decoded result is checked equal to the records before a number is printed. Arrow's
thread pool is set to one thread (``pa.set_cpu_count(1)``); pyarrow.json runs with
``use_threads=False``. ``--clock cpu`` times with the process's CPU time instead of the
wall clock: records per CPU-second, for a machine busy with other work (the work is on one
thread, so on an idle machine both clocks agree).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench.common import rate, table
from tidal.core.batch import Batch
from tidal.io.formats import ArrowFormat, AvroFormat, JsonFormat, ProtobufFormat, RawFormat
from tidal.io.jsoncolumns import JsonColumns
from tidal.io.log import LogSink, LogSource

AVRO = {
    "type": "record",
    "name": "Reading",
    "fields": [
        {"name": "sensor", "type": "string"},
        {"name": "value", "type": "double"},
        {"name": "seq", "type": "long"},
        {"name": "pad", "type": "string"},
    ],
}


def reading_class() -> type:
    """A protobuf class for the records (as protoc would generate from the .proto)::

    syntax = "proto3";
    message Reading { string sensor = 1; double value = 2; int64 seq = 3; string pad = 4; }
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="tidal_bench_reading.proto", package="tidal.bench", syntax="proto3"
    )
    msg = file.message_type.add(name="Reading")
    for number, (name, kind) in enumerate(
        [
            ("sensor", field.TYPE_STRING),
            ("value", field.TYPE_DOUBLE),
            ("seq", field.TYPE_INT64),
            ("pad", field.TYPE_STRING),
        ],
        start=1,
    ):
        msg.field.add(name=name, number=number, type=kind, label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    cls: type = message_factory.GetMessageClass(pool.FindMessageTypeByName("tidal.bench.Reading"))
    return cls


def records(n: int, size: int = 100) -> Batch:
    """``n`` records whose JSON is ``size`` bytes (for the usual 3-digit sensor ids)."""
    seq = np.arange(n, dtype=np.int64)
    sensor = np.array([f"s{i % 1000}" for i in range(n)], dtype=object)
    value = (seq % 997) * 0.5
    head = len('{"sensor":"s123","value":123.5,"seq":123456,"pad":""}')
    pad = np.array(["x" * max(0, size - head)] * n, dtype=object)
    return Batch({"sensor": sensor, "value": value, "seq": seq, "pad": pad})


class JsonReference:
    """The log's JSON decoder before formats (orjson per value, then Arrow), for comparison."""

    name = "json (reference)"
    batched = False

    def __init__(self) -> None:
        self._decoder = JsonColumns()
        self._json = JsonFormat()

    def decode(self, values: list[bytes]) -> Any:
        cols, rows, _ = self._decoder.decode(values)
        return cols

    def encode(self, batch: Batch) -> list[bytes]:
        return self._json.encode(batch)


def formats() -> dict[str, Any]:
    return {
        "json (reference)": JsonReference(),
        "json": JsonFormat(),
        "json, schema": JsonFormat(
            schema={"sensor": str, "value": float, "seq": int, "pad": str}
        ),
        "avro": AvroFormat(AVRO),
        "avro, Confluent wire": AvroFormat(AVRO, wire="confluent", schema_id=1),
        "protobuf": ProtobufFormat(reading_class()),
        "arrow IPC": ArrowFormat(),
        "arrow IPC, lz4": ArrowFormat(compression="lz4"),
        "raw bytes": RawFormat(),
    }


CLOCK: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def best_of(runs: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """The shortest time of ``runs`` calls (by the chosen clock), and the last result."""
    best, result = float("inf"), None
    for _ in range(runs):
        t0 = _clock()
        result = fn()
        best = min(best, _clock() - t0)
    return best, result


def chunks(batch: Batch, size: int) -> list[Batch]:
    return [batch.slice(i, min(i + size, len(batch))) for i in range(0, len(batch), size)]


def check(columns: dict[str, np.ndarray], want: Batch, label: str) -> None:
    for name in want.names:
        got = columns[name]
        assert len(got) == len(want), (label, name, len(got))
        assert np.array_equal(got, want[name]), (label, name)


def encode_all(fmt: Any, parts: list[Batch]) -> list[list[bytes]]:
    if isinstance(fmt, RawFormat):
        return [fmt.encode({"value": JsonFormat().encode(p)}) for p in parts]
    return [fmt.encode(p) for p in parts]


def decode_all(fmt: Any, encoded: list[list[bytes]]) -> list[dict[str, np.ndarray]]:
    out = []
    for values in encoded:
        got = fmt.decode(values)
        out.append(got if isinstance(got, dict) else got.columns)
    return out


def log_round(fmt: Any, parts: list[Batch], chunk: int, root: Path) -> tuple[float, float, Batch]:
    """Seconds to write the parts to a new topic and to read them back; what was read."""
    name = f"t{time.perf_counter_ns()}"
    options: dict[str, Any] = {} if isinstance(fmt, JsonReference) else {"format": fmt}
    sink = LogSink(root, name, fsync="none", **options)
    t0 = _clock()
    for p in parts:
        sink.write(p)
    sink.flush()
    wrote = _clock() - t0
    sink.close()
    src = LogSource(root, name, bounded=True, **options)
    src.open({})
    got = []
    t0 = _clock()
    while (b := src.poll(chunk, 0.0)) is not None:
        got.append(b)
    read = _clock() - t0
    src.close()
    src.topic.close()
    return wrote, read, Batch.concat(got)


def main(
    n: int = 1_000_000, runs: int = 3, chunk: int = 8192, clock: str = "wall"
) -> dict[str, dict[str, float]]:
    """Run the benchmark, print its tables, return records/s per format and measure."""
    global _clock
    _clock = CLOCK[clock]
    per = "per CPU-second" if clock == "cpu" else "per second (wall clock)"
    pa.set_cpu_count(1)
    batch = records(n)
    parts = chunks(batch, chunk)
    out: dict[str, dict[str, float]] = {}
    rows: list[list[object]] = []
    for label, fmt in formats().items():
        enc_s, encoded = best_of(runs, lambda fmt=fmt: encode_all(fmt, parts))
        dec_s, decoded = best_of(runs, lambda fmt=fmt, encoded=encoded: decode_all(fmt, encoded))
        if not isinstance(fmt, RawFormat):
            whole = {k: np.concatenate([d[k] for d in decoded]) for k in batch.names}
            check(whole, batch, label)
        nbytes = sum(len(v) for vs in encoded for v in vs)
        out[label] = {"decode": n / dec_s, "encode": n / enc_s, "bytes": nbytes / n}
        rows.append([label, f"{nbytes / n:,.1f}", rate(n / dec_s), rate(n / enc_s)])
    table(
        f"Value formats, one core: {n:,} records (100 B as JSON), polls of {chunk:,}; "
        f"best of {runs}; records {per}",
        ["format", "bytes/record", "decode: values -> columns", "encode: columns -> values"],
        rows,
    )
    log_rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="tidal-bench-formats-") as tmp:
        for label, fmt in formats().items():
            if label not in ("json (reference)", "json", "avro", "protobuf", "arrow IPC"):
                continue
            best_w, best_r = float("inf"), float("inf")
            for _ in range(runs):
                wrote, read, got = log_round(fmt, parts, chunk, Path(tmp))
                best_w, best_r = min(best_w, wrote), min(best_r, read)
                check(got.columns, batch, f"log {label}")
            out[f"log {label}"] = {"write": n / best_w, "read": n / best_r}
            log_rows.append([label, rate(n / best_w), rate(n / best_r)])
    table(
        f"Embedded log with format=, one partition, one core: {n:,} records, "
        f"LogSink chunks and LogSource polls of {chunk:,}; best of {runs}; records {per}",
        ["format", "LogSink.write (fsync none)", "LogSource.poll -> columns"],
        log_rows,
    )
    return out


def cli(argv: list[str] | None = None) -> None:
    """``python bench/run.py formats [--records N] [--runs N] [--chunk N] [--clock cpu]``."""
    ap = argparse.ArgumentParser(prog="bench formats", description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=8192, help="values per poll / rows per write")
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall")
    args = ap.parse_args(argv)
    main(args.records, args.runs, args.chunk, args.clock)


if __name__ == "__main__":
    cli()

