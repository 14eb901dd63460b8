"""The ``decide`` pipeline step: a decision per event, learned from rewards joined later.

``contexts.decide("offer", "linucb", features=[...], n_arms=4, rewards=feedback)`` adds a
:class:`DecideStep` holding one policy (:data:`~tidal.ml.bandits.catalog.POLICIES`):

* input 0, contexts: the policy chooses for every row of the batch at once; the rows go on
  with ``decision_id`` (int64, unique within the step, kept across restarts),
  ``action`` (the arm's index), ``propensity`` (the probability the policy had of that
  choice, for off-policy evaluation) and ``arm`` (the arm's label, when ``arms`` are given).
* input 1, feedback: rows that carry the decision's features, its ``action`` and a
  ``reward`` (and, for Q-learning, the next state's features and ``done``), e.g. the logged
  decisions joined to rewards by ``decision_id`` with ``interval_join``. The policy learns
  them; nothing is emitted.

Rewards may come in any order and batching: the policies' sums are order-free. The policy
state (per-arm sums, Q tables, the random generator) and the id counter are in checkpoints.

Example:
    >>> import numpy as np
    >>> from tidal.core.batch import Batch
    >>> step = DecideStep("offer", "linucb", features=["x"], n_arms=2, arms=["a", "b"])
    >>> out = step.process(Batch({"x": np.array([1.0, 1.0])}), 0)[0][1]
    >>> out["decision_id"].tolist(), out["arm"].tolist(), out["propensity"].tolist()
    ([0, 1], ['a', 'a'], [1.0, 1.0])
    >>> feedback = Batch({"x": np.array([1.0]), "action": np.array([0]), "reward": [-1.0]})
    >>> step.process(feedback, 1)
    []
    >>> step.process(Batch({"x": np.array([1.0])}), 0)[0][1]["arm"].tolist()
    ['b']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.core.operator import Emit, Operator
from tidal.errors import ConfigError, PipelineError, StateError
from tidal.ml.bandits.catalog import Policy, make

__all__ = ["DecideStep"]

_STATE_KIND = "decide/1"


class DecideStep(Operator):
    """Choose an action per context row (input 0); learn from joined rewards (input 1).

    Args:
        name: the step's name (keys its state).
        policy: a policy, or a name from :data:`~tidal.ml.bandits.catalog.POLICIES`.
        features: the context feature columns.
        n_arms: number of actions (needed for a policy built by name).
        arms: labels of the actions (an ``arm`` column is added when given).
        action: the feedback's action column.
        reward: the feedback's reward column.
        next_features: the feedback's next-state columns (Q-learning).
        done: the feedback's end-of-episode column (Q-learning; default all False).
        seed: seed for a policy built by name.
        params: more parameters of a policy built by name (``alpha``, ``epsilon``...).

    Raises:
        ConfigError: for no features, a missing ``n_arms``, or ``arms`` of another length.
    """

    inputs = 2
    outputs = ("main",)

    def __init__(
        self,
        name: str,
        policy: Policy | str = "linucb",
        *,
        features: Sequence[str],
        n_arms: int | None = None,
        arms: Sequence[Any] | None = None,
        action: str = "action",
        reward: str = "reward",
        next_features: Sequence[str] | None = None,
        done: str | None = None,
        seed: int = 0,
        **params: Any,
    ) -> None:
        super().__init__(name)
        self.features = list(features)
        if not self.features:
            msg = f"step {name!r}: give the context feature columns, features=[...]"
            raise ConfigError(msg)
        if n_arms is None and arms is not None:
            n_arms = len(arms)
        chosen: Any = policy
        if isinstance(policy, str):
            if n_arms is None:
                msg = f"step {name!r}: a policy built by name needs n_arms (or arms=[...])"
                raise ConfigError(msg)
            chosen = make(policy, n_arms=n_arms, n_features=len(self.features), seed=seed,
                          **params)  # fmt: skip
        if arms is not None and len(arms) != chosen.n_arms:
            msg = f"step {name!r}: {len(arms)} arm labels for a policy of {chosen.n_arms} arms"
            raise ConfigError(msg)
        self.policy: Any = chosen
        self.arms = None if arms is None else np.asarray(list(arms))
        self.action, self.reward, self.done = action, reward, done
        self.next_features = None if next_features is None else list(next_features)
        self.next_id = 0

    def process(self, batch: Batch, port: int) -> Emit:
        """Port 0: decide for every row; port 1: learn from feedback rows."""
        if port == 0:
            return [(0, self.decide(batch))]
        self.learn(batch)
        return []

    def _matrix(self, batch: Batch, names: Sequence[str], what: str) -> Array:
        missing = [c for c in names if c not in batch]
        if missing:
            msg = (
                f"step {self.name!r}: {what} columns {missing} are missing, the batch has "
                f"{batch.names}"
            )
            raise PipelineError(msg)
        cols = []
        for c in names:
            col = batch[c]
            if len(col) and col.dtype.kind not in "iufb":
                msg = f"step {self.name!r}: {what} column {c!r} must be numeric, got {col.dtype}"
                raise PipelineError(msg)
            cols.append(np.asarray(col, dtype=np.float64))
        return np.stack(cols, axis=1) if cols else np.zeros((len(batch), 0))

    def decide(self, batch: Batch) -> Batch:
        """The batch with ``decision_id``, ``action``, ``propensity`` (and ``arm``)."""
        x = self._matrix(batch, self.features, "feature")
        n = len(batch)
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        self.next_id += n
        if n == 0:
            d_actions, d_prop = np.zeros(0, np.int64), np.zeros(0)
        else:
            d = self.policy.choose(x)
            d_actions, d_prop = d.actions, d.propensity
        cols: dict[str, Any] = {"decision_id": ids, "action": d_actions, "propensity": d_prop}
        if self.arms is not None:
            cols["arm"] = self.arms[d_actions]
        self.ctx.count(f"{self.name}.decisions", n)
        return batch.with_columns(**cols)

    def learn(self, batch: Batch) -> None:
        """Fold feedback rows (features, action, reward[, next features, done]) in."""
        if not len(batch):
            return
        x = self._matrix(batch, self.features, "feature")
        fb = self._matrix(batch, [self.action, self.reward], "feedback")
        actions, rewards = fb[:, 0].astype(np.int64), fb[:, 1]
        update = self.policy.update
        try:
            if self.next_features is not None:
                x2 = self._matrix(batch, self.next_features, "next-state")
                done = (
                    np.asarray(batch[self.done], bool)
                    if self.done is not None
                    else np.zeros(len(batch), bool)
                )
                update(x, actions, rewards, x2, done)
            else:
                update(x, actions, rewards)
        except ConfigError as exc:
            msg = f"step {self.name!r}: feedback rejected: {exc}"
            raise PipelineError(msg) from exc
        self.ctx.count(f"{self.name}.rewards", len(batch))

    def _params(self) -> dict[str, Any]:
        return {"features": self.features, "action": self.action, "reward": self.reward,
                "next_features": self.next_features, "kind": self.policy.kind}  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        """The policy's state and the decision id counter."""
        return {"kind": _STATE_KIND, "params": self._params(), "next_id": self.next_id,
                "policy": self.policy.snapshot()}  # fmt: skip

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`.

        Raises:
            StateError: if the snapshot is another step's or its parameters differ.
        """
        if snap.get("kind") != _STATE_KIND or snap.get("params") != self._params():
            msg = (
                f"step {self.name!r}: the snapshot is of a decide step with "
                f"{snap.get('params')}, this one has {self._params()}; rename the step to "
                "start afresh"
            )
            raise StateError(msg)
        try:
            self.policy.restore(snap["policy"])
        except StateError as exc:
            msg = f"step {self.name!r}: {exc}"
            raise StateError(msg) from exc
        self.next_id = int(snap["next_id"])
