"""The detectors' fast paths give the same numbers as the plain ones they replace."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tidal.ml.detect.baseline import _median_cols, _sorting_network
from tidal.ml.detect.trees import HalfSpaceTrees


@pytest.mark.parametrize("n", range(1, 15))
def test_sorting_network_sorts_every_zero_one_row(n: int) -> None:
    # the 0-1 principle: a network that sorts every 0/1 row sorts every row
    rows = np.array(list(itertools.product([0.0, 1.0], repeat=n)))
    cols = [rows[:, j] for j in range(n)]
    for i, j in _sorting_network(n):
        assert i < j < n
        cols[i], cols[j] = np.minimum(cols[i], cols[j]), np.maximum(cols[i], cols[j])
    np.testing.assert_array_equal(np.stack(cols, axis=1), np.sort(rows, axis=1))


@pytest.mark.parametrize("k", [2, 3, 7, 8, 16, 17, 32])
def test_network_median_equals_sorted_median_bit_for_bit(k: int) -> None:
    rng = np.random.default_rng(k)
    a = np.concatenate([rng.normal(size=(400, k)), rng.integers(-3, 3, (400, k)) * 0.5])
    a[0] = 7.25  # a constant row
    net, plain = _median_cols(a), _median_cols(a, network=False)
    assert net.tobytes() == plain.tobytes()
    np.testing.assert_array_equal(plain, np.median(a, axis=1))


def test_long_rows_use_sort() -> None:
    a = np.random.default_rng(0).normal(size=(50, 33))
    np.testing.assert_array_equal(_median_cols(a), np.median(a, axis=1))


def test_hst_leaves_by_tree_is_the_transpose() -> None:
    h = HalfSpaceTrees(trees=5, depth=4, seed=2)
    u = np.random.default_rng(3).uniform(-0.5, 1.5, size=(300, 2))
    np.testing.assert_array_equal(h._leaves_by_tree(u), h._leaves(u).T)  # noqa: SLF001


def test_hst_one_key_and_many_keys_agree() -> None:
    # the one-key path (scaling broadcast, prefix slices) and the keyed path (gathers)
    rng = np.random.default_rng(4)
    x = (np.sin(np.arange(3000) / 9.0) + rng.normal(0, 0.1, 3000))[:, None]
    one = HalfSpaceTrees(seed=1, window=64)
    two = HalfSpaceTrees(seed=1, window=64)
    keys = np.zeros(3000, dtype=np.int64)
    other = rng.normal(size=(3000, 1))
    for i in range(0, 3000, 700):
        a = one.score(x[i : i + 700], keys[i : i + 700]).deviation
        xx = np.concatenate([x[i : i + 700], other[i : i + 700]])
        kk = np.r_[keys[i : i + 700], np.ones(len(keys[i : i + 700]), dtype=np.int64)]
        b = two.score(xx, kk).deviation[: len(a)]
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["median_mad", "rolling_z", "ewma"])
def test_block_windows_one_key_view_and_keyed_gather_agree(kind: str) -> None:
    from tidal.ml.detect.baseline import EWMA, MedianMAD, RollingZ

    make = {"median_mad": MedianMAD, "rolling_z": RollingZ, "ewma": EWMA}[kind]
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 1))
    x[[900, 1500]] += 9.0
    one, two = make(block=4, blocks=5), make(block=4, blocks=5)
    for i in range(0, 2000, 333):
        xs = x[i : i + 333]
        a = one.score(xs, np.zeros(len(xs), dtype=np.int64))
        kk = np.r_[np.zeros(len(xs), np.int64), np.ones(len(xs), np.int64)]
        b = two.score(np.concatenate([xs, xs[::-1]]), kk)
        for f in ("deviation", "low", "high"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f)[: len(xs)])


@pytest.mark.parametrize("kind", ["median_mad", "rolling_z", "ewma"])
def test_block_detectors_computing_only_their_statistics_agree_with_all(kind: str) -> None:
    from tidal.ml.detect.baseline import EWMA, BlockWindow, MedianMAD, RollingZ

    make = {"median_mad": MedianMAD, "rolling_z": RollingZ, "ewma": EWMA}[kind]
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3000, 1)) * (1 + np.arange(3000)[:, None] % 3)
    keys = rng.integers(0, 5, 3000)
    lean, full = make(block=4, blocks=6), make(block=4, blocks=6)
    full.win = BlockWindow(4, 6)  # every statistic, as before decision 0053
    assert lean.win.stats != full.win.stats
    for i in range(0, 3000, 401):
        a = lean.score(x[i : i + 401], keys[i : i + 401])
        b = full.score(x[i : i + 401], keys[i : i + 401])
        for f in ("deviation", "low", "high"):
            assert getattr(a, f).tobytes() == getattr(b, f).tobytes()


@pytest.mark.parametrize("high", [3, 300, 70_000, 5_000_000_000])
def test_stable_order_is_a_stable_argsort(high: int) -> None:
    from tidal.ml.detect.base import _stable_order

    rng = np.random.default_rng(high % 1000)
    keys = rng.integers(0, high, 5000)
    np.testing.assert_array_equal(_stable_order(keys), np.argsort(keys, kind="stable"))
    signed = keys - high // 2
    np.testing.assert_array_equal(_stable_order(signed), np.argsort(signed, kind="stable"))
