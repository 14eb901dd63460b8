r"""Print batches: one JSON object per row, or a table per batch (for demos and debugging).

Example:
    >>> import io
    >>> out = io.StringIO()
    >>> sink = StdoutSink(stream=out)
    >>> sink.write(Batch({"sensor": ["a"], "value": [1.5]}))
    >>> out.getvalue()
    '{"sensor":"a","value":1.5}\n'
"""

from __future__ import annotations

import sys
from typing import Any, Literal, TextIO

import numpy as np

from tidal.core.batch import Batch
from tidal.errors import ConfigError
from tidal.io.base import BaseSink
from tidal.io.jsonl import dumps_rows

__all__ = ["StdoutSink"]


def _cell(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class StdoutSink(BaseSink):
    """Print the user columns of each batch to a text stream (standard output by default).

    ``"jsonl"`` prints one JSON object per row (NaN as ``null``), so the output can be
    piped to ``jq`` or read back with :class:`~tidal.io.jsonl.JsonlSource`. ``"table"``
    prints a `rich <https://rich.readthedocs.io>`_ table per batch, and on ``close`` a line
    saying how many rows ``limit`` held back.

    Args:
        format: ``"jsonl"`` or ``"table"``.
        stream: where to print (default: ``sys.stdout`` at the time of each write).
        limit: print at most this many rows in all (the rest are counted, not printed).

    Raises:
        ConfigError: for an unknown format or a negative limit.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> sink = StdoutSink("table", stream=out, limit=1)
        >>> sink.write(Batch({"id": [7, 8]})); sink.close()
        >>> print(out.getvalue().strip())
        batch 1: 2 rows
        ┏━━━━┓
        ┃ id ┃
        ┡━━━━┩
        │  7 │
        └────┘
        (1 more row not shown: limit=1)
    """

    def __init__(
        self,
        format: Literal["jsonl", "table"] = "jsonl",
        *,
        stream: TextIO | None = None,
        limit: int | None = None,
    ) -> None:
        if format not in ("jsonl", "table"):
            msg = f"StdoutSink: format must be 'jsonl' or 'table', got {format!r}"
            raise ConfigError(msg)
        if limit is not None and limit < 0:
            msg = f"StdoutSink: limit must be >= 0 or None, got {limit}"
            raise ConfigError(msg)
        self.format = format
        self.stream = stream
        self.limit = limit
        self.printed = 0
        self.held_back = 0
        self._batches = 0

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stdout

    def write(self, batch: Batch) -> None:
        """Print the batch (or as much of it as ``limit`` allows)."""
        self._batches += 1
        n = len(batch)
        if self.limit is not None:
            n = min(n, self.limit - self.printed)
        self.held_back += len(batch) - n
        if n <= 0:
            return
        shown = batch.slice(0, n) if n < len(batch) else batch
        self.printed += n
        if self.format == "jsonl":
            self._out().write(dumps_rows(shown, "StdoutSink").decode())
        else:
            self._table(shown, len(batch))

    def _table(self, batch: Batch, rows: int) -> None:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table()
        for name in batch.names:
            numeric = np.asarray(batch[name]).dtype.kind in "iufb"
            table.add_column(Text(name), justify="right" if numeric else "left")
        values = [batch[name].tolist() for name in batch.names]
        for row in zip(*values, strict=True):
            table.add_row(*(Text(_cell(v)) for v in row))
        console = Console(file=self._out(), soft_wrap=False)
        console.print(Text(f"batch {self._batches}: {rows} rows"))
        console.print(table)

    def flush(self) -> None:
        """Flush the stream."""
        self._out().flush()

    def close(self) -> None:
        """Say how many rows were held back (table format), then flush."""
        if self.format == "table" and self.held_back:
            noun = "row" if self.held_back == 1 else "rows"
            self._out().write(f"({self.held_back} more {noun} not shown: limit={self.limit})\n")
            self.held_back = 0
        self.flush()
