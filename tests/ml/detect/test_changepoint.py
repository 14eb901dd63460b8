"""Change points: small persistent shifts and variance changes; re-baselining afterwards."""

from __future__ import annotations

import numpy as np

from tidal.ml.detect import ChangePoint, MedianMAD


def _score(x: np.ndarray) -> np.ndarray:
    return ChangePoint().score(x[:, None], np.zeros(len(x), dtype=np.int64)).deviation


def test_a_small_shift_is_found_where_a_point_detector_sees_nothing() -> None:
    for seed in range(5):
        rng = np.random.default_rng(seed)
        x = np.r_[rng.normal(0, 1, 2000), rng.normal(1.5, 1, 500)]
        d = _score(x)
        first = int(np.argmax(d[2000:] >= 4.0))
        assert d[2000 + first] >= 4.0 and first < 40, (seed, first)
        assert (d[200:2000] < 4.0).all(), seed
        point = MedianMAD().score(x[:, None], np.zeros(len(x), dtype=np.int64)).deviation
        assert np.median(point[2000:2040]) < 2.5  # point by point it looks like noise


def test_it_re_baselines_after_a_level_shift() -> None:
    rng = np.random.default_rng(3)
    x = np.r_[rng.normal(0, 1, 1000), rng.normal(6, 1, 1500)]
    d = _score(x)
    assert d[1000:1010].max() >= 4.0
    assert (d[1400:] < 4.0).all()  # the new level is the new normal


def test_variance_increase_is_found() -> None:
    rng = np.random.default_rng(4)
    x = np.r_[rng.normal(0, 1, 1500), rng.normal(0, 3, 300)]
    d = _score(x)
    assert d[1500:1530].max() >= 4.0
    assert (d[200:1500] < 4.0).all()


def test_a_single_spike_does_not_raise_the_chart() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, 1500)
    x[1000] = 40.0
    assert _score(x)[990:1100].max() < 4.0
