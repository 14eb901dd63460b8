"""The ``Pipeline`` builder: source -> named steps -> sinks, in the style of Beam and Quix.

Every step has an explicit, stable name: it keys the step's state in snapshots, its metrics
and its place on the dashboard. Operators are plain functions over columnar batches.

Example:
    >>> import numpy as np
    >>> from tidal.testing import MemorySink, MemorySource
    >>> from tidal import aggregations as agg, tumbling
    >>> p = Pipeline("readme")
    >>> readings = p.source("readings", MemorySource({
    ...     "sensor": ["a", "b", "a", "a"], "value": [1.0, 5.0, 3.0, 9.0],
    ...     "ts": [100, 200, 900, 1500]}), time="ts")
    >>> out = MemorySink()
    >>> (readings.filter("positive", lambda b: b["value"] > 0)
    ...     .key_by("sensor")
    ...     .window("per_second", tumbling("1s"), {"n": agg.count(), "avg": agg.mean("value")})
    ...     .sink("out", out))
    >>> summary = p.run()
    >>> sorted((r["sensor"], r["window_start"], r["n"], r["avg"]) for r in out.records())
    [('a', 0, 2, 2.0), ('a', 1000, 1, 9.0), ('b', 0, 1, 5.0)]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tidal.core.aggregations import Aggregation
from tidal.core.batch import Array, Batch
from tidal.core.dedupe import Dedupe
from tidal.core.duration import Duration, to_millis
from tidal.core.join import IntervalJoin, signed_millis
from tidal.core.names import check_name
from tidal.core.operator import Operator
from tidal.core.operators import Branch, Filter, FlatMap, Map, MapRecords, Union, Validate
from tidal.core.watermark import WatermarkStrategy, bounded
from tidal.core.window_op import SessionAggregate, WindowAggregate
from tidal.core.windows import Session, Windower
from tidal.errors import PipelineError
from tidal.io.base import Sink, Source
from tidal.runtime.graph import Node, TimeUnit

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tidal.ml.detect import Detector, DriftDetector
    from tidal.ml.handler import ModelHandler
    from tidal.ml.learn import Features, Learner
    from tidal.ml.learn.loop import RetrainPolicy
    from tidal.ml.registry import Registry
    from tidal.runtime.executor import RunSummary


class Pipeline:
    """A named graph of steps from sources to sinks (a :class:`~tidal.runtime.graph.Graph`).

    Args:
        name: the pipeline's name (in metrics and snapshots, and the name of its
            checkpoints folder): 1 to 200 letters, digits, ``.``, ``_`` or ``-``.
        dead_letters: a sink for records that failed to decode or validate; they are also
            counted, and kept in memory (the last 10,000) when no sink is given.

    Raises:
        ConfigError: for a name that cannot be a folder name (``".."``, ``""``, ``"a/b"``).
    """

    def __init__(self, name: str = "pipeline", *, dead_letters: Sink | None = None) -> None:
        self.name = check_name(name, "pipeline")  # it names the checkpoints folder
        self.nodes: dict[str, Node] = {}
        self.dead_letters = dead_letters

    def _add(self, node: Node) -> Node:
        if not node.name or not isinstance(node.name, str):
            msg = f"every step needs a non-empty string name, got {node.name!r}"
            raise PipelineError(msg)
        if node.name in self.nodes:
            msg = (
                f"a step named {node.name!r} already exists in pipeline {self.name!r}; "
                "step names must be unique"
            )
            raise PipelineError(msg)
        self.nodes[node.name] = node
        return node

    def source(
        self,
        name: str,
        source: Source,
        *,
        time: str | None = None,
        time_unit: TimeUnit = "ms",
        watermark: WatermarkStrategy | None = None,
    ) -> Stream:
        """Add a source.

        Args:
            name: the step's name.
            source: any :class:`~tidal.io.base.Source`.
            time: the column with event time (ints in ``time_unit``, floats in seconds with
                ``time_unit="s"``, datetimes or ISO-8601 strings). ``None``: event time is
                arrival time (processing time).
            time_unit: unit of a numeric time column.
            watermark: ``bounded("2s")`` (default ``bounded("0s")`` with a time column) or
                ``processing_time()``.
        """
        if time is None and watermark is None:
            from tidal.core.watermark import processing_time

            watermark = processing_time()
        node = Node(
            name,
            source=source,
            time=time,
            time_unit=time_unit,
            watermark=watermark or bounded("0s"),
        )
        return Stream(self, self._add(node), 0)

    def run(self, **options: Any) -> RunSummary:
        """Run to the end of bounded input (or until stopped); see :class:`Executor`."""
        from tidal.runtime.executor import Executor

        return Executor(self, **options).run()


@dataclass(frozen=True)
class Stream:
    """A stream of batches leaving one output port of a step."""

    pipeline: Pipeline
    node: Node
    port: int
    key: str | None = None

    def _then(self, op: Operator, key: str | None = None, *others: Stream) -> Stream:
        node = Node(op.name, op=op, inputs=[(self.node, self.port)])
        node.inputs += [(o.node, o.port) for o in others]
        self.pipeline._add(node)  # noqa: SLF001 - the builder is one unit
        return Stream(self.pipeline, node, 0, key)

    def side(self, port_name: str) -> Stream:
        """Another output of this stream's step, e.g. ``"late"``."""
        outputs = self.node.outputs
        if port_name not in outputs:
            msg = f"step {self.node.name!r} has outputs {list(outputs)}, not {port_name!r}"
            raise PipelineError(msg)
        return Stream(self.pipeline, self.node, outputs.index(port_name), self.key)

    @property
    def late(self) -> Stream:
        """The ``late`` side output: records that arrived after their window closed."""
        return self.side("late")

    # -- stateless --------------------------------------------------------------------
    def map(self, name: str, fn: Callable[[Batch], Any]) -> Stream:
        """``fn(batch) -> batch`` (or a mapping of columns), one row out per row in."""
        return self._then(Map(name, fn))

    def filter(self, name: str, fn: Callable[[Batch], Array]) -> Stream:
        """Keep rows where ``fn(batch)`` (a boolean array) is true."""
        return self._then(Filter(name, fn), self.key)

    def flat_map(self, name: str, fn: Callable[[Batch], tuple[Any, Array]]) -> Stream:
        """``fn(batch) -> (columns, parent_index)``: any number of rows per input row."""
        return self._then(FlatMap(name, fn))

    def map_records(
        self, name: str, fn: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> Stream:
        """Per-record ``fn(dict) -> dict | None``. The slow path: a Python call per record."""
        return self._then(MapRecords(name, fn))

    def validate(self, name: str, checks: Mapping[str, Callable[[Batch], Array]]) -> Stream:
        """Send rows failing a check to the dead letters (reason = the check's name)."""
        return self._then(Validate(name, checks), self.key)

    def union(self, name: str, *others: Stream) -> Stream:
        """Merge this stream with ``others`` (same columns)."""
        return self._then(Union(name, 1 + len(others)), None, *others)

    def branch(
        self, name: str, branches: Mapping[str, Callable[[Batch], Array]]
    ) -> dict[str, Stream]:
        """Split rows by predicates (first match wins); unmatched rows go to ``"rest"``."""
        s = self._then(Branch(name, branches), self.key)
        return {b: s.side(b) for b in s.node.outputs}

    def apply(self, op: Operator, *others: Stream) -> Stream:
        """Add any :class:`~tidal.core.operator.Operator` (for custom and ML operators)."""
        return self._then(op, self.key, *others)

    # -- keyed ------------------------------------------------------------------------
    def key_by(self, column: str) -> Stream:
        """Key the stream by a column; keyed steps (window, join, dedupe) use it."""
        return Stream(self.pipeline, self.node, self.port, column)

    def window(
        self,
        name: str,
        windower: Windower,
        aggs: Mapping[str, Aggregation],
        *,
        allowed_lateness: Duration = "0s",
    ) -> Stream:
        """Aggregate each key's records per window; the result has a ``late`` side output.

        Without ``key_by`` the window aggregates all records together.
        """
        lateness = to_millis(allowed_lateness)
        stream, key = self, self.key
        if key is None:
            stream = self.map(f"{name}.global_key", _add_global_key)
            key = _GLOBAL
        op: Operator
        if isinstance(windower, Session):
            op = SessionAggregate(name, key, windower, aggs, lateness)
        else:
            op = WindowAggregate(name, key, windower, aggs, lateness)
        out = stream._then(op, key)  # noqa: SLF001
        if self.key is None:
            dropped = out.map(f"{name}.drop_key", _drop_global_key)
            return Stream(self.pipeline, dropped.node, 0, None)
        return out

    def interval_join(
        self,
        name: str,
        other: Stream,
        *,
        between: tuple[Duration, Duration],
        suffix: str = "_right",
    ) -> Stream:
        """Join with ``other`` on the keys: pairs whose right time is within ``between``.

        A left row ``a`` and a right row ``b`` with equal keys make a pair when
        ``a.time + lower <= b.time <= a.time + upper``; the bounds may be negative
        (``between=("-5s", "5s")``). The result has the left columns, then the right ones
        (``suffix`` on clashing names; the right key is dropped when both keys share a
        name), event time ``max(a.time, b.time)``, and is keyed like this stream. Rows of
        either side that arrive behind their watermark go to the ``late`` side output with
        a ``side`` column. See :mod:`tidal.core.join`.

        Both streams must be keyed with :meth:`key_by`.

        Example:
            >>> from tidal.testing import MemorySource, collect, run
            >>> p = Pipeline("ads")
            >>> views = p.source("views", MemorySource({"ad": ["x", "y"], "ts": [1000, 2000]}),
            ...                  time="ts")
            >>> clicks = p.source("clicks", MemorySource({"ad": ["x"], "at": [1500]}), time="at")
            >>> out = collect(views.key_by("ad").interval_join(
            ...     "clicked", clicks.key_by("ad"), between=("0s", "10s")))
            >>> _ = run(p)
            >>> out.records()
            [{'ad': 'x', 'ts': 1000, 'at': 1500}]
        """
        for label, stream in (("this", self), ("the other", other)):
            if stream.key is None:
                msg = (
                    f"step {name!r}: interval_join needs keyed streams, but {label} stream "
                    f"(from step {stream.node.name!r}) has no key; call .key_by('column') on "
                    "both streams before joining"
                )
                raise PipelineError(msg)
        if not (isinstance(between, tuple | list) and len(between) == 2):
            msg = (
                f"step {name!r}: between must be a pair (lower, upper), e.g. ('-5s', '5s'); "
                f"got {between!r}"
            )
            raise PipelineError(msg)
        assert self.key is not None and other.key is not None
        lower, upper = signed_millis(between[0]), signed_millis(between[1])
        op = IntervalJoin(name, self.key, other.key, lower, upper, suffix=suffix)
        return self._then(op, self.key, other)

    def dedupe(self, name: str, *, within: Duration) -> Stream:
        """Drop records whose key was already seen within ``within`` of the watermark.

        A record is dropped when an earlier-arriving record with the same key has a time
        ``t`` with ``t + within`` beyond the watermark in force at its arrival. Drops are
        counted as ``duplicates``. See :mod:`tidal.core.dedupe`.

        Example:
            >>> from tidal.testing import MemorySource, collect, run
            >>> p = Pipeline("orders")
            >>> s = p.source("in", MemorySource({"id": [7, 7, 8], "ts": [0, 10, 20]}), time="ts")
            >>> out = collect(s.key_by("id").dedupe("once", within="1m"))
            >>> run(p).counts["duplicates"], [r["id"] for r in out.records()]
            (1, [7, 8])
        """
        if self.key is None:
            msg = (
                f"step {name!r}: dedupe needs a keyed stream; call .key_by('column') first, "
                "e.g. stream.key_by('order_id').dedupe('once', within='10m')"
            )
            raise PipelineError(msg)
        return self._then(Dedupe(name, self.key, to_millis(within)), self.key)

    def lag(
        self,
        name: str,
        columns: str | Sequence[str],
        *,
        periods: int | Sequence[int] = 1,
        fill: Any = None,
    ) -> Stream:
        """Add each key's previous values of ``columns``: ``<column>_lag<period>`` (SQL LAG).

        Per key (``key_by``; without it the whole stream is one key), in the order rows
        reach the step, across batches: ``price_lag1`` is the key's previous ``price``,
        ``price_lag2`` the one before. A key's first rows get ``fill`` (default NaN, None
        for text; integer columns then become floats). The last ``max(periods)`` values per
        key are the step's state, in every checkpoint. See :mod:`tidal.core.lag`.

        Lagged labels and inputs are fair features for :meth:`learn`: the previous row's
        label is known when a row is predicted.

        Example:
            >>> from tidal.testing import MemorySource, collect, run
            >>> p = Pipeline("meters")
            >>> s = p.source("in", MemorySource({"meter": ["a", "b", "a", "a"],
            ...                                  "kwh": [1.5, 7.0, 2.5, 4.0]}))
            >>> out = collect(s.key_by("meter").lag("prev", "kwh", periods=[1, 2], fill=0.0))
            >>> _ = run(p)
            >>> [(r["meter"], r["kwh_lag1"], r["kwh_lag2"]) for r in out.records()]
            [('a', 0.0, 0.0), ('b', 0.0, 0.0), ('a', 1.5, 0.0), ('a', 2.5, 1.5)]
        """
        from tidal.core.lag import Lag

        return self._then(Lag(name, columns, periods=periods, key=self.key, fill=fill), self.key)

    def join_labels(
        self,
        name: str,
        labels: Stream,
        *,
        on: str,
        ttl: Duration,
        label_on: str | None = None,
        suffix: str = "_label",
    ) -> Stream:
        """Join this stream's feature rows to labels that arrive later on ``labels``, by id.

        A label joins the feature row with the same ``on`` value (``label_on`` on the
        labels stream) when their event times are within ``ttl``; the first such label
        wins, later ones are counted as ``<name>.duplicate_labels``. Labels may arrive
        before their features. The result has the feature columns, the label columns and
        ``label_delay_ms``. Side outputs: ``"unlabeled"`` (feature rows whose label did not
        come within ``ttl``, counted ``<name>.unlabeled``), ``"orphans"`` (labels that
        joined nothing) and ``"late"``. Both sources need event time. See
        :mod:`tidal.core.labels`.

        Example:
            >>> from tidal.testing import MemorySource, collect, run
            >>> p = Pipeline("fraud")
            >>> tx = p.source("tx", MemorySource({"id": [1, 2], "amount": [9.5, 120.0],
            ...                                   "ts": [0, 1_000]}), time="ts")
            >>> fraud = p.source("fraud", MemorySource({"id": [2], "fraud": [True],
            ...                                         "at": [60_000]}), time="at")
            >>> joined = tx.join_labels("labelled", fraud, on="id", ttl="1h")
            >>> out, unlabeled = collect(joined), collect(joined.side("unlabeled"))
            >>> summary = run(p)
            >>> out.records()
            [{'id': 2, 'amount': 120.0, 'ts': 1000, 'fraud': True, 'at': 60000, 'label_delay_ms': 59000}]
            >>> [r["id"] for r in unlabeled.records()], summary.counts["labelled.unlabeled"]
            ([1], 1)
        """  # noqa: E501
        from tidal.core.labels import LabelJoin

        op = LabelJoin(name, on=on, ttl_ms=to_millis(ttl), label_on=label_on, suffix=suffix)
        return self._then(op, self.key, labels)

    def resample(
        self,
        name: str,
        *,
        by: str,
        rates: Mapping[Any, float] | None = None,
        weights: Mapping[Any, float] | None = None,
        reweight: bool = True,
        seed: int = 0,
    ) -> Stream:
        """Keep rows of each class of ``by`` at ``rates[class]``; add a ``weight`` column.

        The weight is ``weights[class]`` (default 1), divided by the keep rate when
        ``reweight`` is on (inverse-probability weights). Dropped rows are counted as
        ``<name>.dropped``. Seeded and independent of batching. See :mod:`tidal.core.sample`.

        Example:
            >>> from tidal.testing import MemorySource, collect, run
            >>> p = Pipeline("imbalanced")
            >>> s = p.source("in", MemorySource({"y": [0] * 1000 + [1] * 10}))
            >>> out = collect(s.resample("balance", by="y", rates={0: 0.1}))
            >>> summary = run(p)
            >>> rows = out.records()
            >>> sum(r["y"] == 1 for r in rows), 60 < sum(r["y"] == 0 for r in rows) < 140
            (10, True)
            >>> sorted({r["weight"] for r in rows})
            [1.0, 10.0]
        """
        from tidal.core.sample import Resample

        op = Resample(name, by=by, rates=rates, weights=weights, reweight=reweight, seed=seed)
        return self._then(op, self.key)

    # -- models -------------------------------------------------------------------------
    def predict(
        self,
        name: str,
        handler: ModelHandler,
        *,
        features: str | Sequence[str],
        outputs: Sequence[str] | Mapping[str, str] | None = None,
        max_latency: Duration | None = None,
        max_batch: int | None = None,
    ) -> Stream:
        """Score every row with a model; its outputs and ``model_version`` become columns.

        The handler is loaded once and warmed up when the run starts; each batch is scored
        in as few calls as ``max_latency`` (the budget of one model call, e.g. ``"2ms"``)
        and ``max_batch`` allow. See :mod:`tidal.ml.predict`.

        Example:
            >>> from tidal.ml.handler import BaseHandler
            >>> from tidal.testing import MemorySource, collect, run
            >>> class Double(BaseHandler):
            ...     version = "v2"
            ...     def load(self): pass
            ...     def predict(self, X): return {"y": X[:, 0] * 2}
            >>> p = Pipeline("m")
            >>> s = p.source("in", MemorySource({"x": [3.0, 4.0]}))
            >>> out = collect(s.predict("double", Double(), features=["x"]))
            >>> _ = run(p)
            >>> [(r["y"], r["model_version"]) for r in out.records()]
            [(6.0, 'v2'), (8.0, 'v2')]
        """
        from tidal.ml.predict import Predict

        op = Predict(
            name,
            handler,
            features=features,
            outputs=outputs,
            max_latency=max_latency,
            max_batch=max_batch,
        )
        return self._then(op, self.key)

    def detect(
        self,
        name: str,
        detector: Detector | str = "auto",
        *,
        value: str | Sequence[str],
        **options: Any,
    ) -> Stream:
        """Score every row for anomalies, per key (``key_by``), causally; alert once per incident.

        Adds ``anomaly_score`` (0-1), ``deviation``, ``expected_low``/``expected_high``,
        ``detector`` and ``alert``; ``options`` go to :class:`~tidal.ml.detect.DetectStep`
        (``alert_on``, ``alert_off``, ``quiet``, ``seed``, ``ttl``). See :mod:`tidal.ml.detect`.

        Example:
            >>> from tidal.testing import MemorySource, collect, run
            >>> p = Pipeline("d")
            >>> s = p.source("in", MemorySource({"v": [1.0, 2.0] * 200 + [40.0]}))
            >>> out = collect(s.detect("anomalies", "median_mad", value="v"))
            >>> _ = run(p)
            >>> [i for i, r in enumerate(out.records()) if r["alert"]]
            [400]
        """
        from tidal.ml.detect import DetectStep

        op = DetectStep(name, detector, value=value, key=self.key, **options)
        return self._then(op, self.key)

    def drift(
        self,
        name: str,
        detector: DriftDetector | str = "adwin",
        *,
        column: str,
        output: str = "drift",
        seed: int = 0,
    ) -> Stream:
        """Watch ``column`` for drift, per key (``key_by``); drift events on ``.side("events")``.

        Adds ``drift`` (True at the row where a drift was found) and ``drift_score`` (the
        test statistic over its threshold); ``output`` renames them. Detectors: ``adwin``,
        ``ph``, ``cusum``, ``kswin``, ``psi`` (see :mod:`tidal.ml.detect.drift`). Drifts
        are counted as ``<name>.drifts`` in the run summary. See
        :class:`~tidal.ml.detect.DriftStep`.

        Example:
            >>> from tidal.testing import MemorySource, collect, run
            >>> p = Pipeline("d")
            >>> s = p.source("in", MemorySource({"err": [0.0, 1.0] * 150 + [1.0] * 40}))
            >>> checked = s.drift("err_drift", "cusum", column="err")
            >>> events = collect(checked.side("events"))
            >>> summary = run(p)
            >>> summary.counts["err_drift.drifts"], events.records()[0]["detector"]
            (1, 'cusum')
        """
        from tidal.ml.detect import DriftStep

        op = DriftStep(name, detector, column=column, key=self.key, output=output, seed=seed)
        return self._then(op, self.key)
    def recommend(
        self,
        name: str,
        model: Any = "mf",
        *,
        queries: Stream | None = None,
        user: str = "user",
        item: str = "item",
        **options: Any,
    ) -> Stream:
        """Learn a recommender from this stream of interactions; answer ``queries`` from it.

        Returns the interactions with ``reco_rank`` (the item's rank in the user's top-k
        before learning: prequential hit-rate@k and NDCG@k); the answers to ``queries``
        (``items`` and ``scores`` lists, without seen items) are on the
        ``"recommendations"`` side output. ``options`` go to
        :class:`~tidal.ml.reco.RecommendStep` (``rating``, ``k``, ``factors``, ``half_life``,
        ``max_users``, ``item_features`` / ``user_features`` columns for cold start...).
        See :mod:`tidal.ml.reco`.

        Example:
            >>> from tidal.testing import MemorySource, collect, run
            >>> p = Pipeline("shop")
            >>> views = p.source("views", MemorySource({"user": [1, 1, 2], "item": [7, 8, 7]}))
            >>> asks = p.source("asks", MemorySource({"user": [2]}))
            >>> learned = views.recommend("reco", queries=asks, k=3)
            >>> answers = collect(learned.side("recommendations"))
            >>> _ = run(p)
            >>> answers.records()[0]["items"]
            [8]
        """
        from tidal.ml.reco import RecommendStep

        op = RecommendStep(name, model, user=user, item=item, **options)
        others = () if queries is None else (queries,)
        return self._then(op, self.key, *others)

    def decide(
        self,
        name: str,
        policy: Any = "linucb",
        *,
        features: Sequence[str],
        rewards: Stream | None = None,
        **options: Any,
    ) -> Stream:
        """Choose an action per row with a bandit or Q-learner; learn from ``rewards``.

        Adds ``decision_id``, ``action``, ``propensity`` (and ``arm`` with ``arms=``).
        ``rewards`` carries the decisions' features, ``action`` and ``reward``, e.g. the
        logged decisions joined to late rewards by ``decision_id`` (``interval_join``).
        ``options`` go to :class:`~tidal.ml.bandits.DecideStep` (``n_arms``, ``arms``,
        ``alpha``, ``epsilon``, ``seed``...). See :mod:`tidal.ml.bandits`.

        Example:
            >>> from tidal.testing import MemorySource, collect, run
            >>> p = Pipeline("offers")
            >>> ctx = p.source("ctx", MemorySource({"x": [1.0, 1.0]}))
            >>> out = collect(ctx.decide("offer", "epsilon_greedy", features=["x"], n_arms=3))
            >>> _ = run(p)
            >>> sorted(out.records()[0])
            ['action', 'decision_id', 'propensity', 'x']
        """
        from tidal.ml.bandits import DecideStep

        op = DecideStep(name, policy, features=features, **options)
        others = () if rewards is None else (rewards,)
        return self._then(op, self.key, *others)
    def learn(
        self,
        name: str,
        learner: Learner | str,
        *,
        features: Sequence[str] | Features,
        target: str | None,
        **options: Any,
    ) -> Stream:
        """Learn online from the stream, prequentially: each row is predicted, then learned.

        Adds ``prediction`` (and ``prediction_score`` for classifiers) and, per metric, the
        metric over all labeled rows so far and over a rolling window (``accuracy``,
        ``accuracy_rolling``, ...); rows without a label are only predicted. The learner's
        state is in the step's snapshot, so in every checkpoint. ``options`` go to
        :class:`~tidal.ml.learn.step.LearnStep` (``output``, ``metrics``, ``window``,
        ``weight``, ``classes``, ``class_weights``, ``seed``). See :mod:`tidal.ml.learn`.

        Example:
            >>> import numpy as np
            >>> from tidal.testing import MemorySource, collect, run
            >>> x = np.random.default_rng(0).normal(size=3_000)
            >>> p = Pipeline("l")
            >>> s = p.source("in", MemorySource({"x": x, "y": (x > 0).astype(int)}))
            >>> out = collect(s.learn("model", "logistic", features=["x"], target="y"))
            >>> summary = run(p)
            >>> last, metrics = out.records()[-1], summary.extra["metrics"]
            >>> round(last["accuracy"], 2), round(metrics["model.accuracy"], 2)
            (0.99, 0.99)
        """
        from tidal.ml.learn.step import LearnStep

        op = LearnStep(name, learner, features=features, target=target, **options)
        return self._then(op, self.key)

    def retrain_loop(
        self,
        name: str,
        learner: str,
        *,
        features: Sequence[str] | Features,
        target: str,
        registry: Registry | str,
        model: str,
        policy: RetrainPolicy,
        **options: Any,
    ) -> Stream:
        """Serve and learn online, and close the loop: drift -> retrain -> shadow -> promote.

        Like :meth:`learn` (same columns, plus ``model_version`` and, while a candidate is in
        shadow, ``shadow_prediction``), and on drift of the serving model's errors (or a
        schedule) a child process retrains a candidate on the recent history replayed from
        the embedded log (``RetrainPolicy(topic=...)``), or from a Kafka topic through this
        pipeline's source and the steps before the loop, built again in the child
        (``RetrainPolicy(pipeline="file.py:build")``); it is registered in ``registry``
        under ``model``, scored in shadow on the next rows, and promoted only if it beats
        the serving model. Every step is a row on ``.side("events")``. ``policy`` is a
        :class:`~tidal.ml.learn.loop.RetrainPolicy`; ``options`` go to
        :class:`~tidal.ml.learn.loop.RetrainLoop` (``settings``, ``metrics``, ``seed``...).
        See :mod:`tidal.ml.learn.loop`, and the README's "Learning on the stream".
        """
        from tidal.ml.learn.loop import RetrainLoop

        op = RetrainLoop(
            name,
            learner,
            features=features,
            target=target,
            registry=registry,
            model=model,
            policy=policy,
            **options,
        )
        return self._then(op, self.key)

    def sink(self, name: str, sink: Sink) -> None:
        """Write the stream to ``sink``."""
        node = Node(name, sink=sink, inputs=[(self.node, self.port)])
        self.pipeline._add(node)  # noqa: SLF001


_GLOBAL = "__all__"


def _add_global_key(batch: Batch) -> Batch:
    return batch.with_columns(**{_GLOBAL: np.zeros(len(batch), dtype=np.int64)})


def _drop_global_key(batch: Batch) -> Batch:
    return batch.drop([_GLOBAL])
