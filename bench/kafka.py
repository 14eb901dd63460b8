"""Kafka: consume rates, Kafka -> 1 s window -> Kafka throughput, end-to-end latency.

All on one topic of the same records (JSON objects of 100 B, ``bench.log.payloads``), on
the project's own single-node broker (started here in a temporary directory; or
``--bootstrap HOST:PORT`` / ``$TIDAL_KAFKA`` for an existing cluster) on the same machine.

- **consume**: a plain confluent-kafka consumer, batched ``consume(8192)``, taking each
  record's value (the floor any Kafka source pays); ``KafkaSource`` raw (a ``value`` column
  plus partition/offset/timestamp arrays); ``KafkaSource`` JSON -> columns; and, for
  comparison, the embedded log's ``LogSource`` JSON -> columns over the same values.
- **window throughput**: ``KafkaSource`` -> key_by(sensor) -> 1 s tumbling window (count,
  mean) -> ``KafkaSink`` (at-least-once) or ``KafkaTransactionalSink`` (exactly-once,
  checkpoints every second), the whole topic as fast as possible.
- **latency**: a producer process writes at a fixed 50,000 events/s (each value carries
  its produce time in ns), the pipeline (its own process: ``KafkaSource`` -> map ->
  Kafka sink) writes each event on, and a third process reads the output
  (``read_committed``) and records *now - produce time* per event: p50/p99/p999 over the
  events after a 2 s warm-up. Before the measured rounds, full-rate at-least-once rounds
  run untimed until the broker is warm (its JIT: a fresh broker is slow for its first
  seconds at this rate) -- at least ``WARM_MIN`` rounds and then until a round's p99 is
  under 100 ms, at most ``WARM_ROUNDS`` rounds of ``WARM_S`` s; their figures are printed,
  not tabled. The first timed row is the baseline: the same producer and reader on one
  topic with no pipeline between (what the broker and the clients cost on this machine).
  Exactly-once output is readable only after its transaction commits, so its latency is
  dominated by the checkpoint interval (printed with it).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.common import best_of, rate, table
from bench.log import payloads
from tidal.io.kafka import KafkaConfig, KafkaSink, KafkaSource, KafkaTransactionalSink
from tidal.io.log import LogSource, Topic


@contextlib.contextmanager
def cluster(bootstrap: str | None) -> Iterator[KafkaConfig]:
    """An existing cluster, or the project's own broker for the duration."""
    bootstrap = bootstrap or os.environ.get("TIDAL_KAFKA")
    if bootstrap:
        yield KafkaConfig(bootstrap_servers=bootstrap)
        return
    from tidal.io.kafka.broker import Broker

    with tempfile.TemporaryDirectory(prefix="tidal-bench-kafka-") as tmp:
        broker = Broker(Path(tmp) / "kafka", heap="1g")
        broker.start()
        try:
            yield broker.config()
        finally:
            broker.stop()


def create(config: KafkaConfig, prefix: str, partitions: int) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(config.client())
    topic = NewTopic(name, partitions, 1, config={"retention.ms": "-1"})  # old timestamps
    for f in admin.create_topics([topic]).values():
        f.result(60)
    return name


def fill(config: KafkaConfig, topic: str, values: list[bytes], stamps: list[int]) -> float:
    """Produce every value (lz4 batches); return the seconds it took."""
    from confluent_kafka import Producer

    producer = Producer(
        config.client(**{"linger.ms": 20, "compression.type": "lz4", "batch.size": 1_000_000})
    )
    t0 = time.perf_counter()
    for v, ts in zip(values, stamps, strict=True):
        while True:
            try:
                producer.produce(topic, v, timestamp=ts)
                break
            except BufferError:
                producer.poll(0.01)
    assert producer.flush(120) == 0
    return time.perf_counter() - t0


PARTITION_EOF = -191  # librdkafka's RD_KAFKA_RESP_ERR__PARTITION_EOF


def committed(config: KafkaConfig, topic: str) -> list[bytes]:
    """The values of ``topic``'s committed records (``read_committed``), up to its end.

    A plain consumer that stops at each partition's end event: a bounded ``KafkaSource``
    would wait for the offset of a transaction's commit marker, which it never reads.
    """
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        config.client(
            **{
                "group.id": uuid.uuid4().hex,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )
    )
    parts = sorted(c.list_topics(topic, timeout=30).topics[topic].partitions)
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    values: list[bytes] = []
    todo = set(parts)
    while todo:
        for m in c.consume(10_000, 1.0):
            err = m.error()
            if err is None:
                values.append(m.value() or b"")
            elif err.code() == PARTITION_EOF:
                todo.discard(m.partition())
            else:
                msg = f"reading {topic}[{m.partition()}]: {err.str()}"
                raise RuntimeError(msg)
    c.close()
    return values


# -- consume ----------------------------------------------------------------------------------
def raw_consume(config: KafkaConfig, topic: str, n: int) -> int:
    """A plain consumer: batched consume, each record's value taken."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(config.client(**{"group.id": uuid.uuid4().hex, "enable.auto.commit": False}))
    meta = c.list_topics(topic, timeout=30)
    c.assign([TopicPartition(topic, p, 0) for p in meta.topics[topic].partitions])
    got = 0
    while got < n:
        msgs = c.consume(8192, 1.0)
        values = [m.value() for m in msgs if m.error() is None]
        got += len(values)
    c.close()
    return got


def source_consume(config: KafkaConfig, topic: str, n: int, fmt: str) -> int:
    src = KafkaSource(topic, config=config, value_format=fmt, bounded=True)  # type: ignore[arg-type]
    src.open({})
    got = 0
    while (batch := src.poll(8192, 1.0)) is not None:
        got += len(batch)
    src.close()
    assert got == n, (got, n)
    return got


def log_consume(root: Path, n: int) -> int:
    src = LogSource(root, "bench", bounded=True)
    src.open({})
    got = 0
    while (batch := src.poll(8192, 0.0)) is not None:
        got += len(batch)
    src.close()
    return got


def small_batch_cost(config: KafkaConfig, values: list[bytes], stamps: list[int]) -> float:
    """CPU us/event (process) of Kafka -> map -> ``KafkaSink`` in batches of 50 (what a
    1 ms budget gives at 50,000 events/s: the latency run's batches), over a topic filled
    with ``values`` first."""
    from tidal import Executor, Pipeline

    topic, out = create(config, "bench-small", 1), create(config, "bench-small-out", 1)
    fill(config, topic, values, stamps)
    src = KafkaSource(topic, config=config, bounded=True)
    sink = KafkaSink(out, config=config, producer_options={"linger.ms": 0})
    p = Pipeline("small-batches")
    p.source("in", src).map("pass", lambda b: {"seq": b["seq"], "sensor": b["sensor"]}).sink(
        "out", sink
    )
    c0 = time.process_time()
    summary = Executor(p, handle_signals=False, max_wait="0ms", max_batch=50).run()
    assert summary.events == len(values), (summary.events, len(values))
    return (time.process_time() - c0) / len(values) * 1e6


# -- sink cost ---------------------------------------------------------------------------
def sink_cost(config: KafkaConfig, rows: int = 8192, batches: int = 20) -> tuple[float, float]:
    """CPU us/row (process, incl. librdkafka's threads) of ``KafkaSink.write`` and of a plain
    produce loop of the same JSON values; load-independent, unlike their wall times."""
    from confluent_kafka import Producer

    from tidal.core.batch import Batch

    out = []
    for plain in (False, True):
        topic = create(config, "bench-sink", 1)
        data = [
            Batch(
                {"t": np.arange(rows, dtype=np.int64) + i, "seq": np.arange(rows, dtype=np.int64)},
                time=np.full(rows, 1_700_000_000_000 + i, dtype=np.int64),
            )
            for i in range(batches)
        ]
        settings = {"linger.ms": 0, "enable.idempotence": True, "acks": "all"}
        producer = Producer(config.client(**settings))
        sink = KafkaSink(topic, config=config, producer_options={"linger.ms": 0})
        sink.open()
        values = [b'{"t":%d,"seq":%d}' % (i, i) for i in range(rows)]
        c0 = time.process_time()
        for b in data:
            if not plain:
                sink.write(b)
                continue
            for v, ts in zip(values, b.time.tolist(), strict=True):  # type: ignore[union-attr]
                while True:
                    try:
                        producer.produce(topic, v, timestamp=ts)
                        break
                    except BufferError:
                        producer.poll(0.005)
            producer.poll(0)
        out.append((time.process_time() - c0) / (rows * batches) * 1e6)
        sink.close()
        producer.flush(60)
    return out[0], out[1]


# -- pipelines --------------------------------------------------------------------------------
def window_run(config: KafkaConfig, topic: str, exactly_once: bool, data: str) -> tuple[float, int]:
    """Kafka -> 1 s window -> Kafka over the whole topic; (seconds, events)."""
    from tidal import Executor, Pipeline, bounded, tumbling
    from tidal import aggregations as agg
    from tidal.runtime.checkpoint import CheckpointConfig

    out = create(config, "bench-windows", 1)
    src = KafkaSource(topic, config=config, bounded=True, group=f"g-{out}", timestamp_column="ts")
    sink: Any = (
        KafkaTransactionalSink(out, config=config, key="sensor", transactional_id=out, source=src)
        if exactly_once
        else KafkaSink(out, config=config, key="sensor")
    )
    p = Pipeline(f"bench-{out}")
    p.source("in", src, time="ts", watermark=bounded("100ms")).key_by("sensor").window(
        "w", tumbling("1s"), {"n": agg.count(), "mean": agg.mean("value")}
    ).sink("out", sink)
    checkpoint = CheckpointConfig(data_dir=data, interval="1s") if exactly_once else None
    t0 = time.perf_counter()
    summary = Executor(p, handle_signals=False, checkpoint=checkpoint).run()
    return time.perf_counter() - t0, summary.events


def _latency_pipeline(
    bootstrap: str,
    src_topic: str,
    out_topic: str,
    mode: str,
    interval: str,
    data: str,
    ready: Any,
    stop: Any,
) -> None:
    from tidal import Executor, Pipeline
    from tidal.runtime.checkpoint import CheckpointConfig

    config = KafkaConfig(bootstrap_servers=bootstrap)
    src = KafkaSource(src_topic, config=config, start="latest", group=f"g-{out_topic}")
    sink: Any = (
        KafkaTransactionalSink(out_topic, config=config, transactional_id=out_topic, source=src)
        if mode == "eos"
        else KafkaSink(out_topic, config=config, producer_options={"linger.ms": 0})
    )
    p = Pipeline("latency")
    p.source("in", src).map("pass", lambda b: {"t": b["t"], "seq": b["seq"]}).sink("out", sink)
    checkpoint = CheckpointConfig(data_dir=data, interval=interval) if mode == "eos" else None
    ex = Executor(
        p,
        handle_signals=False,
        max_wait="1ms",
        idle_poll="5ms",
        checkpoint=checkpoint,
        freeze_heap=True,  # as `tidal run` does
    )
    ex.open()
    ready.set()
    while not stop.is_set():
        ex.step()
    ex.finish(drain=False)


def _latency_producer(bootstrap: str, topic: str, per_s: int, seconds: float) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    total = int(per_s * seconds)
    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - t0) * per_s))
        while sent < due:
            try:
                producer.produce(topic, b'{"t":%d,"seq":%d}' % (time.time_ns(), sent))
            except BufferError:  # a loaded machine: wait for room (the event is late, and
                producer.poll(0.005)  # its latency counts from its produce time)
                continue
            sent += 1
        producer.poll(0)
        time.sleep(0.0005)
    producer.flush(60)


def _latency_reader(bootstrap: str, topic: str, total: int, out: Any) -> None:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 5,
        }
    )
    c.assign([TopicPartition(topic, 0, 0)])
    lat: list[int] = []
    seq: list[int] = []
    deadline = time.monotonic() + 120
    while len(lat) < total and time.monotonic() < deadline:
        msgs = c.consume(10_000, 0)  # what is fetched already; consume(n, t) waits all of t
        if not msgs:
            first = c.poll(0.05)
            msgs = [first] if first is not None else []
        now = time.time_ns()
        for m in msgs:
            if m.error() is None:
                rec = orjson.loads(m.value())
                lat.append(now - rec["t"])
                seq.append(rec["seq"])
    c.close()
    out.put((lat, seq))


WARM_S = 8.0
WARM_MIN = 3
"""Measured on an idle machine (2026-12-07): a plain producer -> consumer at 50,000/s had
p99 28 ms in its first 10 s round after one warm-up round, 3.8 ms in the next two; a round
whose p99 is under 100 ms is not yet a warm broker."""
WARM_ROUNDS = 5


def warm_up(config: KafkaConfig, per_s: int, interval: str, data: str) -> None:
    """Untimed full-rate rounds until the broker is warm (see the module docs)."""
    for i in range(WARM_ROUNDS):
        r = latency_run(config, "alo", per_s, WARM_S, interval, f"{data}-alo-{i}")
        print(
            f"warm-up round {i + 1} (at-least-once, {per_s:,}/s, {WARM_S:.0f} s, untimed): "
            f"p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, CPU steal {r['steal']:.0%}",
            flush=True,
        )
        if i + 1 >= WARM_MIN and r["p99"] < 100.0:
            break
    latency_run(config, "eos", per_s, 2.0, interval, f"{data}-eos")  # its first transactions


def latency_run(
    config: KafkaConfig, mode: str, per_s: int, seconds: float, interval: str, data: str
) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    src_topic, out_topic = create(config, "bench-lat-in", 1), create(config, "bench-lat-out", 1)
    ready, stop = ctx.Event(), ctx.Event()
    boot = config.bootstrap_servers
    pipe = ctx.Process(
        target=_latency_pipeline,
        args=(boot, src_topic, out_topic, mode, interval, data, ready, stop),
    )
    pipe.start()
    assert ready.wait(120), "the pipeline did not start"
    result = _produce_and_read(ctx, boot, src_topic, out_topic, per_s, seconds)
    stop.set()
    pipe.join(60)
    return result


def plain_latency_run(config: KafkaConfig, per_s: int, seconds: float) -> dict[str, float]:
    """The baseline: the same producer and reader on one topic, no pipeline between."""
    topic = create(config, "bench-lat-plain", 1)
    ctx = mp.get_context("spawn")
    return _produce_and_read(ctx, config.bootstrap_servers, topic, topic, per_s, seconds)


def _produce_and_read(
    ctx: Any, boot: str, in_topic: str, out_topic: str, per_s: int, seconds: float
) -> dict[str, float]:
    """Produce to ``in_topic`` at ``per_s`` for ``seconds``; latencies read from ``out_topic``."""
    box = ctx.Queue()
    total = int(per_s * seconds)
    reader = ctx.Process(target=_latency_reader, args=(boot, out_topic, total, box))
    reader.start()
    producer = ctx.Process(target=_latency_producer, args=(boot, in_topic, per_s, seconds))
    before = cpu_times()
    producer.start()
    producer.join()
    lat, seq = box.get(timeout=180)
    reader.join()
    return {**_percentiles(lat, seq, total, per_s), "steal": steal_share(before, cpu_times())}


def cpu_times() -> list[int]:
    """The machine's CPU time counters (``/proc/stat``'s ``cpu`` line); empty off Linux."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return []


def steal_share(before: list[int], after: list[int]) -> float:
    """The share of CPU time the hypervisor gave other guests between two :func:`cpu_times`.

    A virtual machine's neighbours take its CPUs for milliseconds at a time, and every
    event in flight then waits: runs with a high steal are not comparable with idle ones.

    Example:
        >>> steal_share([10, 0, 10, 70, 0, 0, 0, 10], [20, 0, 20, 130, 0, 0, 0, 30])
        0.2
        >>> steal_share([], [])
        nan
    """
    if len(before) < 8 or len(after) < 8:
        return float("nan")
    delta = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(delta[:8])  # user nice system idle iowait irq softirq steal
    return delta[7] / total if total > 0 else float("nan")


def _percentiles(lat: list[int], seq: list[int], total: int, per_s: int) -> dict[str, float]:
    ms = np.asarray(lat, dtype=np.float64) / 1e6
    warm = np.asarray(seq) >= per_s * 2  # after a 2 s warm-up
    ms = ms[warm] if warm.any() else ms
    return {
        "events": len(lat),
        "lost": total - len(set(seq)),
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "p999": float(np.percentile(ms, 99.9)),
    }


def main(
    records: int = 1_000_000,
    runs: int = 3,
    bootstrap: str | None = None,
    per_s: int = 50_000,
    seconds: float = 10.0,
    interval: str = "100ms",
) -> list[list[object]]:
    """Run the benchmark and print its tables; return the consume rows."""
    values = payloads(records, 100)
    base = 1_700_000_000_000
    stamps = [base + i // 50 for i in range(records)]  # 50,000 events per second of event time
    rows: list[list[object]] = []
    with cluster(bootstrap) as config, tempfile.TemporaryDirectory(prefix="tidal-bench-") as tmp:
        topic = create(config, "bench", 1)
        secs = fill(config, topic, values, stamps)
        rows.append(["produce (plain producer, lz4, linger 20 ms)", rate(records / secs), "", ""])
        raw, _ = best_of(runs, lambda: raw_consume(config, topic, records))
        rows.append(
            ["consume: confluent-kafka consume(8192), values", rate(records / raw), "1.00x", ""]
        )
        for label, fmt in (
            ("KafkaSource raw -> value column", "raw"),
            ("KafkaSource JSON -> columns", "json"),
        ):
            s, _ = best_of(runs, lambda fmt=fmt: source_consume(config, topic, records, fmt))
            rows.append([label, rate(records / s), f"{raw / s:.2f}x", ""])
        root = Path(tmp) / "log"
        t = Topic.create(root, "bench", fsync="none")
        for i in range(0, records, 8192):
            t.append(0, values[i : i + 8192], timestamps=stamps[i : i + 8192])
        t.close()
        s, _ = best_of(runs, lambda: log_consume(root, records))
        rows.append(
            ["embedded log: LogSource JSON -> columns", rate(records / s), f"{raw / s:.2f}x", ""]
        )
        small = min(records, 100_000)
        rows.append(
            [
                "Kafka -> map -> Kafka in batches of 50, CPU us/event",
                f"{small_batch_cost(config, values[:small], stamps[:small]):.2f} us",
                "",
                "",
            ]
        )
        sink_us, plain_us = sink_cost(config)
        rows.append(
            [
                "KafkaSink.write, CPU us/row (vs a plain produce loop)",
                f"{sink_us:.2f} us",
                f"{sink_us / plain_us:.2f}x",
                f"plain {plain_us:.2f} us",
            ]
        )
        for eos in (False, True):
            s, n = window_run(config, topic, eos, str(Path(tmp) / f"chk-{eos}"))
            label = "Kafka -> 1 s window -> Kafka, " + (
                "exactly-once (checkpoint 1 s)" if eos else "at-least-once"
            )
            rows.append([label, rate(n / s), "", ""])
        lat_rows = []
        # Untimed full-rate rounds first (after the throughput rows, which warm it too):
        # a fresh broker is slow for its first seconds at this rate (measured 2026-12-07:
        # the plain producer -> consumer path had p50 765 ms in its first 5 s, 2 ms after;
        # the 1 s warm-up round used before was too short).
        warm_up(config, per_s, interval, str(Path(tmp) / "warm"))
        for mode in ("plain", "alo", "eos"):
            r = (
                plain_latency_run(config, per_s, seconds)
                if mode == "plain"
                else latency_run(config, mode, per_s, seconds, interval, f"{tmp}/lat-{mode}")
            )
            label = {
                "plain": "baseline: plain producer -> consumer, no pipeline",
                "alo": "at-least-once (KafkaSink, linger 0)",
                "eos": f"exactly-once (commit every {interval})",
            }[mode]
            lat_rows.append(
                [
                    label,
                    f"{per_s:,}/s",
                    f"{r['events']:,}",
                    r["lost"],
                    f"{r['p50']:.1f}",
                    f"{r['p99']:.1f}",
                    f"{r['p999']:.1f}",
                    f"{r['steal']:.0%}",
                ]
            )
    table(
        f"Kafka, 1 partition, {records:,} JSON records of 100 B; best of {runs} "
        "(broker on the same machine)",
        ["what", "records/s", "vs raw consume", ""],
        rows,
    )
    table(
        f"Kafka -> Tidal -> Kafka end-to-end latency at {per_s:,} events/s for {seconds:.0f} s "
        "(ms, produce time to readable in the output topic; after the untimed warm-up "
        "rounds, and each round's first 2 s excluded)",
        ["sink", "rate", "events read", "lost", "p50", "p99", "p999", "CPU steal"],
        lat_rows,
    )
    return rows


def cli(argv: list[str] | None = None) -> None:
    """``python bench/run.py kafka [--records N] [--runs N] [--bootstrap H:P] [--rate N]``."""
    ap = argparse.ArgumentParser(prog="bench kafka", description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bootstrap", default=None, help="an existing cluster (else start one)")
    ap.add_argument("--rate", type=int, default=50_000, help="events/s for the latency run")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    ap.add_argument("--interval", default="100ms", help="checkpoint interval, exactly-once")
    args = ap.parse_args(argv)
    main(args.records, args.runs, args.bootstrap, args.rate, args.seconds, args.interval)


if __name__ == "__main__":
    cli()
