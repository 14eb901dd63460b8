"""The ``recommend`` pipeline step: learn from interactions, answer top-k queries.

``interactions.recommend("shop", queries=queries, user="user", item="item", k=10)`` adds a
:class:`RecommendStep` that holds one :class:`~tidal.ml.reco.mf.OnlineMF`:

* input 0, interactions: each batch is first *tested* (the rank of each row's item in the
  row's user's top-k, before learning; ``reco_rank``, ``-1`` when outside the top-k), then
  learned. The rows go on on output ``"main"`` with ``reco_rank``: hit-rate@k is the mean
  of ``reco_rank >= 0``, NDCG@k the mean of ``1 / log2(reco_rank + 2)`` over hits
  (prequential, test-then-train).
* input 1, queries: rows with a user column; each gets ``items`` (a list of up to k item
  keys, best first, without items the user has seen) and ``scores``, on output
  ``"recommendations"``. A query batch is answered from the state in force when it arrives.

With ``item_features=[columns]`` (``user_features=[columns]``) the interaction rows carry
each item's (user's) content features: they are stored for the row's key before the batch
is learned, so a new item or user starts from what its features predict (cold start,
:mod:`tidal.ml.reco.features`); query rows with the user feature columns serve users
without history from their features.

Event time (the batch's ``time``, milliseconds) drives popularity decay and recency; the
model's factors, biases, popularity, seen items and id maps go into checkpoints as arrays
and JSON.

Example:
    >>> import numpy as np
    >>> from tidal.core.batch import Batch
    >>> step = RecommendStep("shop", user="u", item="i", k=2, factors=4)
    >>> seen = Batch({"u": np.array([1, 1, 2]), "i": np.array([10, 11, 10])}, time=[0, 1, 2])
    >>> step.process(seen, 0)[0][1]["reco_rank"].tolist()
    [-1, -1, -1]
    >>> out = step.process(Batch({"u": np.array([2, 3])}), 1)[0][1]
    >>> out["items"].tolist()
    [[11], [10, 11]]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.core.duration import Duration, to_millis
from tidal.core.operator import Emit, Operator
from tidal.errors import ConfigError, PipelineError, StateError
from tidal.ml.reco.mf import OnlineMF

__all__ = ["RECOMMENDERS", "RecommendStep", "ndcg_at", "make"]

_STATE_KIND = "recommend/1"

RECOMMENDERS: dict[str, Callable[..., OnlineMF]] = {
    "mf": lambda **kw: OnlineMF(feedback="explicit", **kw),
    "implicit_mf": lambda **kw: OnlineMF(feedback="implicit", **kw),
    "hybrid_mf": lambda **kw: OnlineMF(
        **{"feedback": "implicit", "item_features": 4, "user_features": 4, **kw}
    ),
}
"""Recommender name -> factory (keyword parameters of :class:`OnlineMF`)."""


def make(name: str, **params: Any) -> OnlineMF:
    """A recommender by name from :data:`RECOMMENDERS`.

    Raises:
        ConfigError: for an unknown name.
    """
    try:
        factory = RECOMMENDERS[name]
    except KeyError:
        msg = f"unknown recommender {name!r}; choose one of {', '.join(sorted(RECOMMENDERS))}"
        raise ConfigError(msg) from None
    return factory(**params)


class RecommendStep(Operator):
    """Learn a recommender from interactions (input 0) and answer queries (input 1).

    Args:
        name: the step's name (keys its state).
        model: an :class:`OnlineMF`, or a name from :data:`RECOMMENDERS` (built with
            ``params`` and ``half_life``).
        user: the user column (of interactions and queries).
        item: the item column of interactions.
        rating: the rating column (explicit feedback); ``None`` for implicit feedback.
        k: how many items a query gets, and the ``k`` of ``reco_rank``.
        evaluate: add ``reco_rank`` to interactions (costs one top-k per interaction).
        item_features: columns of the interactions with the item's content features.
        user_features: columns of the interactions (and queries) with the user's features.
        half_life: popularity half-life for a model built by name.
        params: more parameters for a model built by name (``factors``, ``lr``,
            ``max_users``...).
    """

    inputs = 2
    outputs = ("main", "recommendations")

    def __init__(
        self,
        name: str,
        model: OnlineMF | str = "mf",
        *,
        user: str = "user",
        item: str = "item",
        rating: str | None = None,
        k: int = 10,
        evaluate: bool = True,
        item_features: Sequence[str] = (),
        user_features: Sequence[str] = (),
        half_life: Duration = "1h",
        **params: Any,
    ) -> None:
        super().__init__(name)
        self.item_features, self.user_features = list(item_features), list(user_features)
        if isinstance(model, str):
            if rating is None and model == "mf":
                model = "implicit_mf"
            if self.item_features:
                params.setdefault("item_features", len(self.item_features))
            if self.user_features:
                params.setdefault("user_features", len(self.user_features))
            model = make(model, half_life=float(to_millis(half_life)), **params)
        for cols, table, what in ((self.item_features, model.ifeat, "item_features"),
                                  (self.user_features, model.ufeat, "user_features")):  # fmt: skip
            if cols and (table is None or table.dim != len(cols)):
                msg = (
                    f"step {name!r}: {what}={cols} needs a model built with {what}="
                    f"{len(cols)}, this one has {0 if table is None else table.dim}"
                )
                raise ConfigError(msg)
        if k < 1:
            msg = f"step {name!r}: k must be at least 1, got {k}"
            raise ConfigError(msg)
        if model.feedback == "explicit" and rating is None:
            msg = f"step {name!r}: an explicit-feedback model needs rating='column'"
            raise ConfigError(msg)
        self.model, self.user, self.item, self.rating = model, user, item, rating
        self.k, self.evaluate = k, evaluate

    def process(self, batch: Batch, port: int) -> Emit:
        """Port 0: test, learn and pass on interactions; port 1: answer queries."""
        if port == 0:
            return [(0, self.learn(batch))]
        return [(1, self.answer(batch))]

    def _column(self, batch: Batch, name: str, what: str) -> Array:
        if name not in batch:
            msg = (
                f"step {self.name!r}: the {what} column {name!r} is missing, the batch has "
                f"{batch.names}; pass {what}='column' to recommend()"
            )
            raise PipelineError(msg)
        return batch[name]

    def _features(self, batch: Batch, columns: list[str]) -> Array | None:
        if not columns:
            return None
        missing = [c for c in columns if c not in batch]
        if missing:
            msg = (
                f"step {self.name!r}: the feature columns {missing} are missing, the batch has "
                f"{batch.names}; every interaction needs its item_features and user_features"
            )
            raise PipelineError(msg)
        cols = [batch[c] for c in columns]
        if any(c.dtype.kind not in "iufb" for c in cols):
            msg = f"step {self.name!r}: feature columns {columns} must be numeric"
            raise PipelineError(msg)
        return np.column_stack([c.astype(np.float64) for c in cols])

    def learn(self, batch: Batch) -> Batch:
        """Rank each row's item (with ``evaluate``), then learn the batch."""
        if not len(batch):
            return batch.with_columns(reco_rank=np.zeros(0, np.int64)) if self.evaluate else batch
        users = self._column(batch, self.user, "user")
        items = self._column(batch, self.item, "item")
        ratings = None
        if self.rating is not None:
            ratings = self._column(batch, self.rating, "rating")
            if ratings.dtype.kind not in "iufb":
                msg = f"step {self.name!r}: rating column {self.rating!r} must be numeric"
                raise PipelineError(msg)
        out = batch
        x_user = self._features(batch, self.user_features)
        if self.evaluate:
            ranks = self.model.rank_of(users, items, self.k, x_user)
            out = batch.with_columns(reco_rank=ranks)
        if self.item_features:
            self.model.add_items(items, self._features(batch, self.item_features))
        if x_user is not None:
            self.model.add_users(users, x_user)
        times = None if batch.time is None else batch.time.astype(np.float64)
        self.model.learn(users, items, ratings, times)
        self.ctx.count(f"{self.name}.interactions", len(batch))
        return out

    def answer(self, batch: Batch) -> Batch:
        """Each query row with ``items`` and ``scores`` (lists, best first)."""
        users = self._column(batch, self.user, "user")
        x_user = None
        if self.user_features and all(c in batch for c in self.user_features):
            x_user = self._features(batch, self.user_features)
        keys, scores = self.model.recommend_many(users, self.k, x_user)
        n = len(batch)
        items_col, scores_col = np.empty(n, dtype=object), np.empty(n, dtype=object)
        ok = scores == scores  # not NaN
        for j in range(n):  # one list per query row (the output shape), not per item
            items_col[j] = keys[j][ok[j]].tolist()
            scores_col[j] = scores[j][ok[j]].tolist()
        self.ctx.count(f"{self.name}.queries", n)
        return batch.with_columns(items=items_col, scores=scores_col)

    def snapshot(self) -> dict[str, Any]:
        """The model's state and the step's parameters."""
        return {"kind": _STATE_KIND, "params": self._params(), "model": self.model.snapshot()}

    def _params(self) -> dict[str, Any]:
        return {"user": self.user, "item": self.item, "rating": self.rating, "k": self.k,
                "item_features": self.item_features,
                "user_features": self.user_features}  # fmt: skip

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`.

        Raises:
            StateError: if the snapshot is another step's or its parameters differ.
        """
        if snap.get("kind") != _STATE_KIND or snap.get("params") != self._params():
            msg = (
                f"step {self.name!r}: the snapshot is of a recommend step with "
                f"{snap.get('params')}, this one has {self._params()}; rename the step to "
                "start afresh"
            )
            raise StateError(msg)
        try:
            self.model.restore(snap["model"])
        except StateError as exc:
            msg = f"step {self.name!r}: {exc}"
            raise StateError(msg) from exc


def ndcg_at(ranks: Array) -> float:
    """Mean NDCG@k of one relevant item per row, from ``reco_rank`` (``-1``: not in top-k).

    Example:
        >>> ndcg_at(np.array([0, -1, 1]))
        0.5436...
    """
    r = np.asarray(ranks)
    if not len(r):
        return float("nan")
    gain = np.where(r >= 0, 1.0 / np.log2(np.maximum(r, 0) + 2.0), 0.0)
    return float(gain.mean())
