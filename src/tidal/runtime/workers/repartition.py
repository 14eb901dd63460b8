"""Repartitioning under ``--group``: ``key_by`` on a column that is not the message key.

A group worker runs one task per input partition (:mod:`tidal.runtime.workers.group`), so
a keyed step sees only the keys of its partition. When the input is not partitioned by
the key the pipeline groups by, Tidal splits the pipeline in two stages joined by an
internal topic, as Kafka Streams does (decision 0042):

- **where**: :func:`split` cuts the graph before the first step that is not a stateless
  per-row step (``map``, ``filter``, ``flat_map``, ``map_records``, ``validate``) of the
  chain that starts at the source. Stage 1 is the source and that chain; stage 2 is the
  rest, whose keyed steps must all group by one column, the *repartition key*. No cut is
  made when nothing is keyed, or when the source declares that column as its message key
  (``KafkaSource(key_column=...)``): then the input is partitioned by it already.
- **stage 1** (a task per input partition): the chain, then every row to the topic
  ``<group>.<pipeline>.repartition`` (created by Tidal, as many partitions as the input),
  keyed by the repartition key, in the task's transaction with its input offsets and its
  state (exactly once). The record carries the row's event time as its timestamp and the
  input partition it came from. When the task's input ends, its last transaction also
  carries an *end marker* (header ``tidal.end``) to every repartition partition.
- **stage 2** (a task per repartition partition): :class:`RepartitionSource` reads the
  topic ``read_committed``, restores event time from the record timestamps, and gives
  each row its *input* partition as its watermark partition, so the watermark of a stage 2
  task is the minimum over the input partitions, as in one process (the source's
  ``idle_timeout`` applies per input partition). It ends once it read the end marker of
  every input partition.

Example:
    >>> from tidal import Pipeline, bounded, tumbling
    >>> from tidal import aggregations as agg
    >>> from tidal.io.kafka.source import KafkaSource
    >>> from tidal.io.memory import MemorySink
    >>> p = Pipeline("clicks")
    >>> src = KafkaSource("clicks", key_column="user")
    >>> s = p.source("in", src, time="ts", watermark=bounded("1s"))
    >>> s = s.filter("ok", lambda b: b["n"] > 0)
    >>> s.key_by("page").window("w", tumbling("1s"), {"n": agg.count()}).sink("out", MemorySink())
    >>> cut = split(p, src)
    >>> cut.key, cut.stage_one, cut.first
    ('page', ['in', 'ok'], 'w')
    >>> repartition_topic("g1", "clicks")
    'g1.clicks.repartition'
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tidal.core.batch import Batch
from tidal.core.operators import Filter, FlatMap, Map, MapRecords, Validate
from tidal.errors import ConfigError, PipelineError
from tidal.io.base import Sink
from tidal.io.kafka.config import KafkaConfig
from tidal.io.kafka.sink import KafkaTransactionalSink
from tidal.io.kafka.source import KafkaSource
from tidal.runtime.graph import Graph, Node
from tidal.runtime.workers.kafka_state import KafkaStateStore

__all__ = [
    "END_HEADER",
    "PART_COLUMN",
    "RepartitionSource",
    "Split",
    "ensure_repartition_topic",
    "repartition_topic",
    "split",
    "stage_one",
    "stage_two",
]

PART_COLUMN = "__tidal_partition"
"""Stage 1 writes each row's input partition in this field; stage 2 removes it."""
KEY_COLUMN = "__tidal_key"
TIME_COLUMN = "__tidal_time"
END_HEADER = "tidal.end"
"""The header of an end marker; its value is the input partition that ended."""

_STATELESS = (Map, Filter, FlatMap, MapRecords, Validate)


def repartition_topic(group: str, pipeline: str) -> str:
    """The repartition topic of a job (named like its state topic).

    Example:
        >>> repartition_topic("fraud prod", "fraud")
        'fraud-prod.fraud.repartition'
    """
    import re

    return re.sub(r"[^A-Za-z0-9._-]", "-", f"{group}.{pipeline}.repartition")


def ensure_repartition_topic(config: KafkaConfig, topic: str, partitions: int) -> int:
    """Create the repartition topic if it does not exist; its partition count.

    Raises:
        ConfigError: if it exists with another number of partitions than asked for
            (records of a key would move to another partition, away from its state).
    """
    from tidal.io.kafka.admin import KafkaAdmin

    admin = KafkaAdmin(config, timeout=30.0)
    # no time-based deletion: the records carry their event time as timestamp, and an
    # input from more than retention.ms ago would be deleted under stage 2 (Kafka Streams
    # sets -1 on its repartition topics too, KIP-284)
    admin.create_topic(topic, partitions, config={"retention.ms": "-1"}, exist_ok=True)
    have = admin.partitions(topic)
    if have != partitions:
        msg = (
            f"the repartition topic {topic!r} has {have} partitions, this run asks for "
            f"{partitions}: the state of its keys is kept per partition, so the count cannot "
            "change under a running job; give the same count, or a new --group to start over"
        )
        raise ConfigError(msg)
    return have


@dataclass
class Split:
    """Where a pipeline is cut for a repartition (see :func:`split`).

    Attributes:
        key: the repartition key (the column the keyed steps group by).
        stage_one: the source step and the stateless chain after it, in order.
        first: the first step of stage 2 (it reads the end of the chain).
    """

    key: str
    stage_one: list[str]
    first: str


@dataclass
class StageGraph:
    """One stage of a split pipeline, shaped like a :class:`~tidal.runtime.graph.Graph`."""

    name: str
    nodes: dict[str, Node] = field(default_factory=dict)
    dead_letters: Sink | None = None


def _consumers(graph: Graph, node: Node) -> list[Node]:
    return [n for n in graph.nodes.values() if any(up is node for up, _ in n.inputs)]


def split(graph: Graph, source: KafkaSource) -> Split | None:
    """Where to cut ``graph`` for a repartition, or ``None`` if it needs none.

    Raises:
        ConfigError: for a shape the repartition cannot run: a branch before the first
            keyed step, keyed steps grouping by different columns, or a stage 2 step that
            reads a stage 1 step other than the last.
    """
    src = next(n for n in graph.nodes.values() if n.source is source)
    chain = [src]
    while True:
        after = _consumers(graph, chain[-1])
        nxt = after[0] if len(after) == 1 else None
        if (
            nxt is None
            or not isinstance(nxt.op, _STATELESS)
            or len(nxt.inputs) != 1
            or nxt.inputs[0][1] != 0
        ):
            break
        chain.append(nxt)
    in_chain = {id(n) for n in chain}
    rest = [n for n in graph.nodes.values() if id(n) not in in_chain]
    keys = [(n.name, k) for n in rest if isinstance(k := getattr(n.op, "key", None), str)]
    if not keys:
        return None  # nothing keyed: every task can run the whole pipeline
    key = keys[0][1]
    if key == source.key_column:
        return None  # the message key is the grouping column: partitioned by it already
    others = sorted({k for _, k in keys} - {key})
    if others:
        msg = (
            f"--group: pipeline {graph.name!r} groups by {key!r} and by {others} after the "
            "steps that run per input partition; a repartition moves records by one key, so "
            "key every keyed step by the same column (or run without --group)"
        )
        raise ConfigError(msg)
    after = _consumers(graph, chain[-1])
    if len(after) != 1 or len(after[0].inputs) != 1:
        msg = (
            f"--group: pipeline {graph.name!r} reads step {chain[-1].name!r} from "
            f"{[n.name for n in after]}; before its first keyed step a repartitioned pipeline "
            "must be one chain of map/filter/flat_map/validate steps"
        )
        raise ConfigError(msg)
    for n in rest:
        for up, _ in n.inputs:
            if id(up) in in_chain and not (n is after[0] and up is chain[-1]):
                msg = (
                    f"--group: step {n.name!r} of pipeline {graph.name!r} reads {up.name!r}, "
                    "which runs before the repartition; only the first keyed step may"
                )
                raise ConfigError(msg)
    return Split(key, [n.name for n in chain], after[0].name)


def _tagger(key: str, keyed_step: str, partition: int) -> Map:
    """Stage 1's last step: the record key and the input partition of every row.

    A stage 1 task reads one input partition, so that is every row's (whatever the steps
    before did to ``Batch.partition``).
    """

    def tag(batch: Batch) -> Batch:
        if key not in batch:
            msg = (
                f"step {keyed_step!r} groups by {key!r}, but the rows that reach it have "
                f"columns {batch.names}; add the column before the key_by"
            )
            raise PipelineError(msg)
        col = batch[key]
        if col.dtype == object:
            missing = np.asarray(col == None, dtype=bool)  # noqa: E711 - elementwise, in C
            if missing.any():  # None keys go to one partition too (murmur2 of b"")
                col = np.where(missing, "", col)
        part = np.full(len(batch), partition, dtype=np.int64)
        return batch.with_columns(**{KEY_COLUMN: col, PART_COLUMN: part})

    return Map("tidal.repartition.tag", tag)


def _untag(batch: Batch) -> Batch:
    return batch.drop((TIME_COLUMN,))


class _EndMarkingStore(KafkaStateStore):
    """A stage 1 task's state store: its final checkpoint also ends the input downstream."""

    def __init__(self, *args: Any, out_topic: str, out_partitions: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.out_topic = out_topic
        self.out_partitions = out_partitions

    def write(self, checkpoint_id: int, state: bytes, *, final: bool = False) -> Any:
        """Produce the state; with ``final``, an end marker to every repartition partition."""
        if final:
            mark = [(END_HEADER, str(self.partition).encode())]
            for q in range(self.out_partitions):
                self.sink.produce_in_transaction(
                    self.out_topic, None, b"", partition=q, headers=mark
                )
        return super().write(checkpoint_id, state, final=final)


def stage_one(
    graph: Graph,
    cut: Split,
    partition: int,
    *,
    topic: str,
    partitions: int,
    transactional_id: str,
) -> tuple[StageGraph, KafkaTransactionalSink, type[KafkaStateStore], dict[str, Any]]:
    """Stage 1 of ``graph`` for one input partition: the chain, then the repartition topic.

    Returns the stage's graph, its exactly-once sink (to ``topic``, keyed by the
    repartition key, the input's offsets in its transactions), and the state store class
    with its extra arguments (the end markers of the final checkpoint).
    """
    nodes = {name: graph.nodes[name] for name in cut.stage_one}
    src = nodes[cut.stage_one[0]].source
    assert isinstance(src, KafkaSource)
    src.restrict([partition])
    tag = Node("tidal.repartition.tag", op=_tagger(cut.key, cut.first, partition))
    tag.inputs = [(nodes[cut.stage_one[-1]], 0)]
    sink = KafkaTransactionalSink(
        topic,
        config=src.config,
        key=KEY_COLUMN,
        transactional_id=transactional_id,
        source=src if src.group else None,  # positions are in the checkpoint anyway
        name=f"repartition:{topic}",
    )
    out = Node("tidal.repartition", sink=sink, inputs=[(tag, 0)])
    stage = StageGraph(graph.name, {**nodes, tag.name: tag, out.name: out})
    return stage, sink, _EndMarkingStore, {"out_topic": topic, "out_partitions": partitions}


class RepartitionSource(KafkaSource):
    """Stage 2's source: one partition of the repartition topic, read ``read_committed``.

    Rows keep their input partition as ``Batch.partition`` (the watermark partition), and
    their event time comes from the record timestamp (column ``__tidal_time``, dropped by
    the next step). It ends (bounded input) once every input partition's end marker came.
    The markers seen are part of its position, so a restored task knows them.

    Args:
        topic: the repartition topic.
        config: the cluster.
        group: the consumer group its offsets are committed to (in the transactions).
        inputs: how many input partitions feed it (end markers to wait for).
    """

    def __init__(self, topic: str, *, config: KafkaConfig, group: str, inputs: int) -> None:
        super().__init__(
            topic,
            config=config,
            group=group,
            timestamp_column=TIME_COLUMN,
            name=f"repartition:{topic}",
        )
        self.inputs = inputs
        self.ended: set[int] = set()

    def position(self) -> dict[int, Any]:
        """The offsets, and the input partitions whose end marker was read."""
        pos = super().position()
        for value in pos.values():
            value["ended"] = sorted(self.ended)
        return pos

    def open(self, positions: Mapping[int, Any]) -> None:
        """Open at ``positions`` (taking back the end markers read before)."""
        for value in positions.values():
            if isinstance(value, Mapping) and "ended" in value:
                self.ended |= {int(p) for p in value["ended"]}
        super().open(positions)

    def poll(self, max_records: int, timeout: float) -> Batch | None:
        """A batch of rows; ``None`` once every input partition ended."""
        if len(self.ended) >= self.inputs:
            return None
        return super().poll(max_records, timeout)

    def _batch(self, msgs: list[Any]) -> Batch:
        rows = []
        for m in msgs:
            heads = m.headers()
            if heads:
                for name, value in heads:
                    if name == END_HEADER:
                        self.ended.add(int(value))
                self._advance([m.partition()], [m.offset()])
            else:
                rows.append(m)
        if not rows:
            return Batch()
        batch = super()._batch(rows)
        if PART_COLUMN in batch:
            batch.partition = np.asarray(batch[PART_COLUMN], dtype=np.int32)
        batch.ingest = np.full(len(batch), time.time_ns(), dtype=np.int64)
        return batch.drop((PART_COLUMN, KEY_COLUMN))


def stage_two(
    graph: Graph,
    cut: Split,
    partition: int,
    *,
    topic: str,
    inputs: int,
    group: str,
) -> tuple[StageGraph, RepartitionSource]:
    """Stage 2 of ``graph`` for one repartition partition: the keyed steps and the sink.

    The user's exactly-once sink commits the repartition topic's offsets (group
    ``group``) in its transactions.
    """
    old = graph.nodes[cut.stage_one[0]]
    assert isinstance(old.source, KafkaSource)
    source = RepartitionSource(topic, config=old.source.config, group=group, inputs=inputs)
    source.restrict([partition])
    head = Node(
        "tidal.repartition.in",
        source=source,
        time=TIME_COLUMN if old.time is not None else None,
        time_unit="ms",
        watermark=old.watermark,
    )
    untag = Node("tidal.repartition.untag", op=Map("tidal.repartition.untag", _untag))
    untag.inputs = [(head, 0)]
    nodes = {head.name: head, untag.name: untag}
    skip = set(cut.stage_one)
    for name, node in graph.nodes.items():
        if name in skip:
            continue
        if name == cut.first:
            node.inputs = [(untag, 0)]
        if isinstance(node.sink, KafkaTransactionalSink) and node.sink.source is not None:
            node.sink.source = source  # commit the repartition topic's offsets
        nodes[name] = node
    return StageGraph(graph.name, nodes), source
