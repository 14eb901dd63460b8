"""The latency-SLO batcher, with an injected clock and a model whose cost is a + b*n."""

from __future__ import annotations

import numpy as np
import pytest

from tidal import Batch, ConfigError, Pipeline
from tidal.ml.batcher import LatencyBatcher, split_rows
from tidal.ml.handler import BaseHandler, Signature
from tidal.ml.predict import Predict
from tidal.testing import MemorySource, collect, run

BUDGET = 1e-3  # 1 ms


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class CostModel(BaseHandler):
    """Scoring ``n`` rows advances the clock by ``(a + b*n) * lognormal noise``."""

    def __init__(self, clock: FakeClock, a: float, b: float, sigma: float = 0.05) -> None:
        self.clock = clock
        self.a, self.b, self.sigma = a, b, sigma
        self.rng = np.random.default_rng(42)
        self.calls: list[tuple[int, float]] = []

    def load(self) -> None:
        pass

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        n = len(X)
        cost = (self.a + self.b * n) * float(np.exp(self.rng.normal(0.0, self.sigma)))
        self.clock.t += cost
        self.calls.append((n, cost))
        return {"y": X[:, 0] * 2}

    @property
    def signature(self) -> Signature:
        return Signature(n_features=1)


def _op(
    a: float, b: float, *, sigma: float = 0.05, max_batch: int | None = None
) -> tuple[Predict, CostModel]:
    clock = FakeClock()
    model = CostModel(clock, a, b, sigma)
    op = Predict("m", model, features=["x"], max_latency="1ms", max_batch=max_batch, clock=clock)
    op.open(op.ctx)
    return op, model


def _feed(op: Predict, batches: int, rows: int) -> None:
    for i in range(batches):
        x = np.arange(i * rows, (i + 1) * rows, dtype=np.float64)
        out = op.process(Batch({"x": x}), 0)[0][1]
        assert out["y"].tolist() == (x * 2).tolist()  # chunks are put back in order


def _event_p99(calls: list[tuple[int, float]]) -> float:
    sizes = np.array([n for n, _ in calls])
    costs = np.array([c for _, c in calls])
    order = np.argsort(costs)
    cum = np.cumsum(sizes[order]) / sizes.sum()
    return float(costs[order][np.searchsorted(cum, 0.99)])


def test_converges_to_the_largest_size_within_the_budget() -> None:
    a, b = 50e-6, 1e-6  # 50 us per call + 1 us per row: 950 rows fit in 1 ms
    op, model = _op(a, b)
    warm = len(model.calls)
    _feed(op, 200, 5_000)
    steady = model.calls[warm + 100 :]
    assert _event_p99(steady) <= BUDGET
    sizes = np.array([n for n, _ in steady])
    assert 0.75 * 950 <= np.median(sizes) <= 950
    rows_per_s = sizes.sum() / sum(c for _, c in steady)
    assert rows_per_s >= 0.9 * (950 / BUDGET)  # within 10 % of the best possible
    assert op.batcher is not None
    assert op.batcher.b == pytest.approx(b, rel=0.15)
    assert op.chosen_sizes()[-1] == sizes[-1]
    over = op.ctx.counters.get("m.over_budget", 0)
    assert over / op.ctx.counters["m.model_calls"] < 0.01


def test_adapts_when_the_model_gets_slower() -> None:
    op, model = _op(50e-6, 1e-6)
    _feed(op, 100, 5_000)
    before = np.median([n for n, _ in model.calls[-50:]])
    model.b *= 2  # a busier machine: each row now costs twice as much
    mark = len(model.calls)
    _feed(op, 100, 5_000)
    after = model.calls[mark:]
    assert sum(c > BUDGET for _, c in after[:10]) <= 5  # the change is seen within a batch
    settled = after[10:]
    assert _event_p99(settled) <= BUDGET
    assert sum(c > BUDGET for _, c in settled) / len(settled) < 0.01
    assert op.batcher is not None and op.batcher.changes >= 1
    assert np.median([n for n, _ in after[-50:]]) == pytest.approx(before / 2, rel=0.2)


def test_an_unreachable_budget_scores_one_row_per_call_and_counts_it() -> None:
    op, model = _op(2e-3, 1e-6, sigma=0.0)  # the fixed cost alone exceeds 1 ms
    _feed(op, 3, 10)
    assert op.chosen_sizes()[-10:] == [1] * 10
    assert op.ctx.counters["m.over_budget"] == op.ctx.counters["m.model_calls"] == 30
    assert op.stats()["target"] == 1


def test_max_batch_caps_the_chunks() -> None:
    op, _ = _op(10e-6, 0.1e-6, max_batch=300)  # the budget alone would allow ~9,900
    _feed(op, 20, 1_000)
    assert max(op.chosen_sizes()) <= 300
    assert op.chosen_sizes()[-4:] == [250, 250, 250, 250]


def test_growth_is_capped_by_what_was_measured() -> None:
    batcher = LatencyBatcher(BUDGET)
    for _ in range(3):
        batcher.record(10, 20e-6)
    batcher.record(20, 30e-6)
    assert batcher.target == 40  # the fit allows ~99 rows; never more than 2x the largest seen
    for n in (40, 80):
        batcher.record(n, 10e-6 + n * 1e-6)
    assert batcher.target <= 160


def test_constant_sizes_rescale_the_last_fit() -> None:
    batcher = LatencyBatcher(BUDGET, max_batch=1_000)
    for n in (1, 10, 100, 400) * 3:
        batcher.record(n, 100e-6 + n * 1e-6)
    assert batcher.target == 800  # the fit allows 900; growth caps it at 2 x 400
    for _ in range(300):  # the window fills with one size; the slope doubles
        batcher.record(400, 100e-6 + 400 * 2e-6)
    # one size cannot tell a from b: the last fit is scaled to the new cost
    assert batcher.predicted(400) == pytest.approx(900e-6, rel=0.01)
    assert batcher.a / batcher.b == pytest.approx(100, rel=0.01)
    assert batcher.target == pytest.approx(455, abs=3)
    assert batcher.changes == 1


def test_batcher_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="budget must be > 0"):
        LatencyBatcher(0.0)
    with pytest.raises(ConfigError, match="max_batch must be >= 1"):
        LatencyBatcher(1e-3, max_batch=0)
    with pytest.raises(ConfigError, match="quantile"):
        LatencyBatcher(1e-3, quantile=1.0)
    with pytest.raises(ConfigError, match="max_latency must be > 0"):
        Predict("m", CostModel(FakeClock(), 0, 0), features=["x"], max_latency="0ms")
    assert split_rows(7, 7) == [7] and split_rows(8, 7) == [4, 4]


def test_in_a_pipeline_with_an_injected_clock() -> None:
    clock = FakeClock()
    model = CostModel(clock, 50e-6, 1e-6)
    p = Pipeline("slo")
    x = np.arange(40_000, dtype=np.float64)
    src = p.source(
        "in", MemorySource([Batch({"x": x[i : i + 8_000]}) for i in range(0, 40_000, 8_000)])
    )
    op = Predict("m", model, features=["x"], max_latency="1ms", clock=clock)
    out = collect(src.apply(op))
    summary = run(p, max_batch=8_000)
    assert [r["y"] for r in out.records()] == (x * 2).tolist()
    assert summary.counts["m.model_calls"] == len(op.chosen_sizes())
    assert summary.counts["m.model_calls"] >= 40_000 // 950
    stats = op.stats()
    assert stats["budget_ms"] == 1.0 and 0 < stats["target"] <= 950


def test_stream_predict_with_a_real_clock_runs() -> None:
    class Echo(BaseHandler):
        def load(self) -> None:
            pass

        def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
            return {"y": X[:, 0]}

    p = Pipeline("real")
    src = p.source("in", MemorySource({"x": np.arange(5_000, dtype=np.float64)}))
    out = collect(src.predict("m", Echo(), features=["x"], max_latency="2ms", max_batch=512))
    run(p, max_batch=5_000)
    assert len(out.records()) == 5_000


def test_a_low_rate_keeps_the_slope_and_a_burst_ramps_up_fast() -> None:
    op, model = _op(50e-6, 1e-6)
    model.sigma = 0.3  # a noisy machine from now on
    assert op.batcher is not None
    rng = np.random.default_rng(0)
    for _ in range(600):  # 1 to 3 events per batch, noisy: a line through them is noise
        op.process(Batch({"x": np.zeros(int(rng.integers(1, 4)))}), 0)
    assert op.batcher.b == pytest.approx(1e-6, rel=0.5)
    mark = len(model.calls)
    _feed(op, 1, 20_000)  # a burst
    sizes = [n for n, _ in model.calls[mark:]]
    best = (BUDGET / np.exp(2.326 * 0.3) - 50e-6) / 1e-6  # ~450 rows at this noise
    ramp = next(i for i, n in enumerate(sizes) if n >= 0.6 * best)
    assert ramp <= 8 and sum(sizes[:ramp]) < 1_000
