"""Every way the retrain job replays history keeps the history contract (history_contract.py).

Cases: the embedded log read as stored (``policy.topic``), and the embedded log read
through the pipeline built again (``policy.pipeline``: source and feature prefix). Kafka's
case runs with the broker, in tests/integration/test_kafka_retrain.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tidal.core.batch import Batch
from tidal.errors import ConfigError
from tidal.io.log import LogSink
from tidal.ml.learn.retrain_job import history, read_history
from tidal.runtime.history import replay_history

HERE = Path(__file__).parent


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


contract = _module("history_contract")
PIPELINE = str(HERE / "retrain_pipeline.py") + ":build"


def _write_log(tmp: Path, partitions: int = 2, n: int = 100) -> dict[int, int]:
    """``n`` rows per partition (no key: each batch goes whole to the next partition)."""
    rng = np.random.default_rng(5)
    sink = LogSink(tmp, "sea", partitions=partitions)
    for _ in range(partitions):
        x = rng.uniform(0, 10, size=(n, 3))
        y = (x[:, 0] + x[:, 1] > 8).astype(np.int64)
        sink.write(Batch({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y}))
    sink.close()
    return dict.fromkeys(range(partitions), n)


def _env(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    monkeypatch.setenv("RETRAIN_SOURCE", "log")
    monkeypatch.setenv("RETRAIN_TOPIC", "sea")
    monkeypatch.setenv("RETRAIN_DATA_DIR", str(tmp))
    monkeypatch.setenv("RETRAIN_REGISTRY", str(tmp / "reg"))
    monkeypatch.setenv("RETRAIN_WORKDIR", str(tmp / "jobs"))


def _c10(rows: Batch) -> None:
    assert np.allclose(rows["c10"], rows["c"] / 10.0)  # the feature prefix ran


def test_the_log_as_stored(tmp_path: Path) -> None:
    ends = _write_log(tmp_path)
    contract.check_history(read_history, {"topic": "sea", "data_dir": str(tmp_path)}, ends)


def test_the_log_through_the_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ends = _write_log(tmp_path)
    _env(monkeypatch, tmp_path)
    base = {"pipeline": PIPELINE, "step": "m"}
    contract.check_history(replay_history, base, ends, _c10)
    contract.check_history(history, base, ends, _c10)  # what the job calls picks it


def test_replay_errors_say_what_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ends = _write_log(tmp_path)
    _env(monkeypatch, tmp_path)
    spec = {"starts": {"0": 0}, "ends": {"0": ends[0]}, "history": 10}
    with pytest.raises(ConfigError, match="no step 'nope'"):
        replay_history({**spec, "pipeline": PIPELINE, "step": "nope"})
    with pytest.raises(ConfigError, match="cannot import"):
        replay_history({**spec, "pipeline": "no_such_module_x:build", "step": "m"})
    with pytest.raises(ConfigError, match="no pipeline file"):
        replay_history({**spec, "pipeline": str(tmp_path / "none.py"), "step": "m"})
    with pytest.raises(ConfigError, match="must name a pipeline"):
        replay_history({**spec, "pipeline": f"{HERE / 'retrain_pipeline.py'}:FEATURES"})
