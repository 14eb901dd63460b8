"""Encoding of state snapshots to bytes without pickle.

A snapshot is a tree of dicts and lists whose leaves are JSON values or numpy arrays of
numeric or bool dtype. :func:`encode` writes the arrays into an ``.npz`` container (with
``allow_pickle=False``) next to a JSON document that refers to them; :func:`decode` reads it
back. Object arrays are refused: checkpoints never carry pickled Python objects.

Example:
    >>> import numpy as np
    >>> snap = {"op": {"counts": np.arange(3), "wm": 5, "keys": ["a", "b"]}}
    >>> back = decode(encode(snap))
    >>> back["op"]["counts"].tolist(), back["op"]["wm"], back["op"]["keys"]
    ([0, 1, 2], 5, ['a', 'b'])
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson

from tidal.errors import StateError

_REF = "__ndarray__"
_SCALARS = {int, float, str, bool, type(None)}


def _plain(items: list[Any] | tuple[Any, ...]) -> bool:
    """Whether every item is a JSON scalar (checked at C speed: long key lists are common)."""
    return set(map(type, items)) <= _SCALARS


def encode(snapshot: Any) -> bytes:
    """Serialise a snapshot tree to bytes (npz with a JSON manifest)."""
    arrays: dict[str, np.ndarray[Any, Any]] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, np.ndarray):
            if node.dtype.kind == "O":
                msg = f"snapshot array at {path!r} has object dtype; store it as a JSON list"
                raise StateError(msg)
            name = f"a{len(arrays)}"
            arrays[name] = node
            return {_REF: name}
        if isinstance(node, dict):
            return {str(k): walk(v, f"{path}/{k}") for k, v in node.items()}
        if isinstance(node, list | tuple):
            if _plain(node):
                return node
            return [walk(v, f"{path}/{i}") for i, v in enumerate(node)]
        if isinstance(node, np.generic):
            return node.item()
        return node

    try:
        manifest = orjson.dumps(walk(snapshot, ""))
    except TypeError as exc:
        msg = f"snapshot holds a value that is neither JSON nor a numpy array: {exc}"
        raise StateError(msg) from exc
    buf = io.BytesIO()
    arrays["__manifest__"] = np.frombuffer(manifest, dtype=np.uint8)
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def decode(data: bytes) -> Any:
    """Read bytes written by :func:`encode`."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError) as exc:
        msg = f"not a Tidal snapshot, or a damaged one: {exc}"
        raise StateError(msg) from exc
    manifest = orjson.loads(arrays.pop("__manifest__").tobytes())

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {_REF}:
                return arrays[node[_REF]]
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return node if _plain(node) else [walk(v) for v in node]
        return node

    return walk(manifest)
