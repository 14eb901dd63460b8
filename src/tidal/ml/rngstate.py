"""A numpy random generator's state as JSON that any encoder takes (no 128-bit ints).

PCG64's state holds 128-bit integers, which JSON encoders such as orjson refuse; they are
written as decimal strings and read back exactly.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> saved = rng_state(rng)
    >>> a = rng.random()
    >>> set_rng_state(rng, saved)
    >>> rng.random() == a, isinstance(saved["state"]["state"], str)
    (True, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["rng_state", "set_rng_state"]


def _out(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _out(v) for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**53:
        return str(value)
    return value


def _in(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _in(v) for k, v in value.items()}
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The generator's state, JSON-ready (big integers as strings)."""
    out: dict[str, Any] = _out(rng.bit_generator.state)
    return out


def set_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    """Restore a state written by :func:`rng_state`."""
    rng.bit_generator.state = _in(state)
