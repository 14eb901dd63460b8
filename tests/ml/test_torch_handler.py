"""TorchHandler: eager modules, TorchScript files, weights_only state dicts, unsafe files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tidal import ConfigError, ModelError, Pipeline  # noqa: E402
from tidal.ml.torch import TorchHandler, is_torchscript  # noqa: E402
from tidal.testing import MemorySource, collect, run  # noqa: E402

RNG = np.random.default_rng(5)
X = RNG.normal(size=(64, 4)).astype(np.float32)
COLS = {f"f{i}": X[:, i] for i in range(4)}
FEATURES = [f"f{i}" for i in range(4)]

# TorchScript is deprecated in recent PyTorch: saving and loading it warns FutureWarning
TORCHSCRIPT_DEPRECATED = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning"
)


def make_mlp() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))


def expected(module: Any) -> np.ndarray:
    with torch.no_grad():
        out: np.ndarray = module(torch.from_numpy(X)).numpy()[:, 0]
    return out


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _score(handler: TorchHandler) -> list[dict[str, Any]]:
    p = Pipeline("torch")
    out = collect(p.source("in", MemorySource(COLS)).predict("m", handler, features=FEATURES))
    run(p, max_batch=20)
    return out.records()


def test_eager_module_in_a_pipeline_sets_threads() -> None:
    module = make_mlp()
    rows = _score(TorchHandler(module, outputs=("score",), version="e1", threads=1))
    assert torch.get_num_threads() == 1
    np.testing.assert_allclose([r["score"] for r in rows], expected(module), rtol=1e-5, atol=1e-6)
    assert {r["model_version"] for r in rows} == {"e1"}
    h = TorchHandler(module, threads=2)
    h.load()
    assert torch.get_num_threads() == 2
    assert not module.training  # eval mode
    assert h.signature.n_features == 4
    assert h.describe()["kind"] == "eager"
    with pytest.raises(ConfigError, match="threads must be >= 1"):
        TorchHandler(module, threads=0)


def test_inference_mode_and_read_only_input() -> None:
    seen: list[bool] = []

    class Probe(torch.nn.Module):  # type: ignore[misc]
        def forward(self, x: Any) -> Any:
            seen.append(torch.is_inference_mode_enabled())
            return x.sum(dim=1)

    h = TorchHandler(Probe())
    h.load()
    frozen = X.copy()
    frozen.flags.writeable = False
    out = h.predict(frozen)["output"]
    assert seen == [True] and out.shape == (64,)


@TORCHSCRIPT_DEPRECATED
def test_torchscript_file(tmp_path: Path) -> None:
    module = make_mlp()
    path = tmp_path / "mlp.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    assert is_torchscript(path)
    h = TorchHandler(path, outputs=("score",))
    rows = _score(h)
    np.testing.assert_allclose([r["score"] for r in rows], expected(module), rtol=1e-5, atol=1e-6)
    assert h.describe()["kind"] == "torchscript"


def test_weights_only_state_dict(tmp_path: Path) -> None:
    module = make_mlp()
    path = tmp_path / "mlp_state.pt"
    torch.save(module.state_dict(), path)
    assert not is_torchscript(path)
    h = TorchHandler(path, module=make_mlp_untrained, outputs=("score",))
    rows = _score(h)
    np.testing.assert_allclose([r["score"] for r in rows], expected(module), rtol=1e-5, atol=1e-6)
    assert h.describe()["kind"] == "state_dict"
    with pytest.raises(ModelError, match="does not fit the module"):
        TorchHandler(path, module=lambda: torch.nn.Linear(3, 1)).load()


def make_mlp_untrained() -> Any:
    torch.manual_seed(123)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))


class Custom(torch.nn.Module):  # type: ignore[misc]
    """A module whose pickle names this test's code."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, x: Any) -> Any:
        return self.lin(x)


def test_pickled_modules_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(Custom(), path)  # pickles the module object: loading it runs code
    with pytest.raises(ModelError, match="not a TorchScript archive.*refused"):
        TorchHandler(path).load()
    with pytest.raises(ModelError, match="weights-only state dict"):
        TorchHandler(path, module=Custom).load()
    legacy = tmp_path / "legacy.pkl"
    legacy.write_bytes(b"\x80\x04not a zip")
    with pytest.raises(ModelError, match="not a TorchScript archive"):
        TorchHandler(legacy).load()
    with pytest.raises(ModelError, match="does not exist"):
        TorchHandler(tmp_path / "nope.pt").load()


def test_tuple_and_dict_outputs() -> None:
    class Two(torch.nn.Module):  # type: ignore[misc]
        def forward(self, x: Any) -> Any:
            return x[:, :1] * 2, x[:, :3]

    class Named(torch.nn.Module):  # type: ignore[misc]
        def forward(self, x: Any) -> Any:
            return {"score": x[:, 0], "emb": x[:, 1:]}

    h = TorchHandler(Two())
    h.load()
    out = h.predict(X[:5])
    assert sorted(out) == ["output_0", "output_1"]
    assert out["output_0"].shape == (5,) and out["output_1"].shape == (5, 3)
    h2 = TorchHandler(Two(), outputs=("double", "head"))
    h2.load()
    assert sorted(h2.predict(X[:5])) == ["double", "head"]
    h3 = TorchHandler(Named())
    h3.load()
    assert sorted(h3.predict(X[:5])) == ["emb", "score"]
    bad = TorchHandler(Two(), outputs=("only_one",))
    bad.load()
    with pytest.raises(ModelError, match="returned 2 outputs"):
        bad.predict(X[:5])


def test_a_failing_module_names_the_step() -> None:
    p = Pipeline("t")
    src = p.source("in", MemorySource({"a": [1.0, 2.0]}))
    collect(src.predict("m", TorchHandler(make_mlp(), version="v5"), features=["a"]))
    with pytest.raises(ModelError, match=r"step 'm': the model TorchHandler v5"):
        run(p)
