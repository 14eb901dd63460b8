"""Model files and registry data never run code that the serving process did not name.

Each test here failed before its fix (issue 8, section 4): the registry ran the file named
in a version's lineage, model names took a trailing newline, and so on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tidal import Pipeline
from tidal.errors import ConfigError, ModelError
from tidal.ml.registry import Lineage, Registry
from tidal.testing import MemorySource, collect, run

torch = pytest.importorskip("torch")

# A module that leaves a marker file when it is imported (or its Net is built).
EVIL = """
from pathlib import Path
Path({marker!r}).write_text("ran")

def Net():
    Path({marker!r}).write_text("built")
    import torch
    return torch.nn.Identity()
"""


def net() -> Any:
    """The architecture the serving process itself names: y = 2x."""
    lin = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    return lin


@pytest.fixture
def evil_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Registry, Path]:
    """Model "m": a state dict whose lineage names evil_arch.py, which sits in the cwd."""
    marker = tmp_path / "MARKER"
    (tmp_path / "evil_arch.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.chdir(tmp_path)
    lin = net()
    with torch.no_grad():
        lin.weight.fill_(2.0)
    torch.save(lin.state_dict(), tmp_path / "m.pt")
    reg = Registry(tmp_path / "registry")
    # the two ways registry data could name the file: a path, and a module found in the cwd
    reg.register("m.pt", name="m", lineage=Lineage(extra={"arch": "evil_arch.py:Net"}))
    reg.register("m.pt", name="m", lineage=Lineage(extra={"arch": "evil_arch:Net"}))
    return reg, marker


@pytest.mark.parametrize("version", [1, 2])
def test_serving_never_runs_the_architecture_named_in_the_registry(
    evil_registry: tuple[Registry, Path], version: int
) -> None:
    reg, marker = evil_registry
    reg.promote("m", version)
    with pytest.raises(ModelError, match="never from the registry.*arch="):
        reg.serving("m").load()
    assert not marker.exists()
    # an allow-list that does not hold the lineage's label refuses too
    with pytest.raises(ModelError, match="not among those this process serves"):
        reg.serving("m", arch={"nets:Other": net}).load()
    assert not marker.exists()


def test_serving_builds_the_module_from_the_code_the_caller_gives(
    evil_registry: tuple[Registry, Path],
) -> None:
    reg, marker = evil_registry
    reg.promote("m", 1)
    for arch in (net, {"evil_arch.py:Net": net}):
        p = Pipeline("arch")
        src = p.source("in", MemorySource({"x": np.array([1.0, 3.0], dtype=np.float32)}))
        out = collect(src.predict("score", reg.serving("m", arch=arch), features=["x"]))
        run(p)
        assert [r["output"] for r in out.records()] == [2.0, 6.0]  # the registered weights
        assert not marker.exists()


def test_a_string_architecture_must_be_an_importable_module_path(
    evil_registry: tuple[Registry, Path],
) -> None:
    reg, marker = evil_registry
    reg.promote("m", 1)
    with pytest.raises(ConfigError, match="importable 'package.module:factory'"):
        reg.serving("m", arch="evil_arch.py:Net")
    with pytest.raises(ConfigError, match="importable"):
        reg.serving("m", arch={"evil_arch.py:Net": "evil_arch.py:Net"})
    assert not marker.exists()
    # an importable path the caller names is imported (here PyTorch's own Identity, whose
    # state dict is empty: it does not fit the registered weights, and says so)
    with pytest.raises(ModelError, match="does not fit"):
        reg.serving("m", arch="torch.nn:Identity").load()


# -- names that become paths ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["fraud\n", "\nfraud", "fr/aud", "..", ".", "", "-x", "x" * 129])
def test_model_names_are_checked_whole(tmp_path: Path, name: str) -> None:
    (tmp_path / "m.skops").write_bytes(b"...")
    reg = Registry(tmp_path / "registry")
    with pytest.raises(ConfigError, match="a model name is"):
        reg.register(tmp_path / "m.skops", name=name)
    with pytest.raises(ConfigError, match="a model name is"):
        reg.stages(name)
    assert not (tmp_path / "registry").exists() or not any((tmp_path / "registry").iterdir())


def test_a_folder_with_a_newline_is_neither_a_model_nor_a_version(tmp_path: Path) -> None:
    (tmp_path / "m.skops").write_bytes(b"...")
    reg = Registry(tmp_path / "registry")
    reg.register(tmp_path / "m.skops", name="fraud")
    (tmp_path / "registry" / "fraud\n" / "v1").mkdir(parents=True)
    (tmp_path / "registry" / "fraud" / "v2\n").mkdir()
    assert reg.models() == ["fraud"]
    assert [v.version for v in reg.versions("fraud")] == [1]
