"""Content features for cold start: new items and users served from their features."""

from __future__ import annotations

import numpy as np
import pytest

from tidal.errors import ConfigError
from tidal.ml.reco import OnlineMF
from tidal.runtime.snapshot import decode, encode

GROUPS, ITEMS, USERS = 5, 200, 300


def _world(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Items in 5 categories (category 0 popular with everybody), users in 5 groups that
    each like their own category more; features: a noisy one-hot of the category / group."""
    rng = np.random.default_rng(seed)
    cat, grp = np.arange(ITEMS) % GROUPS, np.arange(USERS) % GROUPS
    fi = np.eye(GROUPS)[cat] + rng.normal(0, 0.1, (ITEMS, GROUPS))
    fu = np.eye(GROUPS)[grp] + rng.normal(0, 0.1, (USERS, GROUPS))
    n = 20_000
    u = rng.integers(0, USERS, n)
    liked = np.where(rng.random(n) < 0.3, 0, grp[u])  # 30% popular category, else own taste
    i = liked + GROUPS * rng.integers(0, ITEMS // GROUPS, n)
    return u, i, fi, fu, grp


def _model() -> OnlineMF:
    return OnlineMF(factors=8, feedback="implicit", lr=0.1, reg=0.0, negatives=4, seed=0,
                    item_features=GROUPS, user_features=GROUPS)  # fmt: skip


def _trained() -> tuple[OnlineMF, np.ndarray, np.ndarray]:
    u, i, fi, fu, grp = _world()
    mf = _model()
    mf.add_items(np.arange(ITEMS), fi)
    mf.add_users(np.arange(USERS), fu)
    for _ in range(2):  # two passes: the tastes are learned, not only the biases
        for a in range(0, len(u), 2000):
            mf.learn(u[a : a + 2000], i[a : a + 2000])
    return mf, fi, grp


def test_a_new_item_like_the_popular_ones_ranks_above_a_random_one() -> None:
    mf, _, grp = _trained()
    rng = np.random.default_rng(1)
    like_popular = np.eye(GROUPS)[0] + rng.normal(0, 0.1, GROUPS)
    unlike = rng.normal(0, 0.5, GROUPS)  # a random feature vector
    mf.add_items(np.array([1000, 1001]), np.array([like_popular, unlike]))
    users = np.arange(USERS)
    scores = mf.predict(np.repeat(users, 2), np.tile([1000, 1001], USERS)).reshape(-1, 2)
    assert (scores[:, 0] > scores[:, 1]).mean() > 0.9
    # and it is served to the users who like that category, with no interaction yet
    tops = mf.recommend_many(users, 20)[0]
    assert (tops[grp == 0] == 1000).any(axis=1).mean() > 0.5
    assert (tops == 1001).any(axis=1).mean() < 0.2


def test_without_features_a_new_item_is_not_recommended() -> None:
    mf, _, _ = _trained()
    mf.add_items(np.array([1000]))  # random initial factors, zero bias
    tops = mf.recommend_many(np.arange(USERS), 20)[0]
    assert (tops == 1000).any(axis=1).mean() < 0.2


def test_a_new_user_gets_the_taste_of_users_with_similar_features() -> None:
    mf, _, _ = _trained()
    rng = np.random.default_rng(2)
    for g in range(1, GROUPS):
        x = np.eye(GROUPS)[g] + rng.normal(0, 0.1, GROUPS)
        items = [it for it, _ in mf.recommend(f"new-{g}", 10, features=x)]
        own = np.mean([it % GROUPS == g for it in items])
        popular_only = [it for it, _ in mf.recommend(f"new-{g}", 10)]  # no features: popularity
        assert own >= 0.5, (g, items)
        assert own > np.mean([it % GROUPS == g for it in popular_only])
        mf.add_users(np.array([f"stored-{g}"]), x[None, :])  # stored features serve alike
        stored = [it for it, _ in mf.recommend(f"stored-{g}", 10)]  # + its initial noise
        assert np.mean([it % GROUPS == g for it in stored]) >= 0.5, (g, stored)


def test_features_are_checkpointed_as_arrays_and_restore_the_same_answers() -> None:
    mf, _, _ = _trained()
    mf.add_items(np.array([1000]), np.ones((1, GROUPS)))
    snap = mf.snapshot()
    assert isinstance(snap["item_features"]["X"], np.ndarray)
    again = _model()
    again.restore(decode(encode(snap)))
    users = np.arange(USERS)
    np.testing.assert_array_equal(
        mf.recommend_many(users, 10)[1], again.recommend_many(users, 10)[1]
    )
    u = np.array([1, 2, 3])
    mf.learn(u, np.array([1000, 1000, 5]))
    again.learn(u, np.array([1000, 1000, 5]))
    n = mf.items.capacity
    np.testing.assert_array_equal(mf.Q[:n], again.Q[:n])


def test_bad_features_are_refused_with_a_clear_error() -> None:
    mf = OnlineMF(factors=2, feedback="implicit", item_features=3)
    with pytest.raises(ConfigError, match="item_features must be 2 rows of 3 numbers"):
        mf.add_items(np.array([1, 2]), np.ones((2, 4)))
    with pytest.raises(ConfigError, match="finite"):
        mf.add_items(np.array([1]), np.array([[1.0, np.nan, 0.0]]))
    with pytest.raises(ConfigError, match="no user_features"):
        mf.add_users(np.array([1]), np.ones((1, 3)))


def test_the_step_stores_feature_columns_and_serves_new_users_from_them() -> None:
    from tidal.core.batch import Batch
    from tidal.errors import PipelineError
    from tidal.ml.reco import RecommendStep

    u, i, fi, fu, grp = _world()
    step = RecommendStep("shop", user="u", item="i", k=10, item_features=["a", "b", "c", "d", "e"],
                         user_features=["g0", "g1", "g2", "g3", "g4"], factors=8, lr=0.1,
                         reg=0.0)  # fmt: skip
    for _ in range(2):
        for a in range(0, len(u), 2000):
            cols = {"u": u[a : a + 2000], "i": i[a : a + 2000]}
            cols |= {c: fi[i[a : a + 2000], k] for k, c in enumerate("abcde")}
            cols |= {f"g{k}": fu[u[a : a + 2000], k] for k in range(GROUPS)}
            out = step.process(Batch(cols), 0)[0][1]
    assert step.model.ifeat is not None and step.model.ifeat.has[: step.model.n_items].all()
    assert len(out["reco_rank"]) == 2000
    ask = {"u": np.array([9001, 9002])} | {f"g{k}": np.eye(GROUPS)[[2, 3], k] for k in range(5)}
    items = step.process(Batch(ask), 1)[0][1]["items"].tolist()
    assert np.mean([it % GROUPS == 2 for it in items[0]]) >= 0.5
    assert np.mean([it % GROUPS == 3 for it in items[1]]) >= 0.5
    with pytest.raises(PipelineError, match=r"feature columns \['g0', .*\] are missing"):
        step.process(Batch({"u": np.array([1]), "i": np.array([2])}), 0)
    with pytest.raises(ConfigError, match="needs a model built with item_features=2"):
        RecommendStep("x", OnlineMF(feedback="implicit"), item_features=["a", "b"])
