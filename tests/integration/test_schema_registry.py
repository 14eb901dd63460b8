"""Avro in the Confluent wire format with a real schema registry and a real broker.

The registry is Apicurio Registry's Confluent-compatible API (the ``schema_registry``
fixture); the other side of each exchange is confluent-kafka's own AvroSerializer /
AvroDeserializer, so Tidal's framing, ids and subjects are checked against Confluent's.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from kafka_helpers import new_topic, produce, read_all

from tidal import Executor, Pipeline
from tidal.errors import ConnectorError
from tidal.io.formats import AvroFormat
from tidal.io.formats.registry import SchemaRegistry
from tidal.io.kafka import KafkaConfig
from tidal.io.kafka.registry import Registry
from tidal.io.kafka.sink import KafkaSink
from tidal.io.kafka.source import KafkaSource
from tidal.io.memory import MemorySource

pytestmark = pytest.mark.integration

READING = {
    "type": "record",
    "name": "Reading",
    "fields": [
        {"name": "sensor", "type": "string"},
        {"name": "value", "type": "double"},
    ],
}
READING_V2 = {  # a later writer version: one more field, which the reader ignores
    "type": "record",
    "name": "Reading",
    "fields": [*READING["fields"], {"name": "unit", "type": "string", "default": "C"}],
}


def _drain(src: KafkaSource) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    src.open({})
    while (batch := src.poll(1000, 1.0)) is not None:
        rows += batch.to_records()
    return rows


@pytest.fixture
def client(schema_registry: Registry) -> Iterator[SchemaRegistryClient]:
    """confluent-kafka's own registry client (closed after the test: it keeps sockets)."""
    with SchemaRegistryClient({"url": schema_registry.url}) as c:
        yield c


def test_confluent_serializer_to_tidal_source(
    kafka_config: KafkaConfig, schema_registry: Registry, client: SchemaRegistryClient
) -> None:
    topic = new_topic(kafka_config, "sr-in", 1)
    producer = Producer({"bootstrap.servers": kafka_config.bootstrap_servers})
    for schema, n in ((READING, 5), (READING_V2, 5)):
        ser = AvroSerializer(client, orjson.dumps(schema).decode())
        for i in range(n):
            row = {"sensor": f"s{i}", "value": float(i) + (0.5 if schema is READING_V2 else 0)}
            if schema is READING_V2:
                row["unit"] = "K"
            producer.produce(topic, value=ser(row, SerializationContext(topic, MessageField.VALUE)))
    assert producer.flush(30.0) == 0

    fmt = AvroFormat(READING, wire="confluent", registry=schema_registry.url)
    src = KafkaSource(topic, config=kafka_config, bounded=True, value_format=fmt)
    rows = _drain(src)
    src.close()
    assert [r["value"] for r in rows] == [0.0, 1.0, 2.0, 3.0, 4.0, 0.5, 1.5, 2.5, 3.5, 4.5]
    assert [r["sensor"] for r in rows[:5]] == [f"s{i}" for i in range(5)]
    assert set(rows[0]) == {"sensor", "value"}  # v2's extra field resolved away
    ids = client.get_versions(f"{topic}-value")
    assert len(ids) == 2  # both writer versions were registered by Confluent's serializer


def test_tidal_sink_to_confluent_deserializer(
    kafka_config: KafkaConfig, schema_registry: Registry, client: SchemaRegistryClient
) -> None:
    topic = new_topic(kafka_config, "sr-out", 1)
    rows = [{"sensor": f"s{i % 3}", "value": i / 4, "ts": 1_000 + i} for i in range(20)]
    fmt = AvroFormat(READING, wire="confluent", registry=schema_registry.url)
    p = Pipeline("avro-out")
    p.source("in", MemorySource(rows), time="ts").sink(
        "out", KafkaSink(topic, config=kafka_config, value_format=fmt)
    )
    Executor(p, handle_signals=False).run()

    registered = client.get_latest_version(f"{topic}-value")  # KafkaSink named the subject
    got = read_all(kafka_config, topic)
    assert len(got) == 20
    assert all((r.value or b"")[:1] == b"\x00" for r in got)
    assert {int.from_bytes((r.value or b"")[1:5], "big") for r in got} == {registered.schema_id}
    de = AvroDeserializer(client)
    ctx = SerializationContext(topic, MessageField.VALUE)
    decoded = [de(r.value, ctx) for r in got]
    assert decoded == [{"sensor": r["sensor"], "value": r["value"]} for r in rows]


def test_an_unknown_schema_id_is_a_dead_letter(
    kafka_config: KafkaConfig, schema_registry: Registry
) -> None:
    topic = new_topic(kafka_config, "sr-dirty", 1)
    dlq = new_topic(kafka_config, "sr-dirty-dlq", 1)
    writer = AvroFormat(READING, wire="confluent", registry=schema_registry.url, subject="x")
    good = writer.encode({"sensor": ["a", "b"], "value": [1.0, 2.0]})
    unknown = b"\x00" + (987_654).to_bytes(4, "big") + good[0][5:]
    produce(kafka_config, topic, [good[0], unknown, b"\x01junk", good[1]])

    fmt = AvroFormat(READING, wire="confluent", registry=schema_registry.url)
    src = KafkaSource(
        topic, config=kafka_config, bounded=True, value_format=fmt, dead_letter_topic=dlq
    )
    rows = _drain(src)
    letters = src.dead_letters()
    src.position()  # flushes the dead-letter producer
    src.close()
    assert [r["sensor"] for r in rows] == ["a", "b"]
    assert [d.position["offset"] for d in letters] == [1, 2]
    dead = read_all(kafka_config, dlq)
    assert [r.value for r in dead] == [unknown, b"\x01junk"]
    reason = dict(dead[0].headers)["tidal.reason"].decode()
    assert "unknown schema id 987654" in reason
    assert schema_registry.url in reason


def test_registry_client_registers_once_and_reads_back(schema_registry: Registry) -> None:
    reg = SchemaRegistry(schema_registry.url)
    text = orjson.dumps(READING).decode()
    first = reg.register("client-test-value", text)
    assert reg.register("client-test-value", text) == first  # same schema, same id
    assert orjson.loads(reg.schema(first) or "") == READING
    assert reg.schema(999_999) is None


def test_an_unreachable_registry_is_an_error_not_a_dead_letter() -> None:
    fmt = AvroFormat(READING, wire="confluent", registry="http://127.0.0.1:9", subject="t")
    with pytest.raises(ConnectorError, match="127.0.0.1:9"):
        fmt.decode([b"\x00\x00\x00\x00\x07\x02a"])
    with pytest.raises(ConnectorError, match="is the registry running"):
        fmt.encode({"sensor": ["a"], "value": [1.0]})
