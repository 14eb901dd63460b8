"""Online matrix factorization with biases, learned from mini-batches of interactions.

:class:`OnlineMF` scores a (user, item) pair as ``mu + b_u + b_i + p_u . q_i`` (explicit
ratings, squared loss) or ``sigmoid(b_i + p_u . q_i)`` (implicit feedback: every
interaction is a positive, ``negatives`` items sampled uniformly per positive are
negatives, logistic loss). One call to :meth:`OnlineMF.learn` is one mini-batch of
stochastic gradient descent, vectorized with numpy: the gradients of all rows are taken at
the batch's starting parameters and summed per user and per item (``np.add.at``), so a
user or item that appears several times in a batch gets every one of its steps, as in
per-sample SGD.

Serving comes from the same state: :meth:`OnlineMF.recommend` gives one user's top-k,
:meth:`OnlineMF.recommend_many` a batch of users', both excluding the items the user has
interacted with. Users with fewer than ``cold_after`` interactions (and unknown users) get
the most popular items instead, popularity being an exponentially time-decayed count per
item (``half_life`` in the units of the ``times`` given to :meth:`learn`, or in
interactions when no times are given).

Key growth is capped: past ``max_users`` users (``max_items`` items) the least recently
seen ones are evicted after the batch that went over, with their factors, biases and
seen items (ties: the fewer interactions first). An evicted user who returns starts cold.

Example:
    >>> import numpy as np
    >>> mf = OnlineMF(factors=4, seed=0)
    >>> mf.learn(np.array(["ann", "bob", "ann"]), np.array([1, 2, 3]), np.array([5.0, 3.0, 4.0]))
    >>> mf.n_users, mf.n_items, round(mf.mean, 3)
    (2, 3, 4.0)
    >>> [item for item, _ in mf.recommend("ann", 5)]
    [2]
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from tidal.core.batch import Array
from tidal.core.keys import KeyIndex
from tidal.errors import ConfigError, StateError
from tidal.ml.rngstate import rng_state, set_rng_state

__all__ = ["OnlineMF"]

_KIND = "mf/1"
_SPAN = np.int64(1) << 31  # seen pairs are coded user_id * _SPAN + item_id
Feedback = Literal["explicit", "implicit"]


class OnlineMF:
    """Matrix factorization with user and item biases, updated by mini-batch SGD.

    Args:
        factors: latent dimensions.
        feedback: ``"explicit"`` ratings (squared loss) or ``"implicit"`` interactions
            (logistic loss with sampled negatives).
        lr: SGD step size.
        reg: L2 penalty on factors and biases.
        negatives: sampled negatives per positive (implicit feedback).
        max_steps: a user's or item's steps summed in one batch; beyond it, its rows'
            gradients are scaled by ``max_steps / count`` (keeps large batches stable).
        max_users: users kept; the least recently seen are evicted beyond it.
        max_items: items kept; the least recently seen are evicted beyond it.
        half_life: popularity half-life, in the units of ``times`` (interactions if none).
        cold_after: interactions before a user gets personal recommendations.
        init_scale: standard deviation of the initial factors.
        seed: seed of the initial factors and the negative sampling.

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
    ) -> None:
        if feedback not in ("explicit", "implicit"):
            msg = f"feedback must be 'explicit' or 'implicit', got {feedback!r}"
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
        self.params: dict[str, Any] = {
            "factors": factors, "feedback": feedback, "lr": lr, "reg": reg,
            "negatives": negatives, "max_steps": max_steps, "max_users": max_users,
            "max_items": max_items,
            "half_life": half_life, "cold_after": cold_after, "init_scale": init_scale,
            "seed": seed,
        }  # fmt: skip
        self.factors, self.feedback, self.lr, self.reg = factors, feedback, lr, reg
        self.negatives, self.max_users, self.max_items = negatives, max_users, max_items
        self.max_steps = max(1, max_steps)
        self.decay = np.log(2.0) / half_life
        self.cold_after, self.init_scale = cold_after, init_scale
        self.rng = np.random.default_rng(seed)
        self.users, self.items = _Keys(), _Keys()
        self.P, self.Q = np.zeros((0, factors)), np.zeros((0, factors))
        self.bu, self.bi = np.zeros(0), np.zeros(0)
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
        if ni > len(self.bi):
            new = max(ni, 2 * len(self.bi), 64) - len(self.bi)
            self.Q = np.vstack([self.Q, np.zeros((new, f))])
            self.bi, self.i_last = np.r_[self.bi, np.zeros(new)], np.r_[self.i_last, np.zeros(new)]
            self.pop = np.r_[self.pop, np.zeros(new)]
            self.i_count = np.r_[self.i_count, np.zeros(new, np.int64)]
            self.i_alive = np.r_[self.i_alive, np.zeros(new, bool)]

    def _ids(self, index: _Keys, keys: Array, which: str) -> Array:
        ids: Array = index.ids(np.asarray(keys))
        self._grow()
        counts, table = (self.u_count, self.P) if which == "u" else (self.i_count, self.Q)
        fresh = np.unique(ids[counts[ids] == 0]) if len(ids) else ids
        if len(fresh):  # new (or reused) ids start from small random factors
            table[fresh] = self.rng.normal(0.0, self.init_scale, (len(fresh), self.factors))
        return ids

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
        if explicit:
            self._sgd_explicit(u, i, r)
        else:
            self._sgd_implicit(u, i)
        self._remember(u, i, t)
        self._evict()

    def _sgd_explicit(self, u: Array, i: Array, r: Array) -> None:
        self.mean += (float(r.sum()) - len(r) * self.mean) / (self.n_seen + len(r))
        pu, qi = self.P[u], self.Q[i]
        err = r - (self.mean + self.bu[u] + self.bi[i] + np.einsum("nf,nf->n", pu, qi))
        self._step(u, i, err, pu, qi, user_bias=True)

    def _sgd_implicit(self, u: Array, i: Array) -> None:
        alive = np.flatnonzero(self.i_alive | (np.bincount(i, minlength=len(self.bi)) > 0))
        neg = self.negatives
        uu = np.r_[u, np.repeat(u, neg)]
        ii = np.r_[i, alive[self.rng.integers(0, len(alive), len(u) * neg)]]
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
        if len(t) < 2 or bool((t[1:] >= t[:-1]).all()):  # in order: the last write is the max
            self.u_last[u] = np.maximum(self.u_last[u], t)
            self.i_last[i] = np.maximum(self.i_last[i], t)
        else:
            np.maximum.at(self.u_last, u, t)
            np.maximum.at(self.i_last, i, t)
        self.u_count += np.bincount(u, minlength=len(self.u_count))
        self.i_count += np.bincount(i, minlength=len(self.i_count))
        self.i_alive[i] = True
        # popularity: decay everything to `now`, then add each interaction's decayed weight
        self.pop *= np.exp(-self.decay * (now - self.pop_time))
        self.pop += np.bincount(i, np.exp(-self.decay * np.maximum(now - t, 0.0)), len(self.pop))
        self.pop_time = now
        self._pending.append(u.astype(np.int64) * _SPAN + i)
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
        merged = np.concatenate([self._seen, *self._pending])
        merged.sort(kind="stable")  # sorted runs: a merge, mostly
        keep = np.r_[True, merged[1:] != merged[:-1]] if len(merged) else np.zeros(0, bool)
        self.seen = merged[keep]

    def _evict(self) -> None:
        over_u, over_i = self.n_users - self.max_users, self.n_items - self.max_items
        if over_u > 0:
            live = self.users.live()
            gone = live[np.lexsort((self.u_count[live], self.u_last[live]))[:over_u]]
            self.users.release(gone)
            self.u_count[gone], self.bu[gone], self.P[gone] = 0, 0.0, 0.0
            self.seen = self.seen[~np.isin(self.seen // _SPAN, gone)]
        if over_i > 0:
            live = self.items.live()
            gone = live[np.lexsort((self.i_count[live], self.i_last[live]))[:over_i]]
            self.items.release(gone)
            self.i_count[gone], self.bi[gone], self.Q[gone], self.pop[gone] = 0, 0.0, 0.0, 0.0
            self.i_alive[gone] = False
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
            dot = np.where(ku & ki, np.einsum("nf,nf->n", self.P[uu], self.Q[ii]), 0.0)
            bu, bi = np.where(ku, self.bu[uu], 0.0), np.where(ki, self.bi[ii], 0.0)
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

    def recommend(self, user: Any, k: int = 10) -> list[tuple[Any, float]]:
        """Top-``k`` ``(item, score)`` for one user, best first, without items it has seen.

        Cold users (unknown, or fewer than ``cold_after`` interactions) get the most
        popular items, scored by decayed popularity.
        """
        items, scores = self.recommend_many(np.array([user], dtype=object), k)
        keep = np.isfinite(scores[0])
        return list(zip(items[0][keep].tolist(), scores[0][keep].tolist(), strict=True))

    def recommend_many(self, users: Array, k: int = 10) -> tuple[Array, Array]:
        """Top-``k`` items and scores for each user of a batch (rows: users, best first).

        Missing places (fewer than ``k`` items to offer) have item ``None`` and score NaN.
        """
        ids, scores = self._top_ids(np.asarray(users), k)
        keys = np.full(ids.shape, None, dtype=object)
        ok = ids >= 0
        if ok.any():
            keys[ok] = self.items.values(ids[ok])
        return keys, scores

    def _top_ids(self, users: Array, k: int, chunk: int = 512) -> tuple[Array, Array]:
        n = len(users)
        out_ids, out_s = np.full((n, k), -1, np.int64), np.full((n, k), np.nan)
        if n == 0 or not self.i_alive.any() or k < 1:
            return out_ids, out_s
        u = self.users.lookup(users) if self.n_users else np.full(n, -1, np.int64)
        warm = u >= 0
        warm[warm] = self.u_count[u[warm]] >= self.cold_after
        pop = np.where(self.i_alive, self.popularity(), -np.inf)
        bias = np.where(self.i_alive, self.bi, -np.inf)
        kk = min(k, int(self.i_alive.sum()))
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            uc, wc = u[a:b], warm[a:b]
            s = np.empty((b - a, len(self.bi)))
            s[~wc] = pop
            if wc.any():
                s[wc] = self.P[uc[wc]] @ self.Q.T + bias
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

    def rank_of(self, users: Array, items: Array, k: int = 10) -> Array:
        """Rank (0 = best) of ``items[j]`` in the top-``k`` for ``users[j]``, ``-1`` if absent.

        The prequential test: call it before :meth:`learn` on the same interactions.
        """
        ids, _ = self._top_ids(np.asarray(users), k)
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
            "rng": rng_state(self.rng),
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


class _Keys(KeyIndex):
    """A :class:`KeyIndex` with a numpy table for small non-negative integer keys.

    Known integer keys below ``2**26`` are looked up in an array (no Python per row or per
    distinct key); only keys never seen before go through the dict. Free ids are reused in
    the same order after a restore (the free list is kept sorted, as a restore rebuilds it).
    """

    _LIMIT = 1 << 26

    def __init__(self) -> None:
        super().__init__()
        self.table = np.full(0, -1, np.int64)

    def _small(self, values: Array) -> bool:
        return (
            values.dtype.kind in "iu"
            and len(values) > 0
            and self._kind in (None, "i", "u")
            and int(values.min()) >= 0
            and int(values.max()) < self._LIMIT
        )

    def ids(self, values: Array) -> Array:
        """Ids for a column of key values, adding keys not seen before."""
        if not self._small(values):
            return super().ids(values)
        top = int(values.max()) + 1
        if top > len(self.table):
            grown = max(top, 2 * len(self.table))
            self.table = np.r_[self.table, np.full(grown - len(self.table), -1, np.int64)]
        found: Array = self.table[values]
        new = found < 0
        if new.any():
            fresh = super().ids(values[new])
            self.table[values[new]] = fresh
            found[new] = fresh
        return found

    def lookup(self, values: Array) -> Array:
        """Ids for key values, ``-1`` for keys not in the index."""
        if not self._small(values):
            return super().lookup(values)
        inside = values < len(self.table)
        out: Array = np.where(inside, self.table[np.where(inside, values, 0)], -1)
        return out

    def release(self, ids: Array) -> None:
        """Forget the keys of ``ids``; their ids are reused for new keys."""
        if self._kind in ("i", "u") and len(self.table):
            keys = self.values(ids)
            keys = keys[keys < len(self.table)]
            self.table[keys] = -1
        super().release(ids)
        self._free.sort()

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot` (and rebuild the integer table)."""
        super().restore(snap)
        self.table = np.full(0, -1, np.int64)
        if self._kind in ("i", "u") and self._ids:
            keys = np.fromiter(self._ids.keys(), np.int64, len(self._ids))
            ids = np.fromiter(self._ids.values(), np.int64, len(self._ids))
            small = (keys >= 0) & (keys < self._LIMIT)
            if small.any():
                self.table = np.full(int(keys[small].max()) + 1, -1, np.int64)
                self.table[keys[small]] = ids[small]

    def live(self) -> Array:
        """Ids in use."""
        return np.fromiter(sorted(self._ids.values()), np.int64, len(self._ids))
