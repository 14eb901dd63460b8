"""The repartition purge without a broker: throttling, final checkpoints, errors (0056).

The broker-side behaviour (low watermarks after real runs, kills between commit and purge,
a request the broker refuses) is in tests/integration/test_kafka_repartition.py.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest

from tidal.runtime.checkpoint import CheckpointConfig
from tidal.runtime.workers.purge import Purger, PurgingStore


class _Deleted:
    def __init__(self, low: int) -> None:
        self.low_watermark = low


class _Admin:
    """Records requests; answers them when told (``answer``), or fails them."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, dict[int, int]]] = []
        self.futures: list[tuple[int, Future[Any]]] = []
        self.raise_on_request: Exception | None = None

    def request_delete_records(self, topic: str, before: dict[int, int]) -> dict[int, Future[Any]]:
        if self.raise_on_request is not None:
            raise self.raise_on_request
        self.asked.append((topic, dict(before)))
        out: dict[int, Future[Any]] = {}
        for p, off in before.items():
            f: Future[Any] = Future()
            self.futures.append((off, f))
            out[p] = f
        return out

    def answer(self, error: Exception | None = None) -> None:
        for off, f in self.futures:
            if not f.done():
                if error is None:
                    f.set_result(_Deleted(off))
                else:
                    f.set_exception(error)


def _purger(admin: _Admin, every: float = 10.0) -> tuple[Purger, list[float]]:
    now = [100.0]
    return Purger(admin, "g.p.repartition", every=every, clock=lambda: now[0]), now


def test_one_request_per_partition_per_interval_and_never_for_an_offset_already_asked() -> None:
    admin = _Admin()
    purger, now = _purger(admin)
    purger.committed(0, 10)
    purger.committed(1, 7)  # another partition: its own throttle
    purger.committed(0, 20)  # throttled
    purger.committed(0, 10)  # nothing new
    assert admin.asked == [("g.p.repartition", {0: 10}), ("g.p.repartition", {1: 7})]
    now[0] += 10.0
    purger.committed(0, 10)  # due, but nothing new below 10
    purger.committed(0, 30)
    assert admin.asked[-1] == ("g.p.repartition", {0: 30}) and purger.requests == 3
    assert purger.purged == {}  # nothing answered yet: poll never blocks
    admin.answer()
    purger.poll()
    assert purger.purged == {0: 30, 1: 7}


def test_a_final_checkpoint_is_purged_at_once() -> None:
    admin = _Admin()
    purger, _ = _purger(admin, every=3600.0)
    purger.committed(2, 5)
    purger.committed(2, 9, final=True)
    purger.close(timeout=0.01)  # waits for the answers: none come, both fail
    assert [a[1] for a in admin.asked] == [{2: 5}, {2: 9}]
    assert len(purger.errors) == 2 and "no answer" in purger.errors[0]


def test_a_failed_purge_is_reported_and_asked_again_at_the_next_commit() -> None:
    admin = _Admin()
    purger, _ = _purger(admin, every=3600.0)
    purger.committed(0, 10)
    admin.answer(RuntimeError("OFFSET_OUT_OF_RANGE"))
    purger.poll()
    assert purger.errors == ["0@10: OFFSET_OUT_OF_RANGE"] and purger.purged == {}
    purger.committed(0, 12)  # not throttled: the failed request counts for nothing
    admin.answer()
    purger.close()
    assert purger.purged == {0: 12}
    assert purger.to_json() == {
        "purged": {"r0": 12},
        "purge_requests": 2,
        "purge_errors": ["0@10: OFFSET_OUT_OF_RANGE"],
    }


def test_a_request_that_cannot_be_sent_is_reported_not_raised() -> None:
    admin = _Admin()
    admin.raise_on_request = RuntimeError("client closed")
    purger, _ = _purger(admin)
    purger.committed(3, 4)
    assert purger.errors == ["3@4: client closed"]


class _Sink:
    def __init__(self) -> None:
        self.committed_offsets: dict[tuple[str, int], int] = {}
        self.produced: list[tuple[str, str | None]] = []

    def produce_in_transaction(self, topic: str, key: str | None, value: bytes) -> None:
        self.produced.append((topic, key))


@pytest.mark.parametrize("final", [False, True])
def test_the_store_purges_what_the_sink_committed_after_the_commit(final: bool) -> None:
    admin = _Admin()
    purger, _ = _purger(admin, every=3600.0)
    purger.committed(1, 1)  # an earlier purge: the next is throttled unless final
    sink = _Sink()
    store = PurgingStore(
        CheckpointConfig(interval="1s"),
        "p",
        1,
        kafka=None,  # type: ignore[arg-type]
        sink=sink,  # type: ignore[arg-type]
        topic="g.p.stage2.tidal-state",
        purger=purger,
        purge_topic="g.p.repartition",
    )
    store.write(7, b"state", final=final)
    store.prune()  # the sink committed nothing yet (e.g. its commit was aborted)
    assert len(admin.asked) == 1
    sink.committed_offsets = {("g.p.repartition", 1): 40, ("other", 1): 99}
    store.prune()
    assert admin.asked[1:] == ([("g.p.repartition", {1: 40})] if final else [])
