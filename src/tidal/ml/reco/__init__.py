"""Online recommenders: matrix factorization learned from a stream of interactions.

:class:`OnlineMF` holds the model; :class:`RecommendStep` makes it a pipeline step that
learns from interactions and answers top-k queries from the same state
(``Stream.recommend``). :data:`RECOMMENDERS` names every recommender for the
conformance suite.
"""

from tidal.ml.reco.mf import OnlineMF
from tidal.ml.reco.step import RECOMMENDERS, RecommendStep, make, ndcg_at

__all__ = ["RECOMMENDERS", "OnlineMF", "RecommendStep", "make", "ndcg_at"]
