"""LatencyHistogram counts a batch the same whatever its size and dtype."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tidal.observe.metrics import LatencyHistogram


def naive(values: list[float]) -> list[int]:
    """The bucket of each value, one by one: floor(log2(max(v, 1)) * 32), in 0..2047."""
    return [min(2047, max(0, math.floor(math.log2(max(float(v), 1.0)) * 32))) for v in values]


@pytest.mark.parametrize("n", [1, 50, 511, 512, 3000])
def test_small_and_large_batches_count_alike(n: int) -> None:
    rng = np.random.default_rng(n)
    for values in (
        rng.integers(-5, 2**63 - 1, n),
        rng.integers(0, 10**8, n),
        rng.normal(1e6, 1e6, n),
        np.full(n, 1e40),
        np.full(n, 2**64 - 1, dtype=np.uint64),
    ):
        h = LatencyHistogram()
        h.record(values)
        want = np.bincount(naive(values.tolist()), minlength=2048)
        assert h.counts.tolist() == want.tolist(), values.dtype
        assert h.total == n and h.max_ns == int(values.max())
