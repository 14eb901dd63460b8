"""Per-sample SGD for matrix factorization: one loop, compiled with numba where it is installed.

:func:`sgd` walks the interactions of a batch in order and takes one SGD step per
interaction (and, for implicit feedback, one per sampled negative right after its
positive), each step reading the parameters the previous step left: exactly per-sample
SGD, as River's ``reco.BiasedMF.learn_one`` does it, but with one call per batch. A step on
``(u, i)`` with error ``e`` (``r - prediction``; ``y - sigmoid(score)`` for implicit
feedback) is, for every factor ``f`` (both from the values before the step)::

    P[u, f] += lr * (e * Q[i, f] - reg * P[u, f])
    Q[i, f] += lr * (e * P[u, f] - reg * Q[i, f])

and ``b += lr * (e - reg * b)`` for the item bias and (explicit feedback) the user bias.
With ``adagrad=`` accumulators every parameter's step is instead ``lr * g / sqrt(G)``, ``g``
the bracket above and ``G`` that parameter's running sum of squared ``g`` (AdaGrad, the
per-coordinate adaptive rate Vowpal Wabbit uses by default; decision 0046).
Explicit feedback keeps a running mean rating, updated by each rating before its
prediction. These are the operations of :class:`~tidal.ml.reco.OnlineMF`'s ``"batch"``
mode with one interaction per batch, in the same order, so the two agree to rounding
(``tests/ml/test_reco_kernels.py``).

With numba (the ``learn`` extra) the loop is compiled once per process (cached on disk)
and learns millions of interactions per second; without numba the same function runs as
plain Python, some tens of thousands of interactions per second (the slow path;
:class:`~tidal.ml.reco.OnlineMF` then defaults to its vectorized ``"batch"`` mode).

Example:
    >>> import numpy as np
    >>> P, Q = np.full((1, 2), 0.1), np.full((1, 2), 0.1)
    >>> bu, bi = np.zeros(1), np.zeros(1)
    >>> u, i, r = np.zeros(2, np.int64), np.zeros(2, np.int64), np.array([4.0, 2.0])
    >>> mean = sgd(u, i, r, np.zeros(0, np.int64), P, Q, bu, bi, lr=0.1, reg=0.0,
    ...            explicit=True, mean=0.0, n_seen=0)
    >>> round(mean, 3), np.round(bu, 4).tolist(), np.round(P[0], 4).tolist()
    (3.0, [-0.1036], [0.0897, 0.0897])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.core.jit import compiled, has_numba

__all__ = ["has_numba", "remember", "sgd", "warm_up"]

_EPS = 1e-8  # AdaGrad: keeps the first step of a parameter with a zero gradient finite


def _kernel(  # noqa: PLR0913 - one tight loop, compiled by numba
    u: Any,
    i: Any,
    r: Any,
    neg: Any,
    P: Any,
    Q: Any,
    bu: Any,
    bi: Any,
    GP: Any,
    GQ: Any,
    gbu: Any,
    gbi: Any,
    lr: float,
    reg: float,
    explicit: bool,
    mean: float,
    n_seen: int,
    adaptive: bool,
) -> float:
    n = len(u)
    f = P.shape[1]
    per = len(neg) // n if n else 0
    for j in range(n):
        a = u[j]
        for k in range(per + 1):
            if k == 0:
                b = i[j]
            else:
                b = neg[j * per + k - 1]
            dot = 0.0
            for c in range(f):
                dot += P[a, c] * Q[b, c]
            if explicit:
                n_seen += 1
                mean += (r[j] - mean) / n_seen
                e = r[j] - (mean + bu[a] + bi[b] + dot)
            else:
                s = min(max(bi[b] + dot, -30.0), 30.0)
                e = (1.0 if k == 0 else 0.0) - 1.0 / (1.0 + math.exp(-s))
            for c in range(f):
                pu = P[a, c]
                qi = Q[b, c]
                gu = e * qi - reg * pu
                gi = e * pu - reg * qi
                if adaptive:
                    GP[a, c] += gu * gu
                    GQ[b, c] += gi * gi
                    gu /= math.sqrt(GP[a, c] + _EPS)
                    gi /= math.sqrt(GQ[b, c] + _EPS)
                P[a, c] = pu + lr * gu
                Q[b, c] = qi + lr * gi
            if explicit:
                g = e - reg * bu[a]
                if adaptive:
                    gbu[a] += g * g
                    g /= math.sqrt(gbu[a] + _EPS)
                bu[a] += lr * g
            g = e - reg * bi[b]
            if adaptive:
                gbi[b] += g * g
                g /= math.sqrt(gbi[b] + _EPS)
            bi[b] += lr * g
    return mean


def _remember_kernel(  # noqa: PLR0913 - the model's bookkeeping arrays
    u: Any,
    i: Any,
    t: Any,
    u_last: Any,
    i_last: Any,
    u_count: Any,
    i_count: Any,
    pop: Any,
    decay: float,
    now: float,
) -> None:
    for j in range(len(u)):
        a, b, tj = u[j], i[j], t[j]
        u_last[a] = max(u_last[a], tj)
        i_last[b] = max(i_last[b], tj)
        u_count[a] += 1
        i_count[b] += 1
        pop[b] += math.exp(-decay * max(now - tj, 0.0))


_NO_ACC1, _NO_ACC2 = np.zeros(0), np.zeros((0, 1))  # plain SGD: no accumulators


def _jit() -> Any:
    return compiled(_kernel)


def _jit_remember() -> Any:
    return compiled(_remember_kernel, numpy_errors=False)


def remember(  # noqa: PLR0913 - the model's bookkeeping arrays
    u: Array,
    i: Array,
    t: Array,
    u_last: Array,
    i_last: Array,
    u_count: Array,
    i_count: Array,
    pop: Array,
    *,
    decay: float,
    now: float,
) -> None:
    """Per interaction: latest time, count, and popularity ``exp(-decay * (now - t))``, in place.

    Compiled with numba where installed; otherwise numpy (``np.maximum.at``, ``bincount``).
    """
    if has_numba():
        _jit_remember()(u, i, t, u_last, i_last, u_count, i_count, pop, float(decay), float(now))
        return
    np.maximum.at(u_last, u, t)
    np.maximum.at(i_last, i, t)
    u_count += np.bincount(u, minlength=len(u_count))
    i_count += np.bincount(i, minlength=len(i_count))
    pop += np.bincount(i, np.exp(-decay * np.maximum(now - t, 0.0)), len(pop))


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernel now, not in the first batch."""
    if has_numba():
        one, none = np.zeros(1, np.int64), np.zeros(0, np.int64)
        for explicit in (True, False):
            sgd(one, one, np.zeros(1), none, np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1),
                np.zeros(1), lr=0.1, reg=0.0, explicit=explicit, mean=0.0,
                n_seen=0)  # fmt: skip
            acc = (np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1), np.zeros(1))
            sgd(one, one, np.zeros(1), none, np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1),
                np.zeros(1), lr=0.1, reg=0.0, explicit=explicit, mean=0.0, n_seen=0,
                adagrad=acc)  # fmt: skip
        z, c = np.zeros(1), np.zeros(1, np.int64)
        remember(one, one, z, z.copy(), z.copy(), c, c.copy(), z.copy(), decay=0.1, now=0.0)


def sgd(  # noqa: PLR0913 - the model's arrays and settings
    u: Array,
    i: Array,
    r: Array,
    neg: Array,
    P: Array,
    Q: Array,
    bu: Array,
    bi: Array,
    *,
    lr: float,
    reg: float,
    explicit: bool,
    mean: float,
    n_seen: int,
    adagrad: tuple[Array, Array, Array, Array] | None = None,
    engine: str = "auto",
) -> float:
    """Per-sample SGD over the interactions ``(u[j], i[j], r[j])``, in place; the new mean.

    ``neg`` holds ``len(neg) // len(u)`` sampled negative items per interaction (implicit
    feedback; empty for explicit). ``adagrad``: the running sums of squared gradients
    ``(GP, GQ, gbu, gbi)``, shaped like ``P, Q, bu, bi`` and updated in place, for AdaGrad
    steps (each parameter's step is ``lr * g / sqrt(G + 1e-8)``, ``G`` including this
    ``g**2``); ``None`` for plain SGD. ``engine`` is ``"numba"``, ``"python"`` or ``"auto"``.
    """
    acc = adagrad if adagrad is not None else (_NO_ACC2, _NO_ACC2, _NO_ACC1, _NO_ACC1)
    args = (u, i, r, neg, P, Q, bu, bi, *acc, float(lr), float(reg), bool(explicit),
            float(mean), int(n_seen), adagrad is not None)  # fmt: skip
    if engine == "numba" or (engine == "auto" and has_numba()):
        return float(_jit()(*args))
    return float(_kernel(*args))
