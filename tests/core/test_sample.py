"""Per-class resampling: rates, weights, batch independence, restarts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidal import Batch, ConfigError, Pipeline, PipelineError
from tidal.core.sample import Resample, uniform_hash
from tidal.errors import StateError
from tidal.testing import MemorySource, collect, run


def _labels(n: int = 20_000) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random(n) < 0.02).astype(np.int64)


def test_rates_and_inverse_probability_weights() -> None:
    y = _labels()
    op = Resample("r", by="y", rates={0: 0.05}, weights={1: 3.0})
    [(_, out)] = op.process(Batch({"y": y}), 0)
    kept0 = int((out["y"] == 0).sum())
    n0 = int((y == 0).sum())
    assert abs(kept0 / n0 - 0.05) < 0.01  # about 5% of the frequent class
    assert int((out["y"] == 1).sum()) == int(y.sum())  # the rare class is all kept
    np.testing.assert_array_equal(out["weight"][out["y"] == 0], 20.0)
    np.testing.assert_array_equal(out["weight"][out["y"] == 1], 3.0)
    # weighted counts estimate the full counts
    assert abs(out["weight"][out["y"] == 0].sum() / n0 - 1) < 0.2
    assert op.ctx.counters["r.dropped"] == len(y) - len(out)


def test_no_reweight_keeps_the_class_weights() -> None:
    op = Resample("r", by="y", rates={0: 0.5}, weights={0: 0.5, 1: 2.0}, reweight=False)
    [(_, out)] = op.process(Batch({"y": [0, 1] * 50}), 0)
    assert set(out["weight"].tolist()) == {0.5, 2.0}


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(1, 999), max_size=10), seed=st.integers(0, 2**31))
def test_batching_and_restarts_do_not_change_the_sample(cuts: list[int], seed: int) -> None:
    y = _labels(1_000)
    whole = Resample("r", by="y", rates={0: 0.3}, seed=seed)
    [(_, ref)] = whole.process(Batch({"y": y, "i": np.arange(1_000)}), 0)
    bounds = [0, *sorted(set(cuts)), 1_000]
    op = Resample("r", by="y", rates={0: 0.3}, seed=seed)
    got = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        fresh = Resample("r", by="y", rates={0: 0.3}, seed=seed)
        fresh.restore(op.snapshot())  # a restart at every batch boundary
        op = fresh
        for _, out in op.process(Batch({"y": y[a:b], "i": np.arange(a, b)}), 0):
            got += out["i"].tolist()
    assert got == ref["i"].tolist()


def test_in_a_pipeline_and_errors() -> None:
    p = Pipeline("r")
    s = p.source("in", MemorySource({"y": [0, 0, 1]}))
    out = collect(s.resample("r", by="y", rates={0: 1.0}))
    run(p)
    assert [r["weight"] for r in out.records()] == [1.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match="keep rate"):
        Resample("r", by="y", rates={0: 0.0})
    with pytest.raises(ConfigError, match="weight"):
        Resample("r", by="y", weights={0: -1.0})
    with pytest.raises(PipelineError, match="no class column"):
        Resample("r", by="y").process(Batch({"z": [1]}), 0)
    with pytest.raises(StateError, match="seed"):
        Resample("r", by="y", seed=2).restore(Resample("r", by="y", seed=1).snapshot())


def test_uniform_hash_is_uniform_and_seeded() -> None:
    u = uniform_hash(7, np.arange(200_000))
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert counts.min() > 19_000 and counts.max() < 21_000
    assert not np.array_equal(u[:100], uniform_hash(8, np.arange(100)))
