"""Contextual bandits: LinUCB against a per-sample reference, regret, OPE, Q-learning, the step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tidal.core.batch import Batch
from tidal.errors import ConfigError, PipelineError
from tidal.ml.bandits import (
    DecideStep,
    EpsilonGreedy,
    LinearQ,
    LinearThompson,
    LinUCB,
    TabularQ,
    evaluate,
)
from tidal.pipeline import Pipeline
from tidal.testing import MemorySource, collect, run


class ReferenceLinUCB:
    """Li et al. (2010), Algorithm 1, one sample at a time, written plainly."""

    def __init__(self, n_arms: int, d: int, alpha: float) -> None:
        self.A = [np.eye(d) for _ in range(n_arms)]
        self.b = [np.zeros(d) for _ in range(n_arms)]
        self.alpha = alpha

    def scores(self, x: np.ndarray) -> list[float]:
        out = []
        for A, b in zip(self.A, self.b, strict=True):
            A_inv = np.linalg.inv(A)
            theta = A_inv @ b
            out.append(float(theta @ x + self.alpha * np.sqrt(x @ A_inv @ x)))
        return out

    def choose(self, x: np.ndarray) -> int:
        return int(np.argmax(self.scores(x)))

    def update(self, x: np.ndarray, a: int, r: float) -> None:
        self.A[a] += np.outer(x, x)
        self.b[a] += r * x


def _problem(seed: int, n: int, arms: int = 4, d: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Contexts and the expected reward of every arm (linear in the context)."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, 1, (arms, d))
    x = rng.normal(0, 1, (n, d)) / np.sqrt(d)
    return x, x @ theta.T


def test_linucb_matches_the_per_sample_reference_to_1e_9() -> None:
    x, means = _problem(0, 600)
    rng = np.random.default_rng(1)
    ref, ours = ReferenceLinUCB(4, 5, alpha=0.7), LinUCB(n_arms=4, n_features=5, alpha=0.7)
    for t in range(300):  # one decision at a time: the same choices
        a_ref, a_ours = ref.choose(x[t]), int(ours.choose(x[t : t + 1]).actions[0])
        assert a_ref == a_ours
        np.testing.assert_allclose(ours.ucb(x[t : t + 1])[0], ref.scores(x[t]), atol=1e-9)
        r = means[t, a_ref] + rng.normal(0, 0.1)
        ref.update(x[t], a_ref, r)
        ours.update(x[t : t + 1], np.array([a_ref]), np.array([r]))
    actions, rewards = [], []
    for t in range(300, 600):  # the reference's sequence, fed to ours in batches of 7
        a = ref.choose(x[t])
        actions.append(a)
        rewards.append(means[t, a] + rng.normal(0, 0.1))
        ref.update(x[t], a, rewards[-1])
    for s in range(300, 600, 7):
        e = min(600, s + 7)
        part = slice(s - 300, e - 300)
        ours.update(x[s:e], np.array(actions[part]), np.array(rewards[part]))
    probe = np.random.default_rng(2).normal(0, 1, (50, 5))
    want = np.array([ref.scores(p) for p in probe])
    np.testing.assert_allclose(ours.ucb(probe), want, atol=1e-9, rtol=0)


def _regret(policy: Any, seed: int, n: int = 4000, batch: int = 20) -> np.ndarray:
    x, means = _problem(seed, n)
    rng = np.random.default_rng(seed + 100)
    regret = np.zeros(n)
    for s in range(0, n, batch):
        d = policy.choose(x[s : s + batch])
        m = means[s : s + batch]
        rows = np.arange(len(m))
        regret[s : s + batch] = m.max(axis=1) - m[rows, d.actions]
        policy.update(x[s : s + batch], d.actions, m[rows, d.actions] + rng.normal(0, 0.3, len(m)))
    return np.cumsum(regret)


@pytest.mark.parametrize(
    ("make", "sublinear"),
    [
        (lambda: LinUCB(n_arms=4, n_features=5, alpha=0.5), True),
        (lambda: LinearThompson(n_arms=4, n_features=5, v=0.3, seed=3), True),
        # constant exploration costs a constant regret per step: linear, but far below random
        (lambda: EpsilonGreedy(n_arms=4, n_features=5, epsilon=0.05, seed=3), False),
    ],
    ids=["linucb", "thompson", "epsilon_greedy"],
)
def test_regret_against_the_best_policy(make: Any, sublinear: bool) -> None:
    for seed in (0, 1):
        curve = _regret(make(), seed)
        random_curve = _regret(EpsilonGreedy(n_arms=4, n_features=5, epsilon=1.0), seed)
        first, second = curve[1999], curve[-1] - curve[1999]
        if sublinear:
            assert second < 0.5 * first  # the regret of the second half is much smaller
        assert curve[-1] < 0.2 * random_curve[-1]
    linucb = _regret(LinUCB(n_arms=4, n_features=5, alpha=0.5), 0)[-1]
    eps = _regret(EpsilonGreedy(n_arms=4, n_features=5, epsilon=0.05, seed=3), 0)[-1]
    assert linucb < eps


def test_propensities() -> None:
    x, _ = _problem(4, 2000)
    eg = EpsilonGreedy(n_arms=4, n_features=5, epsilon=0.2, seed=0)
    d = eg.choose(x)
    greedy = eg.probabilities(x).argmax(axis=1)
    assert set(np.round(d.propensity, 6)) == {0.05, 0.85}
    assert np.all(np.isclose(d.propensity, 0.85) == (d.actions == greedy))
    ts = LinearThompson(n_arms=4, n_features=5, seed=0)
    ts.update(x[:200], np.arange(200) % 4, x[:200, 0])
    d = ts.choose(x[:500])
    assert np.all((d.propensity > 0) & (d.propensity <= 1))
    np.testing.assert_allclose(ts.probabilities(x[:5]).sum(axis=1), 1.0)


def test_off_policy_estimates_bracket_the_value_of_a_policy_also_run_online() -> None:
    x, means = _problem(7, 30_000)
    rng = np.random.default_rng(8)
    target = LinUCB(n_arms=4, n_features=5, alpha=0.0)  # greedy after a short training
    a0 = rng.integers(0, 4, 300)
    target.update(x[:300], a0, means[np.arange(300), a0] + rng.normal(0, 0.3, 300))
    logger = EpsilonGreedy(n_arms=4, n_features=5, epsilon=0.5, seed=9)
    logger.update(x[:300], a0[::-1], means[np.arange(300), a0[::-1]])
    logs, online = slice(300, 15_300), slice(15_300, 30_000)
    d = logger.choose(x[logs])
    rows = np.arange(15_000)
    rewards = means[logs][rows, d.actions] + rng.normal(0, 0.3, 15_000)
    # the truth: the target policy run online on fresh contexts from the same distribution
    played = target.choose(x[online]).actions
    got = means[online][np.arange(len(played)), played] + rng.normal(0, 0.3, len(played))
    truth, truth_se = float(got.mean()), float(got.std() / np.sqrt(len(got)))
    est = evaluate(x[logs], d.actions, rewards, d.propensity, target.probabilities(x[logs]))
    for name, e in est.items():
        # the 95% interval of the difference of two independent estimates brackets zero
        assert abs(e.value - truth) <= 1.96 * np.hypot(e.stderr, truth_se), (name, e, truth)
        assert e.high - e.low < 0.2
    assert est["dr"].stderr <= est["ips"].stderr


def test_tabular_q_learns_to_raise_the_price_when_stock_is_scarce() -> None:
    # states: stock level 0..4; actions: low/high price; selling at low price empties faster
    q = TabularQ(n_states=5, n_actions=2, lr=0.2, gamma=0.9, epsilon=0.2, seed=0)
    rng = np.random.default_rng(0)
    s = rng.integers(1, 5, 64)
    for _ in range(400):
        d = q.choose(s[:, None].astype(float))
        sold = np.where(d.actions == 0, rng.random(64) < 0.9, rng.random(64) < 0.4)
        r = sold * np.where(d.actions == 0, 1.0, 2.0)
        s2 = s - sold
        done = s2 == 0
        q.update(s[:, None], d.actions, r, s2[:, None], done)
        s = np.where(done, rng.integers(1, 5, 64), s2)
    assert (q.Q[1:].argmax(axis=1) == 1).all()  # the high price pays at every stock level


def test_linear_q_on_a_contextual_problem_beats_random() -> None:
    x, means = _problem(11, 6000, arms=3, d=4)
    q = LinearQ(n_features=4, n_actions=3, lr=0.1, gamma=0.0, epsilon=0.1, seed=0)
    got = []
    for s in range(0, 6000, 50):
        d = q.choose(x[s : s + 50])
        r = means[s : s + 50][np.arange(50), d.actions]
        got.append(r.mean())
        q.update(x[s : s + 50], d.actions, r, x[s : s + 50], np.ones(50, bool))
    assert np.mean(got[-40:]) > np.mean(means.mean(axis=1)) + 0.2


def test_decide_step_in_a_pipeline_with_rewards_joined_by_decision_id() -> None:
    x, means = _problem(3, 400, arms=3, d=2)
    # run 1: decide, and log the decisions
    p1 = Pipeline("offers")
    ctx = p1.source("ctx", MemorySource({"f0": x[:, 0], "f1": x[:, 1], "ts": np.arange(400) * 10}),
                    time="ts")  # fmt: skip
    logged = collect(ctx.decide("offer", "linucb", features=["f0", "f1"], n_arms=3))
    run(p1)
    dec = logged.batch()
    assert dec["decision_id"].tolist() == list(range(400))
    assert (dec["propensity"] == 1.0).all()
    # run 2: the rewards arrive later on their own stream, joined to the log by decision id
    rewards = means[np.arange(400), dec["action"]]
    p2 = Pipeline("learn")
    cols = ("decision_id", "f0", "f1", "action", "ts")
    log = p2.source("log", MemorySource({k: dec[k] for k in cols}), time="ts")
    late = p2.source("rewards", MemorySource({"decision_id": dec["decision_id"], "reward": rewards,
                                              "at": dec["ts"] + 2500}), time="at")  # fmt: skip
    joined = log.key_by("decision_id").interval_join("rewarded", late.key_by("decision_id"),
                                                      between=("0s", "5s"))  # fmt: skip
    more = p2.source("ctx", MemorySource({"f0": x[:5, 0], "f1": x[:5, 1]}))
    step = DecideStep("offer", "linucb", features=["f0", "f1"], n_arms=3)
    collect(more.apply(step, joined))
    summary = run(p2)
    assert summary.counts["offer.rewards"] == 400
    assert int(step.policy.plays.sum()) == 400


def test_bad_configuration_and_feedback() -> None:
    with pytest.raises(ConfigError, match="n_arms"):
        DecideStep("d", "linucb", features=["x"])
    with pytest.raises(ConfigError, match="unknown policy"):
        DecideStep("d", "nope", features=["x"], n_arms=2)
    with pytest.raises(ConfigError, match="arm labels"):
        DecideStep("d", "linucb", features=["x"], n_arms=2, arms=["a"])
    step = DecideStep("d", "linucb", features=["x"], n_arms=2)
    with pytest.raises(PipelineError, match="actions must be in"):
        step.learn(Batch({"x": [1.0], "action": [5], "reward": [1.0]}))
    with pytest.raises(PipelineError, match="missing"):
        step.decide(Batch({"y": [1.0]}))
    with pytest.raises(ConfigError, match="missing or infinite"):
        LinUCB(n_arms=2, n_features=1).choose(np.array([[np.nan]]))
