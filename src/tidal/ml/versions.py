"""The records of the model registry: versions, lineage, stages, and how serving reads them.

These are the plain data of :mod:`tidal.ml.registry` (what ``lineage.json``, ``signature.json``
and ``stages.json`` hold) and the small read interface, :class:`RegistryReader`, that the
serving side (:mod:`tidal.ml.swap`) needs. Both the registry and the serving side import this
module; it imports neither. Every name here is importable from :mod:`tidal.ml.registry` too.

Example:
    >>> Stages.from_dict({"production": 2, "previous": [1]}).serving()
    (2, None, None)
    >>> Lineage.from_dict(Lineage(parent=1).to_dict()).parent
    1
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tidal.errors import ConfigError
from tidal.ml.handler import Signature

__all__ = [
    "Canary",
    "Lineage",
    "ModelVersion",
    "RegistryReader",
    "Stages",
    "parse_version",
]


def parse_version(text: str | int) -> int:
    """``3``, ``"3"`` or ``"v3"`` -> 3.

    Raises:
        ConfigError: for anything else.

    Example:
        >>> parse_version("v3"), parse_version(4)
        (3, 4)
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"v?([0-9]+)", str(text).strip())
        if m is None:
            msg = f"a model version is a number like 3 or v3, got {text!r}"
            raise ConfigError(msg)
        value = int(m.group(1))
    if value < 1:
        msg = f"model versions start at 1, got {text!r}"
        raise ConfigError(msg)
    return value



@dataclass(frozen=True)
class Lineage:
    """Where a model version comes from.

    Args:
        data_range: the training data's range, e.g. ``("2024-01-01", "2024-03-31")`` or
            offsets; free-form strings.
        parent: the version this one was derived from (retrained, compressed).
        compression: the compression applied (``"int8-dynamic"``...), if any.
        source: the file it was registered from (filled in by :meth:`Registry.register`).
        sha256: the model file's digest (filled in by :meth:`Registry.register`).
        registered_at: ISO-8601 UTC time of registration (filled in).
        extra: anything else worth keeping (a git commit, a training job id). ``arch``
            names a PyTorch state dict's architecture: a label that a serving process
            matches against the architectures it was given, never code that is run.
    """

    data_range: tuple[str, str] | None = None
    parent: int | None = None
    compression: str | None = None
    source: str | None = None
    sha256: str | None = None
    registered_at: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "data_range": list(self.data_range) if self.data_range else None,
            "parent": self.parent,
            "compression": self.compression,
            "source": self.source,
            "sha256": self.sha256,
            "registered_at": self.registered_at,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lineage:
        """Read :meth:`to_dict`'s output."""
        rng = data.get("data_range")
        parent = data.get("parent")
        return cls(
            data_range=(str(rng[0]), str(rng[1])) if rng else None,
            parent=None if parent is None else int(parent),
            compression=data.get("compression"),
            source=data.get("source"),
            sha256=data.get("sha256"),
            registered_at=data.get("registered_at"),
            extra=dict(data.get("extra") or {}),
        )


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: its files and records."""

    name: str
    version: int
    path: Path
    file: Path
    signature: dict[str, Any]
    metrics: dict[str, Any]
    lineage: Lineage

    @property
    def label(self) -> str:
        """``v<N>``: the version as recorded on output rows."""
        return f"v{self.version}"

    def handler_signature(self) -> Signature:
        """The signature as a :class:`~tidal.ml.handler.Signature`."""
        return Signature.from_dict(self.signature)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``tidal models show --json`` prints)."""
        return {
            "name": self.name,
            "version": self.version,
            "path": str(self.path),
            "file": self.file.name,
            "size_bytes": self.file.stat().st_size if self.file.exists() else None,
            "signature": self.signature,
            "metrics": self.metrics,
            "lineage": self.lineage.to_dict(),
        }


@dataclass(frozen=True)
class Canary:
    """A canary version and the fraction of keys it scores."""

    version: int
    fraction: float


@dataclass(frozen=True)
class Stages:
    """What serves: the contents of ``stages.json``."""

    production: int | None = None
    previous: tuple[int, ...] = ()
    shadow: int | None = None
    canary: Canary | None = None
    generation: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout of ``stages.json``."""
        return {
            "production": self.production,
            "previous": list(self.previous),
            "shadow": self.shadow,
            "canary": (
                None
                if self.canary is None
                else {"version": self.canary.version, "fraction": self.canary.fraction}
            ),
            "generation": self.generation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stages:
        """Read ``stages.json``'s contents."""
        canary = data.get("canary")
        prod, shadow = data.get("production"), data.get("shadow")
        return cls(
            production=None if prod is None else int(prod),
            previous=tuple(int(v) for v in data.get("previous") or ()),
            shadow=None if shadow is None else int(shadow),
            canary=(
                None if not canary else Canary(int(canary["version"]), float(canary["fraction"]))
            ),
            generation=int(data.get("generation") or 0),
        )

    def serving(self) -> tuple[int | None, int | None, Canary | None]:
        """``(production, shadow, canary)``: what a pipeline must score with."""
        return self.production, self.shadow, self.canary


class RegistryReader(Protocol):
    """What serving reads from a registry (:class:`tidal.ml.registry.Registry` is one)."""

    @property
    def root(self) -> Path:
        """The registry directory."""
        ...

    def get(self, name: str, version: int | str | None = None) -> ModelVersion:
        """One version of ``name``."""
        ...

    def stages(self, name: str) -> Stages:
        """The stages of ``name``."""
        ...

    def stages_path(self, name: str) -> Path:
        """The path of ``name``'s ``stages.json`` (validates the name)."""
        ...
