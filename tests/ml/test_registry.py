"""Model registry: versions, stages, atomic stage files, hot swap, shadow, canary, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tidal import Pipeline
from tidal.errors import ConfigError, ModelError, StateError
from tidal.io.generator import GeneratorSource
from tidal.ml.registry import Lineage, Registry, Stages
from tidal.ml.swap import RegistryHandler, Serve, canary_mask, key_hash
from tidal.runtime.executor import Executor
from tidal.testing import MemorySink, MemorySource, collect, run

ROOT = Path(__file__).resolve().parents[2]


def scale_model(k: float) -> bytes:
    """An ONNX model y = k * x (one feature): its output says which version scored."""
    w = numpy_helper.from_array(np.full((1, 1), k, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    """A registry with model "scale": v1 = x, v2 = 10x, v3 = 100x; v1 in production."""
    registry = Registry(tmp_path / "registry")
    for k in (1.0, 10.0, 100.0):
        src = tmp_path / f"scale{int(k)}.onnx"
        src.write_bytes(scale_model(k))
        registry.register(src, name="scale", signature=["x"], metrics={"k": k})
    registry.promote("scale", 1)
    return registry


class Clock:
    """An injected monotonic clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- versions and records ------------------------------------------------------------------
def test_register_writes_versioned_directories(reg: Registry, tmp_path: Path) -> None:
    v2 = reg.get("scale", "v2")
    assert v2.version == 2 and v2.label == "v2"
    assert sorted(p.name for p in v2.path.iterdir()) == [
        "lineage.json",
        "metrics.json",
        "model.onnx",
        "signature.json",
    ]
    assert v2.signature["inputs"] == ["x"]
    assert v2.signature["n_features"] == 1 and v2.signature["outputs"] == ["y"]
    assert v2.signature["output_dtypes"] == {"y": "float"}
    assert v2.metrics == {"k": 10.0}
    assert v2.lineage.sha256 is not None and len(v2.lineage.sha256) == 64
    assert v2.lineage.source == str((tmp_path / "scale10.onnx").resolve())
    assert [v.version for v in reg.versions("scale")] == [1, 2, 3]
    assert reg.models() == ["scale"]
    assert reg.get("scale").version == 1  # default: production
    lin = Lineage(data_range=("2024-01-01", "2024-03-31"), parent=2, compression="int8-dynamic")
    v4 = reg.register(tmp_path / "scale10.onnx", name="scale", lineage=lin)
    assert v4.lineage.parent == 2 and v4.lineage.data_range == ("2024-01-01", "2024-03-31")
    assert v4.lineage.compression == "int8-dynamic"
    # no staging leftovers
    assert not [p for p in (reg.root / "scale").iterdir() if p.name.startswith(".staging")]


def test_register_errors(reg: Registry, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such file"):
        reg.register(tmp_path / "missing.onnx", name="scale")
    with pytest.raises(ConfigError, match="a model name"):
        reg.register(tmp_path / "scale1.onnx", name="../escape")
    with pytest.raises(ModelError, match="has no version 9"):
        reg.get("scale", 9)
    with pytest.raises(ModelError, match="no model 'nope'"):
        reg.get("nope")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="cannot load the ONNX model"):
        reg.register(bad, name="scale")
    assert [v.version for v in reg.versions("scale")] == [1, 2, 3]


def test_concurrent_registrations_get_distinct_versions(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    src = tmp_path / "m.skops"
    src.write_bytes(b"x")
    got: list[int] = []
    lock = threading.Lock()

    def add() -> None:
        v = registry.register(src, name="m").version
        with lock:
            got.append(v)

    threads = [threading.Thread(target=add) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 9))


# -- stages --------------------------------------------------------------------------------
def test_promote_rollback_shadow_canary(reg: Registry) -> None:
    s = reg.promote("scale", 2)
    assert (s.production, s.previous) == (2, (1,))
    s = reg.promote("scale", "v3")
    assert (s.production, s.previous) == (3, (1, 2))
    s = reg.rollback("scale")
    assert (s.production, s.previous) == (2, (1,))
    s = reg.rollback("scale")
    assert (s.production, s.previous) == (1, ())
    with pytest.raises(ModelError, match="no previous production version"):
        reg.rollback("scale")
    s = reg.shadow("scale", 2)
    assert s.shadow == 2
    with pytest.raises(ConfigError, match="production version"):
        reg.shadow("scale", 1)
    s = reg.canary("scale", 3, fraction=0.25)
    assert s.canary is not None and (s.canary.version, s.canary.fraction) == (3, 0.25)
    with pytest.raises(ConfigError, match="canary fraction"):
        reg.canary("scale", 3, fraction=1.5)
    with pytest.raises(ModelError, match="no version 7"):
        reg.promote("scale", 7)
    # promoting the shadow / canary version clears that stage
    s = reg.promote("scale", 2)
    assert s.shadow is None and s.canary is not None
    s = reg.promote("scale", 3)
    assert s.canary is None and s.previous == (1, 2)
    s = reg.shadow("scale", None)
    assert s.shadow is None
    on_disk = json.loads(reg.stages_path("scale").read_text())
    assert on_disk == Stages.from_dict(on_disk).to_dict() == reg.stages("scale").to_dict()
    assert set(on_disk) == {"production", "previous", "shadow", "canary", "generation"}


def test_stages_file_is_replaced_atomically(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    path = reg.stages_path("scale")
    before = path.read_text()
    inode = path.stat().st_ino
    gen = reg.stages("scale").generation

    def crash(src: Any, dst: Any) -> None:
        raise OSError("disk full (simulated crash before the rename)")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        reg.promote("scale", 2)
    monkeypatch.undo()
    assert path.read_text() == before  # readers still see the whole old file
    assert reg.stages("scale").production == 1
    reg.promote("scale", 2)
    assert path.stat().st_ino != inode  # a new file was renamed over the old one
    assert reg.stages("scale").generation == gen + 1
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) <= 1  # only the crashed write's temp file


def test_concurrent_stage_changes_lose_no_update(reg: Registry) -> None:
    gen = reg.stages("scale").generation

    def flip(i: int) -> None:
        for _ in range(10):
            reg.shadow("scale", 2 if i % 2 else 3)

    threads = [threading.Thread(target=flip, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reg.stages("scale").generation == gen + 40


# -- serving: hot swap ---------------------------------------------------------------------
def _xs(seq: np.ndarray) -> dict[str, np.ndarray]:
    return {"x": (seq + 1).astype(np.float64), "card": seq % 97}


def test_hot_swap_during_a_run_loses_and_repeats_nothing(reg: Registry) -> None:
    p = Pipeline("swap")
    src = p.source("in", GeneratorSource(_xs, total=2_000))
    handler = reg.serving("scale", check_every="0ms")
    out = collect(src.predict("score", handler, features=["x"]))
    ex = Executor(p, max_batch=100, max_wait="0ms", handle_signals=False)
    ex.open()
    for _ in range(5):
        assert ex.step()
    reg.promote("scale", 2)  # while the pipeline runs, between two steps
    for _ in range(5):
        assert ex.step()
    reg.rollback("scale")
    while ex.step():
        pass
    ex.finish(drain=True)
    rows = out.records()
    xs = np.array([r["x"] for r in rows])
    assert len(rows) == 2_000 and sorted(xs.tolist()) == list(range(1, 2_001))  # no loss/dup
    versions = [r["model_version"] for r in rows]
    assert versions == ["v1"] * 500 + ["v2"] * 500 + ["v1"] * 1_000  # swaps at batch edges
    k = {"v1": 1.0, "v2": 10.0}
    assert all(r["y"] == pytest.approx(k[r["model_version"]] * r["x"]) for r in rows)
    assert handler.stats()["swaps"] == 2


def test_stages_are_checked_at_most_every_interval(reg: Registry) -> None:
    clock = Clock()
    h = reg.serving("scale", check_every="1s", clock=clock)
    h.load()
    X = np.ones((3, 1), dtype=np.float32)
    reg.promote("scale", 3)
    clock.now = 0.5
    h.refresh()
    assert h.version == "v1" and h.predict(X)["y"].tolist() == [1.0] * 3
    clock.now = 1.0
    h.refresh()
    assert h.version == "v3" and h.predict(X)["y"].tolist() == [100.0] * 3


def test_a_version_that_fails_to_load_keeps_the_old_one(reg: Registry) -> None:
    h = reg.serving("scale", check_every="0ms")
    h.load()
    (reg.get("scale", 2).file).write_bytes(b"corrupted")
    reg.promote("scale", 2)
    h.refresh()
    assert h.version == "v1" and h.stats()["load_failures"] == 1
    assert h.predict(np.ones((1, 1), dtype=np.float32))["y"].tolist() == [1.0]


def test_no_production_version_is_a_clear_error(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    src = tmp_path / "m.onnx"
    src.write_bytes(scale_model(1.0))
    registry.register(src, name="m")
    with pytest.raises(ModelError, match="no production version; promote one"):
        registry.serving("m").load()


# -- shadow and canary ---------------------------------------------------------------------
def test_shadow_scores_too_and_counts_agreement(reg: Registry) -> None:
    reg.shadow("scale", 2)
    p = Pipeline("shadow")
    src = p.source("in", MemorySource({"x": np.array([0.01, 0.02, 0.3, 1.0])}))
    handler = reg.serving("scale", check_every="0ms")
    out = collect(src.predict("score", handler, features=["x"]))
    run(p)
    rows = out.records()
    assert [r["y"] for r in rows] == pytest.approx([0.01, 0.02, 0.3, 1.0])
    assert [r["shadow_y"] for r in rows] == pytest.approx([0.1, 0.2, 3.0, 10.0])
    assert {r["model_version"] for r in rows} == {"v1"}
    assert {r["shadow_model_version"] for r in rows} == {"v2"}
    # decisions (score > 0.5) agree on 0.01 and 0.02 only, and on 1.0
    stats = handler.stats()
    assert (stats["shadow_rows"], stats["shadow_agree"]) == (4, 3)


def test_canary_routes_a_deterministic_fraction_of_keys(reg: Registry) -> None:
    reg.canary("scale", 2, fraction=0.3)
    p = Pipeline("canary")
    src = p.source("in", GeneratorSource(_xs, total=5_000))
    out = collect(
        src.apply(Serve("score", reg.serving("scale", check_every="0ms"), features="x", key="card"))
    )
    summary = run(p, max_batch=512)
    rows = out.records()
    assert len(rows) == 5_000
    by_card: dict[int, set[str]] = {}
    for r in rows:
        by_card.setdefault(r["card"], set()).add(r["model_version"])
        assert r["y"] == pytest.approx((10.0 if r["model_version"] == "v2" else 1.0) * r["x"])
    assert all(len(v) == 1 for v in by_card.values())  # a key always sees one model
    canary_cards = {c for c, v in by_card.items() if v == {"v2"}}
    expected = set(np.flatnonzero(canary_mask(np.arange(97), 0.3)).tolist())
    assert canary_cards == expected and 15 < len(canary_cards) < 45
    n_canary = sum(r["model_version"] == "v2" for r in rows)
    assert summary.counts["score.canary_rows"] == n_canary


def test_key_hash_is_stable_across_processes() -> None:
    keys = np.array(["alice", "bob", "carol"], dtype=object)
    code = (
        "import numpy as np; from tidal.ml.swap import key_hash; "
        "print(key_hash(np.array(['alice', 'bob', 'carol'], dtype=object)).tolist())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(res.stdout) == key_hash(keys).tolist()
    assert key_hash(np.array([1, 2])).tolist() == key_hash(np.array([1, 2])).tolist()


# -- versions in snapshots -----------------------------------------------------------------
def _serve_pipeline(reg: Registry, clock: Clock) -> tuple[Pipeline, MemorySink, RegistryHandler]:
    p = Pipeline("snap")
    src = p.source("in", GeneratorSource(_xs, total=1_000))
    handler = reg.serving("scale", check_every="1s", clock=clock)
    out = collect(src.apply(Serve("score", handler, features=["x"], key="card")))
    return p, out, handler


def test_serve_snapshot_pins_the_versions_until_the_next_check(reg: Registry) -> None:
    reg.shadow("scale", 3)
    clock = Clock()
    p, _, _ = _serve_pipeline(reg, clock)
    ex = Executor(p, max_batch=100, max_wait="0ms", handle_signals=False)
    ex.open()
    ex.step()
    snap = ex.snapshot()
    state = snap["operators"]["score"]["state"]
    assert state == {"kind": "serve/1", "production": 1, "shadow": 3, "canary": None}
    reg.promote("scale", 2)  # after the checkpoint: a restart still starts with v1
    reg.shadow("scale", None)
    p2, out2, h2 = _serve_pipeline(reg, clock)
    ex2 = Executor(p2, max_batch=100, max_wait="0ms", handle_signals=False)
    ex2.open(snap)
    ex2.step()
    clock.now = 1.0  # the next look at the stages
    ex2.step()
    rows = out2.records()
    assert [r["x"] for r in rows] == list(range(101, 301))  # resumed at the position
    assert [r["model_version"] for r in rows] == ["v1"] * 100 + ["v2"] * 100
    assert "shadow_y" in out2.batches[0] and "shadow_y" not in out2.batches[1]
    with pytest.raises(StateError, match="not a serve snapshot"):
        Serve("s", h2, features="x").restore({"kind": "predict/1"})


def test_predict_snapshot_records_the_version_and_restores_it(reg: Registry) -> None:
    clock = Clock()

    def build() -> tuple[Pipeline, MemorySink]:
        p = Pipeline("snap")
        src = p.source("in", GeneratorSource(_xs, total=1_000))
        h = reg.serving("scale", check_every="1s", clock=clock)
        return p, collect(src.predict("score", h, features=["x"]))

    p, _ = build()
    ex = Executor(p, max_batch=100, max_wait="0ms", handle_signals=False)
    ex.open()
    ex.step()
    snap = ex.snapshot()
    assert snap["operators"]["score"]["state"]["model_version"] == "v1"
    reg.promote("scale", 3)
    p2, out2 = build()
    ex2 = Executor(p2, max_batch=100, max_wait="0ms", handle_signals=False)
    ex2.open(snap)
    ex2.step()
    clock.now = 5.0
    ex2.step()
    assert [r["model_version"] for r in out2.records()] == ["v1"] * 100 + ["v3"] * 100
    reg.promote("scale", 2)
    with pytest.raises(ModelError, match="has no version 9"):
        reg.serving("scale").use_version("v9")


# -- the command line ----------------------------------------------------------------------
def _tidal(*args: str, registry: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDAL_")}
    env["TIDAL_REGISTRY"] = str(registry)
    return subprocess.run(
        [sys.executable, "-m", "tidal", "models", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_cli_register_promote_rollback_shadow_canary(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(scale_model(2.0))
    root = tmp_path / "reg"
    res = _tidal(
        "register",
        str(model),
        "--name",
        "fraud",
        "--signature",
        "x",
        "--metrics",
        '{"auc": 0.93}',
        "--data-range",
        "2024-01-01..2024-02-01",
        "--promote",
        registry=root,
    )
    assert res.returncode == 0, res.stderr
    assert "registered fraud v1" in res.stdout and "production v1" in res.stdout
    res = _tidal("register", str(model), "--name", "fraud", "--parent", "1", registry=root)
    assert res.returncode == 0, res.stderr
    res = _tidal("promote", "fraud", "v2", "--json", registry=root)
    assert json.loads(res.stdout)["stages"]["production"] == 2
    res = _tidal("shadow", "fraud", "1", registry=root)
    assert "shadow v1" in res.stdout
    res = _tidal("canary", "fraud", "2", "--fraction", "0.05", registry=root)
    assert res.returncode == 2 and "production version" in res.stderr
    res = _tidal("shadow", "fraud", "off", registry=root)
    assert "shadow -" in res.stdout
    res = _tidal("canary", "fraud", "1", "--fraction", "0.05", registry=root)
    assert res.returncode == 0 and "canary v1 (0.05 of keys)" in res.stdout, res.stderr
    res = _tidal("rollback", "fraud", registry=root)
    assert "production v1, previous -, shadow -, canary -" in res.stdout  # canary cleared
    res = _tidal("rollback", "fraud", registry=root)
    assert res.returncode == 2 and "no previous production version" in res.stderr
    res = _tidal("list", "--json", registry=root)
    listed = json.loads(res.stdout)
    assert listed["models"][0]["name"] == "fraud" and listed["models"][0]["versions"] == [1, 2]
    res = _tidal("show", "fraud:2", "--json", registry=root)
    shown = json.loads(res.stdout)
    assert shown["version"] == 2 and shown["lineage"]["parent"] == 1
    res = _tidal("show", "fraud:1", registry=root)
    shown = json.loads(res.stdout)
    assert shown["metrics"] == {"auc": 0.93} and shown["signature"]["inputs"] == ["x"]
    assert shown["lineage"]["data_range"] == ["2024-01-01", "2024-02-01"]
    res = _tidal("show", "nope", registry=root)
    assert res.returncode == 2 and "no model 'nope'" in res.stderr
    res = _tidal("promote", "fraud", "x7", registry=root)
    assert res.returncode == 2 and "a model version is a number" in res.stderr
