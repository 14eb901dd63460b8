"""Numeric loops compiled by numba where it is installed (the ``learn`` extra).

The learners, the recommenders and the detectors each keep a plain-Python loop for the
steps that cannot be vectorized (an exact per-sample update, a tree walk) and run it
compiled when numba imports; without numba they fall back to their numpy code. This module
is the one place that asks whether numba is there and compiles a loop once per process
(numba's disk cache keeps the machine code between processes).

A loop is a module-level function (numba's disk cache locates it by its file), compiled
where numba is there and run as plain Python where it is not::

    def _kernel(x, out): ...            # loops over arrays
    run = compiled(_kernel) if has_numba() else _kernel

Example:
    >>> isinstance(has_numba(), bool)
    True
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

__all__ = ["compiled", "has_numba"]


@functools.cache
def has_numba() -> bool:
    """True if numba imports."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def compiled(fn: Callable[..., Any], *, numpy_errors: bool = True) -> Any:
    """``fn`` compiled by ``numba.njit`` (nogil, disk-cached), once per process.

    ``numpy_errors`` picks numba's numpy error model (a division by zero gives inf or nan,
    as numpy does) instead of raising. numba must be installed (see :func:`has_numba`).
    """
    import numba

    options: dict[str, Any] = {"cache": True, "nogil": True}
    if numpy_errors:
        options["error_model"] = "numpy"
    return numba.njit(**options)(fn)
