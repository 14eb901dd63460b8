"""Pipeline names become folder names (checkpoints): the topic-name rule, checked whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidal import Pipeline
from tidal.errors import ConfigError
from tidal.runtime.checkpoint import CheckpointConfig, CheckpointStore


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../escape", "p\n", "with space"])
def test_pipeline_names_that_cannot_be_folders_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="invalid pipeline name"):
        Pipeline(name)
    with pytest.raises(ConfigError, match="invalid pipeline name"):
        CheckpointStore(CheckpointConfig(data_dir=str(tmp_path)), name)
    assert not any(tmp_path.iterdir())


def test_valid_pipeline_names_keep_their_checkpoint_folder(tmp_path: Path) -> None:
    assert Pipeline("iot-demo_v1.2").name == "iot-demo_v1.2"
    store = CheckpointStore(CheckpointConfig(data_dir=str(tmp_path)), "iot-demo_v1.2")
    assert store.path == tmp_path / "checkpoints" / "iot-demo_v1.2"
