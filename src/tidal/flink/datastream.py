"""Tidal detectors and models as PyFlink DataStream operators, state in Flink's keyed state.

Needs PyFlink (``make flink-env``).

Detectors learn per key, so they run on a keyed stream and keep each key's detector in a
Flink ``ValueState`` of ``byte[]`` (``Types.PRIMITIVE_ARRAY(Types.BYTE())``): the bytes are
:func:`tidal.runtime.snapshot.encode`'s (numeric arrays and JSON, read back with
``allow_pickle=False``), never a pickled object. Flink's checkpoints and savepoints
therefore cover the detector, its alert hysteresis included, and a job restored from one
scores exactly as an uninterrupted job would (``tests/flink/test_flink_state.py``).

Two shapes:

* :class:`DetectWindowFunction` — for ``key_by(...).window(...)``: the rows of one key's
  window are scored in one vectorized call, and the state is read and written once per
  window (the window function's ``global_state``). The fast path.
* :class:`DetectFunction` — a ``KeyedProcessFunction``: one row at a time, output at once,
  the state decoded and encoded per row. The per-record slow path, for low rates.

Learners follow the same pattern: :class:`LearnFunction` (per row) and
:class:`LearnWindowFunction` (per window) keep a key's online learner — a
:class:`~tidal.flink.core.KeyedLearner`: weights, optimizer state, feature statistics,
class labels — in a ``ValueState<byte[]>`` too, predict each row before learning it
(test-then-train), and append the prediction (and, for classifiers, its score);
:func:`with_prediction` gives the output type.

Each detection operator emits the input row's fields followed by the detection columns
(:data:`~tidal.flink.core.DETECT_OUTPUTS`); :func:`with_detection` gives the output type.
:class:`ScoreWindowFunction` scores the rows of a window with a model, once per window, and
appends the score and ``model_version`` (:func:`with_score` gives the type). For scoring in
SQL or the Table API use :func:`tidal.flink.table.model_function`, which Flink calls on
Arrow batches without any window.

Example (on a local mini-cluster; skipped where PyFlink is not installed)::

    >>> from pyflink.common import Row, Types
    >>> from pyflink.datastream import StreamExecutionEnvironment
    >>> import sys
    >>> env = StreamExecutionEnvironment.get_execution_environment()
    >>> env.set_python_executable(sys.executable)  # Flink's Python workers: this venv
    >>> env.set_parallelism(1)  # doctest: +ELLIPSIS
    <...>
    >>> rows = Types.ROW_NAMED(["host", "v"], [Types.STRING(), Types.DOUBLE()])
    >>> data = [Row("a", float(i % 7)) for i in range(300)] + [Row("a", 50.0)]
    >>> ds = env.from_collection(data, type_info=rows)
    >>> out = ds.key_by(lambda r: r[0], key_type=Types.STRING()).process(
    ...     DetectFunction("v", "median_mad", fields=rows.get_field_names()),
    ...     output_type=with_detection(rows))
    >>> results = list(out.execute_and_collect())
    >>> [(r[0], r[1], r["alert"]) for r in results if r["alert"]]
    [('a', 50.0, True)]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from pyflink.common import Row, Types
from pyflink.datastream.functions import KeyedProcessFunction, ProcessWindowFunction
from pyflink.datastream.state import ValueStateDescriptor

from tidal.errors import ConfigError
from tidal.flink.core import (
    DETECT_OUTPUTS,
    VERSION_COLUMN,
    KeyedDetector,
    KeyedLearner,
    ModelSource,
    Scorer,
)

__all__ = [
    "DetectFunction",
    "DetectWindowFunction",
    "LearnFunction",
    "LearnWindowFunction",
    "ScoreWindowFunction",
    "state_descriptor",
    "stop_with_savepoint",
    "with_detection",
    "with_prediction",
    "with_score",
]

DEFAULT_STATE = "tidal-detector"
LEARNER_STATE = "tidal-learner"


def state_descriptor(name: str = DEFAULT_STATE) -> Any:
    """The keyed state holding a detector or learner: a ``ValueState`` of ``byte[]``."""
    return ValueStateDescriptor(name, Types.PRIMITIVE_ARRAY(Types.BYTE()))


def stop_with_savepoint(client: Any, directory: str, *, drain: bool = False) -> Any:
    """Ask a running job to stop with a savepoint in ``directory``.

    Returns at once with a future: its ``result()`` waits for the stop and is the
    savepoint's path (pass it as ``execution.savepoint.path`` to resume).

    PyFlink 2.3's ``JobClient.stop_with_savepoint`` calls a two-argument Java method that
    Flink 2 no longer has (``Py4JException: Method stopWithSavepoint([class
    java.lang.Boolean, class java.lang.String]) does not exist``); this calls the Java
    method with the savepoint format (canonical) explicitly.

    Args:
        client: the ``JobClient`` of ``env.execute_async(...)``.
        directory: where to write the savepoint (a path or a ``file://`` URI).
        drain: send ``MAX_WATERMARK`` first (fires every event-time window: end of stream).
    """
    from pyflink.common.completable_future import CompletableFuture
    from pyflink.java_gateway import get_gateway

    fmt = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
    future = client._j_job_client.stopWithSavepoint(drain, directory, fmt)  # noqa: SLF001
    return CompletableFuture(future, str)


def _detection_types() -> list[Any]:
    return [Types.DOUBLE()] * 4 + [Types.STRING(), Types.BOOLEAN()]


def with_detection(input_type: Any) -> Any:
    """The row type of a detection operator's output: the input's fields, then the outputs.

    Args:
        input_type: the input stream's row type (``Types.ROW_NAMED(...)``).
    """
    names = list(input_type.get_field_names())
    types = list(input_type.get_field_types())
    return Types.ROW_NAMED([*names, *DETECT_OUTPUTS], [*types, *_detection_types()])


def with_score(input_type: Any, output: str = "score") -> Any:
    """The row type of :class:`ScoreWindowFunction`'s output.

    The input's fields, then the score (DOUBLE) and ``model_version`` (STRING).
    """
    names = list(input_type.get_field_names())
    types = list(input_type.get_field_types())
    return Types.ROW_NAMED(
        [*names, output, VERSION_COLUMN], [*types, Types.DOUBLE(), Types.STRING()]
    )


def _field_index(fields: Sequence[str], name: str, what: str) -> int:
    if name not in fields:
        msg = f"{what}: the input rows have no field {name!r}; they have {list(fields)}"
        raise ConfigError(msg)
    return list(fields).index(name)


def _value(x: Any) -> float:
    return math.nan if x is None else float(x)


def _detection_row(row: Any, cols: dict[str, Any], i: int) -> Row:
    det = cols["detector"][i]
    outs = (
        float(cols["anomaly_score"][i]),
        float(cols["deviation"][i]),
        float(cols["expected_low"][i]),
        float(cols["expected_high"][i]),
        None if det is None else str(det),
        bool(cols["alert"][i]),
    )
    return Row(*tuple(row), *outs)


class _Detecting:
    """What the two detection operators share: parameters, the value field, the detector."""

    def __init__(
        self,
        value: str,
        detector: str = "auto",
        *,
        fields: Sequence[str],
        state_name: str = DEFAULT_STATE,
        **params: Any,
    ) -> None:
        self.fields = [str(f) for f in fields]
        self.index = _field_index(self.fields, value, type(self).__name__)
        self.keyed = KeyedDetector(detector, **params)
        self.state_name = state_name


class DetectFunction(_Detecting, KeyedProcessFunction):  # type: ignore[misc]  # untyped PyFlink
    """Detect anomalies row by row on a keyed stream; the detector lives in keyed state.

    Args:
        value: the field holding the value to score.
        detector: a detector name (:data:`tidal.ml.detect.DETECTORS`; ``"auto"``).
        fields: the input rows' field names (``row_type.get_field_names()``).
        state_name: the keyed state's name (keys the state in checkpoints: keep it stable).
        **params: more :class:`~tidal.flink.core.KeyedDetector` parameters (``alert_on``,
            ``alert_off``, ``quiet``, ``seed``).

    Raises:
        ConfigError: ``value`` is not one of ``fields``, or an unknown detector.
    """

    def open(self, runtime_context: Any) -> None:
        """Get the key's detector state (Flink calls this once per operator)."""
        self.state = runtime_context.get_state(state_descriptor(self.state_name))

    def process_element(self, value: Any, ctx: Any) -> Iterator[Row]:
        """Score one row against its key's state; update the state; emit the row."""
        cols, state = self.keyed.score(self.state.value(), [_value(value[self.index])])
        self.state.update(state)
        yield _detection_row(value, cols, 0)


class DetectWindowFunction(_Detecting, ProcessWindowFunction):  # type: ignore[misc]
    """Detect anomalies on a keyed window's rows at once; the detector lives in keyed state.

    Use it on ``ds.key_by(...).window(...)`` (tumbling event-time windows keep latency to
    the window size; ``count_window(n)`` batches n rows of a key). The rows are scored in
    the order the window holds them (arrival order), against the key's state from earlier
    windows, which lives in the window function's global (per-key, not per-window) state.

    Args: as :class:`DetectFunction`.
    """

    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Iterator[Row]:
        """Score a key's window of rows at once against the key's state; emit them."""
        rows = list(elements)
        if not rows:
            return
        state = context.global_state().get_state(state_descriptor(self.state_name))
        values = np.fromiter((_value(r[self.index]) for r in rows), np.float64, len(rows))
        cols, new = self.keyed.score(state.value(), values)
        state.update(new)
        for i, row in enumerate(rows):
            yield _detection_row(row, cols, i)


class ScoreWindowFunction(ProcessWindowFunction):  # type: ignore[misc]  # untyped PyFlink
    """Score a window's rows with a Tidal model, one model call per window.

    Args:
        model: a handler (not yet loaded) or a factory returning one.
        features: the fields holding the model's features, in order.
        fields: the input rows' field names.
        output: the model output to append (then ``model_version``).

    Raises:
        ConfigError: a feature is not one of ``fields``.
    """

    def __init__(
        self, model: ModelSource, *, features: Sequence[str], fields: Sequence[str], output: str
    ) -> None:
        self.fields = [str(f) for f in fields]
        self.indices = [_field_index(self.fields, f, "ScoreWindowFunction") for f in features]
        self.scorer = Scorer(model, output=output, features=list(features))

    def open(self, runtime_context: Any) -> None:
        """Load the model (once per operator)."""
        self.scorer.open()

    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Iterator[Row]:
        """Score a window's rows with one model call; emit them with the score."""
        rows = list(elements)
        if not rows:
            return
        cols = [np.array([_value(r[i]) for r in rows]) for i in self.indices]
        out = self.scorer.score(cols)
        scores, versions = out[self.scorer.output or "score"], out[VERSION_COLUMN]
        for i, row in enumerate(rows):
            yield Row(*tuple(row), float(scores[i]), str(versions[i]))


def with_prediction(input_type: Any, learner: KeyedLearner, target: str | None = None) -> Any:
    """The row type of a learning operator's output: the input's fields, then the outputs.

    ``prediction`` is DOUBLE for a regressor, BIGINT (the cluster id) for k-means, and for a
    classifier the type of the ``target`` field (the predicted label), followed by
    ``prediction_score`` (DOUBLE); each metric column is DOUBLE.

    Raises:
        ConfigError: a classifier's ``target`` is not one of the input's fields.
    """
    names = list(input_type.get_field_names())
    types = list(input_type.get_field_types())
    if learner.task == "classification":
        pred = types[_field_index(names, str(target), "with_prediction")]
    else:
        pred = Types.DOUBLE() if learner.task == "regression" else Types.LONG()
    outs = learner.outputs
    return Types.ROW_NAMED([*names, *outs], [*types, pred, *[Types.DOUBLE()] * (len(outs) - 1)])


class _Learning:
    """What the two learning operators share: the field indices and the keyed learner."""

    def __init__(
        self,
        learner: str | Any = "logistic",
        *,
        features: Sequence[str],
        target: str | None,
        fields: Sequence[str],
        state_name: str = LEARNER_STATE,
        **params: Any,
    ) -> None:
        what = type(self).__name__
        self.fields = [str(f) for f in fields]
        self.keyed = KeyedLearner(learner, features=features, **params)
        self.indices = [_field_index(self.fields, f, what) for f in self.keyed.feature_names]
        self.target = None if target is None else _field_index(self.fields, target, what)
        if self.target is None and self.keyed.task != "clustering":
            msg = f"{what}: a {self.keyed.task} learner needs target='label field'"
            raise ConfigError(msg)
        self.state_name = state_name

    def _learn(self, state: Any, rows: list[Any]) -> Iterator[Row]:
        cols = [
            np.fromiter((_value(r[i]) for r in rows), np.float64, len(rows)) for i in self.indices
        ]
        labels = None if self.target is None else [r[self.target] for r in rows]
        out, new = self.keyed.learn(state.value(), cols, labels)
        state.update(new)
        names = self.keyed.outputs
        classify = self.keyed.task == "classification"
        for i, row in enumerate(rows):
            pred = out[names[0]][i]
            if classify and labels is not None and labels[i] is not None:
                self._cast = type(labels[i])  # the label field's Python type (float, int, str)
            cast = getattr(self, "_cast", None) if classify else None
            if cast is not None:
                pred = cast(pred)
            else:
                pred = pred.item() if isinstance(pred, np.generic) else pred
            yield Row(*tuple(row), pred, *(float(out[n][i]) for n in names[1:]))


class LearnFunction(_Learning, KeyedProcessFunction):  # type: ignore[misc]  # untyped PyFlink
    """Learn online row by row on a keyed stream; the learner lives in keyed state.

    Each row is predicted by the key's learner as it was before the row, then learned
    (rows whose label is null are only predicted). The per-record slow path: the state is
    decoded and encoded per row; :class:`LearnWindowFunction` does it once per window.

    Args:
        learner: a learner name (:data:`tidal.ml.learn.LEARNERS`) or a factory.
        features: the fields holding the (numeric) features, in order.
        target: the field holding the label (``None`` only for clustering).
        fields: the input rows' field names (``row_type.get_field_names()``).
        state_name: the keyed state's name (keys the state in checkpoints: keep it stable).
        **params: more :class:`~tidal.flink.core.KeyedLearner` parameters (``metrics``,
            ``classes``, ``seed``) and the learner's settings (``lr``, ``mode``, ...).

    Raises:
        ConfigError: a feature or the target is not one of ``fields``, or an unknown learner.
    """

    def open(self, runtime_context: Any) -> None:
        """Get the key's learner state (Flink calls this once per operator)."""
        self.state = runtime_context.get_state(state_descriptor(self.state_name))

    def process_element(self, value: Any, ctx: Any) -> Iterator[Row]:
        """Predict then learn one row from its key's state; update the state; emit the row."""
        yield from self._learn(self.state, [value])


class LearnWindowFunction(_Learning, ProcessWindowFunction):  # type: ignore[misc]
    """Learn online on a keyed window's rows at once; the learner lives in keyed state.

    The rows are predicted and learned in the order the window holds them, in one
    vectorized call, against the key's learner from earlier windows (the window
    function's global, per-key state). Args: as :class:`LearnFunction`.
    """

    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Iterator[Row]:
        """Predict then learn a key's window of rows at once; emit them with predictions."""
        rows = list(elements)
        if rows:
            state = context.global_state().get_state(state_descriptor(self.state_name))
            yield from self._learn(state, rows)
