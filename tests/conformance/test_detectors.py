"""Conformance: every anomaly detector keeps the shared contract of ``tidal.ml.detect``.

A detector joins by being registered in ``tidal.ml.detect.DETECTORS``; the first test fails
for a detector class that the package exports but the registry does not build. Each check
runs on a keyed stream (three keys, interleaved, with seasonality, spikes and a level shift)
long enough to get every detector past its warm-up:

* snapshot mid-stream, through the runtime's snapshot encoding (arrays + JSON, no pickle),
  restore into a fresh detector, continue: the same scores as an uninterrupted run;
* the inputs are not modified;
* two detectors built with the same seed give the same scores;
* causal: appending future rows does not change the scores of earlier rows;
* batch boundaries do not change scores.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import tidal.ml.detect as detect
from tidal.core.batch import Array
from tidal.ml.detect import DETECTORS, Detector, make
from tidal.runtime.snapshot import decode, encode

N_PER_KEY = 1400
NAMES = sorted(DETECTORS)


def _stream(seed: int = 3) -> tuple[Array, Array]:
    rng = np.random.default_rng(seed)
    parts, keys = [], []
    for k in range(3):
        t = np.arange(N_PER_KEY)
        x = 10 * k + np.sin(2 * np.pi * t / 40) * 3 + rng.normal(0, 0.5, N_PER_KEY)
        x[900:] += 4.0
        x[rng.choice(N_PER_KEY, 6, replace=False)] += 12.0
        parts.append(x)
        keys.append(np.full(N_PER_KEY, k))
    order = np.argsort(rng.random(3 * N_PER_KEY), kind="stable")
    # interleave keys but keep each key's own order
    x_all = np.concatenate(parts)
    k_all = np.concatenate(keys)
    pos = np.concatenate([np.arange(N_PER_KEY)] * 3)
    order = np.lexsort((k_all, pos + rng.integers(0, 3, 3 * N_PER_KEY)))
    return x_all[order][:, None], k_all[order].astype(np.int64)


def _run(det: Detector, x: Array, keys: Array, cuts: list[int]) -> Array:
    bounds = [0, *cuts, len(keys)]
    out = [det.score(x[a:b], keys[a:b]).deviation for a, b in zip(bounds, bounds[1:], strict=False)]
    return np.concatenate(out)


def test_every_exported_detector_is_registered() -> None:
    kinds = {make(n).kind for n in DETECTORS}
    exported = {
        obj.kind
        for name in detect.__all__
        if inspect.isclass(obj := getattr(detect, name))
        and hasattr(obj, "kind")
        and hasattr(obj, "score")
    }
    assert exported <= kinds, f"exported detectors without a registry entry: {exported - kinds}"


@pytest.mark.parametrize("name", NAMES)
def test_is_a_detector_with_scores_in_range(name: str) -> None:
    det = make(name)
    assert isinstance(det, Detector)
    x, keys = _stream()
    out = det.score(x, keys)
    assert out.deviation.shape == (len(keys),)
    assert np.isfinite(out.deviation).all() and (out.deviation >= 0).all()
    assert out.deviation.max() > det.range  # the spikes and the shift are found
    assert len(out.low) == len(out.high) == len(keys)


@pytest.mark.parametrize("name", NAMES)
def test_snapshot_restore_mid_stream_gives_the_same_scores(name: str) -> None:
    x, keys = _stream()
    whole = _run(make(name), x, keys, [1000, 2500])
    for cut in (700, 2203):
        first = make(name)
        a = first.score(x[:cut], keys[:cut]).deviation
        snap = decode(encode({"state": first.snapshot()}))["state"]
        second = make(name)
        second.restore(snap)
        b = second.score(x[cut:], keys[cut:]).deviation
        np.testing.assert_array_equal(np.concatenate((a, b)), whole, err_msg=f"cut at {cut}")


@pytest.mark.parametrize("name", NAMES)
def test_inputs_are_not_modified(name: str) -> None:
    x, keys = _stream()
    x0, k0 = x.copy(), keys.copy()
    make(name).score(x, keys)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(keys, k0)


@pytest.mark.parametrize("name", NAMES)
def test_seeded_runs_are_deterministic(name: str) -> None:
    x, keys = _stream()
    a = make(name, seed=5).score(x, keys).deviation
    b = make(name, seed=5).score(x, keys).deviation
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_scores_are_causal(name: str) -> None:
    x, keys = _stream()
    m = 2600
    full = make(name).score(x, keys).deviation
    prefix = make(name).score(x[:m], keys[:m]).deviation
    np.testing.assert_array_equal(prefix, full[:m])


@pytest.mark.parametrize("name", NAMES)
def test_batch_boundaries_do_not_change_scores(name: str) -> None:
    x, keys = _stream()
    one = make(name).score(x, keys).deviation
    rng = np.random.default_rng(11)
    cuts = sorted(rng.choice(np.arange(1, len(keys)), 25, replace=False).tolist())
    np.testing.assert_array_equal(_run(make(name), x, keys, cuts), one)
    singles = list(range(1, 300)) + [301, 777, 778, 1500]
    np.testing.assert_array_equal(_run(make(name), x, keys, singles), one)


def _numpy_engine(name: str) -> Detector:
    """``make(name)`` with every engine-choosing detector in it on its numpy engine."""
    det = make(name)
    members = getattr(det, "members", [det])
    for m in members:
        if hasattr(m, "engine"):
            m.engine = "numpy"
    return det


@pytest.mark.parametrize(
    "name",
    [n for n in NAMES if any(hasattr(m, "engine") for m in getattr(make(n), "members", [make(n)]))],
)
def test_engines_give_the_same_scores(name: str) -> None:
    # a detector with a compiled engine and a numpy one: both, bit for bit, any batching
    x, keys = _stream()
    default = _run(make(name), x, keys, [1000, 2500])
    numpy_engine = _run(_numpy_engine(name), x, keys, [1, 999, 3000])
    assert default.tobytes() == numpy_engine.tobytes()
