"""Decisions on the stream: contextual bandits, off-policy evaluation and Q-learning.

* :mod:`~tidal.ml.bandits.policies`: epsilon-greedy, LinUCB and linear Thompson sampling.
* :mod:`~tidal.ml.bandits.qlearn`: tabular and linear Q-learning.
* :mod:`~tidal.ml.bandits.ope`: IPS, SNIPS and doubly robust estimates from logs.
* :mod:`~tidal.ml.bandits.step`: the ``decide`` pipeline step (decisions with
  propensities and ids; rewards joined back by decision id).
"""

from tidal.ml.bandits.catalog import POLICIES, Policy, make
from tidal.ml.bandits.ope import Estimate, doubly_robust, evaluate, ips, snips
from tidal.ml.bandits.policies import Decisions, EpsilonGreedy, LinearThompson, LinUCB
from tidal.ml.bandits.qlearn import LinearQ, TabularQ
from tidal.ml.bandits.step import DecideStep

__all__ = [
    "POLICIES",
    "DecideStep",
    "Decisions",
    "EpsilonGreedy",
    "Estimate",
    "LinUCB",
    "LinearQ",
    "LinearThompson",
    "Policy",
    "TabularQ",
    "doubly_robust",
    "evaluate",
    "ips",
    "make",
    "snips",
]
