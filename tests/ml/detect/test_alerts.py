"""Hysteresis alerts and ensembles."""

from __future__ import annotations

import numpy as np
import pytest

from tidal.errors import ConfigError, StateError
from tidal.ml.detect import Ensemble, HalfSpaceTrees, Hysteresis, MedianMAD, Seasonal


def _naive(dev: np.ndarray, keys: np.ndarray, on: float, off: float, quiet: int) -> np.ndarray:
    """One row at a time: the reference state machine."""
    active: dict[int, bool] = {}
    calm: dict[int, int] = {}
    alert = np.zeros(len(dev), dtype=bool)
    for i, (d, k) in enumerate(zip(dev.tolist(), keys.tolist(), strict=True)):
        was = active.get(k, False)
        c = calm.get(k, 0)
        c = c + 1 if (d != d or d < off) else 0
        now = True if d >= on else (False if c >= quiet else was)
        alert[i] = now and not was
        active[k], calm[k] = now, c
    return alert


@pytest.mark.parametrize("seed", range(5))
def test_hysteresis_equals_a_row_by_row_state_machine(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    dev = np.abs(rng.standard_t(2, n)) * 1.5
    dev[rng.random(n) < 0.02] = np.nan
    keys = rng.integers(0, 7, n)
    want = _naive(dev, keys, 5.0, 3.0, 4)
    h = Hysteresis(on=5.0, off=3.0, quiet=4)
    cuts = [0, *sorted(rng.choice(np.arange(1, n), 30, replace=False).tolist()), n]
    got = np.concatenate(
        [h.update(dev[a:b], keys[a:b])[0] for a, b in zip(cuts, cuts[1:], strict=False)]
    )
    np.testing.assert_array_equal(got, want)
    assert want.sum() > 5


def test_one_incident_one_alert() -> None:
    dev = np.r_[np.zeros(10), np.full(50, 9.0), np.zeros(40), np.full(3, 9.0)]
    alert, active = Hysteresis(on=5.0, off=3.0, quiet=16).update(dev, np.zeros(103, np.int64))
    assert np.flatnonzero(alert).tolist() == [10, 100]
    assert active[10:75].all() and not active[75:100].any()  # 16 quiet rows close it


def test_hysteresis_parameters() -> None:
    with pytest.raises(ConfigError):
        Hysteresis(on=2.0, off=3.0)


def test_ensemble_reports_the_member_that_fired_and_its_range() -> None:
    t = np.arange(2000)
    x = 10 + 3 * np.sin(2 * np.pi * t / 50) + np.random.default_rng(0).normal(0, 0.1, 2000)
    x[1500:1505] = x[1512:1517]  # normal values, a quarter of a period early
    ens = Ensemble([MedianMAD(), Seasonal()])
    out = ens.score(x[:, None], np.zeros(2000, dtype=np.int64))
    assert out.member is not None
    i = 1500 + int(np.argmax(out.deviation[1500:1505]))
    assert out.member[i] == 1 and out.deviation[i] > 4
    assert out.low[i] > x[i] or out.high[i] < x[i]


def test_mean_ensemble_is_the_mean_and_restores() -> None:
    x = np.random.default_rng(1).normal(size=(1200, 1))
    keys = np.zeros(1200, dtype=np.int64)
    a, b = HalfSpaceTrees(), MedianMAD()
    da, db = a.score(x, keys).deviation, b.score(x, keys).deviation
    ens = Ensemble([HalfSpaceTrees(), MedianMAD()], combine="mean")
    np.testing.assert_allclose(ens.score(x, keys).deviation, (da + db) / 2)
    with pytest.raises(StateError):
        Ensemble([MedianMAD()], combine="mean").restore(ens.snapshot())
