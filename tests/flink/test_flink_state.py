"""A keyed detector's state survives a Flink restart from a savepoint (local mini-cluster).

Job: a number sequence -> (key, seq, value) rows -> key_by -> Tidal detector (its state in
Flink's keyed ValueState<byte[]>) -> a JSON-lines file. The first run is stopped with a
savepoint part-way, a second run restores from it and finishes the sequence; every row's
detection must equal an uninterrupted run (Tidal scoring each key's whole series at once).
Without the detector in Flink's state, the second run would start each key afresh and the
scores after the restart would differ.

Nothing races: a gate in the first run holds the stream at row ``HOLD`` until the stop has
been requested, so the first run cannot finish before it is stopped.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flink_env import require_pyflink, stream_env  # noqa: E402

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
    from pyflink.common import Row, Types, WatermarkStrategy
    from pyflink.datastream.connectors.number_seq import NumberSequenceSource
    from pyflink.datastream.functions import FlatMapFunction, MapFunction
    from pyflink.datastream.window import CountTumblingWindowAssigner

    from tidal.flink.datastream import DetectFunction, DetectWindowFunction, with_detection

    rows = Types.ROW_NAMED(["k", "seq", "v"], [Types.STRING(), Types.LONG(), Types.DOUBLE()])

    class Gate(MapFunction):  # type: ignore[misc]
        def map(self, i: int) -> Any:
            while i >= HOLD and not gate.exists():  # wait for a condition, not a time
                time.sleep(0.01)
            return Row(f"k{i % KEYS}", i, value(i))

    class Write(FlatMapFunction):  # type: ignore[misc]
        def open(self, runtime_context: Any) -> None:
            self.f = out.open("a")

        def flat_map(self, r: Any) -> Any:
            self.f.write(json.dumps({"seq": r[1], "dev": r[4], "alert": r[8]}) + "\n")
            self.f.flush()
            return iter(())

        def close(self) -> None:
            self.f.close()

    src = env.from_source(
        NumberSequenceSource(0, N - 1), WatermarkStrategy.no_watermarks(), "seq"
    ).uid("seq")
    keyed = src.map(Gate(), output_type=rows).uid("gate").key_by(lambda r: r[0], Types.STRING())
    fields = rows.get_field_names()
    if window:
        detected = keyed.window(CountTumblingWindowAssigner.of(4)).process(
            DetectWindowFunction("v", "median_mad", fields=fields), with_detection(rows)
        )
    else:
        fn = DetectFunction("v", "median_mad", fields=fields)
        detected = keyed.process(fn, with_detection(rows))
    detected.uid("detect").flat_map(Write(), Types.STRING()).uid("write").print()


def _read(path: Path) -> dict[int, dict[str, Any]]:
    seen: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        assert seen.setdefault(rec["seq"], rec) == rec  # a replayed row must agree
    return seen


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
    from tidal.flink.datastream import stop_with_savepoint

    out, gate, saves = tmp_path / "out.jsonl", tmp_path / "gate", tmp_path / "savepoints"
    out.touch()
    env = stream_env({"python.fn-execution.bundle.size": "50"})
    _job(env, out, gate, window)
    client = env.execute_async("tidal-state-1")
    deadline = time.monotonic() + 240
    while len(out.read_text().splitlines()) < HOLD // 2:  # the job is well under way
        assert time.monotonic() < deadline, "the first run produced no output in 240 s"
        time.sleep(0.05)
    stopping = stop_with_savepoint(client, saves.as_uri())
    gate.touch()  # let the held rows through: the savepoint barrier is behind them
    savepoint = stopping.result()
    first = len(_read(out))
    assert HOLD // 2 <= first < N, f"the first run saw {first} of {N} rows"

    env2 = stream_env({"execution.savepoint.path": savepoint})
    _job(env2, out, gate, window)
    env2.execute("tidal-state-2")

    got, want = _read(out), _expected()
    assert sorted(got) == list(range(N)), "every row exactly once across the two runs"
    for i in range(N):
        dev, alert = want[i]
        assert (got[i]["dev"], got[i]["alert"]) == (dev, alert), f"row {i} (first run: {first})"
    assert sum(r["alert"] for r in got.values()) >= 4  # the spikes after the restart alert
