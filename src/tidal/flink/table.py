"""Tidal models and detectors as PyFlink vectorized (pandas) functions for the Table API and SQL.

Needs PyFlink (``make flink-env``; it lives in its own environment, see the README).

:func:`model_function` makes a vectorized scalar function: Flink hands it a batch of rows
as pandas Series (Arrow underneath, up to ``python.fn-execution.arrow.batch.size`` rows),
and it scores them with one model call per batch — Tidal's :class:`~tidal.flink.core.Scorer`
with any :class:`~tidal.ml.handler.ModelHandler` or a registry model. With
``version=True`` it returns a ``ROW<score DOUBLE, model_version STRING>`` so the version
that scored each row travels with it, as in the ``predict`` step.

:func:`detect_over` makes a vectorized *aggregate* function for an ``OVER`` window: it
scores the window's last value against the values before it with a fresh Tidal detector.
Flink keeps the window's rows in its own keyed state, so checkpoints cover it with nothing
to add; the price is that every row re-reads its window (``rows`` values). For a detector
that learns from the whole history use the DataStream operators of
:mod:`tidal.flink.datastream`, whose state is the detector's own, in Flink's keyed state.

Example (on a local mini-cluster; skipped where PyFlink is not installed)::

    >>> from pyflink.table import EnvironmentSettings, TableEnvironment
    >>> from tidal.flink.core import logistic_onnx
    >>> from tidal.ml.onnx import OnnxHandler
    >>> t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    >>> score = model_function(OnnxHandler(logistic_onnx([1.0, 1.0], 0.0), version="v1"),
    ...                        inputs=2, version=True)
    >>> t_env.create_temporary_function("score", score)
    >>> t = t_env.sql_query("SELECT score(a, b) AS s FROM (VALUES (0.0, 0.0)) AS t(a, b)")
    >>> [tuple(r[0]) for r in t.execute().collect()]
    [(0.5, 'v1')]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # comes with PyFlink
from pyflink.table import DataTypes
from pyflink.table.udf import AggregateFunction, ScalarFunction, udaf, udf

from tidal.flink.core import VERSION_COLUMN, KeyedDetector, ModelSource, Scorer

__all__ = ["detect_over", "model_function"]


class _Score(ScalarFunction):  # type: ignore[misc]  # PyFlink is untyped
    """The vectorized scoring function (pandas Series in, a Series or a DataFrame out)."""

    def __init__(self, scorer: Scorer, version: bool) -> None:
        self.scorer = scorer
        self.version = version

    def open(self, function_context: Any) -> None:
        self.scorer.open()

    def eval(self, *columns: Any) -> Any:
        out = self.scorer.score(columns)
        name = self.scorer.output or "score"
        if not self.version:
            return pd.Series(out[name])
        return pd.DataFrame({name: out[name], VERSION_COLUMN: out[VERSION_COLUMN]})


def model_function(
    model: ModelSource,
    *,
    inputs: int,
    output: str = "score",
    version: bool = False,
    max_batch: int = 65_536,
    features: list[str] | None = None,
) -> Any:
    """A Flink vectorized scalar function that scores its arguments with a Tidal model.

    Register it (``t_env.create_temporary_function("score", fn)``) and call it in SQL as
    ``score(f1, f2, ...)``: the arguments are the model's features, in order.

    Args:
        model: a handler (not yet loaded) or a factory returning one
            (:func:`tidal.flink.core.registry_model`).
        inputs: how many feature arguments the function takes (each DOUBLE, FLOAT, INT or
            BIGINT; they are converted to float32 for the model).
        output: the model output to return.
        version: return ``ROW<output DOUBLE, model_version STRING>`` instead of the score.
        max_batch: the largest chunk given to the model in one call.
        features: the feature names, told to the handler before it loads.

    Returns:
        A PyFlink user-defined function (pandas type).
    """
    scorer = Scorer(model, output=output, features=features or (), max_batch=max_batch)
    if version:
        result: Any = DataTypes.ROW(
            [
                DataTypes.FIELD(output, DataTypes.DOUBLE()),
                DataTypes.FIELD(VERSION_COLUMN, DataTypes.STRING()),
            ]
        )
    else:
        result = DataTypes.DOUBLE()
    return udf(
        _Score(scorer, version),
        input_types=[DataTypes.DOUBLE()] * inputs,
        result_type=result,
        func_type="pandas",
    )


class _DetectOver(AggregateFunction):  # type: ignore[misc]  # PyFlink is untyped
    """The OVER-window detection function: the last value's anomaly score."""

    def __init__(self, detector: KeyedDetector, output: str) -> None:
        self.detector = detector
        self.output = output

    # PyFlink calls a pandas aggregate as create_accumulator, accumulate(acc, *series),
    # get_value(acc) on each window: the accumulator is a list the result is appended to.
    def create_accumulator(self) -> list[float | None]:
        return []

    def get_value(self, accumulator: list[float | None]) -> float | None:
        return accumulator[0] if accumulator else None

    def accumulate(self, accumulator: list[float | None], *args: Any) -> None:
        values = np.asarray(args[0], dtype=np.float64)
        if len(values) == 0:
            accumulator.append(None)
            return
        cols, _state = self.detector.score(None, values)
        accumulator.append(float(cols[self.output][-1]))


def detect_over(
    detector: str = "median_mad", *, output: str = "anomaly_score", **params: Any
) -> Any:
    """A vectorized aggregate function scoring the last row of an ``OVER`` window.

    Use it as ``detect(v) OVER (PARTITION BY k ORDER BY t ROWS BETWEEN 255 PRECEDING AND
    CURRENT ROW)``: each row is scored against the rows before it in its window by a fresh
    detector (a pure function of the window, so Flink's window state is all the state).

    Args:
        detector: a detector name (:data:`tidal.ml.detect.DETECTORS`).
        output: which detection column to return (``anomaly_score`` or ``deviation``).
        **params: more :class:`~tidal.flink.core.KeyedDetector` parameters.

    Returns:
        A PyFlink user-defined aggregate function (pandas type) returning DOUBLE.
    """
    return udaf(
        _DetectOver(KeyedDetector(detector, **params), output),
        input_types=[DataTypes.DOUBLE()],
        result_type=DataTypes.DOUBLE(),
        func_type="pandas",
    )
