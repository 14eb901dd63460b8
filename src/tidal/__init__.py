"""Tidal: real-time AI on event streams, in columnar micro-batches."""

__version__ = "0.1.0"
