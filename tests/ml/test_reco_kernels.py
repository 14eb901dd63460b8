"""The per-sample MF kernel: exactly per-sample SGD, compiled or not, in any batch size."""

from __future__ import annotations

import numpy as np
import pytest

from tidal.errors import ConfigError
from tidal.ml.reco import OnlineMF
from tidal.ml.reco.kernels import has_numba, sgd


def _stream(n: int = 600, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 40, n), rng.integers(0, 25, n), rng.normal(3.0, 1.0, n)


def _state(m: OnlineMF) -> list[np.ndarray]:
    return [m.P[: m.users.capacity], m.Q[: m.items.capacity], m.bu[: m.users.capacity],
            m.bi[: m.items.capacity], np.array([m.mean])]  # fmt: skip


def test_sample_mode_in_batches_equals_batch_mode_one_rating_at_a_time() -> None:
    u, i, r = _stream()
    whole = OnlineMF(factors=4, lr=0.05, reg=0.02, seed=2, update="sample")
    one = OnlineMF(factors=4, lr=0.05, reg=0.02, seed=2, update="batch")
    for m in (whole, one):  # registered up front: the same ids and initial factors
        m.add_users(np.arange(40))
        m.add_items(np.arange(25))
    for a in range(0, len(u), 128):  # mini-batches, per-sample steps inside
        whole.learn(u[a : a + 128], i[a : a + 128], r[a : a + 128])
    for j in range(len(u)):  # the vectorized mode, one rating per batch: per-sample SGD
        one.learn(u[j : j + 1], i[j : j + 1], r[j : j + 1])
    for got, want in zip(_state(whole), _state(one), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def _reference(u, i, r, neg, P, Q, bu, bi, lr, reg, explicit, mean, n):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202, PLR0913
    """Plain per-sample SGD, written out with numpy rows (not the kernel's loops)."""
    per = len(neg) // len(u)
    for j in range(len(u)):
        for k, b in enumerate([i[j], *neg[j * per : (j + 1) * per]]):
            a = u[j]
            if explicit:
                n += 1
                mean += (r[j] - mean) / n
                e = r[j] - (mean + bu[a] + bi[b] + P[a] @ Q[b])
            else:
                s = np.clip(bi[b] + P[a] @ Q[b], -30, 30)
                e = (k == 0) - 1 / (1 + np.exp(-s))
            P[a], Q[b] = P[a] + lr * (e * Q[b] - reg * P[a]), Q[b] + lr * (e * P[a] - reg * Q[b])
            if explicit:
                bu[a] += lr * (e - reg * bu[a])
            bi[b] += lr * (e - reg * bi[b])
    return mean


@pytest.mark.parametrize("explicit", [True, False])
@pytest.mark.parametrize("engine", ["python", "numba"])
def test_kernel_matches_a_plain_per_sample_reference(explicit: bool, engine: str) -> None:
    if engine == "numba" and not has_numba():
        pytest.skip("numba is not installed (the learn extra)")
    rng = np.random.default_rng(0)
    u, i, r = _stream(200)
    neg = np.zeros(0, np.int64) if explicit else rng.integers(0, 25, 2 * len(u))
    start = [rng.normal(0, 0.1, (40, 5)), rng.normal(0, 0.1, (25, 5)), np.zeros(40), np.zeros(25)]
    got, want = [x.copy() for x in start], [x.copy() for x in start]
    m1 = sgd(u, i, r, neg, *got, lr=0.05, reg=0.01, explicit=explicit, mean=3.0, n_seen=10,
             engine=engine)  # fmt: skip
    m2 = _reference(u, i, r, neg, *want, 0.05, 0.01, explicit, 3.0, 10)
    assert m1 == pytest.approx(m2, rel=1e-12)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-13)


def _adagrad_reference(u, i, r, neg, P, Q, bu, bi, G, lr, reg, explicit, mean, n):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202, PLR0913
    """Per-sample AdaGrad written out with numpy rows: ``G`` sums each parameter's g**2."""
    GP, GQ, gbu, gbi = G
    per = len(neg) // len(u)
    for j in range(len(u)):
        for k, b in enumerate([i[j], *neg[j * per : (j + 1) * per]]):
            a = u[j]
            if explicit:
                n += 1
                mean += (r[j] - mean) / n
                e = r[j] - (mean + bu[a] + bi[b] + P[a] @ Q[b])
            else:
                s = np.clip(bi[b] + P[a] @ Q[b], -30, 30)
                e = (k == 0) - 1 / (1 + np.exp(-s))
            gp, gq = e * Q[b] - reg * P[a], e * P[a] - reg * Q[b]
            GP[a] += gp**2
            GQ[b] += gq**2
            P[a] += lr * gp / np.sqrt(GP[a] + 1e-8)
            Q[b] += lr * gq / np.sqrt(GQ[b] + 1e-8)
            if explicit:
                g = e - reg * bu[a]
                gbu[a] += g**2
                bu[a] += lr * g / np.sqrt(gbu[a] + 1e-8)
            g = e - reg * bi[b]
            gbi[b] += g**2
            bi[b] += lr * g / np.sqrt(gbi[b] + 1e-8)
    return mean


@pytest.mark.parametrize("explicit", [True, False])
@pytest.mark.parametrize("engine", ["python", "numba"])
def test_adagrad_kernel_matches_a_plain_per_sample_reference(explicit: bool, engine: str) -> None:
    if engine == "numba" and not has_numba():
        pytest.skip("numba is not installed (the learn extra)")
    rng = np.random.default_rng(1)
    u, i, r = _stream(200)
    neg = np.zeros(0, np.int64) if explicit else rng.integers(0, 25, 2 * len(u))
    start = [rng.normal(0, 0.1, (40, 5)), rng.normal(0, 0.1, (25, 5)), np.zeros(40), np.zeros(25)]
    acc = [rng.random((40, 5)), rng.random((25, 5)), rng.random(40), rng.random(25)]
    got, want = [x.copy() for x in start], [x.copy() for x in start]
    got_acc, want_acc = [x.copy() for x in acc], [x.copy() for x in acc]
    m1 = sgd(u, i, r, neg, *got, lr=0.05, reg=0.01, explicit=explicit, mean=3.0, n_seen=10,
             adagrad=tuple(got_acc), engine=engine)  # type: ignore[arg-type]  # fmt: skip
    m2 = _adagrad_reference(u, i, r, neg, *want, want_acc, 0.05, 0.01, explicit, 3.0, 10)
    assert m1 == pytest.approx(m2, rel=1e-12)
    for g, w in zip(got + got_acc, want + want_acc, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-13)
    assert not np.allclose(got[0], start[0])  # it learned
    assert (got_acc[1] >= acc[1]).all() and (got_acc[1] > acc[1]).any()


def test_adagrad_mode_passes_the_sgd_mode_on_a_long_stream() -> None:
    rng = np.random.default_rng(5)  # a planted rank-3 model, noise 0.3
    p, q = rng.normal(0, 0.8, (60, 3)), rng.normal(0, 0.8, (40, 3))
    u, i = rng.integers(0, 60, 60_000), rng.integers(0, 40, 60_000)
    r = 3.0 + (p[u] * q[i]).sum(1) + rng.normal(0, 0.3, len(u))
    rmse = {}
    for opt in ("sgd", "adagrad"):
        m = OnlineMF(factors=3, lr=0.2 if opt == "adagrad" else 0.05, reg=0.01, seed=0,
                     update="sample", optimizer=opt)  # type: ignore[arg-type]  # fmt: skip
        for a in range(0, 55_000, 1000):
            m.learn(u[a : a + 1000], i[a : a + 1000], r[a : a + 1000])
        rmse[opt] = float(np.sqrt(np.mean((m.predict(u[55_000:], i[55_000:]) - r[55_000:]) ** 2)))
    assert rmse["adagrad"] < rmse["sgd"]
    assert rmse["adagrad"] < 0.4  # near the noise floor 0.3


def test_adagrad_needs_the_per_sample_mode() -> None:
    with pytest.raises(ConfigError, match="adagrad"):
        OnlineMF(optimizer="adagrad", update="batch")
    with pytest.raises(ConfigError, match="optimizer"):
        OnlineMF(optimizer="adam")  # type: ignore[arg-type]
    assert OnlineMF(optimizer="adagrad").sample  # "auto" picks it, numba or not


def test_sample_mode_reaches_the_noise_floor_in_one_pass() -> None:
    rng = np.random.default_rng(0)
    p, q = rng.normal(0, 1, (200, 4)) / 4**0.25, rng.normal(0, 1, (100, 4)) / 4**0.25
    u, i = rng.integers(0, 200, 60_000), rng.integers(0, 100, 60_000)
    r = 3.0 + (p[u] * q[i]).sum(1) + rng.normal(0, 0.5, len(u))
    mf = OnlineMF(factors=4, lr=0.05, reg=0.02, seed=0, update="sample")
    for a in range(0, 50_000, 5_000):
        mf.learn(u[a : a + 5_000], i[a : a + 5_000], r[a : a + 5_000])
    rmse = float(np.sqrt(np.mean((mf.predict(u[50_000:], i[50_000:]) - r[50_000:]) ** 2)))
    assert rmse < 1.25 * 0.5, rmse


def test_bookkeeping_without_numba_matches_the_compiled_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tidal.ml.reco import kernels

    rng = np.random.default_rng(5)
    u, i = rng.integers(0, 30, 500), rng.integers(0, 20, 500)
    t = rng.uniform(0, 100, 500)  # out of order: the latest time is a max, not the last write

    def run() -> list[np.ndarray]:
        arrays = [np.zeros(30), np.zeros(20), np.zeros(30, np.int64), np.zeros(20, np.int64),
                  np.zeros(20)]  # fmt: skip
        kernels.remember(u, i, t, *arrays, decay=0.01, now=100.0)
        return arrays

    compiled = run()
    monkeypatch.setattr(kernels, "has_numba", lambda: False)
    for a, b in zip(run(), compiled, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert compiled[0].max() == pytest.approx(t[u == np.argmax(compiled[0])].max())


def test_sample_mode_is_rivers_biased_mf_step_for_step() -> None:
    pytest.importorskip("river")
    from river import optim, reco

    u, i, r = _stream(400)
    mf = OnlineMF(factors=4, lr=0.1, reg=0.01, seed=0, update="sample")
    mf.add_users(np.arange(40))
    mf.add_items(np.arange(25))
    # River's squared loss has gradient 2 (y' - y) and its L2 term is not halved:
    # SGD(0.05) with l2=0.02 is lr=0.1, reg=0.01 here
    model = reco.BiasedMF(n_factors=4, bias_optimizer=optim.SGD(0.05),
                          latent_optimizer=optim.SGD(0.05), l2_bias=0.02,
                          l2_latent=0.02)  # fmt: skip
    uid, iid = mf.users.lookup(np.arange(40)), mf.items.lookup(np.arange(25))
    for k in range(40):  # River starts from Tidal's initial factors
        model.u_latents[k] = mf.P[uid[k]].copy()
    for k in range(25):
        model.i_latents[k] = mf.Q[iid[k]].copy()
    for a in range(0, len(u), 100):
        mf.learn(u[a : a + 100], i[a : a + 100], r[a : a + 100])
    for a, b, y in zip(u.tolist(), i.tolist(), r.tolist(), strict=True):
        model.learn_one(a, b, y)
    assert mf.mean == pytest.approx(model.global_mean.get(), rel=1e-12)
    for k in range(40):
        np.testing.assert_allclose(mf.P[uid[k]], model.u_latents[k], rtol=1e-9, atol=1e-12)
        assert mf.bu[uid[k]] == pytest.approx(model.u_biases[k], rel=1e-9, abs=1e-12)
    for k in range(25):
        np.testing.assert_allclose(mf.Q[iid[k]], model.i_latents[k], rtol=1e-9, atol=1e-12)
        assert mf.bi[iid[k]] == pytest.approx(model.i_biases[k], rel=1e-9, abs=1e-12)
