"""Conformance: every drift detector keeps the shared contract of ``tidal.ml.detect.drift``.

A drift detector joins by being registered in ``tidal.ml.detect.DRIFT_DETECTORS``; the first
test fails for a drift detector class the package exports but the registry does not build.
The stream has three interleaved keys, each with a mean shift and a variance change, long
enough for every detector to warm up and fire:

* snapshot mid-stream, through the runtime's snapshot encoding (arrays + JSON, no pickle),
  restore into a fresh detector, continue: the same drifts and scores as one run;
* the inputs are not modified;
* two detectors built with the same seed give the same result;
* causal: appending future rows does not change earlier rows' drifts or scores;
* batch boundaries do not change the drifts (scores equal to 1e-9: running means are
  summed in another order when the batches are cut elsewhere).
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import tidal.ml.detect as detect
from tidal.core.batch import Array
from tidal.ml.detect import DRIFT_DETECTORS, DriftDetector, Drifts, make_drift
from tidal.runtime.snapshot import decode, encode

N_PER_KEY = 6000
NAMES = sorted(DRIFT_DETECTORS)


def _stream(seed: int = 3) -> tuple[Array, Array]:
    rng = np.random.default_rng(seed)
    parts, keys = [], []
    for k in range(3):
        x = rng.normal(5.0 * k, 1.0, N_PER_KEY)
        x[2500:] += 1.5
        x[4500:] = 5.0 * k + 1.5 + rng.normal(0, 3.0, N_PER_KEY - 4500)
        parts.append(x)
        keys.append(np.full(N_PER_KEY, k))
    x_all, k_all = np.concatenate(parts), np.concatenate(keys)
    pos = np.concatenate([np.arange(N_PER_KEY)] * 3)
    order = np.lexsort((k_all, pos + rng.integers(0, 5, 3 * N_PER_KEY)))
    return x_all[order], k_all[order].astype(np.int64)


def _run(det: DriftDetector, x: Array, keys: Array, cuts: list[int]) -> Drifts:
    bounds = [0, *cuts, len(keys)]
    outs = [det.update(x[a:b], keys[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    return Drifts(np.concatenate([o.drift for o in outs]), np.concatenate([o.score for o in outs]))


def _same(a: Drifts, b: Drifts, exact: bool = True) -> None:
    np.testing.assert_array_equal(a.drift, b.drift)
    if exact:
        np.testing.assert_array_equal(a.score, b.score)
    else:
        np.testing.assert_allclose(a.score, b.score, rtol=1e-9, atol=1e-9)


def test_every_exported_drift_detector_is_registered() -> None:
    kinds = {make_drift(n).kind for n in DRIFT_DETECTORS}
    exported = {
        obj.kind
        for name in detect.__all__
        if inspect.isclass(obj := getattr(detect, name))
        and hasattr(obj, "kind")
        and hasattr(obj, "update")
    }
    assert exported <= kinds, (
        f"exported drift detectors without a registry entry: {exported - kinds}"
    )


@pytest.mark.parametrize("name", NAMES)
def test_is_a_drift_detector_that_finds_the_changes(name: str) -> None:
    det = make_drift(name)
    assert isinstance(det, DriftDetector)
    x, keys = _stream()
    out = det.update(x, keys)
    assert out.drift.shape == out.score.shape == (len(keys),)
    assert out.drift.dtype == bool
    tested = out.score[~np.isnan(out.score)]
    assert len(tested) and (tested >= 0).all()
    assert (out.score[out.drift] >= 1.0).all()
    for k in range(3):  # every key's mean shift at its row 2500 is found
        rows = np.flatnonzero(keys == k)
        hits = np.flatnonzero(out.drift[rows])
        assert ((hits >= 2500) & (hits < 3500)).any(), (k, hits)


@pytest.mark.parametrize("name", NAMES)
def test_snapshot_restore_mid_stream_gives_the_same_result(name: str) -> None:
    x, keys = _stream()
    whole = _run(make_drift(name), x, keys, [4000, 9000])
    for cut in (700, 7603, 13001):
        first = make_drift(name)
        a = _run(first, x[:cut], keys[:cut], [])
        snap = decode(encode({"state": first.snapshot()}))["state"]
        second = make_drift(name)
        second.restore(snap)
        b = _run(second, x[cut:], keys[cut:], [])
        joined = Drifts(np.r_[a.drift, b.drift], np.r_[a.score, b.score])
        _same(joined, whole, exact=False)


@pytest.mark.parametrize("name", NAMES)
def test_inputs_are_not_modified(name: str) -> None:
    x, keys = _stream()
    x0, k0 = x.copy(), keys.copy()
    make_drift(name).update(x, keys)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(keys, k0)


@pytest.mark.parametrize("name", NAMES)
def test_seeded_runs_are_deterministic(name: str) -> None:
    x, keys = _stream()
    _same(make_drift(name, seed=5).update(x, keys), make_drift(name, seed=5).update(x, keys))


@pytest.mark.parametrize("name", NAMES)
def test_drifts_are_causal(name: str) -> None:
    x, keys = _stream()
    m = 11_000
    full = make_drift(name).update(x, keys)
    prefix = make_drift(name).update(x[:m], keys[:m])
    _same(prefix, Drifts(full.drift[:m], full.score[:m]))


@pytest.mark.parametrize("name", NAMES)
def test_batch_boundaries_do_not_change_drifts(name: str) -> None:
    x, keys = _stream()
    one = make_drift(name).update(x, keys)
    rng = np.random.default_rng(11)
    cuts = sorted(rng.choice(np.arange(1, len(keys)), 40, replace=False).tolist())
    _same(_run(make_drift(name), x, keys, cuts), one, exact=False)
    singles = [*range(1, 400), 401, 777, 778, 1500, 9000, 9001]
    _same(_run(make_drift(name), x, keys, singles), one, exact=False)


def test_a_snapshot_of_another_detector_is_refused() -> None:
    from tidal.errors import StateError

    snap = make_drift("ph").snapshot()
    with pytest.raises(StateError, match="not a 'cusum' detector snapshot"):
        make_drift("cusum").restore(snap)
    with pytest.raises(StateError, match="same parameters"):
        detect.PageHinkley(threshold=10).restore(snap)
