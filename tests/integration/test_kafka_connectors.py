"""KafkaSource and KafkaSink against a real broker, checked with a plain confluent-kafka client.

Keys, headers and timestamps survive Tidal -> plain consumer and plain producer -> Tidal;
malformed records land in the dead-letter topic with their headers; every start position
(earliest, latest, offsets, a time, the group's committed offsets) starts where it says;
a restored source continues exactly where it left off; several topics and patterns.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import orjson
import pytest
from kafka_helpers import new_topic, produce, read_all

from tidal import Executor, Pipeline
from tidal.errors import ConnectorError
from tidal.io.formats import ArrowFormat
from tidal.io.kafka import KafkaConfig
from tidal.io.kafka.admin import KafkaAdmin
from tidal.io.kafka.sink import KafkaSink
from tidal.io.kafka.source import KafkaSource
from tidal.io.memory import MemorySink, MemorySource

pytestmark = pytest.mark.integration


def _drain(src: KafkaSource) -> list[dict[str, object]]:
    """Every record of a bounded source."""
    rows: list[dict[str, object]] = []
    src.open({})
    while (batch := src.poll(1000, 1.0)) is not None:
        rows += batch.to_records()
    return rows


def test_plain_producer_to_tidal_keeps_keys_headers_timestamps(kafka_config: KafkaConfig) -> None:
    topic = new_topic(kafka_config, "interop-in", 2)
    values = [orjson.dumps({"n": i, "name": f"x{i}"}) for i in range(50)]
    keys = [f"k{i % 7}".encode() if i % 10 else None for i in range(50)]
    headers = [[("trace", f"t{i}".encode()), ("dup", b"1"), ("dup", b"2")] for i in range(50)]
    stamps = [1_700_000_000_000 + 1000 * i for i in range(50)]
    produce(kafka_config, topic, values, keys=keys, headers=headers, timestamps=stamps)

    src = KafkaSource(
        topic,
        config=kafka_config,
        bounded=True,
        key_column="key",
        headers_column="headers",
        timestamp_column="ts",
        topic_column="topic",
    )
    rows = sorted(_drain(src), key=lambda r: r["n"])  # type: ignore[arg-type, return-value]
    src.close()
    assert [r["n"] for r in rows] == list(range(50))
    for i, r in enumerate(rows):
        assert r["name"] == f"x{i}"
        assert r["key"] == (None if keys[i] is None else keys[i].decode())  # type: ignore[union-attr]
        assert r["headers"] == headers[i]  # order and repeated keys kept
        assert r["ts"] == stamps[i]
        assert r["topic"] == topic


def test_event_time_from_record_timestamps_through_a_pipeline(kafka_config: KafkaConfig) -> None:
    topic = new_topic(kafka_config, "evtime", 1)
    stamps = [1_700_000_000_000 + 10 * i for i in range(20)]
    produce(kafka_config, topic, [orjson.dumps({"i": i}) for i in range(20)], timestamps=stamps)
    p = Pipeline("kafka-time")
    out = MemorySink()
    src = KafkaSource(topic, config=kafka_config, bounded=True, timestamp_column="ts")
    p.source("in", src, time="ts").sink("out", out)
    Executor(p, handle_signals=False).run()
    assert out.batch().time.tolist() == stamps  # type: ignore[union-attr]


def test_tidal_to_plain_consumer_keeps_keys_headers_timestamps(kafka_config: KafkaConfig) -> None:
    topic = new_topic(kafka_config, "interop-out", 3)
    rows = [
        {
            "user": f"u{i % 5}",
            "n": i,
            "h": {"trace": f"t{i}", "v": "1"},
            "ts": 1_700_000_000_000 + i,
        }
        for i in range(60)
    ]
    p = Pipeline("to-kafka")
    sink = KafkaSink(topic, config=kafka_config, key="user", headers="h")
    p.source("in", MemorySource(rows), time="ts").sink("out", sink)
    Executor(p, handle_signals=False).run()

    got = read_all(kafka_config, topic)
    assert len(got) == 60
    by_n = {orjson.loads(r.value or b"")["n"]: r for r in got}
    partition_of_user: dict[bytes | None, int] = {}
    for i in range(60):
        r = by_n[i]
        assert orjson.loads(r.value or b"") == {
            "user": f"u{i % 5}",
            "n": i,
            "ts": 1_700_000_000_000 + i,
        }
        assert r.key == f"u{i % 5}".encode()
        assert r.headers == [("trace", f"t{i}".encode()), ("v", b"1")]
        assert r.timestamp == 1_700_000_000_000 + i
        assert partition_of_user.setdefault(r.key, r.partition) == r.partition  # by key
    assert len(set(partition_of_user.values())) > 1
    for part in {r.partition for r in got}:  # a key's records stay in order
        ns = [
            orjson.loads(r.value or b"")["n"]
            for r in sorted(got, key=lambda r: r.offset)
            if r.partition == part
        ]
        for user in {r.key for r in got if r.partition == part}:
            mine = [n for n in ns if f"u{n % 5}".encode() == user]
            assert mine == sorted(mine)


def test_malformed_records_go_to_the_dead_letter_topic_with_their_headers(
    kafka_config: KafkaConfig,
) -> None:
    topic = new_topic(kafka_config, "dirty", 1)
    dlq = new_topic(kafka_config, "dirty-dlq", 1)
    values = [b'{"n": 1}', b"not json", b'{"n": "two"}', None, b"[1, 2]", b'{"n": 5}']
    headers = [[("origin", f"o{i}".encode())] for i in range(len(values))]
    keys = [f"k{i}".encode() for i in range(len(values))]
    produce(kafka_config, topic, values, keys=keys, headers=headers)

    src = KafkaSource(
        topic, config=kafka_config, bounded=True, schema={"n": int}, dead_letter_topic=dlq
    )
    rows = _drain(src)
    letters = src.dead_letters()
    src.position()  # what a checkpoint reads: flushes the dead-letter producer
    src.close()
    assert [r["n"] for r in rows] == [1, 5]
    assert [d.position["offset"] for d in letters] == [1, 2, 3, 4]
    assert all(d.position["topic"] == topic for d in letters)

    dead = read_all(kafka_config, dlq)
    assert [r.value for r in dead] == [values[i] for i in (1, 2, 3, 4)]  # original bytes
    assert [r.key for r in dead] == [keys[i] for i in (1, 2, 3, 4)]
    for r, i in zip(dead, (1, 2, 3, 4), strict=True):
        h = dict(r.headers)
        assert h["origin"] == f"o{i}".encode()  # the record's own headers are kept
        assert h["tidal.topic"] == topic.encode()
        assert h["tidal.partition"] == b"0"
        assert h["tidal.offset"] == str(i).encode()
        assert h["tidal.reason"]
    assert b"expected an integer" in dict(dead[1].headers)["tidal.reason"]


def _seq_topic(config: KafkaConfig, n: int = 10) -> str:
    topic = new_topic(config, "starts", 2)
    for p in (0, 1):
        stamps = [1_000_000 + 100 * i for i in range(n)]
        vals = [orjson.dumps({"p": p, "i": i}) for i in range(n)]
        produce(config, topic, vals, timestamps=stamps, partition=p)
    return topic


def _pairs(rows: list[dict[str, object]]) -> list[tuple[object, object]]:
    return sorted((r["p"], r["i"]) for r in rows)


def test_start_positions(kafka_config: KafkaConfig) -> None:
    topic = _seq_topic(kafka_config)
    every = [(p, i) for p in (0, 1) for i in range(10)]

    def read(**kw: object) -> list[tuple[object, object]]:
        src = KafkaSource(topic, config=kafka_config, bounded=True, **kw)  # type: ignore[arg-type]
        try:
            return _pairs(_drain(src))
        finally:
            src.close()

    assert read() == every
    assert read(start="latest") == []
    assert read(start_offsets={0: 7, 1: 2}) == [(0, 7), (0, 8), (0, 9)] + [
        (1, i) for i in range(2, 10)
    ]
    assert read(start_offsets={(topic, 1): 9}) == [(0, i) for i in range(10)] + [(1, 9)]
    assert read(start_time=1_000_000 + 100 * 6) == [(p, i) for p in (0, 1) for i in range(6, 10)]
    assert read(start_time=9_999_999_999) == []

    src = KafkaSource(topic, config=kafka_config, bounded=True)
    at = src.positions_for_time(1_000_000 + 100 * 8 - 1)  # what tidal run --from-time uses
    assert {v["offset"] for v in at.values()} == {8}
    src.open(at)
    rows = []
    while (b := src.poll(100, 1.0)) is not None:
        rows += b.to_records()
    src.close()
    assert _pairs(rows) == [(0, 8), (0, 9), (1, 8), (1, 9)]


def test_group_offsets_and_a_restored_source_continue_where_they_left(
    kafka_config: KafkaConfig,
) -> None:
    topic = _seq_topic(kafka_config)
    group = f"g-{topic}"
    src = KafkaSource(topic, config=kafka_config, group=group, bounded=True)
    src.open({})
    first = src.poll(7, 5.0)
    assert first is not None and 1 <= len(first) <= 7
    # through JSON, as a checkpoint stores it
    saved = orjson.loads(orjson.dumps(src.position(), option=orjson.OPT_NON_STR_KEYS))
    src.commit()
    src.close()

    again = KafkaSource(topic, config=kafka_config, bounded=True)
    again.open({int(k): v for k, v in saved.items()})
    rest = []
    while (b := again.poll(100, 1.0)) is not None:
        rest += b.to_records()
    again.close()
    assert sorted(_pairs(first.to_records()) + _pairs(rest)) == [
        (p, i) for p in (0, 1) for i in range(10)
    ]

    grouped = KafkaSource(topic, config=kafka_config, group=group, bounded=True)
    assert _pairs(_drain(grouped)) == _pairs(rest)  # the group's committed offsets
    grouped.close()

    replay = KafkaSource(topic, config=kafka_config, bounded=True)
    replay.open({0: 8, 1: 9})  # tidal run --from-offset gives plain offsets
    rows = []
    while (b := replay.poll(100, 1.0)) is not None:
        rows += b.to_records()
    replay.close()
    assert _pairs(rows) == [(0, 8), (0, 9), (1, 9)]


def test_several_topics_and_a_pattern(kafka_config: KafkaConfig) -> None:
    prefix = new_topic(kafka_config, "multi", 1)  # a unique name to build a pattern on
    a = new_topic(kafka_config, f"{prefix}.a", 2)
    b = new_topic(kafka_config, f"{prefix}.b", 1)
    produce(kafka_config, a, [orjson.dumps({"x": i}) for i in range(6)])
    produce(kafka_config, b, [orjson.dumps({"x": 100 + i}) for i in range(3)])
    both = KafkaSource([a, b], config=kafka_config, bounded=True, topic_column="t")
    assert both.partitions() == (0, 1, 2)
    rows = _drain(both)
    assert sorted(r["x"] for r in rows) == [0, 1, 2, 3, 4, 5, 100, 101, 102]  # type: ignore[type-var]
    pos = both.position()
    assert {(v["topic"], v["partition"]) for v in pos.values()} == {(a, 0), (a, 1), (b, 0)}
    both.close()
    pattern = KafkaSource(f"^{prefix}\\..*", config=kafka_config, bounded=True, topic_column="t")
    assert sorted(r["x"] for r in _drain(pattern)) == sorted(r["x"] for r in rows)  # type: ignore[type-var]
    pattern.close()


def test_arrow_ipc_values_between_tidal_pipelines(kafka_config: KafkaConfig) -> None:
    topic = new_topic(kafka_config, "arrow", 2)
    rows = [{"sensor": f"s{i % 3}", "v": float(i), "ts": 1_000 + i} for i in range(90)]
    p = Pipeline("arrow-out")
    p.source("in", MemorySource(rows), time="ts").sink(
        "out", KafkaSink(topic, config=kafka_config, key="sensor", value_format=ArrowFormat())
    )
    Executor(p, handle_signals=False).run()
    assert len(read_all(kafka_config, topic)) == 3  # one record per key and batch
    src = KafkaSource(topic, config=kafka_config, bounded=True, value_format=ArrowFormat())
    got = _drain(src)
    src.close()
    assert sorted(got, key=lambda r: r["ts"]) == rows  # type: ignore[arg-type, return-value]


def test_a_missing_topic_is_a_clear_error(kafka_config: KafkaConfig) -> None:
    src = KafkaSource("no-such-topic-xyz", config=kafka_config)
    with pytest.raises(ConnectorError, match="does not exist"):
        src.partitions()
    src.close()


def test_kafka_source_keeps_the_source_contract(kafka_config: KafkaConfig) -> None:
    spec = importlib.util.spec_from_file_location(
        "connector_contract", Path(__file__).parents[1] / "conformance" / "connector_contract.py"
    )
    assert spec is not None and spec.loader is not None
    contract = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(contract)
    topic = _seq_topic(kafka_config, 15)

    def fingerprint() -> object:
        # sorted: the two partitions' records interleave differently from one read to the next
        return sorted((r.partition, r.offset, r.value) for r in read_all(kafka_config, topic))

    contract.check_source(
        lambda: KafkaSource(topic, config=kafka_config, bounded=True), fingerprint
    )


def test_a_deleted_topic_is_gone_when_delete_returns(
    kafka_admin: KafkaAdmin, kafka_config: KafkaConfig
) -> None:
    """``delete_topic`` waits for the broker, so the same name can be created at once."""
    name = "t-deleted-and-recreated"
    for partitions in (4, 8, 6, 8):  # each round deletes the last round's topic first
        kafka_admin.delete_topic(name, missing_ok=True)
        assert name not in kafka_admin.topics()
        kafka_admin.create_topic(name, partitions=partitions)
        assert kafka_admin.partitions(name) == partitions
        produce(kafka_config, name, (b"x" * 1000 for _ in range(5000)))
    kafka_admin.delete_topic(name)
    assert name not in kafka_admin.topics()


def test_a_bounded_source_ends_on_a_topic_written_in_transactions(
    kafka_config: KafkaConfig,
) -> None:
    """The last offset of such a topic is a commit (or abort) marker, which no consumer
    receives: the source must still end, with the committed records only."""
    from confluent_kafka import Producer

    topic = new_topic(kafka_config, "txn-in", 2)
    producer = Producer(kafka_config.client(**{"transactional.id": f"t-{topic}"}))
    producer.init_transactions(30)
    for txn, commit in ((0, True), (1, False), (2, True)):
        producer.begin_transaction()
        for i in range(20):
            producer.produce(topic, orjson.dumps({"txn": txn, "i": i}), key=str(i).encode())
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    src = KafkaSource(topic, config=kafka_config, bounded=True)
    rows: list[dict[str, object]] = []
    src.open({})
    polls = 0
    while (batch := src.poll(1000, 0.5)) is not None:
        rows += batch.to_records()
        polls += 1
        assert polls < 120, f"the bounded source did not end ({len(rows)} rows read)"
    src.close()
    assert sorted((r["txn"], r["i"]) for r in rows) == [  # type: ignore[type-var]
        (t, i) for t in (0, 2) for i in range(20)
    ]
    ends = src.end_offsets()
    at = {p: v["offset"] for p, v in src.position().items()}
    assert at == ends, (at, ends)  # its position is the end, past the last marker
