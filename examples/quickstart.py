"""Quickstart: average readings per sensor per second, printed as they complete.

Run it with ``tidal run examples/quickstart.py`` (or ``python examples/quickstart.py``).
"""

import numpy as np

import tidal
from tidal import aggregations as agg
from tidal.io.generator import GeneratorSource
from tidal.io.stdout import StdoutSink


def readings(seq: np.ndarray) -> dict[str, np.ndarray]:
    """Three sensors, one reading every 5 ms of event time."""
    return {"sensor": seq % 3, "ts": seq * 5, "value": 20.0 + np.sin(seq / 100.0)}


pipeline = tidal.Pipeline("quickstart")
(
    pipeline.source("readings", GeneratorSource(readings, total=2_000), time="ts")
    .key_by("sensor")
    .window("per_second", tidal.tumbling("1s"), {"n": agg.count(), "avg": agg.mean("value")})
    .sink("print", StdoutSink())
)

if __name__ == "__main__":
    print(pipeline.run().to_json())
