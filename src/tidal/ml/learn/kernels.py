"""The update loop of the linear learners: one kernel, compiled with numba where it is installed.

:func:`fit` walks the rows of ``X`` in chunks of ``chunk`` rows. For each chunk it first
*predicts* every row with the current weights (written to ``out``: the test-then-train
prediction), then takes one optimizer step on the chunk's mean gradient. ``chunk=1`` is
per-sample learning (the ``exact`` mode); a larger chunk is mini-batch learning.

The weights are one ``(d + 1, k)`` matrix ``W`` whose last row is the intercept (never
regularized). Losses: squared error (``k = 1``), logistic (``k = 1``, ``out`` is P(y = 1)),
softmax (``k`` classes, ``out`` the probabilities). Optimizers, per coordinate:

* SGD: ``w -= lr * (g + l2 * w + l1 * sign(w))``;
* Adam: bias-corrected first and second moments in ``A`` and ``B``, with the same L1/L2
  terms added to the gradient;
* FTRL-proximal (McMahan et al., 2013): ``A`` holds ``z`` and ``B`` holds ``n``; the weight
  is the closed form ``0`` if ``|z| <= l1`` else ``-(z - sign(z) l1) / ((beta + sqrt(n)) / lr
  + l2)``.

With numba the kernel is compiled once per process (cached on disk) and runs at tens of
millions of feature-updates per second; without it :func:`fit` runs the same arithmetic in
numpy, vectorized per chunk, which is fast for mini-batches and slow (a Python loop, some
tens of thousands of rows per second) for ``chunk=1``.

Example:
    >>> import numpy as np
    >>> X = np.array([[1.0], [2.0]]); y = np.array([2.0, 4.0])
    >>> W, A, B, t = np.zeros((2, 1)), np.zeros((2, 1)), np.zeros((2, 1)), np.zeros(1, np.int64)
    >>> out = np.zeros((2, 1))
    >>> fit(X, y, np.ones(2), W, A, B, t, loss=SQUARED, opt=SGD, lr=0.1, chunk=1, out=out)
    >>> np.round(out.ravel(), 4).tolist(), np.round(W.ravel(), 4).tolist(), int(t[0])
    ([0.0, 0.6], [0.88, 0.54], 2)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tidal.core.batch import Array
from tidal.core.jit import compiled, has_numba

__all__ = [
    "ADAM",
    "FTRL",
    "LOGISTIC",
    "SGD",
    "SOFTMAX",
    "SQUARED",
    "fit",
    "has_numba",
    "moments",
    "standardize",
    "warm_up",
]

SQUARED, LOGISTIC, SOFTMAX = 0, 1, 2
SGD, ADAM, FTRL = 0, 1, 2


def _kernel(  # noqa: C901, PLR0912, PLR0913, PLR0915 - one tight loop, compiled by numba
    X: Any,
    y: Any,
    sw: Any,
    W: Any,
    A: Any,
    B: Any,
    t: Any,
    loss: int,
    opt: int,
    lr: float,
    l1: float,
    l2: float,
    b1: float,
    b2: float,
    eps: float,
    fbeta: float,
    chunk: int,
    out: Any,
) -> None:
    n, d = X.shape
    k = W.shape[1]
    G = np.zeros((d + 1, k))
    z = np.zeros(k)
    exact = chunk == 1  # a step per row on its own gradient, r * X[i]: G is not needed
    if exact and k == 1 and loss != 2 and opt == 0 and l1 == 0.0:  # noqa: PLR2004
        # the common exact case (one output, plain SGD, no L1), as a loop without branches
        # per weight; the same arithmetic, in the same order, as the general loop below
        for i in range(n):
            s = W[d, 0]
            for j in range(d):
                s += X[i, j] * W[j, 0]
            if loss == 0:
                out[i, 0] = s
                r = s - y[i]
            else:
                if s >= 0.0:
                    p = 1.0 / (1.0 + math.exp(-s))
                else:
                    e = math.exp(s)
                    p = e / (1.0 + e)
                out[i, 0] = p
                r = p - y[i]
            r = r * sw[i]
            t[0] += 1
            for j in range(d):
                w = W[j, 0]
                W[j, 0] = w - lr * (r * X[i, j] + l2 * w)
            w = W[d, 0]
            W[d, 0] = w - lr * (r + 0.0 * w)
        return
    rows = 0  # rows in the current chunk
    for i in range(n):
        for c in range(k):
            s = W[d, c]
            for j in range(d):
                s += X[i, j] * W[j, c]
            z[c] = s
        if loss == 0:
            out[i, 0] = z[0]
            z[0] = z[0] - y[i]
        elif loss == 1:
            if z[0] >= 0.0:
                p = 1.0 / (1.0 + math.exp(-z[0]))
            else:
                e = math.exp(z[0])
                p = e / (1.0 + e)
            out[i, 0] = p
            z[0] = p - y[i]
        else:
            top = z[0]
            for c in range(1, k):
                top = max(top, z[c])
            total = 0.0
            for c in range(k):
                z[c] = math.exp(z[c] - top)
                total += z[c]
            for c in range(k):
                out[i, c] = z[c] / total
                z[c] = out[i, c] - (1.0 if c == int(y[i]) else 0.0)
        for c in range(k):
            z[c] = z[c] * sw[i]  # the residual r, weighted
        rows += 1
        if not exact:
            for c in range(k):
                r = z[c]
                for j in range(d):
                    G[j, c] += r * X[i, j]
                G[d, c] += r
            if rows < chunk and i < n - 1:
                continue
        scale = 1.0 / rows
        rows = 0
        t[0] += 1
        step = t[0]
        bias1 = 1.0 - b1**step  # Adam's bias corrections, once per step
        bias2 = 1.0 - b2**step
        for j in range(d + 1):
            reg1 = l1 if j < d else 0.0
            reg2 = l2 if j < d else 0.0
            for c in range(k):
                if exact:
                    g = z[c] * X[i, j] if j < d else z[c]
                else:
                    g = G[j, c] * scale
                w = W[j, c]
                if opt == 2:
                    sigma = (math.sqrt(B[j, c] + g * g) - math.sqrt(B[j, c])) / lr
                    A[j, c] += g - sigma * w
                    B[j, c] += g * g
                    zz = A[j, c]
                    if abs(zz) <= reg1:
                        W[j, c] = 0.0
                    else:
                        sign = 1.0 if zz > 0 else -1.0
                        W[j, c] = -(zz - sign * reg1) / ((fbeta + math.sqrt(B[j, c])) / lr + reg2)
                    continue
                g += reg2 * w
                if w > 0:
                    g += reg1
                elif w < 0:
                    g -= reg1
                if opt == 0:
                    W[j, c] = w - lr * g
                else:
                    A[j, c] = b1 * A[j, c] + (1.0 - b1) * g
                    B[j, c] = b2 * B[j, c] + (1.0 - b2) * g * g
                    mhat = A[j, c] / bias1
                    vhat = B[j, c] / bias2
                    W[j, c] = w - lr * mhat / (math.sqrt(vhat) + eps)
        if not exact:
            G[:, :] = 0.0


def _numpy(  # noqa: PLR0913 - the same arguments as the kernel
    X: Array,
    y: Array,
    sw: Array,
    W: Array,
    A: Array,
    B: Array,
    t: Array,
    loss: int,
    opt: int,
    lr: float,
    l1: float,
    l2: float,
    b1: float,
    b2: float,
    eps: float,
    fbeta: float,
    chunk: int,
    out: Array,
) -> None:
    n, d = X.shape
    k = W.shape[1]
    reg1 = np.full((d + 1, 1), l1)
    reg2 = np.full((d + 1, 1), l2)
    reg1[d] = reg2[d] = 0.0
    G = np.zeros((d + 1, k))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        xc = X[start:stop]
        zc = xc @ W[:d] + W[d]
        if loss == SQUARED:
            out[start:stop] = zc
            r = zc - y[start:stop, None]
        elif loss == LOGISTIC:
            p = np.empty_like(zc)
            pos = zc >= 0
            p[pos] = 1.0 / (1.0 + np.exp(-zc[pos]))
            e = np.exp(zc[~pos])
            p[~pos] = e / (1.0 + e)
            out[start:stop] = p
            r = p - y[start:stop, None]
        else:
            e = np.exp(zc - zc.max(axis=1, keepdims=True))
            p = e / e.sum(axis=1, keepdims=True)
            out[start:stop] = p
            r = p.copy()
            r[np.arange(stop - start), y[start:stop].astype(np.int64)] -= 1.0
        r *= sw[start:stop, None]
        G[:d] = xc.T @ r
        G[d] = r.sum(axis=0)
        g = G / (stop - start)
        t[0] += 1
        if opt == FTRL:
            sigma = (np.sqrt(B + g * g) - np.sqrt(B)) / lr
            A += g - sigma * W
            B += g * g
            W[:] = np.where(
                np.abs(A) <= reg1,
                0.0,
                -(A - np.sign(A) * reg1) / ((fbeta + np.sqrt(B)) / lr + reg2),
            )
            continue
        g = g + reg2 * W + reg1 * np.sign(W)
        if opt == SGD:
            W -= lr * g
        else:
            A *= b1
            A += (1.0 - b1) * g
            B *= b2
            B += (1.0 - b2) * g * g
            mhat = A / (1.0 - b1 ** int(t[0]))
            vhat = B / (1.0 - b2 ** int(t[0]))
            W -= lr * mhat / (np.sqrt(vhat) + eps)


def _standardize_kernel(x: Any, mean: Any, scale: Any, ok: Any) -> None:
    """``x = (x - mean) / scale`` in place, row by row; ``ok[i]``: row ``i`` is all finite."""
    n, k = x.shape
    for i in range(n):
        good = True
        for j in range(k):
            v = (x[i, j] - mean[j]) / scale[j]
            x[i, j] = v
            if not math.isfinite(v):
                good = False
        ok[i] = good


def _moments_kernel(x: Any, mean: Any, m2: Any) -> None:
    """Column means and sums of squared deviations, each summed row after row."""
    n, k = x.shape
    for i in range(n):
        for j in range(k):
            mean[j] += x[i, j]
    for j in range(k):
        mean[j] = mean[j] / n
    for i in range(n):
        for j in range(k):
            dev = x[i, j] - mean[j]
            m2[j] += dev * dev


def _jit() -> Any:
    return compiled(_kernel)


def _jit_standardize() -> Any:
    return compiled(_standardize_kernel, numpy_errors=False)


def _jit_moments() -> Any:
    return compiled(_moments_kernel, numpy_errors=False)


def moments(x: Array, *, engine: str = "auto") -> tuple[Array, Array]:
    """The column means of the float64 matrix ``x`` and the sums of squared deviations.

    The values of ``x.mean(axis=0)`` and ``((x - mean) ** 2).sum(axis=0)`` to the last
    bit: numpy sums a C-contiguous matrix of two or more columns down each column row
    after row, as the numba loop does (in two passes, without the temporaries); a single
    column numpy sums pairwise, so that case (and a run without numba) stays numpy.

    Example:
        >>> x = np.array([[1.0, 10.0], [3.0, 30.0]])
        >>> [a.tolist() for a in moments(x)]
        [[2.0, 20.0], [2.0, 200.0]]
    """
    n, k = x.shape
    numba_ok = engine == "numba" or (engine == "auto" and has_numba())
    if numba_ok and k >= 2 and n and x.flags.c_contiguous and x.dtype == np.float64:  # noqa: PLR2004
        mean, m2 = np.zeros(k), np.zeros(k)
        _jit_moments()(x, mean, m2)
        return mean, m2
    mean = x.mean(axis=0)
    dev = x - mean
    np.multiply(dev, dev, out=dev)  # ``(x - mean) ** 2`` without a second temporary
    m2 = dev.sum(axis=0)
    return mean, m2


def standardize(x: Array, mean: Array, scale: Array, *, engine: str = "auto") -> Array:
    """Standardize the C-contiguous float64 matrix ``x`` in place; which rows are all finite.

    ``x[:, j] = (x[:, j] - mean[j]) / scale[j]``: one pass over ``x`` with numba (the
    finite check in the same pass), ``x -= mean; x /= scale`` without; the same values
    either way (a subtraction, then a division, each rounded once).

    Example:
        >>> x = np.array([[1.0, 4.0], [3.0, np.inf]])
        >>> standardize(x, np.array([2.0, 0.0]), np.array([1.0, 2.0])).tolist(), x.tolist()
        ([True, False], [[-1.0, 2.0], [1.0, inf]])
    """
    if engine == "numba" or (engine == "auto" and has_numba()):
        ok = np.empty(len(x), dtype=np.bool_)
        mean, scale = (np.ascontiguousarray(a, np.float64) for a in (mean, scale))
        _jit_standardize()(x, mean, scale, ok)
        return ok
    x -= mean
    x /= scale
    return np.asarray(np.isfinite(x).all(axis=1), dtype=np.bool_)


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels now, not in the first batch."""
    if has_numba():
        standardize(np.zeros((1, 1)), np.zeros(1), np.ones(1))
        moments(np.zeros((1, 2)))
        x, w = np.zeros((1, 1)), np.zeros((2, 1))
        _jit()(
            x,
            np.zeros(1),
            np.ones(1),
            w,
            w.copy(),
            w.copy(),
            np.zeros(1, np.int64),
            0,
            0,
            0.1,
            0.0,
            0.0,
            0.9,
            0.999,
            1e-8,
            1.0,
            1,
            np.zeros((1, 1)),
        )


def fit(  # noqa: PLR0913 - the optimizer's settings are keyword arguments
    X: Array,
    y: Array,
    sw: Array,
    W: Array,
    A: Array,
    B: Array,
    t: Array,
    *,
    loss: int,
    opt: int,
    lr: float,
    chunk: int,
    out: Array,
    l1: float = 0.0,
    l2: float = 0.0,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    ftrl_beta: float = 1.0,
    engine: str = "auto",
) -> None:
    """Predict then learn ``X`` in chunks of ``chunk`` rows, updating ``W, A, B, t`` in place.

    ``engine`` is ``"numba"``, ``"numpy"``, or ``"auto"`` (numba when it is installed).
    """
    args = (
        X,
        y,
        sw,
        W,
        A,
        B,
        t,
        loss,
        opt,
        float(lr),
        float(l1),
        float(l2),
        float(beta1),
        float(beta2),
        float(eps),
        float(ftrl_beta),
        int(chunk),
        out,
    )
    if engine == "numba" or (engine == "auto" and has_numba()):
        _jit()(*args)
    else:
        _numpy(*args)
