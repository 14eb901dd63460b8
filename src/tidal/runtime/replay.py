"""Replay (the Kappa architecture): start a pipeline again from an offset or a point in time.

``tidal run FILE.py --from-offset N`` or ``--from-time 2024-01-01T00:00:00Z`` reprocesses
history, e.g. after a model change: the run does *not* restore a checkpoint (state starts
empty), every source opens at the given place, and transactional sinks discard output that
an earlier attempt staged but never committed. It is a reset of the job: its first
checkpoint is taken before the first batch, so from then on a plain restart resumes the
replay, not the job that ran before. Write a replay to a new output (another sink path, or
another ``--data-dir``) when the old results must stay.

- ``offset=N`` opens every partition of every source at position ``N``. For the built-in
  sources a position counts the records before it (a generator's sequence number, a file's
  line or row count, a log partition's next offset), so ``N`` skips the first ``N`` records
  of each partition.
- ``time_ms=T`` asks each source for the first record with a timestamp ``>= T``; only a
  source implementing :class:`SeeksByTime` (the embedded log can) supports it, others raise
  :class:`~tidal.errors.ConfigError`.

Example:
    >>> parse_time("2024-01-01T00:00:00Z"), parse_time("1704067200000")
    (1704067200000, 1704067200000)
    >>> StartFrom(offset=5).positions("in", [0, 1], object())
    {0: 5, 1: 5}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from tidal.errors import ConfigError

__all__ = ["SeeksByTime", "StartFrom", "parse_time"]


@runtime_checkable
class SeeksByTime(Protocol):
    """A source that can find, per partition, the first record at or after a time."""

    def positions_for_time(self, time_ms: int) -> Mapping[int, Any]:
        """Per partition, the position of the first record with a timestamp ``>= time_ms``.

        Called before ``open``; the runtime opens the source at these positions.
        """
        ...


def parse_time(text: str) -> int:
    """A point in time as Unix milliseconds: ISO-8601 (``Z`` or an offset) or an int of ms.

    A time without a zone is taken as UTC.

    Raises:
        ConfigError: for anything else.

    Example:
        >>> parse_time("2024-01-01T01:00:00+01:00")
        1704067200000
    """
    raw = text.strip()
    if raw.lstrip("-").isdigit():
        return int(raw)
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        msg = f"expected a time like 2024-01-01T00:00:00Z or milliseconds since 1970, got {text!r}"
        raise ConfigError(msg) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return round(when.timestamp() * 1000)


@dataclass(frozen=True, kw_only=True)
class StartFrom:
    """Where a replay starts: ``offset`` in every partition, or the first record at ``time_ms``.

    Raises:
        ConfigError: unless exactly one of the two is given, or for a negative offset.
    """

    offset: int | None = None
    time_ms: int | None = None

    def __post_init__(self) -> None:
        if (self.offset is None) == (self.time_ms is None):
            msg = "a replay starts from an offset or from a time: give exactly one of the two"
            raise ConfigError(msg)
        if self.offset is not None and self.offset < 0:
            msg = f"a replay offset must be >= 0, got {self.offset}"
            raise ConfigError(msg)

    def describe(self) -> str:
        """``offset 5`` or ``time 2024-01-01T00:00:00.000Z``."""
        if self.offset is not None:
            return f"offset {self.offset}"
        assert self.time_ms is not None
        when = datetime.fromtimestamp(self.time_ms / 1000, tz=UTC)
        return "time " + when.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def positions(self, step: str, partitions: Sequence[int], source: Any) -> dict[int, Any]:
        """The positions to open ``source`` (the step ``step``) at.

        Raises:
            ConfigError: for a time on a source that cannot seek by time.
        """
        if self.offset is not None:
            return {int(p): self.offset for p in partitions}
        assert self.time_ms is not None
        if not isinstance(source, SeeksByTime):
            msg = (
                f"source {step!r} ({type(source).__name__}) cannot start from a time: it does "
                "not index records by timestamp; use --from-offset, or read the data from the "
                "embedded log, which can"
            )
            raise ConfigError(msg)
        return {int(k): v for k, v in source.positions_for_time(self.time_ms).items()}
