"""The file connectors in one place (each format lives in its own module).

- CSV: :class:`~tidal.io.csv.CsvSource`, :class:`~tidal.io.csv.CsvSink`;
- JSON Lines: :class:`~tidal.io.jsonl.JsonlSource`, :class:`~tidal.io.jsonl.JsonlSink`;
- Parquet: :class:`~tidal.io.parquet.ParquetSource`, :class:`~tidal.io.parquet.ParquetSink`;
- exactly-once part files committed by checkpoints (:mod:`tidal.io.parts`):
  :class:`~tidal.io.csv.CsvPartSink`, :class:`~tidal.io.jsonl.JsonlPartSink`,
  :class:`~tidal.io.parquet.ParquetPartSink`.

The same names are exported by :mod:`tidal.io` (``from tidal.io import CsvSource``).
What the formats share lives below them: schemas in :mod:`tidal.io.schema`, line reading and
file sinks in :mod:`tidal.io.fileutil`; this module only gathers them (every import points
down: ``files -> csv/jsonl/parquet -> parts -> fileutil -> base``).

Example:
    >>> resolve_schema({"value": float, "id": "int"})
    {'value': 'float', 'id': 'int'}
"""

from __future__ import annotations

from tidal.io.csv import CsvPartSink, CsvSink, CsvSource
from tidal.io.fileutil import FileSink, LineSource, conform, open_error, start_position, to_table
from tidal.io.jsonl import JsonlPartSink, JsonlSink, JsonlSource
from tidal.io.parquet import ParquetPartSink, ParquetSink, ParquetSource
from tidal.io.schema import Kind, SchemaLike, resolve_schema

__all__ = [
    "Kind",
    "SchemaLike",
    "LineSource",
    "FileSink",
    "resolve_schema",
    "conform",
    "to_table",
    "open_error",
    "start_position",
    "CsvSource",
    "CsvSink",
    "JsonlSource",
    "JsonlSink",
    "ParquetSource",
    "ParquetSink",
    "CsvPartSink",
    "JsonlPartSink",
    "ParquetPartSink",
]
