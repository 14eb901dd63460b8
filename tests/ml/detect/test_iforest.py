"""Isolation forest refit on a sliding window (scikit-learn extra)."""

from __future__ import annotations

import numpy as np
import pytest

from tidal.errors import ConfigError
from tidal.ml.detect import IsolationForest


def test_spike_and_refit_points() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 1400)
    x[1100] = 12.0
    det = IsolationForest(window=256, refit=128)
    d = det.score(x[:, None], np.zeros(1400, dtype=np.int64)).deviation
    assert (d[:256] == 0).all()
    assert d[1100] > 4 and d[1100] >= np.percentile(d[256:], 99.5)


def test_multivariate_needs_the_declared_columns() -> None:
    with pytest.raises(ConfigError, match="2 value column"):
        IsolationForest(features=2).score(np.zeros((5, 3)), np.zeros(5, dtype=np.int64))
