"""Sources and sinks: in-memory, generator, files (CSV, JSONL, Parquet), stdout.

Every connector follows the small protocols of :mod:`tidal.io.base`.
"""
