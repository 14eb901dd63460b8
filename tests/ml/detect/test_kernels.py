"""Half-Space Trees' engines (numba, numpy, uncompiled loop) give the same scores bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from tidal.errors import ConfigError
from tidal.ml.detect import kernels, trees
from tidal.ml.detect.trees import HalfSpaceTrees
from tidal.runtime.snapshot import decode, encode

needs_numba = pytest.mark.skipif(not kernels.has_numba(), reason="numba not installed")


def _series(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.sin(np.arange(n) / 9.0) * 2 + rng.normal(0, 0.2, n)
    x[rng.choice(n, 5, replace=False)] += 4.0
    return x[:, None]


def _run(det: HalfSpaceTrees, x: np.ndarray, keys: np.ndarray, cuts: list[int]) -> np.ndarray:
    bounds = [0, *cuts, len(keys)]
    parts = [
        det.score(x[a:b], keys[a:b]).deviation for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    return np.concatenate(parts)


def _engines() -> list[str]:
    return ["numpy", "python", *(["numba"] if kernels.has_numba() else [])]


@pytest.mark.parametrize(
    "params",
    [
        {"window": 32, "trees": 4, "depth": 5},
        {"window": 40, "trees": 3, "depth": 3, "size_limit": 2.5, "seed": 7},
        {"window": 16, "trees": 5, "depth": 8, "size_limit": 0.0},
    ],
)
def test_engines_agree_one_key_odd_batches(params: dict[str, float]) -> None:
    x = _series(700)
    keys = np.zeros(700, dtype=np.int64)
    cuts = [1, 33, 64, 65, 250, 511]
    got = {e: _run(HalfSpaceTrees(engine=e, **params), x, keys, cuts) for e in _engines()}  # type: ignore[arg-type]
    assert got["numpy"].max() > 0
    for e, d in got.items():
        assert d.tobytes() == got["numpy"].tobytes(), e


@pytest.mark.parametrize("features", [1, 3])
def test_engines_agree_many_keys_interleaved(features: int) -> None:
    rng = np.random.default_rng(features)
    n = 1500
    x = rng.normal(size=(n, features)) + np.arange(n)[:, None] % 7
    x[::97] += 5.0
    keys = rng.integers(0, 9, n) * 3  # sparse ids: some keys never seen
    cuts = [100, 101, 700, 1300]
    got = {
        e: _run(HalfSpaceTrees(engine=e, window=24, trees=4, features=features), x, keys, cuts)
        for e in _engines()
    }
    assert got["numpy"].max() > 0
    for e, d in got.items():
        assert d.tobytes() == got["numpy"].tobytes(), e


def test_snapshots_move_between_engines() -> None:
    x = _series(900, seed=2)
    keys = np.tile(np.arange(3), 300)
    whole = _run(HalfSpaceTrees(engine="numpy", window=32), x, keys, [])
    for a, b in [
        ("numpy", "python"),
        ("python", "numpy"),
        *([("numba", "numpy")] if kernels.has_numba() else []),
    ]:
        first = HalfSpaceTrees(engine=a, window=32)
        head = first.score(x[:400], keys[:400]).deviation
        second = HalfSpaceTrees(engine=b, window=32)
        second.restore(decode(encode(first.snapshot())))
        tail = second.score(x[400:], keys[400:]).deviation
        assert np.concatenate([head, tail]).tobytes() == whole.tobytes(), (a, b)


@needs_numba
def test_default_engine_is_numba_where_installed() -> None:
    assert HalfSpaceTrees().engine == "numba"


def test_engine_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="engine must be one of"):
        HalfSpaceTrees(engine="gpu")
    monkeypatch.setattr(trees, "has_numba", lambda: False)
    assert HalfSpaceTrees().engine == "numpy"
    with pytest.raises(ConfigError, match="learn"):
        HalfSpaceTrees(engine="numba")


def test_cells_of_odd_values_match_numpy() -> None:
    # huge, tiny and infinite features land where numpy's cast-and-clip puts them
    x = np.zeros((30, 2))
    x[:8] = np.random.default_rng(0).normal(size=(8, 2))
    odd = [[1e300, 0.0], [-1e300, 1.0], [np.inf, 0.5], [-np.inf, 0.5], [1e17, -1e17]]
    x[8:] = odd * 4 + [[0.0, 0.0]] * 2
    keys = np.zeros(30, dtype=np.int64)
    with np.errstate(invalid="ignore", over="ignore"):
        want = HalfSpaceTrees(window=8, trees=3, features=2, engine="numpy").score(x, keys)
    got = HalfSpaceTrees(window=8, trees=3, features=2, engine="python").score(x, keys)
    assert got.deviation.tobytes() == want.deviation.tobytes()


@pytest.mark.parametrize("patience", [None, 3])
def test_gated_engines_agree(patience: int | None) -> None:
    from tidal.ml.detect.gated import GatedZ

    rng = np.random.default_rng(8)
    n = 1200
    x = rng.normal(size=(n, 1)) + np.arange(n)[:, None] % 5
    x[400:430] += 9.0  # a lasting fault: gated rows in a row, then a restart
    x[::131] -= 7.0
    keys = rng.integers(0, 4, n)
    cuts = [1, 2, 300, 301, 900]
    got = {}
    for e in _engines():
        det = GatedZ(alpha=0.1, warmup=5, gate=3.0, patience=patience, engine=e)
        bounds = [0, *cuts, n]
        outs = [det.score(x[a:b], keys[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
        got[e] = [
            np.concatenate([getattr(o, f) for o in outs]) for f in ("deviation", "low", "high")
        ]
        got[e].append(det.snapshot()["streak"])
    assert got["numpy"][0].max() > 3
    for e, arrays in got.items():
        for a, b in zip(arrays, got["numpy"], strict=True):
            assert a.tobytes() == b.tobytes(), e


@pytest.mark.parametrize("engine", ["python", *(["numba"] if kernels.has_numba() else [])])
def test_loops_refuse_negative_key_ids(engine: str) -> None:
    from tidal.ml.detect.gated import GatedZ

    keys = np.array([0, -1], dtype=np.int64)
    for det in (HalfSpaceTrees(engine=engine), GatedZ(engine=engine)):
        with pytest.raises(ConfigError, match="key ids must be >= 0"):
            det.score(np.zeros((2, 1)), keys)
