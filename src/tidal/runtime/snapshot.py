"""Encoding of state snapshots to bytes without pickle: :mod:`tidal.core.snapshot`.

The codec lives in ``core`` so that every layer (the learners' retrain jobs in ``ml``
among them) writes state one way; the runtime's checkpoints import it from here.
"""

from __future__ import annotations

from tidal.core.snapshot import decode, encode

__all__ = ["decode", "encode"]
