"""``KafkaSink`` ends an outage from its producer's queue draining (decision 0057), no broker."""

from __future__ import annotations

from typing import Any

from tidal.io.kafka import KafkaSink


class _Err:
    def name(self) -> str:
        return "_TRANSPORT"

    def str(self) -> str:
        return "connection refused"


class _Producer:
    def __init__(self) -> None:
        self.queued = 0

    def __len__(self) -> int:
        return self.queued


def _down_sink() -> tuple[KafkaSink, Any]:
    sink = KafkaSink("t")
    producer = _Producer()
    sink._producer = producer
    sink.health.on_error(_Err())
    assert sink.health.down
    return sink, producer


def test_records_leaving_the_queue_end_the_outage() -> None:
    sink, producer = _down_sink()
    producer.queued, sink.written = 100, 100
    sink._drained()  # first look: remembers (100 queued, 100 written)
    sink.written, producer.queued = 150, 150  # 50 more written, none acknowledged
    sink._drained()
    assert sink.health.down
    producer.queued = 140  # 10 acknowledged
    sink._drained()
    assert not sink.health.down


def test_client_events_alone_do_not_end_it() -> None:
    sink, producer = _down_sink()
    producer.queued, sink.written = 52, 50  # 2 client events counted in the length
    sink._drained()
    producer.queued = 50  # the events were served, no record acknowledged
    sink._drained()
    assert sink.health.down


def test_an_empty_queue_after_outstanding_records_ends_it() -> None:
    sink, producer = _down_sink()
    producer.queued, sink.written = 1, 1
    sink._drained()
    producer.queued = 0
    sink._drained()
    assert not sink.health.down


def test_an_idle_sink_stays_down() -> None:
    sink, producer = _down_sink()
    sink._drained()
    sink._drained()
    assert sink.health.down
