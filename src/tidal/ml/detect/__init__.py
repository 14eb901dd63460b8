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

Drift detectors (``adwin``, ``ph``, ``cusum``, ``kswin``, ``psi``: has the distribution
changed?) are in :mod:`tidal.ml.detect.drift`, by name in :data:`DRIFT_DETECTORS`;
:class:`~tidal.ml.detect.drift_step.DriftStep` (``stream.drift(...)``) runs one.

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
from tidal.ml.detect.catalog import (
    AUTO,
    DETECTORS,
    DRIFT_DETECTORS,
    default_ensemble,
    make,
    make_drift,
)
from tidal.ml.detect.changepoint import ChangePoint
from tidal.ml.detect.drift import DriftDetector, Drifts
from tidal.ml.detect.drift_dist import KSWIN, PSI
from tidal.ml.detect.drift_mean import ADWIN, CUSUM, PageHinkley
from tidal.ml.detect.drift_step import DriftStep
from tidal.ml.detect.ensemble import Ensemble, Hysteresis
from tidal.ml.detect.gated import GatedZ
from tidal.ml.detect.iforest import IsolationForest
from tidal.ml.detect.seasonal import Seasonal
from tidal.ml.detect.step import DetectStep, explain
from tidal.ml.detect.trees import HalfSpaceTrees

__all__ = [
    "ADWIN",
    "AUTO",
    "CUSUM",
    "DETECTORS",
    "DRIFT_DETECTORS",
    "EWMA",
    "KSWIN",
    "PSI",
    "ChangePoint",
    "DetectStep",
    "Detector",
    "DriftDetector",
    "DriftStep",
    "Drifts",
    "Ensemble",
    "GatedZ",
    "HalfSpaceTrees",
    "Hysteresis",
    "IsolationForest",
    "MedianMAD",
    "PageHinkley",
    "RollingZ",
    "Scored",
    "Seasonal",
    "default_ensemble",
    "explain",
    "make",
    "make_drift",
    "to_score",
]
