r"""Values as they are: :class:`RawFormat`, one ``bytes`` column.

Example:
    >>> fmt = RawFormat()
    >>> decoded = fmt.decode([b"a", None, b"\x00"])
    >>> decoded.columns["value"].tolist(), decoded.rows.tolist()
    ([b'a', None, b'\x00'], [0, 1, 2])
    >>> fmt.encode({"value": ["text", b"bytes"]})
    [b'text', b'bytes']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tidal.core.batch import Batch
from tidal.errors import ConnectorError
from tidal.io.formats.base import Decoded, Values, as_values, columns_of

__all__ = ["RawFormat"]


class RawFormat:
    """Each value as one ``bytes`` row of the column ``column`` (``None`` stays ``None``).

    Nothing can fail to decode. ``encode`` writes the column's bytes as they are and text
    as UTF-8.

    Args:
        column: the column's name.
    """

    name = "raw"
    batched = False

    def __init__(self, column: str = "value") -> None:
        self.column = column

    def __repr__(self) -> str:
        return f"RawFormat(column={self.column!r})"

    def decode(self, values: Values) -> Decoded:
        """One row per value."""
        items = as_values(values)
        col = np.empty(len(items), dtype=object)
        col[:] = items
        return Decoded({self.column: col}, np.arange(len(items), dtype=np.int64))

    def encode(self, batch: Batch | Mapping[str, Any]) -> list[bytes]:
        """The column's values as bytes.

        Raises:
            ConnectorError: without the column, or for a value that is not bytes or text.
        """
        b = columns_of(batch)
        if self.column not in b:
            msg = f"RawFormat writes the column {self.column!r}; the batch has {b.names}"
            raise ConnectorError(msg)
        out = []
        for i, v in enumerate(b[self.column].tolist()):
            if isinstance(v, str):
                v = v.encode()
            if not isinstance(v, bytes):
                msg = (
                    f"RawFormat writes bytes or text from column {self.column!r}; row {i} "
                    f"holds {type(v).__name__} {v!r}"
                )
                raise ConnectorError(msg)
            out.append(v)
        return out
