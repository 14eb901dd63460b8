"""A simulated shop: Tidal learns recommendations from views and purchases as they stream.

    python examples/shop_recommendations.py --events 200000

1. Simulation: users and items have planted latent tastes (8 dimensions); each item also
   has a popularity trend that rises and fades over time; new items arrive all along. A
   user (active users are picked more often) views an item drawn by their taste plus the
   item's current trend; a view turns into a purchase with a probability that grows with
   the taste match. A user views an item at most once (so every hit is a discovery: the
   recommenders never offer an item the user has seen). Events are in time order, 20 ms
   apart.
   Each item has content features (``f0``..``f3``: a noisy view of half its taste, as
   genre tags would be) on every event.
2. Pipeline: events -> ``recommend`` (``hybrid_mf``: implicit-feedback matrix
   factorization, per-sample SGD over every view and purchase, 8 sampled negatives each;
   a new item starts from the factors its features predict; popularity with a 10 min
   half-life for cold users) and, side by side on the same stream, a popularity-only
   recommender (the same step with ``cold_after`` so high it never personalizes). A query
   stream asks for the top-10 of some users at the end, answered from the same state.
3. Metrics, prequential (test-then-train): for every purchase, the rank of the bought item
   in the user's top-10 *before* the model saw the purchase; hit-rate@10 and NDCG@10 are
   printed as the stream goes, for the model and for the popularity baseline.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from tidal.core.batch import Batch
from tidal.ml.reco import ndcg_at
from tidal.pipeline import Pipeline
from tidal.testing import MemorySource, collect

TASTES = 8
FEATURES = 4


def simulate(events: int, *, users: int = 1000, items: int = 500, seed: int = 0) -> Batch:
    """The shop's event stream: ``user``, ``item``, ``kind`` (view/purchase), ``ts`` (ms)."""
    rng = np.random.default_rng(seed)
    total_items = items + events // 500  # one new item every 500 events
    taste_u = rng.normal(0, 1, (users, TASTES))
    taste_i = rng.normal(0, 1, (total_items, TASTES))
    born = np.r_[np.zeros(items, np.int64), np.arange(total_items - items) * 500]
    peak = born + rng.integers(0, max(events, 1), total_items)  # each item's trend peaks once
    width = rng.uniform(0.05, 0.3, total_items) * max(events, 1)
    activity = rng.zipf(1.6, users).clip(1, 200).astype(float)
    activity /= activity.sum()
    out_u, out_i = np.empty(events, np.int64), np.empty(events, np.int64)
    had = np.zeros((users, total_items), bool)
    block = 500
    for a in range(0, events, block):
        b = min(events, a + block)
        live = np.flatnonzero(born <= a)
        u = rng.choice(users, b - a, p=activity)
        trend = 1.5 * np.exp(-0.5 * ((a - peak[live]) / width[live]) ** 2)
        score = taste_u[u] @ taste_i[live].T / np.sqrt(TASTES) * 3.0 + trend
        score[had[u][:, live]] = -np.inf  # a user views an item once
        pick = np.argmax(score + rng.gumbel(size=score.shape), axis=1)  # softmax choice
        out_u[a:b], out_i[a:b] = u, live[pick]
        had[u, live[pick]] = True
    match = (taste_u[out_u] * taste_i[out_i]).sum(1) / np.sqrt(TASTES)
    buy = rng.random(events) < 1 / (1 + np.exp(-(2 * match - 2)))
    kind = np.where(buy, "purchase", "view").astype(object)
    cols: dict[str, np.ndarray] = {"user": out_u, "item": out_i, "kind": kind}
    # the catalog's content features: a noisy view of half the item's taste (e.g. genre tags)
    feats = taste_i[:, :FEATURES] + rng.normal(0, 0.5, (total_items, FEATURES))
    for c in range(FEATURES):
        cols[f"f{c}"] = feats[out_i, c]
    return Batch({**cols, "ts": np.arange(events) * 20})


class Prequential:
    """Hit-rate@10 / NDCG@10 on purchases, printed every ``every`` events."""

    def __init__(self, label: str, every: int, echo: bool) -> None:
        self.label, self.every, self.echo = label, every, echo
        self.ranks: list[np.ndarray] = []
        self.seen = 0
        self.curve: list[dict[str, float]] = []

    def __call__(self, batch: Batch) -> Batch:
        bought = batch["kind"] == "purchase"
        self.ranks.append(batch["reco_rank"][bought])
        before, self.seen = self.seen, self.seen + len(batch)
        if self.seen // self.every > before // self.every:
            self.report()
        return batch

    def report(self) -> dict[str, float]:
        """The metrics over the last ``every`` events' purchases (and print them)."""
        recent = np.concatenate(self.ranks) if self.ranks else np.zeros(0, np.int64)
        self.ranks = []
        point = {"events": self.seen, "purchases": len(recent),
                 "hit_rate@10": float((recent >= 0).mean()) if len(recent) else 0.0,
                 "ndcg@10": ndcg_at(recent) if len(recent) else 0.0}  # fmt: skip
        self.curve.append(point)
        if self.echo:
            print(f"{self.label:>10}  events {point['events']:>8,}  purchases "
                  f"{point['purchases']:>6,}  hit-rate@10 {point['hit_rate@10']:.3f}  "
                  f"NDCG@10 {point['ndcg@10']:.3f}")  # fmt: skip
        return point


def _late(curve: list[dict[str, float]]) -> dict[str, float]:
    """Purchase-weighted hit-rate@10 and NDCG@10 over the second half of the curve."""
    late = curve[len(curve) // 2 :]
    n = sum(p["purchases"] for p in late)
    return {
        "purchases": n,
        "hit_rate@10": sum(p["hit_rate@10"] * p["purchases"] for p in late) / max(n, 1),
        "ndcg@10": sum(p["ndcg@10"] * p["purchases"] for p in late) / max(n, 1),
    }


def main(events: int = 200_000, *, echo: bool = True, seed: int = 0) -> dict[str, Any]:
    """Run the shop; returns the prequential curves and totals."""
    data = simulate(events, seed=seed)
    cuts = [data.slice(a, min(events, a + 250)) for a in range(0, events, 250)]
    p = Pipeline("shop")
    shop = p.source("events", MemorySource(cuts), time="ts")
    regulars = np.argsort(-np.bincount(data["user"]), kind="stable")[:5]  # the most active
    asks = p.source("asks", MemorySource({"user": regulars}))
    every = max(events // 10, 1000)
    model = Prequential("mf", every, echo)
    pop = Prequential("popular", every, echo)
    opts: dict[str, Any] = {"k": 10, "half_life": "10m", "lr": 0.2, "negatives": 8, "reg": 0.0}
    features = [f"f{c}" for c in range(FEATURES)]
    learned = shop.recommend("mf", "hybrid_mf", queries=asks, factors=16, max_users=50_000,
                             item_features=features, user_features=(), **opts)  # fmt: skip
    learned.map("mf.metrics", model)
    answers = collect(learned.side("recommendations"))
    baseline = shop.recommend("popular", "implicit_mf", cold_after=10**9, factors=1, **opts)
    baseline.map("popular.metrics", pop)
    t0 = time.perf_counter()
    summary = p.run(max_wait="0ms")
    seconds = time.perf_counter() - t0
    for tracker in (model, pop):
        if any(len(r) for r in tracker.ranks):
            tracker.report()
    total = {
        "events": events,
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds),
        "purchases": int((data["kind"] == "purchase").sum()),
        "mf": model.curve,
        "popular": pop.curve,
        "answers": [(r["user"], r["items"][:5]) for r in answers.records()],
        "interactions_learned": summary.counts.get("mf.interactions", 0),
        "mf_late": _late(model.curve),
        "popular_late": _late(pop.curve),
    }
    if echo:
        print(f"{events:,} events in {seconds:.1f} s ({total['events_per_s']:,} events/s, "
              "both recommenders, with the top-10 of every event for the metrics)")  # fmt: skip
        mf_late, pop_late = total["mf_late"], total["popular_late"]
        hit, base = mf_late["hit_rate@10"], pop_late["hit_rate@10"]
        print(f"second half, purchases: hit-rate@10 mf {hit:.3f} vs popular {base:.3f} "
              f"({hit / max(base, 1e-9):.2f}x), NDCG@10 mf {mf_late['ndcg@10']:.3f} vs "
              f"popular {pop_late['ndcg@10']:.3f}")  # fmt: skip
        for user, items in total["answers"]:
            print(f"top-5 for user {user}: {items}")
    return total


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--json", action="store_true", help="print one JSON object, no progress")
    args = ap.parse_args()
    result = main(args.events, echo=not args.json)
    if args.json:
        print(json.dumps(result))
