"""Durations: ``timedelta`` or strings like ``"250ms"``, ``"5s"``, ``"1h"``, parsed here only.

Example:
    >>> to_millis("1.5s"), to_millis("250ms"), to_millis(timedelta(minutes=2))
    (1500, 250, 120000)
    >>> to_seconds("2ms")
    0.002
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TypeAlias

from tidal.errors import ConfigError

Duration: TypeAlias = timedelta | str
"""A duration: a ``timedelta`` or a string such as ``"250ms"``, ``"5s"``, ``"1h30m"``."""

_UNITS_US = {
    "us": 1,
    "µs": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "min": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(us|µs|ms|min|s|m|h|d)")
_FULL = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:us|µs|ms|min|s|m|h|d))+")


def to_timedelta(value: Duration) -> timedelta:
    """Parse a duration into a ``timedelta``.

    Args:
        value: a ``timedelta`` or a string of number-unit parts (``"1h30m"``, ``"250ms"``).
            Units: us, ms, s, m/min, h, d.

    Raises:
        ConfigError: if the string is not a duration, or the value is negative.

    Example:
        >>> to_timedelta("1h30m")
        datetime.timedelta(seconds=5400)
    """
    if isinstance(value, timedelta):
        td = value
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if not text or not _FULL.fullmatch(text):
            msg = (
                f"expected a duration like '250ms', '5s' or '1h30m', got {value!r}; "
                "units are us, ms, s, m, h, d"
            )
            raise ConfigError(msg)
        total_us = sum(float(n) * _UNITS_US[u] for n, u in _PART.findall(text))
        td = timedelta(microseconds=round(total_us))
    else:
        msg = f"expected a timedelta or a string like '5s', got {type(value).__name__}: {value!r}"
        raise ConfigError(msg)
    if td < timedelta(0):
        msg = f"a duration must not be negative, got {value!r}"
        raise ConfigError(msg)
    return td


def to_millis(value: Duration) -> int:
    """Parse a duration into whole milliseconds (event time is int64 ms in Tidal)."""
    return int(to_timedelta(value) / timedelta(milliseconds=1))


def to_seconds(value: Duration) -> float:
    """Parse a duration into float seconds (for processing-time budgets)."""
    return to_timedelta(value).total_seconds()
