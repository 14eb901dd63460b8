"""Online matrix factorization: recovery of a planted low-rank model, serving, eviction, state."""

from __future__ import annotations

import numpy as np
import pytest

from tidal.core.batch import Batch
from tidal.errors import ConfigError, PipelineError, StateError
from tidal.ml.reco import OnlineMF, RecommendStep, ndcg_at
from tidal.pipeline import Pipeline
from tidal.runtime.executor import Executor
from tidal.runtime.snapshot import decode, encode
from tidal.testing import MemorySource, collect

NOISE = 0.5


def _low_rank(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    users, items, f = 300, 200, 4
    p, q = rng.normal(0, 1, (users, f)), rng.normal(0, 1, (items, f))
    bu, bi = rng.normal(0, 0.5, users), rng.normal(0, 0.5, items)
    u, i = rng.integers(0, users, n), rng.integers(0, items, n)
    r = 3.0 + bu[u] + bi[i] + (p[u] * q[i]).sum(1) + rng.normal(0, NOISE, n)
    return u, i, r


def test_recovers_held_out_ratings_near_the_noise_floor() -> None:
    u, i, r = _low_rank(66_000)
    train, test = slice(0, 60_000), slice(60_000, None)
    mf = OnlineMF(factors=8, lr=0.01, reg=0.02, seed=0)
    for _ in range(3):  # three passes over the stream
        for a in range(0, 60_000, 1000):
            mf.learn(u[train][a : a + 1000], i[train][a : a + 1000], r[train][a : a + 1000])
    rmse = float(np.sqrt(np.mean((mf.predict(u[test], i[test]) - r[test]) ** 2)))
    bias_only = float(np.std(r[test]))
    assert rmse < 1.2 * NOISE, rmse  # the noise floor is 0.5
    assert rmse < 0.35 * bias_only


def test_repeated_pairs_in_a_batch_get_every_step() -> None:
    models = [
        OnlineMF(factors=2, feedback="implicit", negatives=0, seed=1, update="batch")
        for _ in range(3)
    ]
    for m in models:
        m.learn(np.array([0, 1]), np.array([5, 6]))
    start_p, start_b = models[0].P[0].copy(), models[0].bi[0]
    models[1].learn(np.array([0]), np.array([5]))
    models[2].learn(np.array([0, 0]), np.array([5, 5]))
    # both rows' gradients (taken at the batch's start) are applied: twice the step
    np.testing.assert_allclose(models[2].P[0] - start_p, 2 * (models[1].P[0] - start_p))
    assert models[2].bi[0] - start_b == pytest.approx(2 * (models[1].bi[0] - start_b))


def test_a_keys_summed_steps_are_capped_per_batch() -> None:
    models = [
        OnlineMF(factors=2, feedback="implicit", negatives=0, max_steps=2, seed=1, update="batch")
        for _ in range(2)
    ]
    for m in models:
        m.learn(np.array([0, 1]), np.array([5, 6]))
    start = models[0].bi[0]
    models[0].learn(np.array([0, 0]), np.array([5, 5]))
    models[1].learn(np.array([0, 0, 0, 0]), np.array([5, 5, 5, 5]))  # 4 rows, at most 2 steps
    assert models[1].bi[0] - start == pytest.approx(models[0].bi[0] - start)


def test_recommend_excludes_seen_and_serves_cold_users_by_decayed_popularity() -> None:
    mf = OnlineMF(factors=4, feedback="implicit", half_life=10.0, seed=0)
    # item "old" is popular early, item "new" a little later but more recently
    mf.learn(np.array(["a", "b", "c", "d"]), np.array(["old"] * 4), times=np.zeros(4))
    mf.learn(np.array(["a", "b"]), np.array(["new"] * 2), times=np.full(2, 40.0))
    cold = [item for item, _ in mf.recommend("stranger", 5)]
    assert cold == ["new", "old"]  # 2 recent views beat 4 views 4 half-lives ago
    assert [item for item, _ in mf.recommend("a", 5)] == []  # "a" has seen both
    assert [item for item, _ in mf.recommend("c", 5)] == ["new"]
    items, scores = mf.recommend_many(np.array(["c", "zz"], dtype=object), 3)
    assert items.tolist() == [["new", None, None], ["new", "old", None]]
    assert np.isnan(scores[0, 1])


def test_planted_tastes_are_learned_from_implicit_feedback() -> None:
    rng = np.random.default_rng(3)
    users, items = np.arange(200), np.arange(400)
    group_u, group_i = users % 2, items % 2
    n = 20_000
    u = rng.integers(0, 200, n)
    i = rng.integers(0, 200, n) * 2 + group_u[u]  # users only take items of their group
    mf = OnlineMF(factors=4, feedback="implicit", lr=0.2, negatives=4, seed=0)
    for a in range(0, n, 500):
        mf.learn(u[a : a + 500], i[a : a + 500])
    top, _ = mf.recommend_many(users, 10)
    picked = np.array([[x for x in row if x is not None] for row in top.tolist()])
    agree = (group_i[picked.astype(int)] == group_u[:, None]).mean()
    assert agree > 0.9, agree


def test_keys_are_capped_and_the_least_recently_seen_are_evicted() -> None:
    mf = OnlineMF(factors=2, feedback="implicit", max_users=3, max_items=4, seed=0)
    for t, user in enumerate(["u1", "u2", "u3", "u4", "u5"]):
        mf.learn(np.array([user]), np.array([f"i{t}"]), times=np.array([float(t)]))
    assert mf.n_users == 3 and mf.n_items == 4
    assert mf.users.lookup(np.array(["u1", "u2", "u5"], dtype=object)).tolist()[:2] == [-1, -1]
    assert mf.items.lookup(np.array(["i0"], dtype=object)).tolist() == [-1]
    assert len(mf.seen) == 3  # the evicted users' seen items are gone too
    mf.learn(np.array(["u1"]), np.array(["i9"]), times=np.array([9.0]))  # returns, cold
    assert mf.n_users == 3 and mf.users.lookup(np.array(["u3"], dtype=object)).tolist() == [-1]


def _interactions(n: int, seed: int = 5, users: int = 60) -> list[Batch]:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, n)
    i = np.minimum(rng.zipf(1.5, n), 20) * 2 + u % 2  # two tastes, skewed popularity
    r = rng.normal(3, 1, n)
    t = np.arange(n, dtype=np.int64) * 10
    cuts = [slice(a, a + 97) for a in range(0, n, 97)]
    return [Batch({"user": u[c], "item": i[c], "rating": r[c], "ts": t[c]}) for c in cuts]


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
@pytest.mark.parametrize("feedback", ["explicit", "implicit"])
def test_snapshot_mid_stream_then_restore_gives_identical_state(
    feedback: str, optimizer: str
) -> None:
    batches = _interactions(2000)
    opts = {"factors": 3, "feedback": feedback, "max_users": 40, "max_items": 25, "seed": 2,
            "optimizer": optimizer}  # fmt: skip
    whole = OnlineMF(**opts)  # type: ignore[arg-type]
    for b in batches:
        whole.learn(b["user"], b["item"], b["rating"], b["ts"])
    first = OnlineMF(**opts)  # type: ignore[arg-type]
    for b in batches[:10]:
        first.learn(b["user"], b["item"], b["rating"], b["ts"])
    second = OnlineMF(**opts)  # type: ignore[arg-type]
    second.restore(decode(encode(first.snapshot())))
    for b in batches[10:]:
        second.learn(b["user"], b["item"], b["rating"], b["ts"])
    np.testing.assert_array_equal(second.P[: len(whole.bu)], whole.P[: len(second.bu)])
    np.testing.assert_array_equal(second.GQ[: len(whole.bi)], whole.GQ[: len(second.bi)])
    np.testing.assert_array_equal(second.seen, whole.seen)
    users = np.arange(60)
    assert second.recommend_many(users, 5)[0].tolist() == whole.recommend_many(users, 5)[0].tolist()
    with pytest.raises(StateError, match="parameters"):
        OnlineMF(factors=4).restore(first.snapshot())


def _shop(batches: list[Batch]) -> tuple[Pipeline, object, object]:
    p = Pipeline("shop")
    views = p.source("views", MemorySource(batches), time="ts")
    asks = p.source("asks", MemorySource({"user": np.arange(6)}))
    learned = views.recommend("reco", queries=asks, k=5, factors=3, lr=0.2)
    return p, collect(learned), collect(learned.side("recommendations"))


def test_pipeline_step_learns_serves_and_restores_mid_run() -> None:
    batches = _interactions(3000, users=300)
    whole, out, answers = _shop(batches)
    Executor(whole, max_wait="0ms", handle_signals=False).run()
    rows = out.records()  # type: ignore[attr-defined]
    assert len(rows) == 3000 and len(answers) == 6  # type: ignore[arg-type]
    ranks = np.array([r["reco_rank"] for r in rows])
    assert (ranks[-1000:] >= 0).mean() > 0.05  # quality: test_planted_tastes_are_learned
    assert 0 < ndcg_at(ranks[-1000:]) <= 1
    p1, out1, _ = _shop(batches)
    ex = Executor(p1, max_wait="0ms", handle_signals=False)
    ex.open()
    for _ in range(7):
        assert ex.step()
    snap = decode(encode(ex.snapshot()))
    p2, out2, _ = _shop(batches)
    Executor(p2, max_wait="0ms", handle_signals=False).run(snapshot=snap)
    got = [r["reco_rank"] for r in out1.records() + out2.records()]  # type: ignore[attr-defined]
    assert got == [r["reco_rank"] for r in rows]


def test_bad_configuration_and_input() -> None:
    with pytest.raises(ConfigError, match="explicit"):
        RecommendStep("r", OnlineMF())
    with pytest.raises(ConfigError, match="factors"):
        OnlineMF(factors=0)
    step = RecommendStep("r", rating="stars")
    with pytest.raises(PipelineError, match="'stars' is missing"):
        step.learn(Batch({"user": [1], "item": [2]}))
    with pytest.raises(PipelineError, match="numeric"):
        step.learn(Batch({"user": [1], "item": [2], "stars": ["five"]}))
    with pytest.raises(ConfigError, match="finite"):
        OnlineMF().learn(np.array([1]), np.array([1]), np.array([np.nan]))
