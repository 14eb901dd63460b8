"""A feed's ``make`` whose module import waits for a gate file: a child that starts slowly.

A spawned feed child unpickles its feed, which imports this module; with
``TIDAL_TEST_FEED_GATE`` set, the import blocks until that file exists, as the import of
numpy can take seconds on a busy machine. Without the variable it imports at once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

_GATE = os.environ.get("TIDAL_TEST_FEED_GATE")
while _GATE is not None and not Path(_GATE).exists():
    time.sleep(0.01)


def make(seq: Any) -> dict[str, Any]:
    """Columns for the sequence numbers ``seq``."""
    return {"key": seq % 37, "x": seq * 2}
