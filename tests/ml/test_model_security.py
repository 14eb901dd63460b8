"""Model files and registry data never run code that the serving process did not name.

Each test here failed before its fix (issue 8, section 4): the registry ran the file named
in a version's lineage, model names took a trailing newline, and so on.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tidal import Pipeline
from tidal.errors import ConfigError, ModelError
from tidal.ml.registry import Lineage, Registry
from tidal.testing import MemorySource, collect, run

torch = pytest.importorskip("torch")

from tidal.ml.compress import load_torch  # noqa: E402
from tidal.ml.torch import (  # noqa: E402
    SAFE_TORCH,
    TorchHandler,
    check_torch_version,
    is_torchscript,
    load_state_dict,
)

# TorchScript is deprecated in recent PyTorch: saving and loading it warns FutureWarning
TORCHSCRIPT_DEPRECATED = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning"
)

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


def test_an_allow_list_needs_the_versions_label(evil_registry: tuple[Registry, Path]) -> None:
    reg, marker = evil_registry
    unlabelled = reg.register(reg.get("m", 1).file, name="m")  # no arch in its lineage
    reg.promote("m", unlabelled.version)
    with pytest.raises(ModelError, match="names no architecture.*or pass arch=factory"):
        reg.serving("m", arch={"evil_arch.py:Net": net}).load()
    handler = reg.serving("m", arch=net)  # one architecture for every version
    handler.load()
    assert handler.version == f"v{unlabelled.version}"
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



# -- the PyTorch version floor ----------------------------------------------------------------
@pytest.mark.parametrize("version", ["2.1.0", "2.5.1+cu121", "2.9.1", "1.13.1", "nightly"])
def test_old_pytorch_versions_are_refused(version: str) -> None:
    pattern = rf"PyTorch {re.escape(version)} is installed.*CVE-2025-32434.*CVE-2026-24747"
    with pytest.raises(ModelError, match=pattern):
        check_torch_version(version)


@pytest.mark.parametrize("version", ["2.10.0", "2.10.1+cpu", "2.15.0+cu132", "3.0.0"])
def test_patched_pytorch_versions_pass(version: str) -> None:
    check_torch_version(version)


def test_the_torch_extra_requires_the_same_floor() -> None:
    import tomllib

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    floor = ".".join(map(str, SAFE_TORCH))
    torch_reqs = [r for r in extras["torch"] if r.split(">")[0].split("=")[0].strip() == "torch"]
    assert torch_reqs == [f"torch>={floor}"]  # (keras rides in the same extra)
    assert SAFE_TORCH >= (2, 10)  # CVE-2026-24747 is fixed in 2.10.0


def test_no_state_dict_is_read_with_an_old_pytorch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The installed PyTorch is new; its reported version is set to an old one."""
    path = tmp_path / "m.pt"
    torch.save(net().state_dict(), path)
    reg = Registry(tmp_path / "registry")
    reg.register(path, name="m")
    reg.promote("m", 1)
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    attempts = [
        lambda: load_state_dict(path),
        lambda: TorchHandler(path, module=net).load(),
        lambda: load_torch(path, net),
        lambda: reg.serving("m", arch=net).load(),
    ]
    for attempt in attempts:
        with pytest.raises(ModelError, match=r"PyTorch 2\.5\.1 is installed.*torch>=2\.10"):
            attempt()
    monkeypatch.undo()
    assert TorchHandler(path, module=net).load() is None  # the real version reads it


# -- TorchScript: detected as PyTorch detects it, loaded only when asked for ----------------------
def _zip(path: Path, records: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in records.items():
            zf.writestr(name, data)
    return path


def _torch_calls_it_torchscript(path: Path) -> bool:
    """What ``torch.load`` itself says: it names TorchScript archives when it meets one."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            torch.load(str(path), weights_only=True)
        except Exception as exc:
            said = str(exc)
        else:
            said = ""
    said += " ".join(str(w.message) for w in seen)
    return "TorchScript archive" in said


@TORCHSCRIPT_DEPRECATED
def test_torchscript_detection_agrees_with_pytorch(tmp_path: Path) -> None:
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(net()), str(scripted))
    traced = tmp_path / "traced.pt"
    torch.jit.save(torch.jit.trace(net(), torch.zeros(1, 1)), str(traced))
    state = tmp_path / "state.pt"
    torch.save(net().state_dict(), state)
    empty = pickle.dumps({}, protocol=2)
    cases = {
        "scripted": scripted,
        "traced": traced,
        "state dict": state,
        # constants.pkl one folder too deep, and a code/ folder: not TorchScript to PyTorch
        "nested": _zip(
            tmp_path / "nested.pt",
            {
                "a/version": b"3\n",
                "a/b/constants.pkl": empty,
                "a/code/x.py": b"",
                "a/data.pkl": empty,
            },
        ),
        # constants.pkl at the top and no code/ folder: TorchScript to PyTorch
        "no code": _zip(
            tmp_path / "nocode.pt",
            {"a/version": b"3\n", "a/constants.pkl": empty, "a/data.pkl": empty},
        ),
        "not a zip": _zip(tmp_path / "plain.zip", {"x.txt": b"x"}),
    }
    for label, path in cases.items():
        assert is_torchscript(path) == _torch_calls_it_torchscript(path), label
    assert [k for k, p in cases.items() if is_torchscript(p)] == ["scripted", "traced", "no code"]


EXEC_MARKER = """
class Evil:
    def __reduce__(self):
        return (exec, ("open({marker!r}, 'w').write('ran')",))
"""


@TORCHSCRIPT_DEPRECATED
def test_a_crafted_torchscript_archive_is_refused_by_torch_jit_load(tmp_path: Path) -> None:
    """A real archive whose pickles call ``exec``: PyTorch's TorchScript unpickler refuses."""
    marker = tmp_path / "MARKER"
    scope: dict[str, Any] = {}
    exec(EXEC_MARKER.format(marker=str(marker)), scope)  # noqa: S102 - the payload under test
    real = tmp_path / "real.pt"
    torch.jit.save(torch.jit.script(net()), str(real))
    with zipfile.ZipFile(real) as zf:
        records = {n: zf.read(n) for n in zf.namelist()}
    top = next(iter(records)).split("/")[0]
    for name in ("constants.pkl", "data.pkl"):
        evil = dict(records)
        evil[f"{top}/{name}"] = pickle.dumps(scope["Evil"](), protocol=2)
        path = _zip(tmp_path / f"evil-{name}.pt", evil)
        assert is_torchscript(path)
        with pytest.raises(ModelError, match="torch.jit.load refused it"):
            TorchHandler(path).load()
        with pytest.raises(ModelError, match="is a TorchScript archive"):
            TorchHandler(path, module=net).load()
        assert not marker.exists()


@TORCHSCRIPT_DEPRECATED
def test_the_registry_never_serves_torchscript(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(net()), str(path))
    reg = Registry(tmp_path / "registry")
    reg.register(path, name="m")
    reg.promote("m", 1)
    with pytest.raises(ModelError, match="is a TorchScript archive"):
        reg.serving("m", arch=net).load()
