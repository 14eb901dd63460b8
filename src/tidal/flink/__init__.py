"""Tidal inside Apache Flink: models and detectors as PyFlink functions and operators.

Teams that run Flink bring Tidal's model step and detectors to their jobs instead of moving
pipelines. PyFlink's vectorized (pandas/Arrow) functions hand Python whole batches — what
Tidal's columnar steps take — so a model is called once per batch, not once per row.

* :mod:`tidal.flink.core` — the Flink-free part: :class:`Scorer` (a model over feature
  columns, with its version), :class:`KeyedDetector` and :class:`KeyedLearner` (one key's
  detector or online learner whose state is bytes, for Flink's keyed state). Importable
  without PyFlink.
* :mod:`tidal.flink.table` — vectorized functions for the Table API and SQL
  (``model_function``, ``detect_over``). Needs PyFlink.
* :mod:`tidal.flink.datastream` — DataStream operators with the detector's state in
  Flink's keyed ``ValueState`` (``DetectFunction``, ``DetectWindowFunction``,
  ``ScoreWindowFunction``) and the learner's likewise (``LearnFunction``,
  ``LearnWindowFunction``). Needs PyFlink.
* :mod:`tidal.flink.jars` — Flink's Kafka SQL connector jar, from Maven Central.

PyFlink 2.3 pins numpy < 2.2, pyarrow < 17 and pandas < 2.3, so it lives in its own
environment: ``make flink-env`` builds ``.venv-flink`` (PyFlink, Tidal's core, pytest) and
``make flink-test`` runs the Flink tests there (``make test`` runs them too).

Example:
    >>> from tidal.flink import KeyedDetector
    >>> KeyedDetector("ewma").score(None, [1.0, 1.0])[0]["deviation"].tolist()
    [0.0, 0.0]
"""

from __future__ import annotations

from tidal.flink.core import (
    DETECT_OUTPUTS,
    VERSION_COLUMN,
    KeyedDetector,
    KeyedLearner,
    ModelSource,
    Scorer,
    logistic_onnx,
    registry_model,
)

__all__ = [
    "DETECT_OUTPUTS",
    "VERSION_COLUMN",
    "KeyedDetector",
    "KeyedLearner",
    "ModelSource",
    "Scorer",
    "logistic_onnx",
    "registry_model",
]
