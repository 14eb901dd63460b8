"""``tidal demo`` learns while it runs: drift on the changing sensors -> retrain -> shadow ->
promote (or reject), on screen and in the summary, and the anomaly branch is unchanged.

One in-process run of the demo on the embedded log (200 sensors, 130 s of event time; at
60 s one sensor in 20 starts to vibrate), fed by its feed process as ``tidal demo`` is.
The retrain policy adopts the candidate a fixed number of rows after the job starts
(waiting for it there), so the loop's decisions do not depend on the machine's speed.

False-alarm budget: at most one drift that would retrain (the forecast error got worse)
before the concept change (``learning.false_drifts``); decision 0051 records what the
runs showed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tidal.apps.demo import build_demo
from tidal.apps.demo.forecast import CLIP, history_features
from tidal.cli import main
from tidal.core.batch import Batch
from tidal.errors import ConfigError, StateError
from tidal.ml.learn.retrain_job import prepare
from tidal.ml.learn.retrain_policy import RetrainPolicy
from tidal.runtime.executor import Executor

SENSORS = 200
EVENTS = 260_000  # 130 s of event time at 200 sensors x 10 Hz
FALSE_DRIFTS = 1  # the budget of drifts that would retrain before the concept change


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, list[str]]:
    data = tmp_path_factory.mktemp("demo-learning")
    lines: list[str] = []
    pipeline, handles = build_demo(
        sensors=SENSORS,
        rate=None,
        source="log",
        data_dir=data,
        screen=lines.append,
        adopt_after_s=10.0,  # decisions independent of the machine's speed
    )
    executor = Executor(
        pipeline, max_events=EVENTS, max_wait="0ms", max_batch=2048, handle_signals=False
    )
    executor.open()
    with handles.feeding(on_error=lambda _: executor.stop()):
        summary = executor.run()
    summary.extra.update(handles.extra(summary))
    return summary, handles, lines


def test_the_loop_runs_a_cycle_on_the_changing_sensors(learned: Any) -> None:
    summary, handles, _ = learned
    got = summary.extra["learning"]
    log = handles.learner.log
    assert got["false_drifts"] <= FALSE_DRIFTS, log
    worse = [e for e in log if e["event"] == "drift" and e["worse"] and e["after_change"]]
    assert worse, log
    # the first retrain comes from a drift after the change, and its cycle completes
    kinds = [e["event"] for e in log if e["row"] >= worse[0]["row"]]
    cycle = ["retrain_started", "retrain_finished", "registered", "shadow_score"]
    steps = [k for k in kinds if k in (*cycle, "promoted", "rejected")]
    assert steps[:4] == cycle, log
    assert steps[4] in ("promoted", "rejected"), log
    assert got["retrains"] >= 1 and got["promotions"] + got["rejections"] >= 1
    # the sensors named at the drifts are the ones whose dynamics changed
    changing = set(handles.fleet.changing().tolist())
    assert got["named"], log
    assert got["named_changing"] >= 0.8 * len(got["named"]), (got["named"], changing)
    assert got["named_changing"] >= 3, (got["named"], changing)
    assert got["mae"] is not None and got["mae"] < 1.0


def test_the_screen_shows_the_cycle(learned: Any) -> None:
    _, _, lines = learned
    learn = [ln for ln in lines if ln.startswith("learn  ")]
    text = "\n".join(learn)
    assert "learn  drift: the fleet's forecast error rose to" in text, text
    assert "learn    up on " in text, text
    for step in ("retrain started (drift)", "retrain finished", "registered v1", "shadow: MAE"):
        assert step in text, text
    assert "promoted (better)" in text or "rejected (no better)" in text, text
    assert max(len(ln) for ln in "\n".join(lines).splitlines()) <= 80


def test_the_anomaly_branch_still_finds_every_fault(learned: Any) -> None:
    """No false alarm (the vibration leaves the window means alone); every fault found that
    began 25 s before the end (the log's four partitions are read unevenly, so the newest
    windows of some may not have closed when the run stops)."""
    summary, handles, _ = learned
    card = summary.extra["scorecard"]
    assert card["false_alarms"] == 0, card
    fleet, end = handles.fleet, handles.position(summary)
    found = handles.screen.scorecard.found
    old = [f for f in fleet.faults(end) if fleet.seconds(end - f.start) > 25]
    assert len(old) >= 12
    assert [f for f in old if (f.sensor, f.start) not in found] == []


def test_the_cli_summary_has_the_learning_figures(tmp_path: Path, capsys: Any) -> None:
    args = ["demo", "--rate", "max", "--sensors", "100", "--events", "30000", "--json"]
    args += ["--data-dir", str(tmp_path), "--checkpoint-interval", "1s", "--out", ""]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["learning"]) >= {"drifts", "retrains", "promotions", "mae"}


def test_the_kafka_demo_says_why_it_does_not_learn() -> None:
    with pytest.raises(ConfigError, match="replays history from the embedded log"):
        build_demo(sensors=10, source="generator", learn=True)
    _, handles = build_demo(sensors=10, source="generator")
    assert handles.learner is None and "source='log'" in (handles.learn_note or "")


def test_history_features_match_the_stream() -> None:
    """The job's replay builds the same rows as the stream's lag -> warm -> deltas steps."""
    rng = np.random.default_rng(3)
    n = 400
    sensor = rng.integers(0, 5, n)
    value = rng.normal(20, 2, n)  # some changes beyond CLIP
    value[7] = np.nan
    got = history_features(Batch({"sensor": sensor, "value": value}))
    expect = []
    for s in range(5):
        v = value[(sensor == s) & np.isfinite(value)]
        for i in range(4, len(v)):
            d = np.clip(np.diff(v[i - 4 : i + 1]), -CLIP, CLIP)  # oldest change first
            expect.append((s, d[3], d[2], d[0]))
    rows = sorted(zip(got["sensor"], got["change"], got["d1"], got["d3"], strict=True))
    assert np.allclose(np.array(rows), np.array(sorted(expect)))


def test_prepare_must_name_a_function() -> None:
    with pytest.raises(ConfigError, match="module:function"):
        RetrainPolicy(topic="t", prepare="not a target")
    rows = Batch({"x": [1.0]})
    with pytest.raises(StateError, match="cannot import"):
        prepare({"prepare": "tidal.no_such_module:f"}, rows)
    with pytest.raises(StateError, match="not a Batch"):
        prepare({"prepare": "builtins:repr"}, rows)
