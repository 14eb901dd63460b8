"""The detectors by name: :data:`DETECTORS`, :data:`AUTO` and :func:`make`.

Example:
    >>> make("median_mad").kind
    'median_mad'
"""

from __future__ import annotations

from collections.abc import Callable

from tidal.errors import ConfigError
from tidal.ml.detect.base import Detector
from tidal.ml.detect.baseline import EWMA, MedianMAD, RollingZ
from tidal.ml.detect.changepoint import ChangePoint
from tidal.ml.detect.ensemble import Ensemble
from tidal.ml.detect.gated import GatedZ
from tidal.ml.detect.iforest import IsolationForest
from tidal.ml.detect.seasonal import Seasonal
from tidal.ml.detect.trees import HalfSpaceTrees

__all__ = ["AUTO", "DETECTORS", "default_ensemble", "make"]


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
