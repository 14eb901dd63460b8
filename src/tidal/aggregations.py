"""Aggregations for windows (see :mod:`tidal.core.aggregations`).

``count``, ``sum``, ``mean``, ``min``, ``max``, ``var``, ``std``, ``quantile``, ``top_k``
and ``distinct``.
"""

from tidal.core.aggregations import (
    Aggregation,
    count,
    distinct,
    max,
    mean,
    min,
    quantile,
    std,
    sum,
    top_k,
    var,
)

__all__ = [
    "Aggregation",
    "count",
    "distinct",
    "max",
    "mean",
    "min",
    "quantile",
    "std",
    "sum",
    "top_k",
    "var",
]
