"""Drift detectors: has the distribution of a feature, a prediction or an error changed?

An anomaly detector (:mod:`tidal.ml.detect`) scores single values; a drift detector says
when the *distribution* a series comes from has changed, so a model can be retrained.

===========  ==================================================  ===============================
name         what                                                catches
===========  ==================================================  ===============================
``adwin``    ADWIN: adaptive window, cut where two sub-windows   mean shifts of any size (error
             differ by more than a Hoeffding-style bound          rates, features), no scale
``ph``       Page-Hinkley: CUSUM around the running mean         mean shifts, in warm-up sigmas
``cusum``    Page's two-sided CUSUM around the warm-up mean      mean shifts, in warm-up sigmas
``kswin``    Kolmogorov-Smirnov test, recent vs. older values    any change of the distribution
``psi``      population stability index, window vs. reference   any change of the distribution
===========  ==================================================  ===============================

Every detector follows :class:`DriftDetector`: :meth:`~DriftDetector.update` gets a batch's
values with dense key ids, in arrival order, and returns for every row whether a drift was
detected *at* that row (``drift``) and the detector's test statistic divided by its
threshold (``score``: a drift fires where it reaches 1; NaN where the detector did not test,
e.g. during warm-up). After a drift a detector forgets what came before (ADWIN drops the old
sub-window, the others start afresh), so one change is one drift event.

**How they are vectorized.** :class:`SeriesDrift` runs a detector one key at a time (a Python
step per *distinct key* of a batch, not per row); within a key, the rows are processed with
numpy over time: cumulative sums and running minima (Page-Hinkley, CUSUM), prefix sums over
blocks of 32 values tested at every block end at once (ADWIN), one sorted
``(tests, 2 * stat_size)`` array for all KS tests (KSWIN), one ``bincount`` per window
(PSI). Drifts reset the state, so the work loops over *drifts*, never over rows. The state
of each key is a few numeric arrays (no pickle), and the result does not depend on where
the batches are cut.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> x = np.r_[rng.normal(0, 1, 3000), rng.normal(1, 1, 1000)]
    >>> from tidal.ml.detect import make_drift
    >>> out = make_drift("ph").update(x, np.zeros(len(x), dtype=np.int64))
    >>> np.flatnonzero(out.drift).tolist()     # the mean moved by one sigma at row 3000
    [3017]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError, StateError
from tidal.ml.detect.base import check_params

__all__ = ["CHUNK", "DriftDetector", "Drifts", "SeriesDrift", "first_true"]

CHUNK = 4096
"""Rows a detector tests per numpy pass; after a drift it restarts at the next row, so the
work wasted past a drift is at most one chunk."""


@dataclass
class Drifts:
    """What a drift detector says about each row (arrays of the rows' length).

    Attributes:
        drift: True at the row where a drift was detected.
        score: the test statistic over its threshold (``>= 1`` at a drift; NaN untested).
    """

    drift: Array
    score: Array


@runtime_checkable
class DriftDetector(Protocol):
    """A keyed, causal, vectorized drift detector.

    ``update`` gets the finite values ``x`` (shape ``(n,)``) of a batch's rows and each
    row's dense key id, in arrival order, tests each row against its key's past, learns from
    it, and returns :class:`Drifts`. It must not modify its inputs. ``snapshot`` returns the
    state as numeric arrays and JSON values; ``restore`` loads it into a detector built with
    the same :meth:`params`.

    Example:
        >>> from tidal.ml.detect import ADWIN
        >>> isinstance(ADWIN(), DriftDetector)
        True
    """

    kind: str

    def update(self, x: Array, keys: Array) -> Drifts:
        """Test every row against its key's past, then learn from it."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The state: numeric arrays and JSON values."""
        ...

    def restore(self, snap: dict[str, Any]) -> None:
        """Load a :meth:`snapshot` (same parameters)."""
        ...

    def params(self) -> dict[str, Any]:
        """The parameters (JSON values)."""
        ...


class SeriesDrift:
    """Base of the built-in detectors: per-key state as small float arrays, one key at a time.

    A subclass names its state fields and their initial values (:meth:`initial`) and
    implements :meth:`run` for one key's rows, vectorized over time. Snapshots concatenate
    every key's fields into one array per field, with the lengths beside them.
    """

    kind = ""

    def __init__(self) -> None:
        self.states: dict[int, dict[str, Array]] = {}

    def initial(self) -> dict[str, Array]:
        """The state of a key that has seen nothing."""
        raise NotImplementedError

    def run(self, state: dict[str, Array], x: Array) -> tuple[Array, Array]:
        """Process one key's values in order; update ``state``; return (drift, score)."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The parameters (JSON values)."""
        raise NotImplementedError

    def update(self, x: Array, keys: Array) -> Drifts:
        """Run every key's rows of the batch (see :class:`DriftDetector`)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        keys = np.asarray(keys)
        n = len(x)
        if len(keys) != n:
            msg = f"drift detector {self.kind!r}: {n} values but {len(keys)} key ids"
            raise ConfigError(msg)
        drift = np.zeros(n, dtype=bool)
        score = np.full(n, np.nan)
        if n == 0:
            return Drifts(drift, score)
        if bool((keys == keys[0]).all()):
            groups = [(int(keys[0]), np.arange(n))]
        else:
            order = np.argsort(keys, kind="stable")
            ks = keys[order]
            cuts = np.flatnonzero(ks[1:] != ks[:-1]) + 1
            groups = [(int(keys[g[0]]), g) for g in np.split(order, cuts)]
        for key, rows in groups:
            state = self.states.get(key)
            if state is None:
                state = self.states[key] = self.initial()
            d, s = self.run(state, x[rows])
            drift[rows], score[rows] = d, s
        return Drifts(drift, score)

    def snapshot(self) -> dict[str, Any]:
        """Every key's state: one array per field, concatenated, with the keys and lengths."""
        ids = sorted(self.states)
        fields = list(self.initial())
        out: dict[str, Any] = {
            "kind": self.kind,
            "params": self.params(),
            "ids": np.asarray(ids, dtype=np.int64),
        }
        for f in fields:
            parts = [self.states[k][f].reshape(-1) for k in ids]
            out[f"{f}.len"] = np.asarray([len(p) for p in parts], dtype=np.int64)
            out[f] = np.concatenate(parts) if parts else np.zeros(0)
        return out

    def restore(self, snap: dict[str, Any]) -> None:
        """Load :meth:`snapshot`.

        Raises:
            StateError: for another detector's snapshot or other parameters.
        """
        check_params(self.kind, snap, self.params())
        ids = np.asarray(snap["ids"], dtype=np.int64).tolist()
        states: dict[int, dict[str, Array]] = {k: {} for k in ids}
        for f, init in self.initial().items():
            lens = np.asarray(snap[f"{f}.len"], dtype=np.int64)
            data = np.asarray(snap[f], dtype=init.dtype)
            if len(lens) != len(ids) or int(lens.sum()) != len(data):
                msg = f"drift detector {self.kind!r}: snapshot field {f!r} is inconsistent"
                raise StateError(msg)
            for k, part in zip(ids, np.split(data, np.cumsum(lens)[:-1]), strict=False):
                states[k][f] = part.copy()
        self.states = states


def first_true(mask: Array) -> int:
    """Index of the first True in ``mask``, or ``-1``.

    Example:
        >>> first_true(np.array([False, True, True])), first_true(np.array([False]))
        (1, -1)
    """
    i = int(np.argmax(mask)) if len(mask) else 0
    return i if len(mask) and bool(mask[i]) else -1
