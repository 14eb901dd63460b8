"""JSON objects as values: :class:`JsonFormat`.

Decoding reuses the JSON-values decoder of the embedded log (``_JsonValues`` in
:mod:`tidal.io.log.source`, built on :class:`~tidal.io.jsonl.JsonlSource`): the values of
a poll are parsed with orjson and turned into Arrow columns in one call, a value that is
not a JSON object or breaks the schema becomes a failure of its own row only. This module
is a thin adapter, so that every transport decodes JSON the same way. Encoding is
:func:`~tidal.io.jsonl.dumps_rows`: one orjson call for the whole batch.

Example:
    >>> fmt = JsonFormat()
    >>> decoded = fmt.decode([b'{"user": "a", "n": 1}', b'[1]', b'{"user": "b", "n": 2.5}'])
    >>> decoded.batch().to_records(), decoded.rows.tolist()
    ([{'user': 'a', 'n': 1.0}, {'user': 'b', 'n': 2.5}], [0, 2])
    >>> [(f.index, f.reason) for f in decoded.failures]
    [(1, 'not a JSON object, got an array')]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from tidal.core.batch import Batch
from tidal.io.files import SchemaLike, resolve_schema
from tidal.io.formats.base import Decoded, Failure, Values, as_values, columns_of
from tidal.io.jsonl import dumps_rows

if TYPE_CHECKING:
    from tidal.io.log.source import _JsonValues

__all__ = ["JsonFormat"]


class JsonFormat:
    """Each value a JSON object; its fields become columns.

    Columns are the fields in order of first appearance, then any ``schema`` column no
    object had. Without a schema, types are JSON's (a number field with a missing value
    is float64 with NaN); nested arrays and objects are ``object`` columns.

    Args:
        schema: column -> ``"int"``/``"float"``/``"str"``/``"bool"`` (or the Python
            type), enforced per value: a value of the wrong type is a failure, and
            ``int``/``bool`` fields are required (missing or null is a failure), as in
            :class:`~tidal.io.jsonl.JsonlSource`.
        name: the label in error messages.

    Raises:
        ConfigError: for a bad schema.
    """

    name = "json"
    batched = False

    def __init__(self, schema: SchemaLike | None = None, *, name: str = "json") -> None:
        from tidal.io.log.source import _JsonValues  # the log imports this package

        self.schema = resolve_schema(schema, where=name)
        self.label = name
        self._decoder: _JsonValues = _JsonValues(name, schema=self.schema, name=name)

    def __repr__(self) -> str:
        return f"JsonFormat(schema={self.schema!r})"

    def decode(self, values: Values) -> Decoded:
        """Parse the values into columns; bad ones (and missing ones) become failures."""
        items = as_values(values)
        missing = [i for i, v in enumerate(items) if v is None]
        present: list[bytes] = [v for v in items if v is not None]
        columns, rows, failed = self._decoder.decode(present)
        failures = [Failure(i, reason, present[i]) for i, reason in failed]
        if missing:  # map indexes in ``present`` back to indexes in ``items``
            index = np.flatnonzero([v is not None for v in items])
            rows = index[rows]
            failures = [Failure(int(index[f.index]), f.reason, f.value) for f in failures]
            failures += [Failure(i, "no value (null)", None) for i in missing]
        failures.sort(key=lambda f: f.index)
        return Decoded(columns, np.asarray(rows, dtype=np.int64), failures)

    def encode(self, batch: Batch | Mapping[str, Any]) -> list[bytes]:
        """One compact JSON object per row (numpy values as JSON, NaN as null).

        Raises:
            ConnectorError: naming a column with a value JSON cannot hold.
        """
        lines = dumps_rows(columns_of(batch), self.label).split(b"\n")
        lines.pop()
        return lines
