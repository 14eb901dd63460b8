"""A keyed detector's state survives a Flink restart from a savepoint (local mini-cluster).

Job: a number sequence -> (key, seq, value) rows -> key_by -> Tidal detector (its state in
Flink's keyed ValueState<byte[]>) -> a JSON-lines file. The first run is stopped with a
savepoint part-way, a second run restores from it and finishes the sequence; every row's
detection must equal an uninterrupted run (Tidal scoring each key's whole series at once).
Without the detector in Flink's state, the second run would start each key afresh and the
scores after the restart would differ.

Nothing races: a gate in the first run holds the stream at row ``HOLD`` until the stop has
been requested, so the first run cannot finish before it is stopped (``flink_env``'s
:func:`stop_and_resume`, shared with ``test_flink_learn_state.py``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flink_env import gated_rows, require_pyflink, stop_and_resume, write_jsonl

from tidal.flink.core import KeyedDetector

require_pyflink()
pytestmark = pytest.mark.slow

N, KEYS, HOLD = 1600, 4, 500


def value(i: int) -> float:
    """Row i's value: a seasonal signal per key, with a spike on each key after the restart."""
    k = i % KEYS
    v = math.sin(i / (9.0 + k)) + 0.05 * ((i * 7919) % 13)
    return v + (12.0 if i in (1203, 1402, 1301, 1500) else 0.0)


def _job(env: Any, out: Path, gate: Path, window: bool) -> None:
    from pyflink.common import Row, Types
    from pyflink.datastream.window import CountTumblingWindowAssigner

    from tidal.flink.datastream import DetectFunction, DetectWindowFunction, with_detection

    rows = Types.ROW_NAMED(["k", "seq", "v"], [Types.STRING(), Types.LONG(), Types.DOUBLE()])
    src = gated_rows(env, N, HOLD, gate, lambda i: Row(f"k{i % KEYS}", i, value(i)), rows)
    keyed = src.key_by(lambda r: r[0], Types.STRING())
    fields = rows.get_field_names()
    if window:
        detected = keyed.window(CountTumblingWindowAssigner.of(4)).process(
            DetectWindowFunction("v", "median_mad", fields=fields), with_detection(rows)
        )
    else:
        fn = DetectFunction("v", "median_mad", fields=fields)
        detected = keyed.process(fn, with_detection(rows))
    write_jsonl(detected.uid("detect"), out, lambda r: {"seq": r[1], "dev": r[4], "alert": r[8]})


def _expected() -> dict[int, tuple[float, bool]]:
    out: dict[int, tuple[float, bool]] = {}
    for k in range(KEYS):
        seqs = np.arange(k, N, KEYS)
        cols, _ = KeyedDetector("median_mad").score(None, np.array([value(int(i)) for i in seqs]))
        for j, i in enumerate(seqs):
            out[int(i)] = (float(cols["deviation"][j]), bool(cols["alert"][j]))
    return out


@pytest.mark.parametrize("window", [False, True], ids=["per-record", "window"])
def test_detector_state_survives_a_restart_from_a_savepoint(tmp_path: Path, window: bool) -> None:
    got, first = stop_and_resume(
        tmp_path, lambda env, out, gate: _job(env, out, gate, window), n=N, hold=HOLD
    )
    want = _expected()
    for i in range(N):
        dev, alert = want[i]
        assert (got[i]["dev"], got[i]["alert"]) == (dev, alert), f"row {i} (first run: {first})"
    assert sum(r["alert"] for r in got.values()) >= 4  # the spikes after the restart alert
