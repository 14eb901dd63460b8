"""Column types a source can be told to enforce: :data:`Kind`, :data:`SchemaLike`.

A schema maps column names to one of four kinds (``"int"``, ``"float"``, ``"str"``,
``"bool"``, or the Python types). The file sources and the log source share it, and so do
the messages for values of the wrong kind.

Example:
    >>> resolve_schema({"value": float, "id": "int"})
    {'value': 'float', 'id': 'int'}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from tidal.errors import ConfigError

__all__ = ["Kind", "SchemaLike", "resolve_schema", "ARROW_TYPES", "EXPECTED", "KINDS"]

Kind = Literal["int", "float", "str", "bool"]
"""A column type a file source can be told to enforce."""

SchemaLike = Mapping[str, "Kind | type"]
"""Column name to a :data:`Kind` or one of the Python types ``int``, ``float``, ``str``,
``bool``."""

KINDS: dict[Any, Kind] = {
    "int": "int",
    "float": "float",
    "str": "str",
    "bool": "bool",
    int: "int",
    float: "float",
    str: "str",
    bool: "bool",
}
ARROW_TYPES: dict[Kind, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "str": pa.string(),
    "bool": pa.bool_(),
}
EXPECTED: dict[Kind, str] = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "a boolean (true or false)",
}
NUMPY_DTYPES: dict[Kind, Any] = {"int": np.int64, "float": np.float64, "str": object, "bool": bool}


def resolve_schema(schema: SchemaLike | None, *, where: str = "schema") -> dict[str, Kind]:
    """Normalise a user schema to column name -> :data:`Kind`.

    Args:
        schema: column to ``"int"``/``"float"``/``"str"``/``"bool"`` or the Python type.
        where: what the schema belongs to, for the error message.

    Raises:
        ConfigError: for a type that is not one of the four.

    Example:
        >>> resolve_schema({"n": int, "ok": "bool"})
        {'n': 'int', 'ok': 'bool'}
    """
    out: dict[str, Kind] = {}
    for name, kind in (schema or {}).items():
        try:
            out[str(name)] = KINDS[kind]
        except (KeyError, TypeError):
            msg = (
                f"{where}: the type of column {name!r} must be one of 'int', 'float', 'str', "
                f"'bool' (or the Python types int, float, str, bool), got {kind!r}"
            )
            raise ConfigError(msg) from None
    return out
