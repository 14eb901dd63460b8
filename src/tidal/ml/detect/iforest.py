"""Isolation forest refit on a sliding window, per key (needs scikit-learn: ``tidal[sklearn]``).

Every ``refit`` values a key's forest is refit on its last ``window`` values, and the
values until the next refit are scored by that forest, so a score depends only on values
before it, and the refit points are fixed by the key's count (not by batch boundaries)::

    values   0 ........ 512 ....... 768 ....... 1024
    forest              fit[0,512)  fit[256,768) fit[512,1024)
    scored               512..767    768..1023    1024..

The raw score (``-score_samples``, higher is more isolated) is standardized against the
training window's own scores: deviation ``(s - mean) / std``. A univariate series is scored
on ``(value, change from the previous value)``, like :class:`~tidal.ml.detect.HalfSpaceTrees`.

Fitting a forest costs milliseconds, once per ``refit`` values per key: this detector suits
a few hundred keys, not tens of thousands (use ``hst`` there). The fitted forests are not
in the snapshot (that would need pickle): the training windows are, and a restored detector
refits from them with the same seed, which gives the same forest.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(0, 1, 1200)
    >>> x[1000] = 9.0
    >>> out = IsolationForest(seed=0).score(x[:, None], np.zeros(1200, dtype=np.int64))
    >>> bool(out.deviation[1000] > 4), float(out.deviation[:512].max())
    (True, 0.0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError
from tidal.ml.detect.base import Scored, array_state, grow, layout, load_arrays

if TYPE_CHECKING:
    from sklearn.ensemble import IsolationForest as _Forest  # type: ignore[import-untyped]

__all__ = ["IsolationForest"]


class IsolationForest:
    """scikit-learn's ``IsolationForest``, refit per key on a sliding window.

    Args:
        window: values a forest is trained on.
        refit: values between refits.
        trees: trees per forest.
        features: value columns (1: the value and its change are used).
        seed: ``random_state`` of every fit.
        range: deviation of the expected range's edge (no range: ``low``/``high`` NaN).

    Raises:
        ConfigError: for bad parameters, or if scikit-learn is not installed.
    """

    kind = "iforest"
    multivariate = True

    def __init__(
        self,
        *,
        window: int = 512,
        refit: int = 256,
        trees: int = 50,
        features: int = 1,
        seed: int = 0,
        range: float = 4.0,
    ) -> None:
        try:
            from sklearn.ensemble import (  # type: ignore[import-untyped]
                IsolationForest as forest,
            )
        except ImportError as exc:  # pragma: no cover - the extra is installed in CI
            msg = "the iforest detector needs scikit-learn: pip install 'tidal[sklearn]'"
            raise ConfigError(msg) from exc
        if window < 16 or not 1 <= refit <= window or trees < 1 or features < 1:
            msg = (
                "iforest: need window >= 16, 1 <= refit <= window, trees >= 1, features >= 1; "
                f"got window={window}, refit={refit}, trees={trees}, features={features}"
            )
            raise ConfigError(msg)
        self._forest_cls = forest
        self.window, self.refit, self.trees = int(window), int(refit), int(trees)
        self.features, self.seed, self.range = int(features), int(seed), float(range)
        self.dims = 2 if self.features == 1 else self.features
        self.seen: Array = np.zeros(0, dtype=np.int64)
        self.last: Array = np.zeros(0)
        self.ring: Array = np.zeros((0, self.window, self.dims))
        self.train: Array = np.full((0, self.window, self.dims), np.nan)
        self._models: dict[int, tuple[_Forest, float, float]] = {}

    def score(self, x: Array, keys: Array) -> Scored:
        """Score each row with its key's current forest; refit at the fixed points."""
        if x.ndim != 2 or x.shape[1] != self.features:
            msg = f"iforest was built for {self.features} value column(s), got {x.shape[1:]}"
            raise ConfigError(msg)
        n = len(keys)
        dev = np.zeros(n)
        nan = np.full(n, np.nan)
        if n == 0:
            return Scored(dev, nan, nan.copy())
        lay = layout(keys)
        cap = int(lay.ukeys.max()) + 1
        self.seen, self.last = grow(self.seen, cap), grow(self.last, cap)
        self.ring, self.train = grow(self.ring, cap), grow(self.train, cap, np.nan)
        xs = x[lay.order]
        for i, key in enumerate(lay.ukeys.tolist()):
            rows = slice(int(lay.starts[i]), int(lay.starts[i] + lay.counts[i]))
            dev[lay.order[rows]] = self._key(key, self._features(key, xs[rows]))
        return Scored(dev, nan, nan.copy())

    def _features(self, key: int, v: Array) -> Array:
        if self.features > 1:
            return v
        col = v[:, 0]
        prev = np.r_[self.last[key] if self.seen[key] else col[0], col[:-1]]
        self.last[key] = col[-1]
        return np.stack((col, col - prev), axis=1)

    def _key(self, key: int, f: Array) -> Array:
        w, r = self.window, self.refit
        out = np.zeros(len(f))
        start = int(self.seen[key])
        i = 0
        while i < len(f):
            pos = start + i
            if pos >= w and (pos - w) % r == 0:
                self.train[key] = self._recent(key)
                self._fit(key)
            stop = min(len(f), i + (r - (pos - w) % r if pos >= w else w - pos))
            chunk = f[i:stop]
            if key in self._models and pos >= w:
                model, mean, std = self._models[key]
                s = -model.score_samples(chunk)
                out[i:stop] = np.maximum((s - mean) / std, 0.0)
            self._remember(key, chunk)
            i = stop
        self.seen[key] = start + len(f)
        return out

    def _recent(self, key: int) -> Array:
        """The key's last ``window`` values, oldest first."""
        recent: Array = self.ring[key].copy()
        return recent

    def _remember(self, key: int, chunk: Array) -> None:
        """Keep the key's last ``window`` values in order (oldest first) in its ring."""
        take = chunk[-self.window :]
        self.ring[key] = np.concatenate((self.ring[key], take))[-self.window :]

    def _fit(self, key: int) -> None:
        data = self.train[key]
        model = self._forest_cls(n_estimators=self.trees, random_state=self.seed).fit(data)
        s = -model.score_samples(data)
        self._models[key] = (model, float(s.mean()), float(max(s.std(), 1e-6)))

    def params(self) -> dict[str, Any]:
        """Parameters (JSON)."""
        return {
            "window": self.window,
            "refit": self.refit,
            "trees": self.trees,
            "features": self.features,
            "seed": self.seed,
            "range": self.range,
        }

    def snapshot(self) -> dict[str, Any]:
        """Rings and training windows (the forests are refit from them on restore)."""
        return array_state(self, "seen", "last", "ring", "train")

    def restore(self, snap: dict[str, Any]) -> None:
        """Load :meth:`snapshot` and refit each key's current forest."""
        entry = (self.window, self.dims)
        load_arrays(
            self,
            snap,
            seen=(np.int64, ()),
            last=(np.float64, ()),
            ring=(np.float64, entry),
            train=(np.float64, entry),
        )
        self._models = {}
        for key in np.flatnonzero(self.seen > self.window).tolist():
            self._fit(key)
