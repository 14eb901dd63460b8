"""Robust baselines: spikes and dips are caught, noise is not, keys stay apart."""

from __future__ import annotations

import numpy as np
import pytest

from tidal.errors import ConfigError, StateError
from tidal.ml.detect import EWMA, MedianMAD, RollingZ

DETECTORS = [MedianMAD, RollingZ, EWMA]


def _series(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    x = 20 + rng.normal(0, 1, n)
    at = [400, 900, 1500, 2200, 2700]
    for i, p in enumerate(at):
        x[p] += 8.0 if i % 2 else -8.0  # spikes and dips
    return x, at


@pytest.mark.parametrize("cls", DETECTORS)
def test_spikes_and_dips_are_caught_and_noise_is_not(cls: type) -> None:
    x, at = _series()
    det = cls()
    d = det.score(x[:, None], np.zeros(len(x), dtype=np.int64)).deviation
    assert (d[at] > det.range).all()
    normal = np.ones(len(x), dtype=bool)
    normal[at] = False
    normal[:200] = False
    assert (d[normal] > det.range + 1).mean() < 0.002


@pytest.mark.parametrize("cls", DETECTORS)
def test_no_score_during_warm_up(cls: type) -> None:
    det = cls(block=4, blocks=5)
    x = np.arange(30.0)[:, None]
    out = det.score(x, np.zeros(30, dtype=np.int64))
    assert (out.deviation[:20] == 0).all() and np.isnan(out.low[:20]).all()
    assert np.isfinite(out.low[20:]).all()


@pytest.mark.parametrize("cls", DETECTORS)
def test_keys_do_not_share_state(cls: type) -> None:
    x, _ = _series()
    alone = cls().score(x[:, None], np.zeros(len(x), dtype=np.int64)).deviation
    other = np.random.default_rng(9).normal(1000, 50, len(x))
    both = np.empty(2 * len(x))
    both[0::2], both[1::2] = x, other
    keys = np.tile([0, 1], len(x))
    mixed = cls().score(both[:, None], keys).deviation
    np.testing.assert_array_equal(mixed[0::2], alone)


def test_median_mad_is_not_dragged_by_a_burst() -> None:
    rng = np.random.default_rng(1)
    x = 5 + rng.normal(0, 0.5, 1000)
    x[600:606] = 50.0  # a burst of outliers inside the window of what follows
    x[640] = 9.0  # 8 sigmas
    robust = MedianMAD().score(x[:, None], np.zeros(1000, dtype=np.int64))
    plain = RollingZ().score(x[:, None], np.zeros(1000, dtype=np.int64))
    assert robust.deviation[640] > 5
    assert plain.deviation[640] < 2  # the burst inflated the plain std: masked
    assert robust.low[640] < 5 < robust.high[640]


def test_univariate_detectors_refuse_two_columns() -> None:
    with pytest.raises(ConfigError, match="one value column"):
        MedianMAD().score(np.zeros((4, 2)), np.zeros(4, dtype=np.int64))


def test_restore_into_other_parameters_is_refused() -> None:
    det = MedianMAD(blocks=8)
    det.score(np.ones((50, 1)), np.zeros(50, dtype=np.int64))
    with pytest.raises(StateError, match="parameters"):
        MedianMAD(blocks=9).restore(det.snapshot())


def test_bad_parameters() -> None:
    with pytest.raises(ConfigError):
        MedianMAD(block=1)
    with pytest.raises(ConfigError):
        EWMA(half_life=0)
