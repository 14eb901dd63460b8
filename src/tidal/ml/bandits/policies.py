"""Contextual bandits over linear arms: epsilon-greedy, LinUCB, linear Thompson sampling.

Each of ``n_arms`` arms has a ridge-regression model of its reward given the context
features ``x`` (disjoint arms, Li et al. 2010): ``A_k = I * ridge + sum x x^T`` and
``b_k = sum r x`` over the rows where arm ``k`` was played, ``theta_k = A_k^-1 b_k``.

Decisions are vectorized per batch: :meth:`choose` picks an arm for every row of a batch
from the state in force at the batch's start, and returns each choice's *propensity* (the
probability the policy had of choosing it) for off-policy evaluation; :meth:`update` folds
in the rewards of decisions (joined back by decision id, in any order and any batching:
the sums are order-free). :meth:`probabilities` gives the whole action distribution, for
evaluating a policy on logs it did not make (:mod:`tidal.ml.bandits.ope`).

================  ===============================================  =====================
policy            choice                                            propensity
================  ===============================================  =====================
epsilon-greedy    best ``x . theta_k``, or uniform with ``epsilon``  exact
LinUCB            best ``x . theta_k + alpha sqrt(x^T A_k^-1 x)``   1 (deterministic)
Thompson          best draw of ``N(x . theta_k, v^2 x^T A_k^-1 x)``  Monte Carlo estimate
================  ===============================================  =====================

Ties go to the lowest arm. Randomness comes from the policy's seeded generator, whose
state is in :meth:`snapshot`.

Example:
    >>> import numpy as np
    >>> p = LinUCB(n_arms=2, n_features=2, alpha=0.5)
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> p.update(X, np.array([0, 1]), np.array([1.0, 0.0]))
    >>> d = p.choose(X)
    >>> d.actions.tolist(), d.propensity.tolist()
    ([0, 0], [1.0, 1.0])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError, StateError
from tidal.ml.rngstate import rng_state, set_rng_state

__all__ = ["Decisions", "EpsilonGreedy", "LinUCB", "LinearPolicy", "LinearThompson"]


@dataclass(frozen=True)
class Decisions:
    """What :meth:`LinearPolicy.choose` returns, one entry per context row.

    Attributes:
        actions: the chosen arm (int64).
        propensity: the probability the policy had of choosing it.
        scores: the score of every arm (rows x arms) the choice maximized.
    """

    actions: Array
    propensity: Array
    scores: Array


class LinearPolicy:
    """Base of the linear-arm policies: the per-arm ridge state, updates and snapshots.

    Args:
        n_arms: number of arms (actions ``0 .. n_arms - 1``).
        n_features: context features per row.
        ridge: the prior precision (``A_k`` starts as ``ridge * I``).
        seed: seed of the policy's random generator.
    """

    kind = "linear"

    def __init__(self, *, n_arms: int, n_features: int, ridge: float = 1.0, seed: int = 0) -> None:
        if n_arms < 1 or n_features < 1 or ridge <= 0:
            msg = (
                f"{type(self).__name__} needs n_arms >= 1, n_features >= 1 and ridge > 0; "
                f"got {n_arms=}, {n_features=}, {ridge=}"
            )
            raise ConfigError(msg)
        self.n_arms, self.n_features, self.ridge, self.seed = n_arms, n_features, ridge, seed
        self.A = np.repeat(np.eye(n_features)[None] * ridge, n_arms, axis=0)
        self.b = np.zeros((n_arms, n_features))
        self.A_inv = np.repeat(np.eye(n_features)[None] / ridge, n_arms, axis=0)
        self.theta = np.zeros((n_arms, n_features))
        self.plays = np.zeros(n_arms, np.int64)
        self.rng = np.random.default_rng(seed)

    def params(self) -> dict[str, Any]:
        """The constructor's parameters (checked on restore)."""
        return {"n_arms": self.n_arms, "n_features": self.n_features, "ridge": self.ridge,
                "seed": self.seed}  # fmt: skip

    def check(self, X: Array) -> Array:
        """``X`` as a float64 (rows x ``n_features``) array.

        Raises:
            ConfigError: for another shape or non-finite values.
        """
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            msg = f"{self.kind}: contexts must be rows x {self.n_features} features, got {x.shape}"
            raise ConfigError(msg)
        if not np.isfinite(x).all():
            row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            msg = f"{self.kind}: context row {row} has a missing or infinite feature"
            raise ConfigError(msg)
        return x

    def update(self, X: Array, actions: Array, rewards: Array) -> None:
        """Fold in the rewards of played arms (the order of rows does not matter).

        Raises:
            ConfigError: for arms out of range, lengths that differ or non-finite rewards.
        """
        x = self.check(X)
        a = np.asarray(actions, dtype=np.int64)
        r = np.asarray(rewards, dtype=np.float64)
        if len(a) != len(x) or len(r) != len(x):
            msg = f"{self.kind}: {len(x)} contexts, {len(a)} actions, {len(r)} rewards"
            raise ConfigError(msg)
        if len(a) and (a.min() < 0 or a.max() >= self.n_arms):
            msg = f"{self.kind}: actions must be in [0, {self.n_arms}), got {a.min()}..{a.max()}"
            raise ConfigError(msg)
        if not np.isfinite(r).all():
            msg = f"{self.kind}: rewards must be finite numbers"
            raise ConfigError(msg)
        for k in np.flatnonzero(np.bincount(a, minlength=self.n_arms)).tolist():
            m = a == k
            xk = x[m]
            self.A[k] += xk.T @ xk
            self.b[k] += xk.T @ r[m]
            self.A_inv[k] = np.linalg.inv(self.A[k])
            self.theta[k] = self.A_inv[k] @ self.b[k]
            self.plays[k] += int(m.sum())

    def _means(self, x: Array) -> Array:
        out: Array = x @ self.theta.T
        return out

    def _widths(self, x: Array) -> Array:
        """``sqrt(x^T A_k^-1 x)`` per row and arm."""
        xa = np.matmul(x[None, :, :], self.A_inv)  # arms x rows x features, batched BLAS
        q = (xa * x[None, :, :]).sum(axis=2).T
        out: Array = np.sqrt(np.maximum(q, 0.0))
        return out

    def choose(self, X: Array) -> Decisions:  # pragma: no cover - every policy overrides
        """An arm for every row of ``X``, with its propensity."""
        raise NotImplementedError

    def probabilities(self, X: Array) -> Array:  # pragma: no cover - every policy overrides
        """The policy's probability of each arm per row (rows x arms), from the current state."""
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any]:
        """Per-arm sums, inverses, weights and the generator's state (arrays + JSON)."""
        return {
            "kind": self.kind, "params": self.params(), "A": self.A.copy(), "b": self.b.copy(),
            "A_inv": self.A_inv.copy(), "theta": self.theta.copy(),
            "plays": self.plays.copy(), "rng": rng_state(self.rng),
        }  # fmt: skip

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`.

        Raises:
            StateError: if the snapshot is of another policy or other parameters.
        """
        if snap.get("kind") != self.kind or snap.get("params") != self.params():
            msg = (
                f"the snapshot is of {snap.get('kind')} with {snap.get('params')}, this policy "
                f"is {self.kind} with {self.params()}"
            )
            raise StateError(msg)
        k, d = self.n_arms, self.n_features
        self.A = np.asarray(snap["A"], np.float64).reshape(k, d, d).copy()
        self.b = np.asarray(snap["b"], np.float64).reshape(k, d).copy()
        self.plays = np.asarray(snap["plays"], np.int64).copy()
        self.A_inv = np.asarray(snap["A_inv"], np.float64).reshape(k, d, d).copy()
        self.theta = np.asarray(snap["theta"], np.float64).reshape(k, d).copy()
        set_rng_state(self.rng, snap["rng"])


def _argmax(scores: Array) -> Array:
    out: Array = np.argmax(scores, axis=1).astype(np.int64)
    return out


class EpsilonGreedy(LinearPolicy):
    """Play the best predicted arm, or with probability ``epsilon`` a uniformly random one.

    Example:
        >>> import numpy as np
        >>> p = EpsilonGreedy(n_arms=4, n_features=1, epsilon=0.2, seed=1)
        >>> p.probabilities(np.ones((1, 1))).round(2).tolist()
        [[0.85, 0.05, 0.05, 0.05]]
    """

    kind = "epsilon_greedy"

    def __init__(self, *, epsilon: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= epsilon <= 1.0:
            msg = f"epsilon must be in [0, 1], got {epsilon}"
            raise ConfigError(msg)
        self.epsilon = epsilon

    def params(self) -> dict[str, Any]:
        """The constructor's parameters."""
        return {**super().params(), "epsilon": self.epsilon}

    def choose(self, X: Array) -> Decisions:
        """Greedy arm per row, replaced by a random arm with probability ``epsilon``."""
        x = self.check(X)
        scores = self._means(x)
        greedy = _argmax(scores)
        explore = self.rng.random(len(x)) < self.epsilon
        random_arm = self.rng.integers(0, self.n_arms, len(x))
        actions = np.where(explore, random_arm, greedy)
        base = self.epsilon / self.n_arms
        prop = np.where(actions == greedy, 1.0 - self.epsilon + base, base)
        return Decisions(actions, prop, scores)

    def probabilities(self, X: Array) -> Array:
        """``epsilon / K`` everywhere, plus ``1 - epsilon`` on the greedy arm."""
        x = self.check(X)
        p = np.full((len(x), self.n_arms), self.epsilon / self.n_arms)
        p[np.arange(len(x)), _argmax(self._means(x))] += 1.0 - self.epsilon
        return p


class LinUCB(LinearPolicy):
    """Play the arm with the highest upper confidence bound (disjoint LinUCB).

    Args:
        alpha: width of the confidence bound.
        kwargs: see :class:`LinearPolicy`.
    """

    kind = "linucb"

    def __init__(self, *, alpha: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if alpha < 0:
            msg = f"alpha must be >= 0, got {alpha}"
            raise ConfigError(msg)
        self.alpha = alpha

    def params(self) -> dict[str, Any]:
        """The constructor's parameters."""
        return {**super().params(), "alpha": self.alpha}

    def ucb(self, X: Array) -> Array:
        """``x . theta_k + alpha * sqrt(x^T A_k^-1 x)`` per row and arm."""
        x = self.check(X)
        out: Array = self._means(x) + self.alpha * self._widths(x)
        return out

    def choose(self, X: Array) -> Decisions:
        """The arm of the highest bound per row (propensity 1: the choice is deterministic)."""
        scores = self.ucb(X)
        actions = _argmax(scores)
        return Decisions(actions, np.ones(len(actions), dtype=np.float64), scores)

    def probabilities(self, X: Array) -> Array:
        """One-hot on the chosen arm."""
        p = np.zeros((len(X), self.n_arms))
        p[np.arange(len(X)), _argmax(self.ucb(X))] = 1.0
        return p


class LinearThompson(LinearPolicy):
    """Linear Thompson sampling: play the best of one posterior draw per arm.

    Arm ``k``'s sampled score for context ``x`` is ``x . theta~_k`` with ``theta~_k`` drawn
    from ``N(theta_k, v^2 A_k^-1)``: exactly ``N(x . theta_k, v^2 x^T A_k^-1 x)``, drawn as
    one normal per row and arm. The propensity is estimated from ``draws`` more draws.

    Args:
        v: posterior scale.
        draws: Monte Carlo draws for propensities.
        kwargs: see :class:`LinearPolicy`.
    """

    kind = "thompson"

    def __init__(self, *, v: float = 0.5, draws: int = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if v < 0 or draws < 1:
            msg = f"v must be >= 0 and draws >= 1, got {v=}, {draws=}"
            raise ConfigError(msg)
        self.v, self.draws = v, draws

    def params(self) -> dict[str, Any]:
        """The constructor's parameters."""
        return {**super().params(), "v": self.v, "draws": self.draws}

    def _draw(self, mean: Array, sd: Array, times: int) -> Array:
        z = self.rng.standard_normal((times, *mean.shape))
        out: Array = mean + self.v * sd * z
        return out

    def choose(self, X: Array) -> Decisions:
        """One posterior draw per row and arm; the best arm per row."""
        x = self.check(X)
        mean, sd = self._means(x), self._widths(x)
        scores = self._draw(mean, sd, 1)[0]
        actions = _argmax(scores)
        wins = _argmax_counts(self._draw(mean, sd, self.draws), self.n_arms)
        prop = (wins[np.arange(len(x)), actions] + 1.0) / (self.draws + 1.0)
        return Decisions(actions, prop, scores)

    def probabilities(self, X: Array) -> Array:
        """Monte Carlo estimate of each arm's chance of winning the draw."""
        x = self.check(X)
        wins = _argmax_counts(self._draw(self._means(x), self._widths(x), self.draws), self.n_arms)
        out: Array = wins / self.draws
        return out


def _argmax_counts(draws: Array, n_arms: int) -> Array:
    """How often each arm wins, per row, over the first axis of ``draws`` (times x rows x arms)."""
    best = np.argmax(draws, axis=2)  # times x rows
    n = draws.shape[1]
    flat = (np.arange(n)[None, :] * n_arms + best).ravel()
    return np.bincount(flat, minlength=n * n_arms).reshape(n, n_arms).astype(np.float64)
