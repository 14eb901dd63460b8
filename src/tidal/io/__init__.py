"""Sources and sinks: in-memory, generator, files (CSV, JSON Lines, Parquet), stdout.

Every connector follows the small protocols of :mod:`tidal.io.base`; the embedded log's
connectors are in :mod:`tidal.io.log`.

Example:
    >>> from tidal.io import CsvSource, JsonlSink
    >>> CsvSource.__module__, JsonlSink.__module__
    ('tidal.io.csv', 'tidal.io.jsonl')
"""

from tidal.io.base import DeadLetter
from tidal.io.csv import CsvPartSink, CsvSink, CsvSource
from tidal.io.generator import GeneratorSource
from tidal.io.jsonl import JsonlPartSink, JsonlSink, JsonlSource
from tidal.io.memory import MemorySink, MemorySource
from tidal.io.parquet import ParquetPartSink, ParquetSink, ParquetSource
from tidal.io.stdout import StdoutSink

__all__ = [
    "CsvPartSink",
    "CsvSink",
    "CsvSource",
    "DeadLetter",
    "GeneratorSource",
    "JsonlPartSink",
    "JsonlSink",
    "JsonlSource",
    "MemorySink",
    "MemorySource",
    "ParquetPartSink",
    "ParquetSink",
    "ParquetSource",
    "StdoutSink",
]
