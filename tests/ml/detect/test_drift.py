"""Drift detectors: hand-computed cases, plain-Python references, documented rates, the step.

The documented figures (``docs/decisions/0022-drift-detectors.md``, README) are checked
here on seeded data: at most 1 false alarm per 10,000 stationary values for every detector
(Gaussian, Bernoulli and uniform streams), and a one-sigma mean shift found within 200
values (ADWIN, Page-Hinkley, CUSUM) or within 1,000 (PSI, which tests windows of 500).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ks_2samp

from tidal import Pipeline
from tidal.core.batch import Array, Batch
from tidal.errors import ConfigError, PipelineError, StateError
from tidal.ml.detect import ADWIN, CUSUM, KSWIN, PSI, DriftStep, PageHinkley, make_drift
from tidal.ml.detect.changepoint import GRID
from tidal.runtime.executor import Executor
from tidal.runtime.snapshot import decode, encode
from tidal.testing import MemorySource, collect, run

FAST = settings(max_examples=30, deadline=None)


def one(n: int) -> Array:
    return np.zeros(n, dtype=np.int64)


# -- hand-computed -----------------------------------------------------------------------
def test_cusum_by_hand() -> None:
    # warm-up [-1, 0, 1]: mean 0, sample sigma 1; then z = 1, 1, 1, 2 with k = 0.5
    x = np.array([-1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 5.0])
    out = CUSUM(warmup=3, delta=0.5, threshold=2.0).update(x, one(8))
    np.testing.assert_array_equal(out.score[3:7], [0.25, 0.5, 0.75, 1.5])
    assert np.isnan(out.score[:3]).all() and np.isnan(out.score[7])  # reset: a new warm-up
    assert np.flatnonzero(out.drift).tolist() == [6]


def test_page_hinkley_by_hand() -> None:
    # running mean after the warm-up: (0 + 1) / 4 = 0.25, then (0 + 1 + 2) / 5 = 0.6
    x = np.array([-1.0, 0.0, 1.0, 1.0, 2.0])
    out = PageHinkley(warmup=3, delta=0.25, threshold=1.5).update(x, one(5))
    s1 = round(0.5 * GRID) / GRID
    s2 = s1 + round(1.15 * GRID) / GRID
    np.testing.assert_allclose(out.score[3:], [s1 / 1.5, s2 / 1.5], rtol=1e-12)
    assert np.flatnonzero(out.drift).tolist() == [4]


def test_psi_by_hand() -> None:
    # reference 0..9 in 5 bins of two values each; the window [0, 0, 0, 0, 9] vs q = 0.2 each
    x = np.r_[np.arange(10.0), [0.0, 0.0, 0.0, 0.0, 9.0]]
    out = PSI(reference=10, window=5, bins=5, threshold=1.0, eps=1e-4).update(x, one(15))
    p = np.array([0.8, 0.0, 0.0, 0.0, 0.2])
    want = float(((p - 0.2) * np.log((p + 1e-4) / (0.2 + 1e-4))).sum())
    assert out.score[14] == pytest.approx(want, rel=1e-12)
    assert np.isnan(out.score[:14]).all()
    assert out.drift.tolist() == [False] * 14 + [want > 1.0]


def test_kswin_counts_the_new_values_above_the_old() -> None:
    # the window holds 0..6 repeated; once the k new 50s dominate, D = k/30; D_crit is 17/30
    x = np.r_[np.arange(100.0) % 7, np.full(40, 50.0)]
    det = KSWIN(window=100, stat_size=30)
    assert det.d_crit == pytest.approx(17 / 30)
    out = det.update(x, one(140))
    np.testing.assert_allclose(out.score[104:117], np.arange(5, 18) / 17)
    assert np.flatnonzero(out.drift).tolist() == [116]


# -- against plain-Python references -----------------------------------------------------
def naive_charts(x: list[float], warmup: int, delta: float, h: float, running: bool) -> list[int]:
    """Per-row Page-Hinkley / CUSUM in warm-up sigmas; returns the drift rows."""
    drifts, buf, up, dn, total = [], [], 0.0, 0.0, 0.0
    mu = sigma = 0.0
    for i, v in enumerate(x):
        if len(buf) < warmup:
            buf.append(v)
            total += v
            if len(buf) == warmup:
                mu = sum(buf) / warmup
                sigma = math.sqrt(sum((b - mu) ** 2 for b in buf) / (warmup - 1))
            continue
        buf.append(v)
        total += v
        ref = total / len(buf) if running else mu
        z = (v - ref) / sigma
        up = max(0.0, up + round((z - delta) * GRID) / GRID)
        dn = max(0.0, dn + round((-z - delta) * GRID) / GRID)
        if max(up, dn) > h:
            drifts.append(i)
            buf, up, dn, total = [], 0.0, 0.0, 0.0
    return drifts


@FAST
@given(seed=st.integers(0, 10_000), shift=st.sampled_from([0.0, 0.7, 2.0]), running=st.booleans())
def test_charts_match_the_per_row_reference(seed: int, shift: float, running: bool) -> None:
    rng = np.random.default_rng(seed)
    x = np.r_[rng.normal(0, 1, 300), rng.normal(shift, 1, 300)]
    det = PageHinkley(warmup=20, threshold=6.0) if running else CUSUM(warmup=20, threshold=6.0)
    got = np.flatnonzero(det.update(x, one(600)).drift).tolist()
    assert got == naive_charts(x.tolist(), 20, det.delta, 6.0, running)


def naive_adwin(x: list[float], det: ADWIN) -> list[int]:
    """Block ADWIN one block at a time in plain Python; returns the drift rows."""
    blocks: list[tuple[float, float, float]] = []
    cuts = det.cuts.tolist()
    drifts = []

    def positive(bl: list[tuple[float, float, float]]) -> list[int]:
        n = sum(b[0] for b in bl)
        s1 = sum(b[1] for b in bl)
        s2 = sum(b[2] for b in bl)
        var = max(s2 / n - (s1 / n) ** 2, 0.0)
        dd = math.log(2 * math.log(max(n, 3.0)) / det.delta)
        out = []
        for d in cuts:
            if d >= len(bl):
                continue
            new = bl[len(bl) - d :]
            n1, t1 = sum(b[0] for b in new), sum(b[1] for b in new)
            n0, t0 = n - n1, s1 - t1
            m = 1 / n0 + 1 / n1
            eps = math.sqrt(2 * m * var * dd) + 2 / 3 * dd * m
            if abs(t0 / n0 - t1 / n1) / eps >= 1.0:
                out.append(d)
        return out

    x0 = x[0]
    for i in range(0, len(x) - det.clock + 1, det.clock):
        seg = [v - x0 for v in x[i : i + det.clock]]
        blocks.append((float(len(seg)), sum(seg), sum(v * v for v in seg)))
        blocks = blocks[-det.max_blocks :]
        if positive(blocks):
            drifts.append(i + det.clock - 1)
            while len(blocks) > 1 and (pos := positive(blocks)):
                blocks = blocks[len(blocks) - max(pos) :]
    return drifts


@FAST
@given(seed=st.integers(0, 10_000), shift=st.sampled_from([0.0, 0.5, 3.0]), p=st.booleans())
def test_adwin_matches_the_block_reference(seed: int, shift: float, p: bool) -> None:
    rng = np.random.default_rng(seed)
    if p:  # an error stream: 0/1 with the error rate rising
        x = np.r_[rng.random(800) < 0.2, rng.random(800) < 0.2 + shift / 6].astype(float)
    else:
        x = np.r_[rng.normal(0, 1, 800), rng.normal(shift, 1, 800)]
    det = ADWIN(clock=8, max_blocks=64)
    got = np.flatnonzero(det.update(x, one(1600)).drift).tolist()
    assert got == naive_adwin(x.tolist(), ADWIN(clock=8, max_blocks=64))


@FAST
@given(seed=st.integers(0, 10_000), shift=st.sampled_from([0.0, 1.0, 3.0]))
def test_kswin_agrees_with_scipy(seed: int, shift: float) -> None:
    rng = np.random.default_rng(seed)
    x = np.r_[rng.normal(0, 1, 150), rng.normal(shift, 1, 100)]
    det = KSWIN(alpha=0.01, window=60, stat_size=20, seed=seed)
    out = det.update(x, one(250))
    ref = KSWIN(alpha=0.01, window=60, stat_size=20, seed=seed)
    win: list[float] = []
    tests = 0
    for i, v in enumerate(x):
        win = [*win, v][-60:]
        if len(win) < 60:
            continue
        older = np.asarray(win[:40])[ref.draws[tests % len(ref.draws)]]
        res = ks_2samp(older, win[-20:], method="exact")
        tests += 1
        assert out.score[i] == pytest.approx(res.statistic / ref.d_crit, abs=1e-12)
        assert bool(out.drift[i]) == bool(res.pvalue <= 0.01 + 1e-12), i
        if out.drift[i]:
            win = win[-20:]


# -- documented rates --------------------------------------------------------------------
STATIONARY = {
    "gauss": lambda rng, n: rng.normal(3.0, 2.0, n),
    "bernoulli": lambda rng, n: (rng.random(n) < 0.15).astype(float),
    "uniform": lambda rng, n: rng.random(n),
}


@pytest.mark.parametrize("name", ["adwin", "ph", "cusum", "kswin", "psi"])
@pytest.mark.parametrize("kind", sorted(STATIONARY))
def test_false_alarms_stay_under_the_documented_rate(name: str, kind: str) -> None:
    n = 100_000
    rng = np.random.default_rng(7)
    x = STATIONARY[kind](rng, n)
    out = make_drift(name).update(x, one(n))
    assert out.drift.sum() <= n / 10_000, f"{out.drift.sum()} false alarms in {n}"


@pytest.mark.parametrize(
    ("name", "within"), [("adwin", 200), ("ph", 200), ("cusum", 200), ("psi", 1000)]
)
def test_a_planted_one_sigma_shift_is_found_within_the_documented_delay(
    name: str, within: int
) -> None:
    delays = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        x = np.r_[rng.normal(0, 1, 4000), rng.normal(1, 1, 2000)]
        out = make_drift(name).update(x, one(6000))
        after = np.flatnonzero(out.drift[4000:])
        delays.append(int(after[0]) if len(after) else 10**9)
    assert max(delays) <= within, delays


def test_per_key_state_is_separate() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 3000)
    b = np.r_[rng.normal(10, 1, 1500), rng.normal(12, 1, 1500)]
    x = np.empty(6000)
    x[0::2], x[1::2] = a, b
    keys = np.tile([0, 1], 3000)
    out = CUSUM().update(x, keys)
    alone = CUSUM().update(b, one(3000))
    np.testing.assert_array_equal(out.drift[1::2], alone.drift)
    assert not out.drift[0::2].any()


def test_bad_parameters_raise() -> None:
    for bad in (
        lambda: ADWIN(delta=0),
        lambda: KSWIN(window=40, stat_size=30),
        lambda: PSI(reference=5, bins=10),
        lambda: CUSUM(warmup=1),
        lambda: PageHinkley(threshold=0),
    ):
        with pytest.raises(ConfigError):
            bad()
    with pytest.raises(ConfigError, match="unknown drift detector 'nope'"):
        make_drift("nope")


# -- the step ----------------------------------------------------------------------------
def _drifting(size: int, n: int = 4000) -> list[Batch]:
    rng = np.random.default_rng(1)
    err = np.r_[rng.random(n // 2) < 0.1, rng.random(n // 2) < 0.4].astype(float)
    err[7] = np.nan
    sensor = np.tile(np.array(["a", "b"], dtype=object), n // 2)
    return [
        Batch({"err": err[i : i + size], "sensor": sensor[i : i + size]}) for i in range(0, n, size)
    ]


def test_step_in_a_pipeline_with_keys_counts_and_events() -> None:
    p = Pipeline("d")
    src = p.source("in", MemorySource(_drifting(300)))
    checked = src.key_by("sensor").drift("err_drift", "adwin", column="err")
    main, events = collect(checked), collect(checked.side("events"))
    summary = run(p)
    rows = main.records()
    assert len(rows) == 4000 and {"drift", "drift_score"} <= set(rows[0])
    ev = events.records()
    assert summary.counts["err_drift.drifts"] == len(ev) == sum(r["drift"] for r in rows) >= 2
    assert summary.counts["err_drift.missing"] == 1 and rows[7]["drift"] is False
    assert {r["sensor"] for r in ev} == {"a", "b"}
    assert all(r["detector"] == "adwin" and r["column"] == "err" for r in ev)
    assert all(r["drift_score"] >= 1 for r in ev)


def test_step_restart_from_a_checkpoint_gives_the_same_output() -> None:
    def fresh() -> tuple[Pipeline, object, object]:
        p = Pipeline("d")
        src = p.source("in", MemorySource(_drifting(250)))
        checked = src.key_by("sensor").drift("err_drift", "ph", column="err")
        return p, collect(checked), collect(checked.side("events"))

    p0, main0, ev0 = fresh()
    run(p0)
    p1, main1, ev1 = fresh()
    ex = Executor(p1, max_wait="0ms", handle_signals=False)
    ex.open()
    for _ in range(7):
        ex.step()
    snap = decode(encode(ex.snapshot()))
    p2, main2, ev2 = fresh()
    Executor(p2, max_wait="0ms", handle_signals=False).run(snapshot=snap)
    got = main1.records() + main2.records()  # type: ignore[attr-defined]
    want = main0.records()  # type: ignore[attr-defined]
    assert [r["drift"] for r in got] == [r["drift"] for r in want]
    assert len(ev1.records()) + len(ev2.records()) == len(ev0.records())  # type: ignore[attr-defined]


def test_step_errors() -> None:
    step = DriftStep("d", "adwin", column="v")
    with pytest.raises(PipelineError, match="columns \\['v'\\] are needed"):
        step.process(Batch({"w": [1.0]}), 0)
    with pytest.raises(PipelineError, match="must be numeric"):
        step.process(Batch({"v": np.array(["x"], dtype=object)}), 0)
    snap = step.snapshot()
    with pytest.raises(StateError, match="rename the step"):
        DriftStep("d", "ph", column="v").restore(snap)
    with pytest.raises(ConfigError):
        DriftStep("d", "adwin", column="")
