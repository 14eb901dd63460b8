"""GatedZ (the demo's detector, in the suite) and DetectStep's key TTL."""

from __future__ import annotations

import numpy as np
import pytest

from tidal.core.batch import Batch
from tidal.core.operator import Context
from tidal.errors import ConfigError
from tidal.ml.anomaly import ZScoreDetector
from tidal.ml.detect import DetectStep, GatedZ, HalfSpaceTrees, MedianMAD


def _series(seed: int = 1, n: int = 3000, keys: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = rng.integers(0, keys, n)
    x = rng.normal(0, 1, n) + k
    x[rng.choice(n, 40, replace=False)] += rng.choice([-8.0, 9.0], 40)
    x[2000:2100] += 6.0  # a lasting fault: gated, then accepted after `patience`
    return x, k


def test_gated_z_equals_the_per_row_definition() -> None:
    """Against the z-score operator it replaces in the demo, row by row."""
    x, k = _series()
    old = ZScoreDetector("z", key="k", value="v", alpha=0.1, threshold=4.0, warmup=5, patience=8)
    new = GatedZ(alpha=0.1, warmup=5, gate=4.0, patience=8)
    got, want = [], []
    for a in range(0, len(x), 257):  # batch boundaries must not matter either
        b = slice(a, a + 257)
        want.append(old.detect(Batch({"k": k[b], "v": x[b]}))["score"])
        got.append(new.score(x[b, None], k[b]).deviation)
    np.testing.assert_allclose(np.concatenate(got), np.abs(np.concatenate(want)), rtol=1e-12)


def test_gated_z_does_not_learn_what_it_flags() -> None:
    x = np.r_[np.zeros(50) + np.tile([-1.0, 1.0], 25), [20.0, 20.0], [1.0]]
    out = GatedZ(alpha=0.5, warmup=5, gate=4.0, patience=None).score(x[:, None], np.zeros(53, int))
    assert out.deviation[50] > 4 and out.deviation[51] > 4  # the second spike is not absorbed
    assert out.deviation[52] < 2


def _step(ttl: str | None, detector: object | None = None) -> DetectStep:
    step = DetectStep("d", detector or GatedZ(warmup=3), value="v", key="k", ttl=ttl)
    step.open(Context())
    return step


def _batch(keys: list[str], values: list[float], t: int) -> Batch:
    n = len(keys)
    return Batch({"k": keys, "v": values}, time=[t] * n, wm=[t] * n)


def test_ttl_forgets_idle_keys_and_reuses_their_ids() -> None:
    step = _step("10s")
    step.detect(_batch(["a", "b"] * 5, [1.0, 2.0, 1.1, 2.1, 0.9, 1.9, 1.0, 2.0, 1.0, 2.0], 0))
    assert len(step.keys) == 2
    step.detect(_batch(["b"], [2.0], 9_000))
    step.on_watermark(10_000)  # a idle for 10 s: gone; b seen at 9 s: kept
    assert len(step.keys) == 1 and step.ctx.counters["d.expired_keys"] == 1
    again = step.detect(_batch(["a", "c"], [50.0, 3.0], 11_000))
    assert again["deviation"].tolist()[0] == 0.0  # a warms up again: no alert on 50
    assert step.keys.capacity == 3  # one id reused (released by a), one new


def test_ttl_state_is_in_the_snapshot() -> None:
    step = _step("10s")
    step.detect(_batch(["a", "b"], [1.0, 2.0], 5_000))
    other = _step("10s")
    other.restore(step.snapshot())
    other.on_watermark(15_000)
    assert len(other.keys) == 0


def test_ttl_needs_a_detector_that_can_forget_a_key() -> None:
    with pytest.raises(ConfigError, match="cannot forget"):
        _step("10s", HalfSpaceTrees())
    _step("10s", MedianMAD())  # the block baselines can
