"""Dead letters: records that could not be decoded or validated, with reason and position."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be decoded or validated.

    Attributes:
        step: the pipeline step that rejected it.
        reason: why, in words (e.g. ``"line 3: expected a number in 'value', got 'abc'"``).
        position: where it came from, e.g. ``{"file": "in.csv", "line": 3}`` or
            ``{"partition": 0, "offset": 17}``.
        raw: the record as received, when there is one.

    Example:
        >>> DeadLetter("read", "bad JSON", {"line": 3}, '{"x":').to_record()["reason"]
        'bad JSON'
    """

    step: str
    reason: str
    position: Mapping[str, Any] = field(default_factory=dict)
    raw: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The dead letter as a JSON-ready dict."""
        return {
            "step": self.step,
            "reason": self.reason,
            "position": dict(self.position),
            "raw": self.raw,
        }
