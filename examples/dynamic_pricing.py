"""Dynamic pricing with Q-learning: tabular and linear, on a simulated shop fed as a stream.

    python examples/dynamic_pricing.py --episodes 3000

Environment: 64 stores each sell a perishable stock of 12 units over a 10-period selling
season (then the rest is thrown away). Each period a store picks one of 5 prices; demand is
Poisson with a mean that falls with the price and rises towards the end of the season
(last-minute buyers). Revenue is the reward. The best policy prices high while stock is
plentiful relative to the time left, and lower to clear it: something a fixed price
cannot do.

Stream: every period, the 64 stores' states are one batch of events (``periods_left``,
``stock``) into the ``decide`` step (the operator ``Stream.decide`` adds to a pipeline),
which picks prices with their propensities and decision ids; the stores' sales come back
as feedback rows (state, action, revenue, next state, ``done``) on the step's second
input. The environment reacts to the decisions, so this loop is closed here in Python, as
a deployment closes it through the outside world (decisions out to one topic, outcomes
back on another).

Learners: ``tabular_q`` over the 11 x 13 (periods left, stock) states, and ``linear_q``
over 6 features of the state. The learning curve (mean revenue per store-season, per
block of episodes) is printed beside the best fixed price and random pricing.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from tidal.core.batch import Batch
from tidal.ml.bandits import DecideStep

PRICES = np.array([4.0, 6.0, 8.0, 10.0, 12.0])
STORES, SEASON, STOCK = 64, 10, 12


def demand(prices: np.ndarray, periods_left: np.ndarray) -> np.ndarray:
    """Mean demand per period."""
    rush = 1.0 + 1.5 * (periods_left <= 3)
    out: np.ndarray = 2.2 * np.exp(-(prices - 4.0) / 5.0) * rush
    return out


def features(left: np.ndarray, stock: np.ndarray) -> dict[str, np.ndarray]:
    """The state as columns: the tabular id and the linear features."""
    t, s = left / SEASON, stock / STOCK
    return {
        "state": (left * (STOCK + 1) + stock).astype(np.int64), "bias": np.ones(len(t)),
        "t": t, "s": s, "ts": t * s, "s2": s * s, "t2": t * t,
    }  # fmt: skip


LINEAR = ["bias", "t", "s", "ts", "s2", "t2"]


def season(step: DecideStep | None, rng: np.random.Generator, fixed: int | None = None) -> float:
    """One selling season for all stores; the step decides and learns (or a fixed price)."""
    left, stock = np.full(STORES, SEASON), np.full(STORES, STOCK)
    revenue = np.zeros(STORES)
    for _ in range(SEASON):
        obs = features(left, stock)
        if step is None:
            action = np.full(STORES, fixed if fixed is not None else 0)
            if fixed is None:
                action = rng.integers(0, len(PRICES), STORES)
        else:
            action = step.process(Batch(obs), 0)[0][1]["action"]
        sold = np.minimum(rng.poisson(demand(PRICES[action], left)), stock)
        reward = sold * PRICES[action]
        revenue += reward
        left2, stock2 = left - 1, stock - sold
        done = (left2 == 0) | (stock2 == 0)
        if step is not None:
            nxt = {f"next_{k}": v for k, v in features(left2, stock2).items()}
            fb = {**obs, **nxt, "action": action, "reward": reward, "done": done}
            step.process(Batch(fb), 1)
        left, stock = left2, stock2  # a sold-out store idles (reward 0) to the season's end
    return float(revenue.mean())


def _step(kind: str) -> DecideStep:
    if kind == "tabular_q":
        cols = ["state"]
        return DecideStep("price", "tabular_q", features=cols, next_features=["next_state"],
                          done="done", n_arms=len(PRICES), n_states=(SEASON + 1) * (STOCK + 1),
                          lr=0.1, gamma=1.0, epsilon=0.1, seed=1)  # fmt: skip
    return DecideStep("price", "linear_q", features=LINEAR,
                      next_features=[f"next_{c}" for c in LINEAR], done="done",
                      n_arms=len(PRICES), lr=0.02, gamma=1.0, epsilon=0.1, seed=1)  # fmt: skip


def main(episodes: int = 3000, *, echo: bool = True, seed: int = 0) -> dict[str, Any]:
    """Train both learners; returns the learning curves and the baselines."""
    rng = np.random.default_rng(seed)
    fixed = {float(p): np.mean([season(None, rng, k) for _ in range(50)])
             for k, p in enumerate(PRICES)}  # fmt: skip
    best_fixed = max(fixed.values())
    random_price = float(np.mean([season(None, rng) for _ in range(50)]))
    blocks = 10
    per = max(episodes // blocks, 1)
    curves: dict[str, list[float]] = {}
    greedy: dict[str, float] = {}
    for kind in ("tabular_q", "linear_q"):
        step, run_rng = _step(kind), np.random.default_rng(seed + 1)
        curves[kind] = [
            float(np.mean([season(step, run_rng) for _ in range(per)])) for _ in range(blocks)
        ]
        step.policy.epsilon = 0.0  # exploration off: what the learned policy earns
        greedy[kind] = float(np.mean([season(step, run_rng) for _ in range(50)]))
    result = {
        "episodes": per * blocks, "stores": STORES, "curves": curves, "greedy": greedy,
        "best_fixed_price": best_fixed, "fixed_prices": fixed, "random": random_price,
    }  # fmt: skip
    if echo:
        print(f"mean revenue per store-season ({STORES} stores; best fixed price "
              f"{best_fixed:.1f}, random {random_price:.1f})")  # fmt: skip
        print(f"{'seasons':>8} {'tabular Q':>10} {'linear Q':>10}")
        for b in range(blocks):
            tab, lin = curves["tabular_q"][b], curves["linear_q"][b]
            print(f"{(b + 1) * per:>8} {tab:>10.1f} {lin:>10.1f}")
        print(f"{'greedy':>8} {greedy['tabular_q']:>10.1f} {greedy['linear_q']:>10.1f}"
              "   (exploration off, 50 more seasons)")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=3000)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    out = main(args.episodes, echo=not args.json)
    if args.json:
        print(json.dumps(out))
