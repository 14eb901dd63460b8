"""Where ``--group`` cuts a pipeline for its repartition topic, and the stage 2 source.

No broker: :func:`~tidal.runtime.workers.repartition.split` reads the graph only, and
:class:`~tidal.runtime.workers.repartition.RepartitionSource` is fed fake records.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from tidal import Pipeline, bounded, tumbling
from tidal import aggregations as agg
from tidal.errors import ConfigError
from tidal.io.kafka.source import KafkaSource
from tidal.io.memory import MemorySink
from tidal.runtime.workers.repartition import (
    END_HEADER,
    PART_COLUMN,
    RepartitionSource,
    split,
    stage_one,
    stage_two,
)


def _pipeline(*, key_column: str | None = None, second_key: str | None = None) -> Any:
    src = KafkaSource("clicks", key_column=key_column, group="clicks-in")
    p = Pipeline("clicks")
    s = p.source("in", src, time="ts", watermark=bounded("1s"))
    s = s.filter("ok", lambda b: b["n"] > 0).map("m", lambda b: b)
    w = s.key_by("page").window("w", tumbling("1s"), {"n": agg.count()})
    if second_key is not None:
        w = w.key_by(second_key).window("w2", tumbling("1s"), {"n2": agg.count()})
    w.sink("out", MemorySink())
    return p, src


def test_the_cut_is_before_the_first_step_after_the_stateless_chain() -> None:
    p, src = _pipeline()
    cut = split(p, src)
    assert cut is not None
    assert (cut.key, cut.stage_one, cut.first) == ("page", ["in", "ok", "m"], "w")


def test_no_cut_when_the_message_key_is_the_grouping_column() -> None:
    p, src = _pipeline(key_column="page")
    assert split(p, src) is None


def test_no_cut_when_nothing_is_keyed() -> None:
    src = KafkaSource("clicks")
    p = Pipeline("plain")
    p.source("in", src).map("m", lambda b: b).sink("out", MemorySink())
    assert split(p, src) is None


def test_two_grouping_columns_after_the_cut_are_refused() -> None:
    p, src = _pipeline(second_key="user")
    with pytest.raises(ConfigError, match=r"groups by 'page' and by \['user'\]"):
        split(p, src)


def test_a_branch_before_the_keyed_step_is_refused() -> None:
    src = KafkaSource("clicks")
    p = Pipeline("forked")
    s = p.source("in", src, time="ts")
    s.key_by("page").window("w", tumbling("1s"), {"n": agg.count()}).sink("a", MemorySink())
    s.map("m", lambda b: b).sink("b", MemorySink())
    with pytest.raises(ConfigError, match="must be one chain"):
        split(p, src)


def test_the_stages_rewire_the_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    p, src = _pipeline()
    src._discover = lambda: None  # no cluster: one topic of 2 partitions
    src._tps, src._ids, src._one_topic = [("clicks", 0), ("clicks", 1)], {}, True
    src._ids = {("clicks", 0): 0, ("clicks", 1): 1}
    cut = split(p, src)
    assert cut is not None
    one, sink, _, extra = stage_one(
        p, cut, 1, topic="g.clicks.repartition", partitions=3, transactional_id="t-s1-p1"
    )
    assert list(one.nodes) == ["in", "ok", "m", "tidal.repartition.tag", "tidal.repartition"]
    assert src.partitions() == (1,)
    assert (sink.topic, sink.key, sink.source) == ("g.clicks.repartition", "__tidal_key", src)
    assert extra == {"out_topic": "g.clicks.repartition", "out_partitions": 3}
    p2, _ = _pipeline()
    asked: list[Any] = []
    monkeypatch.setattr(RepartitionSource, "restrict", lambda self, parts: asked.append(parts))
    two, rsrc = stage_two(
        p2, cut, 2, topic="g.clicks.repartition", inputs=2, group="g.clicks.repartition.in"
    )
    assert list(two.nodes) == ["tidal.repartition.in", "tidal.repartition.untag", "w", "out"]
    assert two.nodes["w"].inputs[0][0] is two.nodes["tidal.repartition.untag"]
    assert two.nodes["tidal.repartition.in"].watermark == p2.nodes["in"].watermark
    assert asked == [[2]] and p2.nodes["out"].sink is two.nodes["out"].sink
    assert (rsrc.topic_column, rsrc.inputs, rsrc.group) == (None, 2, "g.clicks.repartition.in")


class _Msg:
    def __init__(self, offset: int, value: bytes, ts: int, headers: Any = None) -> None:
        self._offset, self._value, self._ts, self._headers = offset, value, ts, headers

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return 0

    def topic(self) -> str:
        return "r"

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"x"

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def headers(self) -> Any:
        return self._headers


def test_the_stage_two_source_restores_time_input_partition_and_end_markers() -> None:
    src = RepartitionSource("r", config=None, group="g", inputs=2)  # type: ignore[arg-type]
    src._one_topic, src._ids = True, {("r", 0): 0}
    row = {"page": "a", "n": 1, PART_COLUMN: 1, "__tidal_key": "a"}
    msgs = [
        _Msg(0, orjson.dumps(row), 1_000),
        _Msg(1, b"", 0, [(END_HEADER, b"1")]),
        _Msg(2, orjson.dumps({**row, PART_COLUMN: 0}), 1_500),
    ]
    batch = src._batch(msgs)
    assert batch.names == ["page", "n", "__tidal_time"]
    assert batch["__tidal_time"].tolist() == [1_000, 1_500]
    assert batch.partition is not None and batch.partition.tolist() == [1, 0]
    assert src.ended == {1}
    assert src._next == {0: 3}  # the marker's offset is consumed too
    assert src.position()[0]["ended"] == [1]
    src._batch([_Msg(3, b"", 0, [(END_HEADER, b"0")])])
    assert src.poll(10, 0.0) is None  # every input partition ended: the stage 2 input ends


def test_a_restored_stage_two_source_remembers_the_end_markers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(KafkaSource, "open", lambda self, positions: None)
    src = RepartitionSource("r", config=None, group="g", inputs=2)  # type: ignore[arg-type]
    src.open({0: {"topic": "r", "partition": 0, "offset": 4, "ended": [0, 1]}})
    assert src.ended == {0, 1}
    assert src.poll(10, 0.0) is None


def test_stage_one_tags_rows_with_the_key_and_the_task_partition() -> None:
    from tidal.core.batch import Batch
    from tidal.errors import PipelineError
    from tidal.runtime.workers.repartition import _tagger

    tag = _tagger("page", "w", 3)
    batch = Batch({"page": np.array(["a", None], dtype=object), "n": [1, 2]})
    out = tag.process(batch, 0)[0][1]
    assert out["__tidal_key"].tolist() == ["a", ""]  # a None key has one partition too
    assert out["page"].tolist() == ["a", None]  # the row itself keeps it
    assert out[PART_COLUMN].tolist() == [3, 3]
    with pytest.raises(PipelineError, match="step 'w' groups by 'page'"):
        tag.process(Batch({"n": [1]}), 0)
