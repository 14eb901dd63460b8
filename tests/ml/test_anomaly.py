"""ZScoreDetector: per-record equivalence, detection, state, TTL and errors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidal import Pipeline
from tidal.core.batch import Batch
from tidal.core.watermark import MIN_TIME
from tidal.errors import ConfigError, PipelineError, StateError
from tidal.ml.anomaly import Detector, ZScoreDetector, occurrence_rank
from tidal.runtime.snapshot import decode, encode
from tidal.testing import MemorySource, collect, run

# -- a naive per-record reference ----------------------------------------------------------


@dataclass
class _KeyState:
    n: int = 0
    mean: float = 0.0
    var: float = 0.0
    last: int = MIN_TIME
    streak: int = 0


class Reference:
    """One record at a time, with Python floats: what the detector must equal exactly."""

    def __init__(
        self,
        *,
        alpha: float,
        threshold: float,
        warmup: int,
        patience: int | None,
        ttl_ms: int | None,
        min_std: float = 1e-9,
    ) -> None:
        self.alpha, self.threshold, self.warmup = alpha, threshold, warmup
        self.patience, self.ttl_ms, self.min_std = patience, ttl_ms, min_std
        self.state: dict[Any, _KeyState] = {}

    def step(self, key: Any, x: float, t: int, wm: int) -> tuple[float, bool]:
        s = self.state.setdefault(key, _KeyState())
        if self.ttl_ms is not None and s.last > MIN_TIME and s.last + self.ttl_ms <= wm:
            s.n, s.mean, s.var, s.last, s.streak = 0, 0.0, 0.0, MIN_TIME, 0
        s.last = max(s.last, t)
        if not math.isfinite(x):
            return math.nan, False
        std = max(math.sqrt(s.var), self.min_std)
        scored = s.n >= self.warmup
        z = (x - s.mean) / std if scored else 0.0
        bad = scored and abs(z) >= self.threshold
        s.streak = s.streak + 1 if bad else 0
        if bad and self.patience is not None and s.streak >= self.patience:
            s.n, s.mean, s.var, s.streak = 1, x, 0.0, 0
        elif not bad:
            w = max(self.alpha, 1.0 / (s.n + 1))
            d = x - s.mean
            incr = w * d
            s.mean, s.var, s.n = s.mean + incr, (1.0 - w) * (s.var + d * incr), s.n + 1
        return z, bad


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


# -- per-record equivalence across random batch splits ----------------------------------------

_values = st.one_of(
    st.floats(-50, 50, allow_nan=False),
    st.sampled_from([0.0, 1.0, 1e3, -1e3, math.nan]),
)


@st.composite
def streams(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 60))
    keys = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=n, max_size=n))
    values = draw(st.lists(_values, min_size=n, max_size=n))
    # coarse times, so that ttl boundaries (last + ttl == watermark) are hit often
    gaps = draw(st.lists(st.integers(0, 4).map(lambda g: g * 100), min_size=n, max_size=n))
    jitter = draw(st.lists(st.integers(0, 3).map(lambda j: j * 100), min_size=n, max_size=n))
    arrival = np.cumsum(gaps, dtype=np.int64)
    times = arrival - np.asarray(jitter, dtype=np.int64)
    wm = np.maximum.accumulate(np.concatenate(([-(2**40)], times[:-1] - 300)))[:n]
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=8))))
    params = {
        "alpha": draw(st.sampled_from([0.05, 0.3, 1.0])),
        "threshold": draw(st.sampled_from([1.0, 2.5, 4.0])),
        "warmup": draw(st.integers(1, 4)),
        "patience": draw(st.sampled_from([None, 1, 2, 3])),
        "ttl_ms": draw(st.sampled_from([None, 500, 2000])),
    }
    return {
        "keys": keys,
        "values": values,
        "times": times,
        "wm": wm.astype(np.int64),
        "cuts": cuts,
        "params": params,
    }


@settings(max_examples=150, deadline=None)
@given(streams())
def test_detector_equals_per_record_reference_for_any_batching(s: dict[str, Any]) -> None:
    p = s["params"]
    ttl = None if p["ttl_ms"] is None else f"{p['ttl_ms']}ms"
    det = ZScoreDetector(
        "z",
        key="k",
        value="v",
        alpha=p["alpha"],
        threshold=p["threshold"],
        warmup=p["warmup"],
        patience=p["patience"],
        ttl=ttl,
    )
    ref = Reference(**p)
    n = len(s["keys"])
    bounds = [0, *s["cuts"], n]
    scores: list[float] = []
    flags: list[bool] = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        batch = Batch(
            {
                "k": np.asarray(s["keys"][lo:hi], dtype=object),
                "v": np.asarray(s["values"][lo:hi], dtype=np.float64),
            },
            time=s["times"][lo:hi],
            wm=s["wm"][lo:hi],
        )
        out = det.detect(batch)
        scores += out["score"].tolist()
        flags += out["is_anomaly"].tolist()
        if hi > lo:  # the runtime advances the operator's watermark between batches
            det.on_watermark(int(s["wm"][hi - 1]))
    expected = [
        ref.step(k, v, int(t), int(w))
        for k, v, t, w in zip(s["keys"], s["values"], s["times"], s["wm"], strict=True)
    ]
    assert len(scores) == n
    for i, (z, bad) in enumerate(expected):
        assert _same(scores[i], z), (i, scores[i], z)
        assert flags[i] == bad, i


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=40))
def test_occurrence_rank_counts_earlier_rows_of_the_same_id(ids: list[int]) -> None:
    got = occurrence_rank(np.asarray(ids, dtype=np.int64)).tolist()
    assert got == [ids[:i].count(v) for i, v in enumerate(ids)]


# -- detection -----------------------------------------------------------------------------


def _noisy(keys: int, rows: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = np.tile(np.arange(keys), rows)
    level = rng.uniform(10, 30, keys)
    return k, level[k] + rng.normal(0, 1.0, len(k))


def test_injected_spikes_are_detected_with_few_false_alarms() -> None:
    keys, rows = 50, 400
    k, v = _noisy(keys, rows)
    rng = np.random.default_rng(7)
    spikes = rng.choice(np.arange(keys * 50, len(k)), size=40, replace=False)
    v[spikes] += rng.choice([-1.0, 1.0], size=40) * rng.uniform(8, 15, size=40)
    det = ZScoreDetector("z", key="k", value="v", threshold=5.0, warmup=20)
    out = det.detect(Batch({"k": k, "v": v}))
    flagged = set(np.flatnonzero(out["is_anomaly"]).tolist())
    assert set(spikes.tolist()) <= flagged
    assert len(flagged - set(spikes.tolist())) <= 3


def test_anomalies_are_not_learned() -> None:
    det = ZScoreDetector("z", key="k", value="v", warmup=5, threshold=4.0)
    det.detect(Batch({"k": [1] * 50, "v": np.tile([9.0, 11.0], 25)}))
    before = det.snapshot()
    out = det.detect(Batch({"k": [1], "v": [1000.0]}))
    assert out["is_anomaly"].tolist() == [True]
    after = det.snapshot()
    assert after["mean"].tolist() == before["mean"].tolist()
    assert after["var"].tolist() == before["var"].tolist()
    assert after["streak"].tolist() == [1]


def test_a_lasting_level_shift_is_accepted_after_patience() -> None:
    det = ZScoreDetector("z", key="k", value="v", warmup=5, patience=3)
    det.detect(Batch({"k": [1] * 40, "v": np.tile([9.0, 11.0], 20)}))
    shifted = det.detect(Batch({"k": [1] * 12, "v": np.tile([99.0, 101.0], 6)}))
    # three anomalies; the third restarts the baseline at the new level (its first row),
    # the next four rows warm it up, and the rows after are scored against the new level
    assert shifted["is_anomaly"].tolist() == [True] * 3 + [False] * 9
    assert shifted["score"].tolist()[3:7] == [0.0] * 4
    assert 0.0 < abs(shifted["score"][7]) < 2.0


def test_warmup_rows_score_zero_and_nonfinite_values_score_nan() -> None:
    det = ZScoreDetector("z", key="k", value="v", warmup=3)
    out = det.detect(Batch({"k": ["a"] * 5, "v": [1.0, np.nan, 2.0, 3.0, 2.0]}))
    assert out["score"].tolist()[:4] == [0.0, pytest.approx(math.nan, nan_ok=True), 0.0, 0.0]
    assert math.isnan(out["score"][1])
    assert out["score"][4] == pytest.approx(0.0)
    assert not out["is_anomaly"].any()


def test_input_columns_are_kept_and_not_mutated() -> None:
    values = np.array([1.0, 2.0, 3.0])
    batch = Batch({"k": ["a", "a", "b"], "v": values}, time=[1, 2, 3])
    out = ZScoreDetector("z", key="k", value="v").detect(batch)
    assert out.names == ["k", "v", "score", "is_anomaly"]
    assert batch.names == ["k", "v"]
    assert values.tolist() == [1.0, 2.0, 3.0]
    assert out.time is not None and out.time.tolist() == [1, 2, 3]


def test_custom_output_column_names() -> None:
    det = ZScoreDetector("z", key="k", value="v", score_column="z", anomaly_column="alert")
    assert det.detect(Batch({"k": [1], "v": [2.0]})).names == ["k", "v", "z", "alert"]


# -- state ---------------------------------------------------------------------------------


def test_snapshot_restore_round_trip_continues_identically() -> None:
    k, v = _noisy(20, 60, seed=3)
    v[700] += 50.0
    t = np.arange(len(k), dtype=np.int64)
    whole = ZScoreDetector("z", key="k", value="v", warmup=5, ttl="1h")
    expected = whole.detect(Batch({"k": k, "v": v}, time=t, wm=t - 1))

    first = ZScoreDetector("z", key="k", value="v", warmup=5, ttl="1h")
    a = first.detect(Batch({"k": k[:500], "v": v[:500]}, time=t[:500], wm=t[:500] - 1))
    snap = decode(encode({"op": first.snapshot()}))["op"]
    second = ZScoreDetector("z", key="k", value="v", warmup=5, ttl="1h")
    second.restore(snap)
    b = second.detect(Batch({"k": k[500:], "v": v[500:]}, time=t[500:], wm=t[500:] - 1))
    assert np.array_equal(np.concatenate((a["score"], b["score"])), expected["score"])
    assert np.array_equal(
        np.concatenate((a["is_anomaly"], b["is_anomaly"])), expected["is_anomaly"]
    )
    assert second.snapshot()["mean"].tolist() == whole.snapshot()["mean"].tolist()


def test_restore_refuses_other_parameters_or_foreign_state() -> None:
    det = ZScoreDetector("z", key="k", value="v", alpha=0.1)
    det.detect(Batch({"k": [1], "v": [1.0]}))
    with pytest.raises(StateError, match="alpha"):
        ZScoreDetector("z", key="k", value="v", alpha=0.2).restore(det.snapshot())
    with pytest.raises(StateError, match="not a ZScoreDetector"):
        ZScoreDetector("z", key="k", value="v").restore({"kind": "other"})


def test_ttl_forgets_idle_keys_and_releases_their_ids() -> None:
    det = ZScoreDetector("z", key="k", value="v", warmup=2, ttl="1s")
    det.detect(Batch({"k": ["a", "b"] * 3, "v": [1.0, 2.0] * 3}, time=[0] * 6, wm=[0] * 6))
    assert len(det.keys) == 2
    # "a" keeps reporting; "b" goes quiet
    det.detect(Batch({"k": ["a"], "v": [1.0]}, time=[900], wm=[800]))
    det.on_watermark(1500)
    assert len(det.keys) == 1
    assert det.ctx.counters == {"z.expired_keys": 1}
    out = det.detect(Batch({"k": ["b"], "v": [50.0]}, time=[1600], wm=[1500]))
    assert out["score"].tolist() == [0.0]  # "b" warms up again


def test_ttl_needs_event_time() -> None:
    det = ZScoreDetector("z", key="k", value="v", ttl="1s")
    with pytest.raises(PipelineError, match="event time"):
        det.detect(Batch({"k": [1], "v": [1.0]}))


# -- in a pipeline, and errors ---------------------------------------------------------------


def test_detector_in_a_pipeline() -> None:
    k, v = _noisy(5, 100, seed=11)
    v[-1] += 100.0
    p = Pipeline("detect")
    src = p.source("in", MemorySource({"k": k, "v": v, "ts": np.arange(len(k))}), time="ts")
    out = collect(src.key_by("k").apply(ZScoreDetector("z", key="k", value="v")))
    summary = run(p, max_batch=64)
    assert summary.counts["z.anomalies"] >= 1
    flagged = out.batch().filter(out.batch()["is_anomaly"])
    assert flagged["v"].tolist()[-1] == v[-1]


def test_detector_satisfies_the_protocol() -> None:
    assert isinstance(ZScoreDetector("z", key="k", value="v"), Detector)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"threshold": 0.0}, "threshold"),
        ({"warmup": 0}, "warmup"),
        ({"patience": 0}, "patience"),
        ({"min_std": 0.0}, "min_std"),
        ({"ttl": "soon"}, "duration"),
    ],
)
def test_bad_parameters(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ZScoreDetector("z", key="k", value="v", **kwargs)


def test_missing_or_non_numeric_columns() -> None:
    det = ZScoreDetector("z", key="k", value="v")
    with pytest.raises(PipelineError, match=r"columns \['v'\]"):
        det.detect(Batch({"k": [1]}))
    with pytest.raises(PipelineError, match="numeric"):
        det.detect(Batch({"k": [1], "v": ["x"]}))
