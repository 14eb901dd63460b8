"""A keyed learner's state survives a Flink restart from a savepoint (local mini-cluster).

Job: a number sequence -> (key, seq, x1, x2, label) rows -> key_by -> Tidal's online
logistic regression (predict each row, then learn it; the learner in Flink's keyed
ValueState<byte[]>) -> a JSON-lines file. The first run is stopped with a savepoint
part-way, a second run restores from it and finishes the stream; every row's prediction
must equal an uninterrupted run without Flink (Tidal's :class:`KeyedLearner` over each
key's rows in the same batches: one row, or a count window of 4), to 1e-12. Without the
learner in Flink's state, the second run would start each key from zero weights and fresh
feature statistics, and its predictions would differ.

Every tenth row has no label: it is only predicted, by the model after the labeled rows of
its batch (as the ``learn`` step does), which is why the reference uses the same batches.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flink_env import gated_rows, require_pyflink, stop_and_resume, write_jsonl

from tidal.flink.core import KeyedLearner

require_pyflink()
pytestmark = pytest.mark.slow

N, KEYS, HOLD = 1200, 3, 400
SETTINGS: dict[str, Any] = {"lr": 0.1, "batch_size": 8}


def row(i: int) -> tuple[str, int, float, float, float | None]:
    """Row i: key, seq, two features, and a label that depends on them (None every 10th)."""
    k = i % KEYS
    x1, x2 = math.sin(i / (7.0 + k)) * 2.0, math.cos(i / 5.0) + 0.1 * ((i * 7919) % 11 - 5)
    label = 1.0 if x1 - (0.5 + k) * x2 > 0.2 else 0.0
    return f"k{k}", i, x1, x2, None if i % 10 == 0 else label


def _job(env: Any, out: Path, gate: Path, window: bool) -> None:
    from pyflink.common import Row, Types
    from pyflink.datastream.window import CountTumblingWindowAssigner

    from tidal.flink.datastream import LearnFunction, LearnWindowFunction, with_prediction

    rows = Types.ROW_NAMED(
        ["k", "seq", "x1", "x2", "y"],
        [Types.STRING(), Types.LONG(), Types.DOUBLE(), Types.DOUBLE(), Types.DOUBLE()],
    )
    src = gated_rows(env, N, HOLD, gate, lambda i: Row(*row(i)), rows)
    keyed = src.key_by(lambda r: r[0], Types.STRING())
    params: dict[str, Any] = {
        "features": ["x1", "x2"],
        "target": "y",
        "fields": rows.get_field_names(),
        **SETTINGS,
    }
    typ = with_prediction(rows, KeyedLearner("logistic", features=["x1", "x2"], **SETTINGS), "y")
    if window:
        fn = LearnWindowFunction("logistic", **params)
        learned = keyed.window(CountTumblingWindowAssigner.of(4)).process(fn, typ)
    else:
        learned = keyed.process(LearnFunction("logistic", **params), typ)
    write_jsonl(learned.uid("learn"), out, lambda r: {"seq": r[1], "pred": r[5], "p": r[6]})


def _expected(size: int) -> dict[int, tuple[float, float]]:
    """Each row's prediction and score: each key's rows in batches of ``size``, no Flink."""
    learner = KeyedLearner("logistic", features=["x1", "x2"], **SETTINGS)
    out: dict[int, tuple[float, float]] = {}
    for k in range(KEYS):
        seqs, state = list(range(k, N, KEYS)), None
        for lo in range(0, len(seqs), size):
            rs = [row(i) for i in seqs[lo : lo + size]]
            cols = [np.array([r[2] for r in rs]), np.array([r[3] for r in rs])]
            got, state = learner.learn(state, cols, [r[4] for r in rs])
            for j, r in enumerate(rs):
                out[r[1]] = (float(got["prediction"][j]), float(got["prediction_score"][j]))
    return out


@pytest.mark.parametrize("window", [False, True], ids=["per-record", "window"])
def test_learner_state_survives_a_restart_from_a_savepoint(tmp_path: Path, window: bool) -> None:
    got, first = stop_and_resume(
        tmp_path, lambda env, out, gate: _job(env, out, gate, window), n=N, hold=HOLD
    )
    want = _expected(4 if window else 1)
    for i in range(N):
        pred, p = want[i]
        assert got[i]["pred"] == pred, f"row {i} (first run: {first})"
        assert abs(got[i]["p"] - p) <= 1e-12, f"row {i}: {got[i]['p']} != {p} (first: {first})"
    late = [i for i in range(first + 100, N) if i % 10]
    accuracy = np.mean([want[i][0] == row(i)[4] for i in late])
    assert accuracy > 0.8, f"the learner learned: {accuracy:.2f} after the restart"
