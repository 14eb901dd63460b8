"""The decision policies by name: :data:`POLICIES` and :func:`make`.

Example:
    >>> make("linucb", n_arms=3, n_features=2).kind
    'linucb'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from tidal.core.batch import Array
from tidal.errors import ConfigError
from tidal.ml.bandits.policies import Decisions, EpsilonGreedy, LinearThompson, LinUCB
from tidal.ml.bandits.qlearn import LinearQ, TabularQ

__all__ = ["POLICIES", "Policy", "make"]


@runtime_checkable
class Policy(Protocol):
    """What the decide step needs of a policy (bandits and Q-learners alike)."""

    kind: str
    n_arms: int

    def choose(self, X: Array) -> Decisions:
        """An action per row, with propensities."""
        ...

    def probabilities(self, X: Array) -> Array:
        """The action distribution per row (rows x actions)."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """State as arrays and JSON."""
        ...

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`."""
        ...


POLICIES: dict[str, Callable[..., Any]] = {
    "epsilon_greedy": lambda n_arms, n_features, seed=0, **kw: EpsilonGreedy(
        n_arms=n_arms, n_features=n_features, seed=seed, **kw
    ),
    "linucb": lambda n_arms, n_features, seed=0, **kw: LinUCB(
        n_arms=n_arms, n_features=n_features, seed=seed, **kw
    ),
    "thompson": lambda n_arms, n_features, seed=0, **kw: LinearThompson(
        n_arms=n_arms, n_features=n_features, seed=seed, **kw
    ),
    "linear_q": lambda n_arms, n_features, seed=0, **kw: LinearQ(
        n_actions=n_arms, n_features=n_features, seed=seed, **kw
    ),
    "tabular_q": lambda n_arms, n_features, seed=0, **kw: TabularQ(
        n_actions=n_arms, n_states=kw.pop("n_states", 16), seed=seed, **kw
    ),
}
"""Policy name -> factory ``(n_arms, n_features, seed=0, **params)``. For ``tabular_q`` the
state is the first feature (an integer below ``n_states``, default 16)."""


def make(name: str, *, n_arms: int, n_features: int, seed: int = 0, **params: Any) -> Any:
    """A policy by name from :data:`POLICIES`.

    Raises:
        ConfigError: for an unknown name.
    """
    try:
        factory = POLICIES[name]
    except KeyError:
        msg = f"unknown policy {name!r}; choose one of {', '.join(sorted(POLICIES))}"
        raise ConfigError(msg) from None
    return factory(n_arms, n_features, seed, **params)
