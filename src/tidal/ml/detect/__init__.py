"""Anomaly detectors for streams: keyed, causal, vectorized, with state in checkpoints.

==============  ==================================================  ==========================
name            what                                                catches
==============  ==================================================  ==========================
``median_mad``  median / MAD of a block window (robust baseline)    spikes, dips
``rolling_z``   mean / std of a block window                        spikes, dips
``ewma``        exponentially weighted mean / std of block means    spikes, dips
``gated_z``     EWMA z-score that does not learn what it flags      faults lasting many rows
``changepoint`` CUSUM of level and variance on robust z-scores      shifts, variance changes
``seasonal``    same phase of earlier seasons (learned period)      wrong-time values
``hst``         Half-Space Trees, vectorized (multivariate)         unusual regions, jumps
``iforest``     isolation forest refit on a sliding window          unusual regions (few keys)
``ensemble``    the mean deviation of hst and seasonal              both, fewer false alerts
==============  ==================================================  ==========================

``auto`` is the ensemble: it had the best early-detection score on the evaluation set, in
NAB's standard and low-false-positive profiles (``python bench/run.py detect --quality``;
the table is in the README). Every detector
follows :class:`~tidal.ml.detect.base.Detector`; :class:`~tidal.ml.detect.step.DetectStep`
(``stream.detect(...)``) runs one in a pipeline, with alerts (hysteresis) and explanations.

Example:
    >>> " ".join(sorted(DETECTORS))
    'changepoint ensemble ewma gated_z hst iforest median_mad rolling_z seasonal'
    >>> make("auto").kind
    'ensemble'
"""

from __future__ import annotations

from tidal.ml.detect.base import Detector, Scored, to_score
from tidal.ml.detect.baseline import EWMA, MedianMAD, RollingZ
from tidal.ml.detect.catalog import AUTO, DETECTORS, default_ensemble, make
from tidal.ml.detect.changepoint import ChangePoint
from tidal.ml.detect.ensemble import Ensemble, Hysteresis
from tidal.ml.detect.gated import GatedZ
from tidal.ml.detect.iforest import IsolationForest
from tidal.ml.detect.seasonal import Seasonal
from tidal.ml.detect.step import DetectStep, explain
from tidal.ml.detect.trees import HalfSpaceTrees

__all__ = [
    "AUTO",
    "DETECTORS",
    "EWMA",
    "ChangePoint",
    "DetectStep",
    "Detector",
    "Ensemble",
    "GatedZ",
    "HalfSpaceTrees",
    "Hysteresis",
    "IsolationForest",
    "MedianMAD",
    "RollingZ",
    "Scored",
    "Seasonal",
    "default_ensemble",
    "explain",
    "make",
    "to_score",
]
