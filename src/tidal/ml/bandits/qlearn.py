"""Q-learning from a stream of transitions: tabular and linear function approximation.

A decision is made per event (``choose``: epsilon-greedy on ``Q(s, .)``, with the
propensity of the choice); once its outcome is known, the transition
``(s, a, r, s', done)`` is learned (``update``). Both are vectorized per batch:

* :class:`TabularQ`: ``Q[s, a] += lr * mean(td)`` over the batch's rows with that pair,
  ``td = r + gamma * max_a' Q[s', a'] - Q[s, a]`` (``gamma`` term dropped when ``done``);
  states are the integer in the first feature column.
* :class:`LinearQ`: ``Q(s, a) = w_a . phi(s)``; semi-gradient TD(0) with the batch's mean
  gradient per action.

``gamma = 0`` makes either a contextual bandit. The tables and weights go into snapshots.

Example:
    >>> import numpy as np
    >>> q = TabularQ(n_states=2, n_actions=2, lr=0.5, gamma=0.0, epsilon=0.0)
    >>> s = np.array([[0.0], [1.0]])
    >>> q.update(s, np.array([1, 0]), np.array([1.0, 2.0]), s, np.array([True, True]))
    >>> q.Q.tolist(), q.choose(s).actions.tolist()
    ([[0.0, 0.5], [1.0, 0.0]], [1, 0])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError, StateError
from tidal.ml.bandits.policies import Decisions
from tidal.ml.rngstate import rng_state, set_rng_state

__all__ = ["LinearQ", "TabularQ"]


class _QBase:
    """Epsilon-greedy choice over ``values(X)`` and snapshot plumbing."""

    kind = "q"

    def __init__(
        self, *, n_actions: int, lr: float, gamma: float, epsilon: float, seed: int
    ) -> None:
        if n_actions < 1 or lr <= 0 or not 0 <= gamma <= 1 or not 0 <= epsilon <= 1:
            msg = (
                f"{type(self).__name__} needs n_actions >= 1, lr > 0, gamma and epsilon in "
                f"[0, 1]; got {n_actions=}, {lr=}, {gamma=}, {epsilon=}"
            )
            raise ConfigError(msg)
        self.n_actions, self.lr, self.gamma, self.epsilon = n_actions, lr, gamma, epsilon
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.n_arms = n_actions

    def params(self) -> dict[str, Any]:
        """The constructor's parameters (checked on restore)."""
        return {"n_actions": self.n_actions, "lr": self.lr, "gamma": self.gamma,
                "epsilon": self.epsilon, "seed": self.seed}  # fmt: skip

    def values(self, X: Array) -> Array:  # pragma: no cover - overridden
        """``Q(s, a)`` per row and action."""
        raise NotImplementedError

    def choose(self, X: Array) -> Decisions:
        """Epsilon-greedy on ``Q(s, .)`` per row, with the propensity of each choice."""
        q = self.values(X)
        greedy = np.argmax(q, axis=1).astype(np.int64)
        explore = self.rng.random(len(q)) < self.epsilon
        actions = np.where(explore, self.rng.integers(0, self.n_actions, len(q)), greedy)
        base = self.epsilon / self.n_actions
        return Decisions(actions, np.where(actions == greedy, 1 - self.epsilon + base, base), q)

    def probabilities(self, X: Array) -> Array:
        """The epsilon-greedy distribution per row (rows x actions)."""
        q = self.values(X)
        p = np.full(q.shape, self.epsilon / self.n_actions)
        p[np.arange(len(q)), np.argmax(q, axis=1)] += 1 - self.epsilon
        return p

    def _check(self, actions: Array, rewards: Array, n: int) -> tuple[Array, Array]:
        a, r = np.asarray(actions, np.int64), np.asarray(rewards, np.float64)
        if len(a) != n or len(r) != n:
            msg = f"{self.kind}: {n} states, {len(a)} actions, {len(r)} rewards"
            raise ConfigError(msg)
        if n and (a.min() < 0 or a.max() >= self.n_actions or not np.isfinite(r).all()):
            msg = f"{self.kind}: actions must be in [0, {self.n_actions}) and rewards finite"
            raise ConfigError(msg)
        return a, r

    def _restore_check(self, snap: dict[str, Any]) -> None:
        if snap.get("kind") != self.kind or snap.get("params") != self.params():
            msg = (
                f"the snapshot is of {snap.get('kind')} with {snap.get('params')}, this "
                f"learner is {self.kind} with {self.params()}"
            )
            raise StateError(msg)
        set_rng_state(self.rng, snap["rng"])


class TabularQ(_QBase):
    """A Q table over ``n_states`` integer states (the first feature column).

    Args:
        n_states: number of states.
        n_actions: number of actions.
        lr: step size.
        gamma: discount.
        epsilon: exploration rate.
        seed: seed of the exploration.
    """

    kind = "tabular_q"

    def __init__(
        self, *, n_states: int, n_actions: int, lr: float = 0.1, gamma: float = 0.9,
        epsilon: float = 0.1, seed: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(n_actions=n_actions, lr=lr, gamma=gamma, epsilon=epsilon, seed=seed)
        if n_states < 1:
            msg = f"n_states must be >= 1, got {n_states}"
            raise ConfigError(msg)
        self.n_states = n_states
        self.Q = np.zeros((n_states, n_actions))

    def params(self) -> dict[str, Any]:
        """The constructor's parameters."""
        return {**super().params(), "n_states": self.n_states}

    def states(self, X: Array) -> Array:
        """The integer state of each row (first column).

        Raises:
            ConfigError: for states out of range.
        """
        x = np.asarray(X)
        s = (x[:, 0] if x.ndim == 2 else x).astype(np.int64)
        if len(s) and (s.min() < 0 or s.max() >= self.n_states):
            msg = f"{self.kind}: states must be integers in [0, {self.n_states})"
            raise ConfigError(msg)
        return s

    def values(self, X: Array) -> Array:
        """``Q[s, :]`` per row."""
        out: Array = self.Q[self.states(X)]
        return out

    def update(
        self, X: Array, actions: Array, rewards: Array, X_next: Array, done: Array
    ) -> None:
        """One batched TD(0) step; repeated ``(s, a)`` pairs move by their mean TD error."""
        s = self.states(X)
        a, r = self._check(actions, rewards, len(s))
        s2 = self.states(X_next)
        target = r + self.gamma * np.where(np.asarray(done, bool), 0.0, self.Q[s2].max(axis=1))
        td = target - self.Q[s, a]
        cell = s * self.n_actions + a
        size = self.Q.size
        total = np.bincount(cell, td, size)
        count = np.bincount(cell, minlength=size)
        hit = count > 0
        self.Q.ravel()[hit] += self.lr * total[hit] / count[hit]

    def snapshot(self) -> dict[str, Any]:
        """The table and the generator's state."""
        return {"kind": self.kind, "params": self.params(), "Q": self.Q.copy(),
                "rng": rng_state(self.rng)}  # fmt: skip

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`.

        Raises:
            StateError: if the snapshot is of another learner or other parameters.
        """
        self._restore_check(snap)
        self.Q = np.asarray(snap["Q"], np.float64).reshape(self.n_states, self.n_actions).copy()


class LinearQ(_QBase):
    """``Q(s, a) = w_a . x`` over the feature columns, learned by semi-gradient TD(0).

    Args:
        n_features: features per state.
        n_actions: number of actions.
        lr: step size.
        gamma: discount.
        epsilon: exploration rate.
        seed: seed of the exploration.
    """

    kind = "linear_q"

    def __init__(
        self, *, n_features: int, n_actions: int, lr: float = 0.05, gamma: float = 0.9,
        epsilon: float = 0.1, seed: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(n_actions=n_actions, lr=lr, gamma=gamma, epsilon=epsilon, seed=seed)
        if n_features < 1:
            msg = f"n_features must be >= 1, got {n_features}"
            raise ConfigError(msg)
        self.n_features = n_features
        self.W = np.zeros((n_actions, n_features))

    def params(self) -> dict[str, Any]:
        """The constructor's parameters."""
        return {**super().params(), "n_features": self.n_features}

    def _x(self, X: Array) -> Array:
        x = np.asarray(X, np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features or not np.isfinite(x).all():
            msg = f"{self.kind}: states must be finite rows x {self.n_features} features"
            raise ConfigError(msg)
        return x

    def values(self, X: Array) -> Array:
        """``W x`` per row."""
        out: Array = self._x(X) @ self.W.T
        return out

    def update(
        self, X: Array, actions: Array, rewards: Array, X_next: Array, done: Array
    ) -> None:
        """One batched semi-gradient TD(0) step (mean gradient per action)."""
        x, x2 = self._x(X), self._x(X_next)
        a, r = self._check(actions, rewards, len(x))
        nxt = np.where(np.asarray(done, bool), 0.0, (x2 @ self.W.T).max(axis=1))
        td = r + self.gamma * nxt - np.einsum("nd,nd->n", x, self.W[a])
        grad = np.zeros_like(self.W)
        np.add.at(grad, a, td[:, None] * x)
        count = np.bincount(a, minlength=self.n_actions)[:, None]
        self.W += self.lr * grad / np.maximum(count, 1)

    def snapshot(self) -> dict[str, Any]:
        """The weights and the generator's state."""
        return {"kind": self.kind, "params": self.params(), "W": self.W.copy(),
                "rng": rng_state(self.rng)}  # fmt: skip

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`.

        Raises:
            StateError: if the snapshot is of another learner or other parameters.
        """
        self._restore_check(snap)
        self.W = np.asarray(snap["W"], np.float64).reshape(self.n_actions, self.n_features).copy()
