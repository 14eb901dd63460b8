"""Off-policy evaluation: the value of a new policy, estimated from logged decisions.

Logs hold, per decision, the context ``x``, the logged action ``a``, its propensity
``mu(a | x)`` (what the decide step writes) and the reward ``r``. For a target policy
``pi`` (its :meth:`probabilities` on the logged contexts, rows x arms):

* **IPS**: ``mean(w r)`` with ``w = pi(a | x) / mu(a | x)``; unbiased, high variance.
* **SNIPS**: ``sum(w r) / sum(w)``; self-normalized, a little biased, lower variance.
* **Doubly robust**: ``mean(sum_k pi(k | x) q(x, k) + w (r - q(x, a)))`` with a reward
  model ``q`` (default: per-arm ridge regression fit on the logs,
  :func:`fit_reward_model`); unbiased if either the propensities or ``q`` are right.

Each estimate comes with a standard error and a 95% normal interval.

Example:
    >>> import numpy as np
    >>> r = np.array([1.0, 0.0, 1.0, 1.0])
    >>> mu = np.full(4, 0.5)
    >>> pi_logged = np.array([1.0, 0.0, 1.0, 0.0])
    >>> round(ips(r, mu, pi_logged).value, 3), round(snips(r, mu, pi_logged).value, 3)
    (1.0, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError

__all__ = ["Estimate", "doubly_robust", "evaluate", "fit_reward_model", "ips", "snips"]

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """A policy value estimate.

    Attributes:
        value: the estimate.
        stderr: its standard error.
        low: lower end of the 95% interval.
        high: upper end of the 95% interval.
        n: logged decisions used.
    """

    value: float
    stderr: float
    low: float
    high: float
    n: int

    def covers(self, truth: float) -> bool:
        """Whether ``truth`` lies in the 95% interval."""
        return self.low <= truth <= self.high


def _estimate(value: float, stderr: float, n: int) -> Estimate:
    return Estimate(value, stderr, value - Z95 * stderr, value + Z95 * stderr, n)


def _weights(rewards: Array, propensity: Array, target: Array) -> tuple[Array, Array]:
    r, mu, pi = (np.asarray(v, np.float64) for v in (rewards, propensity, target))
    if not len(r) == len(mu) == len(pi) or not len(r):
        msg = f"rewards, propensities and target probabilities: {len(r)}, {len(mu)}, {len(pi)}"
        raise ConfigError(msg + "; give one of each per logged decision (at least one)")
    if (mu <= 0).any() or not np.isfinite(mu).all():
        msg = "propensities must be > 0: log the decide step's propensity with each decision"
        raise ConfigError(msg)
    return r, pi / mu


def ips(rewards: Array, propensity: Array, target: Array) -> Estimate:
    """Inverse propensity scoring; ``target`` is ``pi(a_logged | x)`` per row."""
    r, w = _weights(rewards, propensity, target)
    v = w * r
    stderr = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
    return _estimate(float(v.mean()), stderr, len(v))


def snips(rewards: Array, propensity: Array, target: Array) -> Estimate:
    """Self-normalized IPS (delta-method standard error)."""
    r, w = _weights(rewards, propensity, target)
    total = float(w.sum())
    if total <= 0:
        return _estimate(float("nan"), float("nan"), len(r))
    value = float((w * r).sum() / total)
    stderr = float(np.sqrt(((w * (r - value)) ** 2).sum()) / total)
    return _estimate(value, stderr, len(r))


def fit_reward_model(
    X: Array, actions: Array, rewards: Array, n_arms: int, ridge: float = 1.0
) -> Array:
    """Per-arm ridge regression weights (arms x features) of reward on context."""
    x, a, r = np.asarray(X, np.float64), np.asarray(actions, np.int64), np.asarray(rewards, float)
    d = x.shape[1]
    w = np.zeros((n_arms, d))
    for k in range(n_arms):
        m = a == k
        w[k] = np.linalg.solve(x[m].T @ x[m] + ridge * np.eye(d), x[m].T @ r[m])
    return w


def doubly_robust(
    X: Array, actions: Array, rewards: Array, propensity: Array, target: Array,
    reward_model: Array | None = None,
) -> Estimate:  # fmt: skip
    """Doubly robust estimate; ``target`` is ``pi(k | x)`` for every arm (rows x arms).

    ``reward_model`` is per-arm linear weights (arms x features); default: fit on the logs.
    """
    x, a = np.asarray(X, np.float64), np.asarray(actions, np.int64)
    pi = np.asarray(target, np.float64)
    rows = np.arange(len(a))
    r, w = _weights(rewards, propensity, pi[rows, a])
    model = reward_model if reward_model is not None else fit_reward_model(x, a, r, pi.shape[1])
    q = x @ np.asarray(model).T
    v = (pi * q).sum(axis=1) + w * (r - q[rows, a])
    stderr = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
    return _estimate(float(v.mean()), stderr, len(v))


def evaluate(
    X: Array, actions: Array, rewards: Array, propensity: Array, target: Array
) -> dict[str, Estimate]:
    """IPS, SNIPS and doubly robust estimates of the policy whose probabilities are ``target``.

    Args:
        X: logged contexts (rows x features).
        actions: logged actions.
        rewards: logged rewards.
        propensity: the logging policy's propensity of each logged action.
        target: the evaluated policy's probability of each arm (rows x arms).
    """
    pi = np.asarray(target, np.float64)
    a = np.asarray(actions, np.int64)
    logged = pi[np.arange(len(a)), a]
    return {
        "ips": ips(rewards, propensity, logged),
        "snips": snips(rewards, propensity, logged),
        "dr": doubly_robust(X, a, rewards, propensity, pi),
    }
