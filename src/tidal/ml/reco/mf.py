"""Online matrix factorization with biases, learned from mini-batches of interactions.

:class:`OnlineMF` scores a (user, item) pair as ``mu + b_u + b_i + p_u . q_i`` (explicit
ratings, squared loss) or ``sigmoid(b_i + p_u . q_i)`` (implicit feedback: every
interaction is a positive, ``negatives`` items sampled uniformly per positive are
negatives, logistic loss). One call to :meth:`OnlineMF.learn` learns one mini-batch,
in one of two modes (``update=``):

* ``"sample"`` (the default where numba is installed): per-sample SGD, interaction after
  interaction in a compiled loop (:mod:`tidal.ml.reco.kernels`): River's ``learn_one``
  algorithm at millions of interactions per second;
* ``"batch"``: one vectorized numpy step: the gradients of all rows are taken at the
  batch's starting parameters and summed per user and per item, so a key that appears
  several times in a batch gets every one of its steps (to first order), capped at
  ``max_steps`` per batch.

``optimizer="adagrad"`` (per-sample mode only) scales each parameter's step by the root of
its summed squared gradients, Vowpal Wabbit's default adaptive rate: lower error than the
constant step on long stationary streams (decision 0046).

Serving comes from the same state: :meth:`OnlineMF.recommend` gives one user's top-k,
:meth:`OnlineMF.recommend_many` a batch of users', both excluding the items the user has
interacted with. Users with fewer than ``cold_after`` interactions (and unknown users) get
the most popular items instead, popularity being an exponentially time-decayed count per
item (``half_life`` in the units of the ``times`` given to :meth:`learn`, or in
interactions when no times are given).

Key growth is capped: past ``max_users`` users (``max_items`` items) the least recently
seen ones are evicted after the batch that went over, with their factors, biases and
seen items (ties: the fewer interactions first). An evicted user who returns starts cold.

Content features (``item_features=d``, ``user_features=d``; :meth:`OnlineMF.add_items`,
:meth:`OnlineMF.add_users`) serve keys without history from the factors their features
predict (:mod:`tidal.ml.reco.features`).

Example:
    >>> import numpy as np
    >>> mf = OnlineMF(factors=4, seed=0)
    >>> mf.learn(np.array(["ann", "bob", "ann"]), np.array([1, 2, 3]), np.array([5.0, 3.0, 4.0]))
    >>> mf.n_users, mf.n_items, round(mf.mean, 3)
    (2, 3, 4.0)
    >>> [item for item, _ in mf.recommend("ann", 5)]
    [2]
    >>> shop = OnlineMF(factors=2, feedback="implicit", item_features=1, seed=0)
    >>> shop.add_items(np.array([10, 11]), np.array([[1.0], [0.0]]))  # a catalog
    >>> sorted(item for item, _ in shop.recommend("new user", 5))  # recommendable at once
    [10, 11]
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError, StateError
from tidal.ml.reco.features import FeatureTable
from tidal.ml.reco.kernels import has_numba, remember, sgd
from tidal.ml.reco.keys import Keys
from tidal.ml.rngstate import rng_state, set_rng_state

__all__ = ["OnlineMF"]

_KIND = "mf/2"
_NONE, _EMPTY = np.zeros(0, np.int64), np.zeros(0)
_SPAN = np.int64(1) << 31  # seen pairs are coded user_id * _SPAN + item_id
Feedback = Literal["explicit", "implicit"]
Update = Literal["auto", "sample", "batch"]
Optimizer = Literal["sgd", "adagrad"]


class OnlineMF:
    """Matrix factorization with user and item biases, updated by mini-batch SGD.

    Args:
        factors: latent dimensions.
        feedback: ``"explicit"`` ratings (squared loss) or ``"implicit"`` interactions
            (logistic loss with sampled negatives).
        lr: SGD step size (with ``optimizer="adagrad"``: the base rate, divided per
            parameter by the root of its summed squared gradients).
        reg: L2 penalty on factors and biases.
        negatives: sampled negatives per positive (implicit feedback).
        max_steps: ``update="batch"`` only: a user's or item's steps summed in one batch;
            beyond it, its rows' gradients are scaled by ``max_steps / count`` (keeps
            large batches stable).
        max_users: users kept; the least recently seen are evicted beyond it.
        max_items: items kept; the least recently seen are evicted beyond it.
        half_life: popularity half-life, in the units of ``times`` (interactions if none).
        cold_after: interactions before a user gets personal recommendations.
        init_scale: standard deviation of the initial factors.
        seed: seed of the initial factors and the negative sampling.
        update: ``"sample"``: per-sample SGD, interaction after interaction, in a compiled
            loop (:mod:`tidal.ml.reco.kernels`; needs numba, the ``learn`` extra, to be
            fast); ``"batch"``: vectorized numpy steps summed per key (no numba needed);
            ``"auto"``: ``"sample"`` where numba is installed, else ``"batch"``.
        user_features: length of the users' content feature vectors (0: none).
        item_features: length of the items' content feature vectors (0: none).
        feature_reg: ridge penalty of the map from features to factors
            (:mod:`tidal.ml.reco.features`).
        optimizer: ``"sgd"``: plain SGD, a constant step (River's ``BiasedMF`` with
            ``optim.SGD``); ``"adagrad"``: per-parameter AdaGrad steps (as Vowpal Wabbit's
            default adaptive update), which settle as a key's data accumulates and reach
            a lower error on long streams (decision 0046). AdaGrad needs the per-sample
            mode: ``update="auto"`` picks it even without numba (then a plain Python
            loop, the slow path), and ``update="batch"`` is refused.

    Raises:
        ConfigError: for parameters out of range.
    """

    kind = "mf"

    def __init__(
        self,
        *,
        factors: int = 16,
        feedback: Feedback = "explicit",
        lr: float = 0.02,
        reg: float = 0.02,
        negatives: int = 4,
        max_steps: int = 8,
        max_users: int = 1_000_000,
        max_items: int = 1_000_000,
        half_life: float = 10_000.0,
        cold_after: int = 1,
        init_scale: float = 0.1,
        seed: int = 0,
        update: Update = "auto",
        user_features: int = 0,
        item_features: int = 0,
        feature_reg: float = 1.0,
        optimizer: Optimizer = "sgd",
    ) -> None:
        if update not in ("auto", "sample", "batch"):
            msg = f"update must be 'auto', 'sample' or 'batch', got {update!r}"
            raise ConfigError(msg)
        if feedback not in ("explicit", "implicit"):
            msg = f"feedback must be 'explicit' or 'implicit', got {feedback!r}"
            raise ConfigError(msg)
        if optimizer not in ("sgd", "adagrad") or (optimizer == "adagrad" and update == "batch"):
            msg = (
                f"optimizer must be 'sgd' or 'adagrad' (adagrad with update='sample' or "
                f"'auto'), got optimizer={optimizer!r}, update={update!r}"
            )
            raise ConfigError(msg)
        if factors < 1 or lr <= 0 or reg < 0 or negatives < 0 or half_life <= 0:
            msg = (
                "OnlineMF needs factors >= 1, lr > 0, reg >= 0, negatives >= 0 and "
                f"half_life > 0; got {factors=}, {lr=}, {reg=}, {negatives=}, {half_life=}"
            )
            raise ConfigError(msg)
        if not 1 <= max_users < _SPAN or not 1 <= max_items < _SPAN:
            msg = f"max_users and max_items must be in [1, 2**31), got {max_users}, {max_items}"
            raise ConfigError(msg)
        if user_features < 0 or item_features < 0 or feature_reg < 0:
            msg = (
                "user_features, item_features and feature_reg must be >= 0, got "
                f"{user_features}, {item_features}, {feature_reg}"
            )
            raise ConfigError(msg)
        self.params: dict[str, Any] = {
            "factors": factors, "feedback": feedback, "lr": lr, "reg": reg,
            "negatives": negatives, "max_steps": max_steps, "max_users": max_users,
            "max_items": max_items,
            "half_life": half_life, "cold_after": cold_after, "init_scale": init_scale,
            "seed": seed, "update": update, "user_features": user_features,
            "item_features": item_features, "feature_reg": feature_reg,
            **({"optimizer": optimizer} if optimizer != "sgd" else {}),
        }  # fmt: skip
        self.ufeat = FeatureTable(user_features, feature_reg) if user_features else None
        self.ifeat = FeatureTable(item_features, feature_reg) if item_features else None
        self.update = update
        self.adagrad = optimizer == "adagrad"
        self.sample = update == "sample" or (update == "auto" and (has_numba() or self.adagrad))
        self.factors, self.feedback, self.lr, self.reg = factors, feedback, lr, reg
        self.negatives, self.max_users, self.max_items = negatives, max_users, max_items
        self.max_steps = max(1, max_steps)
        self.decay = np.log(2.0) / half_life
        self.cold_after, self.init_scale = cold_after, init_scale
        self.rng = np.random.default_rng(seed)
        self.users, self.items = Keys(), Keys()
        self.u_ready, self.i_ready = np.zeros(0, bool), np.zeros(0, bool)  # factors drawn
        self.P, self.Q = np.zeros((0, factors)), np.zeros((0, factors))
        self.bu, self.bi = np.zeros(0), np.zeros(0)
        # AdaGrad's summed squared gradients, shaped like P, Q, bu, bi (empty for plain SGD)
        self.GP, self.GQ = np.zeros((0, factors)), np.zeros((0, factors))
        self.gbu, self.gbi = np.zeros(0), np.zeros(0)
        self.u_count, self.i_count = np.zeros(0, np.int64), np.zeros(0, np.int64)
        self.u_last, self.i_last = np.zeros(0), np.zeros(0)
        self.pop, self.i_alive = np.zeros(0), np.zeros(0, bool)
        self._seen = np.zeros(0, np.int64)  # sorted codes of (user, item) pairs
        self._pending: list[Array] = []  # codes not merged into _seen yet
        self._n_pending = 0
        self.mean, self.n_seen, self.clock, self.pop_time = 0.0, 0, 0.0, 0.0

    # -- sizes --------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        """Users held now."""
        return len(self.users)

    @property
    def n_items(self) -> int:
        """Items held now."""
        return len(self.items)

    def _grow(self) -> None:
        nu, ni, f = self.users.capacity, self.items.capacity, self.factors
        if nu > len(self.bu):
            new = max(nu, 2 * len(self.bu), 64) - len(self.bu)
            self.P = np.vstack([self.P, np.zeros((new, f))])
            self.bu, self.u_last = np.r_[self.bu, np.zeros(new)], np.r_[self.u_last, np.zeros(new)]
            self.u_count = np.r_[self.u_count, np.zeros(new, np.int64)]
            self.u_ready = np.r_[self.u_ready, np.zeros(new, bool)]
            if self.adagrad:
                self.GP = np.vstack([self.GP, np.zeros((new, f))])
                self.gbu = np.r_[self.gbu, np.zeros(new)]
            if self.ufeat is not None:
                self.ufeat.grow(len(self.bu))
        if ni > len(self.bi):
            new = max(ni, 2 * len(self.bi), 64) - len(self.bi)
            self.Q = np.vstack([self.Q, np.zeros((new, f))])
            self.bi, self.i_last = np.r_[self.bi, np.zeros(new)], np.r_[self.i_last, np.zeros(new)]
            self.pop = np.r_[self.pop, np.zeros(new)]
            self.i_count = np.r_[self.i_count, np.zeros(new, np.int64)]
            self.i_alive = np.r_[self.i_alive, np.zeros(new, bool)]
            self.i_ready = np.r_[self.i_ready, np.zeros(new, bool)]
            if self.adagrad:
                self.GQ = np.vstack([self.GQ, np.zeros((new, f))])
                self.gbi = np.r_[self.gbi, np.zeros(new)]
            if self.ifeat is not None:
                self.ifeat.grow(len(self.bi))

    def _ids(self, index: Keys, keys: Array, which: str) -> Array:
        ids: Array = index.ids(np.asarray(keys))
        self._grow()
        ready, table = (self.u_ready, self.P) if which == "u" else (self.i_ready, self.Q)
        new = ~ready[ids]
        fresh = np.unique(ids[new]) if new.any() else ids[:0]
        if len(fresh):  # new (or reused) ids start from small random factors
            table[fresh] = self.rng.normal(0.0, self.init_scale, (len(fresh), self.factors))
            ready[fresh] = True
            if self.adagrad:  # a reused id's step sizes start afresh too
                (self.GP if which == "u" else self.GQ)[fresh] = 0.0
                (self.gbu if which == "u" else self.gbi)[fresh] = 0.0
            if which == "i":  # and the typical item's bias: not above every learned item
                had = self.i_count > 0
                self.bi[fresh] = self.bi[had].mean() if had.any() else 0.0
        return ids

    def add_users(self, users: Array, features: Array | None = None) -> None:
        """Register users (without interactions), with content features if given.

        A user with features and no history is served from its features (its factors
        predicted by :mod:`tidal.ml.reco.features`) and starts learning from there.

        Raises:
            ConfigError: for features on a model built without ``user_features``, or of
                the wrong shape.
        """
        ids = self._ids(self.users, users, "u")
        if features is not None:
            self._set_features(self.ufeat, ids, features, "user_features")

    def add_items(self, items: Array, features: Array | None = None) -> None:
        """Register items (a catalog): recommendable from now on, with content features if given.

        An item with features and no interactions gets the factors and bias its features
        predict (a new item that looks like popular ones ranks like them); once it has
        interactions they start from there and are learned as usual.

        Raises:
            ConfigError: for features on a model built without ``item_features``, or of
                the wrong shape.
        """
        ids = self._ids(self.items, items, "i")
        self.i_alive[ids] = True
        if features is not None:
            self._set_features(self.ifeat, ids, features, "item_features")

    def _set_features(self, table: FeatureTable | None, ids: Array, x: Array, what: str) -> None:
        if table is None:
            msg = f"this model has no {what}; build it with {what}=<length of the vectors>"
            raise ConfigError(msg)
        table.set(ids, x, what)

    def _fold_features(self, u: Array, i: Array) -> None:
        """Keys learned for the first time start from what their features predict."""
        for table, ids, counts, F, b in (
            (self.ufeat, u, self.u_count, self.P, self.bu),
            (self.ifeat, i, self.i_count, self.Q, self.bi),
        ):
            if table is None:
                continue
            new = np.unique(ids[(counts[ids] == 0) & table.has[ids]])
            if len(new):
                f, bias = table.predict(new, table.fit(counts, F, b, self.n_seen))
                F[new] += f
                b[new] += bias

    def _effective(self, which: str) -> tuple[Array, Array]:
        """Factors and biases, with those of featured keys without history predicted."""
        table, counts, F, b = (
            (self.ufeat, self.u_count, self.P, self.bu)
            if which == "u"
            else (self.ifeat, self.i_count, self.Q, self.bi)
        )
        if table is None:
            return F, b
        new = np.flatnonzero((counts == 0) & table.has[: len(counts)])
        if not len(new):
            return F, b
        f, bias = table.predict(new, table.fit(counts, F, b, self.n_seen))
        F, b = F.copy(), b.copy()
        F[new] += f
        b[new] += bias
        return F, b

    # -- learning -----------------------------------------------------------------------
    def learn(
        self, users: Array, items: Array, ratings: Array | None = None, times: Array | None = None
    ) -> None:
        """One mini-batch of SGD on interactions ``(users[j], items[j], ratings[j])``.

        ``ratings`` is required for explicit feedback and ignored for implicit feedback;
        ``times`` (non-decreasing numbers, e.g. event time) drives popularity decay and
        recency for eviction.

        Raises:
            ConfigError: if the columns differ in length, or ratings are missing or not finite.
        """
        n = len(users)
        if len(items) != n or (ratings is not None and len(ratings) != n):
            msg = f"users, items and ratings must have one value per interaction, got {n}, "
            msg += f"{len(items)}, {None if ratings is None else len(ratings)}"
            raise ConfigError(msg)
        if n == 0:
            return
        explicit = self.feedback == "explicit"
        if explicit:
            if ratings is None:
                msg = "explicit feedback needs ratings; pass ratings= or use feedback='implicit'"
                raise ConfigError(msg)
            r = np.asarray(ratings, dtype=np.float64)
            if not np.isfinite(r).all():
                msg = f"ratings must be finite numbers; row {int(np.argmin(np.isfinite(r)))} is not"
                raise ConfigError(msg)
        t = (
            np.asarray(times, dtype=np.float64)
            if times is not None
            else self.clock + np.arange(1, n + 1, dtype=np.float64)
        )
        u = self._ids(self.users, users, "u")
        i = self._ids(self.items, items, "i")
        self._fold_features(u, i)
        if explicit:
            self._sgd_explicit(u, i, r)
        else:
            self._sgd_implicit(u, i)
        self._remember(u, i, t)
        self._evict()

    def _sgd_explicit(self, u: Array, i: Array, r: Array) -> None:
        if self.sample:
            self.mean = sgd(u, i, r, _NONE, self.P, self.Q, self.bu, self.bi, lr=self.lr,
                            reg=self.reg, explicit=True, mean=self.mean, n_seen=self.n_seen,
                            adagrad=self._accumulators())  # fmt: skip
            return
        self.mean += (float(r.sum()) - len(r) * self.mean) / (self.n_seen + len(r))
        pu, qi = self.P[u], self.Q[i]
        err = r - (self.mean + self.bu[u] + self.bi[i] + np.einsum("nf,nf->n", pu, qi))
        self._step(u, i, err, pu, qi, user_bias=True)

    def _accumulators(self) -> tuple[Array, Array, Array, Array] | None:
        return (self.GP, self.GQ, self.gbu, self.gbi) if self.adagrad else None

    def _sgd_implicit(self, u: Array, i: Array) -> None:
        alive = np.flatnonzero(self.i_alive | (np.bincount(i, minlength=len(self.bi)) > 0))
        neg = self.negatives
        drawn = alive[self.rng.integers(0, len(alive), len(u) * neg)]
        if self.sample:
            sgd(u, i, _EMPTY, drawn, self.P, self.Q, self.bu, self.bi, lr=self.lr, reg=self.reg,
                explicit=False, mean=0.0, n_seen=0, adagrad=self._accumulators())  # fmt: skip
            return
        uu = np.r_[u, np.repeat(u, neg)]
        ii = np.r_[i, drawn]
        y = np.r_[np.ones(len(u)), np.zeros(len(u) * neg)]
        pu, qi = self.P[uu], self.Q[ii]
        s = self.bi[ii] + np.einsum("nf,nf->n", pu, qi)
        err = y - 1.0 / (1.0 + np.exp(-np.clip(s, -30, 30)))
        self._step(uu, ii, err, pu, qi, user_bias=False)

    def _step(
        self, u: Array, i: Array, err: Array, pu: Array, qi: Array, *, user_bias: bool
    ) -> None:
        lr, reg, cap = self.lr, self.reg, float(self.max_steps)
        cu = np.bincount(u, minlength=len(self.bu))
        ci = np.bincount(i, minlength=len(self.bi))
        su = lr * np.minimum(1.0, cap / np.maximum(cu, 1))[u]  # per-row step, capped per key
        si = lr * np.minimum(1.0, cap / np.maximum(ci, 1))[i]
        e = err[:, None]
        _segment_add(self.P, u, su[:, None] * (e * qi - reg * pu))
        _segment_add(self.Q, i, si[:, None] * (e * pu - reg * qi))
        if user_bias:
            self.bu += np.bincount(u, su * (err - reg * self.bu[u]), len(self.bu))
        self.bi += np.bincount(i, si * (err - reg * self.bi[i]), len(self.bi))

    def _remember(self, u: Array, i: Array, t: Array) -> None:
        self.n_seen += len(u)
        now = self.clock = max(self.clock, float(t.max()))
        # popularity: decay everything to `now`, then add each interaction's decayed weight
        self.pop *= np.exp(-self.decay * (now - self.pop_time))
        remember(u, i, t, self.u_last, self.i_last, self.u_count, self.i_count, self.pop,
                 decay=self.decay, now=now)  # fmt: skip
        self.i_alive[i] = True
        self.pop_time = now
        self._pending.append(u.astype(np.int64, copy=False) * _SPAN + i)
        self._n_pending += len(u)
        if self._n_pending > max(1 << 16, len(self._seen) // 2):
            self._merge_seen()

    @property
    def seen(self) -> Array:
        """Sorted codes ``user_id * 2**31 + item_id`` of every (user, item) pair seen."""
        self._merge_seen()
        return self._seen

    @seen.setter
    def seen(self, codes: Array) -> None:
        self._seen, self._pending, self._n_pending = codes, [], 0

    def _merge_seen(self) -> None:
        """Merge the pending codes into the sorted array (amortized: one sort per doubling)."""
        if not self._pending:
            return
        pending = np.concatenate(self._pending)
        pending.sort()  # quicksort (SIMD): several times faster than a stable sort of random codes
        merged = np.concatenate([self._seen, pending])
        merged.sort(kind="stable")  # two sorted runs: timsort merges them in one pass
        keep = np.r_[True, merged[1:] != merged[:-1]] if len(merged) else np.zeros(0, bool)
        self.seen = merged[keep]

    def _evict(self) -> None:
        over_u, over_i = self.n_users - self.max_users, self.n_items - self.max_items
        if over_u > 0:
            live = self.users.live()
            gone = live[np.lexsort((self.u_count[live], self.u_last[live]))[:over_u]]
            self.users.release(gone)
            self.u_count[gone], self.bu[gone], self.P[gone] = 0, 0.0, 0.0
            self.u_ready[gone] = False
            if self.ufeat is not None:
                self.ufeat.clear(gone)
            self.seen = self.seen[~np.isin(self.seen // _SPAN, gone)]
        if over_i > 0:
            live = self.items.live()
            gone = live[np.lexsort((self.i_count[live], self.i_last[live]))[:over_i]]
            self.items.release(gone)
            self.i_count[gone], self.bi[gone], self.Q[gone], self.pop[gone] = 0, 0.0, 0.0, 0.0
            self.i_alive[gone], self.i_ready[gone] = False, False
            if self.ifeat is not None:
                self.ifeat.clear(gone)
            self.seen = self.seen[~np.isin(self.seen % _SPAN, gone)]

    # -- scoring and serving ------------------------------------------------------------
    def predict(self, users: Array, items: Array) -> Array:
        """Predicted rating (explicit) or interaction probability (implicit) per pair.

        Unknown users or items get the global mean (explicit) or the item's bias only.
        """
        u, i = self.users.lookup(np.asarray(users)), self.items.lookup(np.asarray(items))
        ku, ki = u >= 0, i >= 0
        uu, ii = np.where(ku, u, 0), np.where(ki, i, 0)
        if not len(self.bu) or not len(self.bi):
            dot = np.zeros(len(u))
            bu, bi = dot, dot
        else:
            (P, BU), (Q, BI) = self._effective("u"), self._effective("i")
            dot = np.where(ku & ki, np.einsum("nf,nf->n", P[uu], Q[ii]), 0.0)
            bu, bi = np.where(ku, BU[uu], 0.0), np.where(ki, BI[ii], 0.0)
        if self.feedback == "explicit":
            out: Array = self.mean + bu + bi + dot
            return out
        s = np.clip(bi + dot, -30, 30)
        return 1.0 / (1.0 + np.exp(-s))

    def popularity(self, now: float | None = None) -> Array:
        """Decayed popularity per item id at time ``now`` (default: the latest time seen)."""
        now = self.clock if now is None else now
        out: Array = self.pop * np.exp(-self.decay * (now - self.pop_time))
        return out

    def recommend(
        self, user: Any, k: int = 10, features: Array | None = None
    ) -> list[tuple[Any, float]]:
        """Top-``k`` ``(item, score)`` for one user, best first, without items it has seen.

        Cold users (unknown, or fewer than ``cold_after`` interactions) get the most
        popular items, scored by decayed popularity, unless they have content features
        (stored with :meth:`add_users`, or ``features`` here): then the factors their
        features predict score the items.
        """
        x = None if features is None else np.asarray(features, np.float64).reshape(1, -1)
        items, scores = self.recommend_many(np.array([user], dtype=object), k, x)
        keep = np.isfinite(scores[0])
        return list(zip(items[0][keep].tolist(), scores[0][keep].tolist(), strict=True))

    def recommend_many(
        self, users: Array, k: int = 10, features: Array | None = None
    ) -> tuple[Array, Array]:
        """Top-``k`` items and scores for each user of a batch (rows: users, best first).

        ``features`` (one row per user) serve cold users from their content features.
        Missing places (fewer than ``k`` items to offer) have item ``None`` and score NaN.
        """
        ids, scores = self._top_ids(np.asarray(users), k, features)
        keys = np.full(ids.shape, None, dtype=object)
        ok = ids >= 0
        if ok.any():
            keys[ok] = self.items.values(ids[ok])
        return keys, scores

    def _user_vectors(self, u: Array, features: Array | None) -> tuple[Array, Array]:
        """Per row: use a factor vector (warm, or cold with features) and which vector."""
        n = len(u)
        warm = u >= 0
        warm[warm] = self.u_count[u[warm]] >= self.cold_after
        P = self.P
        vec = np.zeros((n, self.factors))
        if self.ufeat is not None:
            P = self._effective("u")[0]
            known = u >= 0
            stored = known & ~warm
            stored[stored] = self.ufeat.has[u[stored]]
            if features is not None:
                W = self.ufeat.fit(self.u_count, self.P, self.bu, self.n_seen)
                x = np.asarray(features, np.float64)
                if x.shape != (n, self.ufeat.dim) or not np.isfinite(x).all():
                    msg = f"features must be {n} rows of {self.ufeat.dim} finite numbers"
                    raise ConfigError(msg + f", got shape {x.shape}")
                given = ~warm & ~stored
                vec[given] = FeatureTable.predict_from(x[given], W)[0]
                warm = warm | given
            warm = warm | stored
        elif features is not None:
            msg = "this model has no user_features; build it with user_features=<length>"
            raise ConfigError(msg)
        vec[warm & (u >= 0)] = P[u[warm & (u >= 0)]]
        return warm, vec

    def _top_ids(
        self, users: Array, k: int, features: Array | None = None, chunk: int = 512
    ) -> tuple[Array, Array]:
        n = len(users)
        out_ids, out_s = np.full((n, k), -1, np.int64), np.full((n, k), np.nan)
        if n == 0 or not self.i_alive.any() or k < 1:
            return out_ids, out_s
        u = self.users.lookup(users) if self.n_users else np.full(n, -1, np.int64)
        warm, vec = self._user_vectors(u, features)
        Q, bi = self._effective("i")
        pop = np.where(self.i_alive, self.popularity(), -np.inf)
        bias = np.where(self.i_alive, bi, -np.inf)
        kk = min(k, int(self.i_alive.sum()))
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            uc, wc = u[a:b], warm[a:b]
            s = np.empty((b - a, len(self.bi)))
            s[~wc] = pop
            if wc.any():
                s[wc] = vec[a:b][wc] @ Q.T + bias
            rows, cols = self._seen_of(uc)
            s[rows, cols] = -np.inf
            top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
            ts = np.take_along_axis(s, top, 1)
            order = np.argsort(-ts, axis=1, kind="stable")
            top, ts = np.take_along_axis(top, order, 1), np.take_along_axis(ts, order, 1)
            ok = np.isfinite(ts)
            out_ids[a:b, :kk] = np.where(ok, top, -1)
            out_s[a:b, :kk] = np.where(ok, ts, np.nan)
        return out_ids, out_s

    def _seen_of(self, u: Array) -> tuple[Array, Array]:
        """(row, item id) of every seen pair of the users ``u`` (``-1``: nobody)."""
        known = np.where(u >= 0, u, -1).astype(np.int64)
        lo = np.searchsorted(self.seen, known * _SPAN)
        hi = np.searchsorted(self.seen, (known + 1) * _SPAN)
        hi = np.where(known >= 0, hi, lo)
        lens = hi - lo
        rows = np.repeat(np.arange(len(u)), lens)
        starts = np.repeat(lo - (np.cumsum(lens) - lens), lens)
        return rows, self.seen[np.arange(int(lens.sum())) + starts] % _SPAN

    def rank_of(
        self, users: Array, items: Array, k: int = 10, features: Array | None = None
    ) -> Array:
        """Rank (0 = best) of ``items[j]`` in the top-``k`` for ``users[j]``, ``-1`` if absent.

        The prequential test: call it before :meth:`learn` on the same interactions
        (``features``: the users' content features, as for :meth:`recommend_many`).
        """
        ids, _ = self._top_ids(np.asarray(users), k, features)
        target = self.items.lookup(np.asarray(items)) if self.n_items else np.full(len(ids), -1)
        hit = (ids == target[:, None]) & (target[:, None] >= 0)
        out: Array = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
        return out

    # -- state --------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Factors, biases, counts, popularity, seen pairs and id maps (arrays + JSON)."""
        nu, ni = self.users.capacity, self.items.capacity
        return {
            "kind": _KIND, "params": self.params, "users": self.users.snapshot(),
            "items": self.items.snapshot(), "P": self.P[:nu].copy(), "Q": self.Q[:ni].copy(),
            "bu": self.bu[:nu].copy(), "bi": self.bi[:ni].copy(),
            "u_count": self.u_count[:nu].copy(), "i_count": self.i_count[:ni].copy(),
            "u_last": self.u_last[:nu].copy(), "i_last": self.i_last[:ni].copy(),
            "pop": self.pop[:ni].copy(), "i_alive": self.i_alive[:ni].astype(np.int8),
            "seen": self.seen.copy(), "mean": self.mean, "n_seen": self.n_seen,
            "clock": self.clock, "pop_time": self.pop_time,
            "rng": rng_state(self.rng), "u_ready": self.u_ready[:nu].astype(np.int8),
            "i_ready": self.i_ready[:ni].astype(np.int8),
            "adagrad": {"GP": self.GP[:nu].copy(), "GQ": self.GQ[:ni].copy(),
                        "gbu": self.gbu[:nu].copy(), "gbi": self.gbi[:ni].copy()}
            if self.adagrad else None,
            "user_features": None if self.ufeat is None else self.ufeat.snapshot(nu),
            "item_features": None if self.ifeat is None else self.ifeat.snapshot(ni),
        }  # fmt: skip

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`.

        Raises:
            StateError: if the snapshot is not of an ``OnlineMF`` with these parameters.
        """
        if snap.get("kind") != _KIND or snap.get("params") != self.params:
            msg = (
                f"the snapshot is of {snap.get('kind')} with {snap.get('params')}, this model "
                f"is {_KIND} with {self.params}; start a new state to change parameters"
            )
            raise StateError(msg)
        self.users.restore(snap["users"])
        self.items.restore(snap["items"])
        f = self.factors
        self.P = np.asarray(snap["P"], np.float64).reshape(-1, f).copy()
        self.Q = np.asarray(snap["Q"], np.float64).reshape(-1, f).copy()
        for name in ("bu", "bi", "u_last", "i_last", "pop"):
            setattr(self, name, np.asarray(snap[name], np.float64).copy())
        self.u_count = np.asarray(snap["u_count"], np.int64).copy()
        self.i_count = np.asarray(snap["i_count"], np.int64).copy()
        self.i_alive = np.asarray(snap["i_alive"]).astype(bool)
        self.u_ready = np.asarray(snap["u_ready"]).astype(bool)
        self.i_ready = np.asarray(snap["i_ready"]).astype(bool)
        if self.adagrad:
            acc = snap["adagrad"]
            self.GP = np.asarray(acc["GP"], np.float64).reshape(-1, f).copy()
            self.GQ = np.asarray(acc["GQ"], np.float64).reshape(-1, f).copy()
            self.gbu = np.asarray(acc["gbu"], np.float64).copy()
            self.gbi = np.asarray(acc["gbi"], np.float64).copy()
        if self.ufeat is not None:
            self.ufeat.restore(snap["user_features"])
        if self.ifeat is not None:
            self.ifeat.restore(snap["item_features"])
        self.seen = np.asarray(snap["seen"], np.int64).copy()
        self.mean, self.n_seen = float(snap["mean"]), int(snap["n_seen"])
        self.clock, self.pop_time = float(snap["clock"]), float(snap["pop_time"])
        set_rng_state(self.rng, snap["rng"])


def _segment_add(table: Array, rows: Array, values: Array) -> None:
    """``np.add.at(table, rows, values)``: per-column ``bincount`` when the table is small.

    ``bincount`` sums a column in one pass (several times faster than ``np.add.at``), but
    costs the table's length per column, so large tables use ``np.add.at``.
    """
    if len(table) > 8 * len(rows) + 4096:
        np.add.at(table, rows, values)
        return
    for c in range(table.shape[1]):
        table[:, c] += np.bincount(rows, values[:, c], len(table))
