"""Seasonal residuals: learned periods, wrong-time values, missing values keep their slot."""

from __future__ import annotations

import numpy as np
import pytest

from tidal.ml.detect import Seasonal
from tidal.ml.detect.seasonal import learn_period


@pytest.mark.parametrize("period", [12, 50, 96, 180])
def test_learn_period(period: int) -> None:
    rng = np.random.default_rng(period)
    t = np.arange(1000)
    x = np.sin(2 * np.pi * t / period) + 0.2 * rng.normal(size=1000) + 0.01 * t
    assert abs(learn_period(x, 200) - period) <= max(1, period // 50)


def test_no_period_in_noise_or_a_trend() -> None:
    assert learn_period(np.random.default_rng(0).normal(size=600), 200) == 0
    assert learn_period(np.arange(600.0), 200) == 0


def _seasonal(n: int = 2000, period: int = 48) -> np.ndarray:
    t = np.arange(n)
    rng = np.random.default_rng(2)
    return 10 + 4 * np.sin(2 * np.pi * t / period) + 0.2 * rng.normal(size=n)


def test_a_normal_value_at_the_wrong_time_is_caught() -> None:
    x = _seasonal()
    x[1500:1510] = x[1524:1534]  # the values of half a period later
    d = Seasonal().score(x[:, None], np.zeros(len(x), dtype=np.int64)).deviation
    assert d[1500:1510].max() > 6
    assert (d[700:1500] < 5).all() and (d[1540:] < 5).all()


def test_missing_values_keep_their_slot() -> None:
    x = _seasonal()
    x[np.random.default_rng(3).random(len(x)) < 0.1] = np.nan
    d = Seasonal().score(x[:, None], np.zeros(len(x), dtype=np.int64)).deviation
    assert np.isfinite(d).all()
    assert (d[np.isnan(x)] == 0).all()
    assert (d[700:] < 4.5).all()  # no phase drift: nothing looks out of season


def test_a_given_period_needs_no_learning() -> None:
    x = _seasonal(600)
    x[300] += 5
    out = Seasonal(period=48).score(x[:, None], np.zeros(600, dtype=np.int64))
    assert out.deviation[300] > 6 and out.low[300] < x[300 - 48] < out.high[300]
