"""The detectors by name: :data:`DETECTORS`, :data:`AUTO` and :func:`make`.

Example:
    >>> make("median_mad").kind
    'median_mad'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tidal.errors import ConfigError
from tidal.ml.detect.base import Detector
from tidal.ml.detect.baseline import EWMA, MedianMAD, RollingZ
from tidal.ml.detect.changepoint import ChangePoint
from tidal.ml.detect.drift import DriftDetector
from tidal.ml.detect.drift_dist import KSWIN, PSI
from tidal.ml.detect.drift_mean import ADWIN, CUSUM, PageHinkley
from tidal.ml.detect.ensemble import Ensemble
from tidal.ml.detect.gated import GatedZ
from tidal.ml.detect.iforest import IsolationForest
from tidal.ml.detect.seasonal import Seasonal
from tidal.ml.detect.trees import HalfSpaceTrees

__all__ = ["AUTO", "DETECTORS", "DRIFT_DETECTORS", "default_ensemble", "make", "make_drift"]


def default_ensemble(features: int = 1, seed: int = 0) -> Ensemble:
    """The ``ensemble`` detector: the mean deviation of Half-Space Trees and seasonal."""
    if features > 1:
        return Ensemble([HalfSpaceTrees(features=features, seed=seed)])
    return Ensemble([HalfSpaceTrees(seed=seed), Seasonal()], combine="mean")


DETECTORS: dict[str, Callable[[int, int], Detector]] = {
    "median_mad": lambda f, s: MedianMAD(),
    "rolling_z": lambda f, s: RollingZ(),
    "ewma": lambda f, s: EWMA(),
    "gated_z": lambda f, s: GatedZ(),
    "changepoint": lambda f, s: ChangePoint(),
    "seasonal": lambda f, s: Seasonal(),
    "hst": lambda f, s: HalfSpaceTrees(features=f, seed=s),
    "iforest": lambda f, s: IsolationForest(features=f, seed=s),
    "ensemble": default_ensemble,
}
"""Detector name -> factory ``(value columns, seed) -> Detector`` with default parameters."""

AUTO = "ensemble"
"""What ``"auto"`` means: the detector the evaluation supports (see the README's table)."""


def make(name: str, *, features: int = 1, seed: int = 0) -> Detector:
    """A detector with default parameters by name (``"auto"`` is :data:`AUTO`).

    Raises:
        ConfigError: for an unknown name.
    """
    key = AUTO if name == "auto" else name
    try:
        factory = DETECTORS[key]
    except KeyError:
        msg = f"unknown detector {name!r}; choose one of auto, {', '.join(sorted(DETECTORS))}"
        raise ConfigError(msg) from None
    return factory(features, seed)


DRIFT_DETECTORS: dict[str, Callable[[int], DriftDetector]] = {
    "adwin": lambda s: ADWIN(),
    "ph": lambda s: PageHinkley(),
    "cusum": lambda s: CUSUM(),
    "kswin": lambda s: KSWIN(seed=s),
    "psi": lambda s: PSI(),
}
"""Drift detector name -> factory ``(seed) -> DriftDetector`` with default parameters."""


def make_drift(
    name: str, *, seed: int = 0, settings: Mapping[str, Any] | None = None
) -> DriftDetector:
    """A drift detector by name (see :mod:`tidal.ml.detect.drift`).

    With its default parameters, or ``settings`` over them (its keyword arguments, e.g.
    ``{"delta": 1e-5}`` for ``adwin``).

    Raises:
        ConfigError: for an unknown name, an unknown setting or a value out of range.

    Example:
        >>> make_drift("kswin").kind
        'kswin'
        >>> make_drift("adwin", settings={"delta": 1e-5, "clock": 64}).params()["clock"]
        64
    """
    try:
        factory = DRIFT_DETECTORS[name]
    except KeyError:
        msg = f"unknown drift detector {name!r}; choose one of {', '.join(sorted(DRIFT_DETECTORS))}"
        raise ConfigError(msg) from None
    detector = factory(seed)
    if not settings:
        return detector
    known = detector.params()
    unknown = sorted(set(settings) - set(known))
    if unknown:
        msg = (
            f"drift detector {name!r}: unknown setting(s) {', '.join(map(repr, unknown))}; "
            f"its settings are {', '.join(sorted(known))}"
        )
        raise ConfigError(msg)
    made: DriftDetector = type(detector)(**{**known, **settings})
    return made
