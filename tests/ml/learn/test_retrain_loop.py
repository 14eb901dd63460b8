"""The closed loop: drift -> retrain in a child process on replayed history -> shadow -> decide.

The stream is SEA-like: three uniform features in [0, 10], label ``a + b > theta``; the
concept changes (``theta`` 8 -> 13) at row 4,000. The serving model is an online logistic
regression; after the change its errors drift, a child process retrains a candidate on
the rows after the change replayed from the embedded log, the candidate is scored in shadow
on the same rows and promoted. ``adopt_after`` makes the runs reproducible (the step waits
for the job at a fixed row), so a restored run can be compared with an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tidal import Batch, Pipeline
from tidal.errors import ConfigError, PipelineError
from tidal.io.log import LogSink, LogSource
from tidal.ml.learn.loop import RetrainLoop, RetrainPolicy
from tidal.ml.registry import Registry
from tidal.runtime.executor import Executor
from tidal.runtime.snapshot import decode, encode
from tidal.testing import MemorySource, collect, run

FEATURES = ["a", "b", "c"]
DRIFT_AT = 4_000
SETTINGS = {"lr": 0.05}


def _sea(n: int, seed: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, size=(n, 3))
    return x, (x[:, 0] + x[:, 1] > theta).astype(np.int64)


def _log(tmp: Path, *, drift: bool = True, n: int = 10_000, partitions: int = 1) -> None:
    x1, y1 = _sea(DRIFT_AT, 1, 8.0)
    x2, y2 = _sea(n - DRIFT_AT, 2, 13.0 if drift else 8.0)
    x, y = np.r_[x1, x2], np.r_[y1, y2]
    sink = LogSink(tmp, "sea", partitions=partitions, key="k")
    sink.write(
        Batch({"k": np.arange(len(y)) % 7, "a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y})
    )
    sink.close()


def _policy(tmp: Path, **kw: Any) -> RetrainPolicy:
    base: dict[str, Any] = {
        "topic": "sea",
        "data_dir": tmp,
        "history": 1_000,
        "horizon": 1_000,
        "adopt_after": 500,
        "collect": 800,
        "epochs": 3,
        "workdir": tmp / "jobs",
    }
    return RetrainPolicy(**{**base, **kw})


def _pipeline(tmp: Path, reg: Registry, policy: RetrainPolicy) -> tuple[Pipeline, Any, Any]:
    p = Pipeline("loop")
    s = p.source("in", LogSource(tmp, "sea", bounded=True))
    out = s.retrain_loop(
        "m", "logistic", features=FEATURES, target="y", registry=reg, model="sea",
        policy=policy, settings=SETTINGS, metrics=["accuracy"],
    )  # fmt: skip
    return p, collect(out), collect(out.side("events"))


def _events(sink: Any) -> list[tuple[str, int, int]]:
    return [(r["event"], r["row"], r["candidate"]) for r in sink.records()]


def test_drift_retrains_in_a_child_shadows_and_promotes(tmp_path: Path) -> None:
    _log(tmp_path)
    reg = Registry(tmp_path / "reg")
    p, rows, events = _pipeline(tmp_path, reg, _policy(tmp_path))
    summary = run(p, max_batch=700)
    kinds = [e[0] for e in _events(events)]
    want = ["retrain_started", "retrain_finished", "registered", "shadow_score", "promoted"]
    assert [k for k in kinds if k in want][:5] == want, kinds
    # the promotion after the change: its job started 800 rows (collect) after a drift
    recs_ev = events.records()
    promoted = next(r for r in recs_ev if r["event"] == "promoted" and r["row"] > DRIFT_AT)
    started = next(
        r for r in recs_ev if r["event"] == "retrain_started" and r["job"] == promoted["job"]
    )
    drift = [r["row"] for r in recs_ev if r["event"] == "drift"]
    assert started["row"] - 800 in drift
    assert DRIFT_AT < started["row"] - 800 < DRIFT_AT + 500  # found soon after the change
    assert promoted["candidate_metric"] > promoted["serving_metric"]
    assert summary.counts["m.promotions"] >= 1 and summary.counts["m.retrains"] >= 1
    # the candidate came from a child process, trained on the replayed history
    job = tmp_path / "jobs" / started["job"]
    done = json.loads((job / "done.json").read_text())
    spec = json.loads((job / "job.json").read_text())
    assert done["rows"] == 1_000 and spec["parent"] > 0
    # registered with lineage, promoted through the registry
    version = reg.get("sea", promoted["candidate"])
    assert version.lineage.extra["job"] == started["job"]
    assert version.lineage.extra["trigger"] == "drift"
    assert version.lineage.extra["drift"] == {"delta": 0.002, "clock": 32, "max_blocks": 1024}
    assert reg.stages("sea").production == promoted["candidate"]
    # rows carry the version that served them; accuracy after promotion beats a stale model
    recs = rows.records()
    after = promoted["row"] + 200
    assert recs[after]["model_version"] == f"v{promoted['candidate']}"
    loop_acc = np.mean([r["prediction"] == r["y"] for r in recs[after:]])
    stale = _stale_predictions(tmp_path)
    stale_acc = np.mean(stale[after:] == np.array([r["y"] for r in recs[after:]]))
    assert loop_acc > stale_acc + 0.03, (loop_acc, stale_acc)


def _stale_predictions(tmp: Path) -> np.ndarray:
    p = Pipeline("plain")
    s = p.source("in", LogSource(tmp, "sea", bounded=True))
    out = collect(s.learn("m", _logistic(), features=FEATURES, target="y"))
    run(p, max_batch=700)
    return np.array([r["prediction"] for r in out.records()])


def _logistic() -> Any:
    from tidal.ml.learn.catalog import make

    return make("logistic", seed=0, **SETTINGS)


def test_a_worse_candidate_is_rejected(tmp_path: Path) -> None:
    _log(tmp_path, drift=False, n=5_000)
    reg = Registry(tmp_path / "reg")
    policy = _policy(tmp_path, drift=None, every=3_000, history=20, epochs=1, horizon=800)
    p, _rows, events = _pipeline(tmp_path, reg, policy)
    summary = run(p, max_batch=700)
    got = _events(events)
    assert [e[0] for e in got] == [
        "retrain_started", "retrain_finished", "registered", "shadow_score", "rejected",
    ]  # fmt: skip
    score = next(r for r in events.records() if r["event"] == "shadow_score")
    assert score["candidate_metric"] < score["serving_metric"]
    assert summary.counts["m.rejections"] == 1 and "m.promotions" not in summary.counts
    stages = reg.stages("sea")
    assert stages.production is None and stages.shadow is None
    assert len(reg.versions("sea")) == 1  # registered (for the record), never served


def _run_with_snapshots(
    tmp: Path, reg: Registry, at: list[int]
) -> tuple[Any, dict[int, bytes], Any]:
    p, _rows, events = _pipeline(tmp, reg, _policy(tmp))
    ex = Executor(p, max_batch=500, handle_signals=False)
    ex.open()
    saved: dict[int, bytes] = {}
    while ex.step():
        if ex.events in at:
            saved[ex.events] = encode(ex.snapshot())
    state = decode(encode(p.nodes["m"].op.snapshot()))  # type: ignore[union-attr]
    ex.finish(drain=True)
    return events, saved, state


def _final_state(tmp: Path, reg: Registry, snap: bytes) -> tuple[Any, Any]:
    p, _rows, events = _pipeline(tmp, reg, _policy(tmp))
    ex = Executor(p, max_batch=500, handle_signals=False)
    ex.open(decode(snap))
    while ex.step():
        pass
    node = p.nodes["m"]
    state = decode(encode(node.op.snapshot()))  # type: ignore[union-attr]
    ex.finish(drain=True)
    return events, state


@pytest.mark.parametrize("rerun_job", [False, True])
def test_restore_mid_loop_neither_registers_nor_promotes_twice(
    tmp_path: Path, rerun_job: bool
) -> None:
    _log(tmp_path, partitions=2)  # read round-robin: history spans both partitions
    reg = Registry(tmp_path / "reg")
    ref_events, saved, ref_state = _run_with_snapshots(tmp_path, reg, [6_000, 6_500])
    phases = {k: decode(v)["operators"]["m"]["state"]["loop"]["phase"] for k, v in saved.items()}
    assert phases == {6_000: "training", 6_500: "shadow"}  # a job running; a candidate scored
    ref = _events(ref_events)
    stages, versions = reg.stages("sea"), len(reg.versions("sea"))
    assert stages.production is not None
    for at, snap in saved.items():
        if rerun_job:  # the job's result was lost with the crash: it runs again
            for done in (tmp_path / "jobs").glob("*/done.json"):
                done.unlink()
        events, state = _final_state(tmp_path, reg, snap)
        got = _events(events)
        assert got and got == ref[len(ref) - len(got) :], (at, got, ref)  # the same tail
        after = reg.stages("sea")
        assert after.production == stages.production  # the serving version is not lost
        assert after.previous == stages.previous  # promoted once: nothing pushed twice
        assert len(reg.versions("sea")) == versions  # registered once
        assert state["loop"] == ref_state["loop"]
        for k, v in ref_state["serving"]["learner"].items():  # the same learner, bit for bit
            assert np.array_equal(v, state["serving"]["learner"][k]), k


def test_policy_and_source_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a trigger"):
        RetrainPolicy(topic="t", drift=None)
    with pytest.raises(ConfigError, match="horizon"):
        RetrainPolicy(topic="t", horizon=0)
    p = Pipeline("p")
    s = p.source("in", MemorySource({"a": [1.0], "b": [1.0], "c": [1.0], "y": [1]}))
    s.retrain_loop(
        "m", "logistic", features=FEATURES, target="y", registry=tmp_path / "r",
        model="x", policy=RetrainPolicy(topic="t"),
    )  # fmt: skip
    with pytest.raises(PipelineError, match="LogSource"):
        run(p)


def test_drift_settings_tune_the_detector(tmp_path: Path) -> None:
    """``drift_settings`` reach the loop's detector (and its checkpoint), checked up front."""
    _log(tmp_path)
    reg = Registry(tmp_path / "reg")
    settings = {"delta": 1e-9, "clock": 64}
    p, _, events = _pipeline(tmp_path, reg, _policy(tmp_path, drift_settings=settings))
    summary = run(p, max_batch=700)
    loop = p.nodes["m"].op
    assert isinstance(loop, RetrainLoop) and loop.detector is not None
    params = loop.detector.params()
    assert params == {**settings, "max_blocks": 1024}
    drifts = [r["row"] for r in events.records() if r["event"] == "drift"]
    assert any(DRIFT_AT < row < DRIFT_AT + 1_000 for row in drifts), drifts  # still found
    assert summary.counts["m.retrains"] >= 1
    with pytest.raises(ConfigError, match="unknown setting.*'alpha'.*clock, delta, max_blocks"):
        RetrainPolicy(topic="t", drift_settings={"alpha": 0.1})
    with pytest.raises(ConfigError, match="0 < delta < 1"):
        RetrainPolicy(topic="t", drift_settings={"delta": 2.0})
    with pytest.raises(ConfigError, match="needs a drift detector"):
        RetrainPolicy(topic="t", drift=None, every=100, drift_settings={"delta": 0.01})
    assert RetrainPolicy(topic="t", drift="ph", drift_settings={"threshold": 80.0}).drift == "ph"


def test_without_adopt_after_the_pipeline_never_waits_for_the_job(tmp_path: Path) -> None:
    x1, y1 = _sea(DRIFT_AT, 1, 8.0)
    x2, y2 = _sea(5_000, 2, 13.0)
    x, y = np.r_[x1, x2], np.r_[y1, y2]
    cols = {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y}

    def append(lo: int, hi: int) -> None:
        sink = LogSink(tmp_path, "sea", partitions=1)
        sink.write(Batch({k: v[lo:hi] for k, v in cols.items()}))
        sink.close()

    append(0, 6_000)
    reg = Registry(tmp_path / "reg")
    p = Pipeline("loop")
    s = p.source("in", LogSource(tmp_path, "sea", bounded=False))
    out = s.retrain_loop(
        "m", "logistic", features=FEATURES, target="y", registry=reg, model="sea",
        policy=_policy(tmp_path, adopt_after=None), settings=SETTINGS,
    )  # fmt: skip
    events = collect(out.side("events"))
    ex = Executor(p, max_batch=500, idle_poll="1ms", handle_signals=False)
    ex.open()
    started: dict[str, Any] | None = None
    done_early = False
    while ex.events < 6_000:
        ex.step()
        if started is None:
            started = next((r for r in events.records() if r["event"] == "retrain_started"), None)
            if started is not None:  # the step that started the job did not wait for it
                assert not (tmp_path / "jobs" / started["job"] / "done.json").exists()
        elif (tmp_path / "jobs" / started["job"] / "done.json").exists():
            done_early = True  # a fast machine: the job ended before the input did
    assert started is not None
    done = tmp_path / "jobs" / started["job"] / "done.json"
    proc = p.nodes["m"].op.proc  # type: ignore[union-attr]
    if proc is not None:
        proc.wait(timeout=300)  # the job's process ends; nothing in the pipeline waited for it
    assert done.exists()
    append(6_000, len(y))
    while ex.events < len(y):
        ex.step()
    ex.finish(drain=True)
    got = {r["event"]: r for r in reversed(events.records())}
    registered = got["registered"]["row"]  # adopted at the first batch after the job ended
    assert registered == 6_000 or (done_early and started["row"] < registered < 6_000)
    assert got["shadow_score"]["row"] == registered + 1_000
    assert got["promoted"]["candidate"] == got["registered"]["candidate"]


_PARENT = """
import json, os, subprocess, sys
job = sys.argv[1]
spec = json.loads(open(job + "/job.json").read())
spec["parent"] = os.getpid()
open(job + "/job.json", "w").write(json.dumps(spec))
child = subprocess.Popen([sys.executable, "-m", "tidal.ml.learn.retrain_job", job])
print(child.pid, flush=True)
sys.stdin.read()
"""


def test_a_job_whose_pipeline_died_exits_without_a_result(tmp_path: Path) -> None:
    import os
    import select
    import signal
    import subprocess
    import sys

    from tidal.ml.learn.features import Features

    _log(tmp_path, n=5_000)
    job = tmp_path / "job"
    job.mkdir()
    spec = {
        "id": "orphan", "learner": "logistic", "settings": SETTINGS, "seed": 0,
        "features": Features(numeric=FEATURES).params(), "target": "y",
        "output": "prediction", "metrics": None, "window": 1000, "weight": None,
        "labels": {"mode": "int", "classes": []}, "data_dir": str(tmp_path), "topic": "sea",
        "starts": {"0": 0}, "ends": {"0": 5_000}, "history": 5_000, "epochs": 50, "workers": 1,
    }  # fmt: skip
    (job / "job.json").write_text(json.dumps(spec))
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(job)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    fd = os.pidfd_open(child)
    try:
        parent.send_signal(signal.SIGKILL)  # the pipeline dies (kill -9) while the job runs
        parent.wait()
        ready, _, _ = select.select([fd], [], [], 300)  # until the orphaned job exits
        assert ready, "the job outlived its pipeline"
    finally:
        os.close(fd)
        assert parent.stdin is not None
        parent.stdin.close()
        parent.stdout.close()
    assert not (job / "done.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", [6_000, 7_500])
def test_a_crash_resumes_from_the_checkpoint_on_disk(tmp_path: Path, crash_at: int) -> None:
    """6,000: a job is running; 7,500: the candidate was promoted after the last checkpoint."""
    from tidal.runtime.checkpoint import CheckpointConfig

    ref_dir, dir_ = tmp_path / "ref", tmp_path / "crash"
    for d in (ref_dir, dir_):
        d.mkdir()
        _log(d, partitions=2)
    ref_reg = Registry(ref_dir / "reg")
    ref_events, _, _ = _run_with_snapshots(ref_dir, ref_reg, [])
    ref = _events(ref_events)
    cfg = CheckpointConfig(data_dir=dir_ / "ckpt", interval=None, every_events=1_000)
    reg = Registry(dir_ / "reg")
    p, _rows, _events_a = _pipeline(dir_, reg, _policy(dir_))
    ex = Executor(p, max_batch=500, handle_signals=False, checkpoint=cfg)
    ex.open()
    while ex.events < crash_at:
        ex.step()
    p.nodes["m"].op.close()  # type: ignore[union-attr]  # the process dies: so does its job
    assert ex.store is not None
    ex.store.unlock()
    if crash_at == 7_500:
        assert reg.stages("sea").production is not None  # promoted, not yet checkpointed
    p2, _rows2, events = _pipeline(dir_, reg, _policy(dir_))
    ex2 = Executor(p2, max_batch=500, handle_signals=False, checkpoint=cfg)
    ex2.run()
    got = _events(events)
    assert got and got == ref[len(ref) - len(got) :]
    want = ref_reg.stages("sea")
    stages = reg.stages("sea")
    assert (stages.production, stages.previous) == (want.production, want.previous)
    assert len(reg.versions("sea")) == len(ref_reg.versions("sea"))


def test_the_job_replays_through_the_pipeline_built_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """policy.pipeline: the job builds tests/conformance/retrain_pipeline.py again and
    replays the log through its feature step (``c10``, which the learner needs)."""
    import importlib.util

    path = Path(__file__).parents[2] / "conformance" / "retrain_pipeline.py"
    spec = importlib.util.spec_from_file_location("retrain_pipeline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _log(tmp_path)
    for k, v in {
        "RETRAIN_SOURCE": "log", "RETRAIN_TOPIC": "sea", "RETRAIN_DATA_DIR": str(tmp_path),
        "RETRAIN_REGISTRY": str(tmp_path / "reg"), "RETRAIN_WORKDIR": str(tmp_path / "jobs"),
    }.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    p = module.build()
    events = collect(module.loop_output(p, "events"))
    run(p, max_batch=700)
    promoted = next(r for r in events.records() if r["event"] == "promoted")
    started = next(
        r
        for r in events.records()
        if r["event"] == "retrain_started" and r["job"] == promoted["job"]
    )
    job = tmp_path / "jobs" / started["job"]
    spec_ = json.loads((job / "job.json").read_text())
    assert spec_["pipeline"] == f"{path}:build" and spec_["step"] == "m"
    assert json.loads((job / "done.json").read_text())["rows"] == 1_000
    assert Registry(tmp_path / "reg").stages("sea").production == promoted["candidate"]


def test_a_policy_needs_a_place_to_replay_from() -> None:
    with pytest.raises(ConfigError, match="topic='...' .* or pipeline="):
        RetrainPolicy()
    with pytest.raises(ConfigError, match="module:function"):
        RetrainPolicy(pipeline=" : ")
    assert RetrainPolicy(pipeline="features.py:build").topic is None
