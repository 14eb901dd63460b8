"""Committed consumer positions: ``<data_dir>/groups/<group>/<topic>.json``.

A group's file holds, per partition, the next offset the group will read (Kafka's
committed offset)::

    {"group": "alerts", "topic": "events", "positions": {"0": 1200, "1": 1187},
     "committed_ms": 1767225600000}

It is replaced atomically (temp file, fsync, rename, fsync of the folder), so a crash
leaves either the old positions or the new ones, never a torn file.

Example:
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> commit_positions(tmp.name, "g", "events", {0: 5, 1: 7})
    >>> load_positions(tmp.name, "g", "events"), group_positions(tmp.name, "events")
    ({0: 5, 1: 7}, {'g': {0: 5, 1: 7}})
    >>> tmp.cleanup()
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from tidal.core.names import check_name
from tidal.errors import ConnectorError, os_error_text
from tidal.io.log.segment import write_atomic

__all__ = [
    "check_name",
    "commit_positions",
    "group_positions",
    "load_positions",
    "remove_positions",
    "resolve_data_dir",
]

DATA_DIR_ENV = "TIDAL_DATA_DIR"
DEFAULT_DATA_DIR = ".tidal"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """The data directory: the argument, else ``$TIDAL_DATA_DIR``, else ``./.tidal``.

    Example:
        >>> str(resolve_data_dir("/var/lib/tidal"))
        '/var/lib/tidal'
    """
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(data_dir)


def _path(data_dir: str | os.PathLike[str] | None, group: str, topic: str) -> Path:
    root = resolve_data_dir(data_dir)
    return root / "groups" / check_name(group, "group") / f"{check_name(topic, 'topic')}.json"


def load_positions(
    data_dir: str | os.PathLike[str] | None, group: str, topic: str
) -> dict[int, int]:
    """The positions ``group`` committed for ``topic`` (empty if none).

    Raises:
        ConnectorError: if the file exists but is not a positions file.
    """
    path = _path(data_dir, group, topic)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    return _parse(raw, path)


def _parse(raw: bytes, path: Path) -> dict[int, int]:
    try:
        data: Any = orjson.loads(raw)
        positions = {int(k): int(v) for k, v in data["positions"].items()}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        msg = f"cannot read the consumer positions in {path}: {exc}; delete the file to reset them"
        raise ConnectorError(msg) from exc
    return positions


def commit_positions(
    data_dir: str | os.PathLike[str] | None,
    group: str,
    topic: str,
    positions: Mapping[int, int],
) -> None:
    """Write ``group``'s positions for ``topic`` atomically (and durably).

    Raises:
        ConnectorError: if they cannot be written (the old positions stay).
    """
    path = _path(data_dir, group, topic)
    body = {
        "group": group,
        "topic": topic,
        "positions": {str(int(k)): int(v) for k, v in sorted(positions.items())},
        "committed_ms": time.time_ns() // 1_000_000,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, orjson.dumps(body, option=orjson.OPT_INDENT_2))
    except OSError as exc:
        msg = f"cannot commit the positions of group {group!r} on topic {topic!r}: "
        raise ConnectorError(msg + os_error_text(exc)) from exc


def remove_positions(data_dir: str | os.PathLike[str] | None, topic: str) -> list[str]:
    """Delete every group's positions on ``topic`` (a deleted topic); return the groups.

    A group folder left empty goes too.
    """
    root = resolve_data_dir(data_dir) / "groups"
    gone: list[str] = []
    if not root.is_dir():
        return gone
    for folder in sorted(root.iterdir()):
        path = folder / f"{check_name(topic, 'topic')}.json"
        if path.is_file():
            path.unlink()
            gone.append(folder.name)
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
    return gone


def group_positions(
    data_dir: str | os.PathLike[str] | None, topic: str
) -> dict[str, dict[int, int]]:
    """Every group's committed positions for ``topic``, by group name."""
    root = resolve_data_dir(data_dir) / "groups"
    out: dict[str, dict[int, int]] = {}
    if not root.is_dir():
        return out
    for folder in sorted(root.iterdir()):
        path = folder / f"{topic}.json"
        if path.is_file():
            out[folder.name] = _parse(path.read_bytes(), path)
    return out
