"""The ``predict`` step: score every row with a model, add the outputs as columns.

``stream.predict("score", handler, features=["amount", "age"])`` selects the feature
columns into one float32 ``(rows, features)`` array per batch (see
:func:`~tidal.ml.handler.feature_matrix`), calls the handler once per chunk, and appends the
output columns and a ``model_version`` column to the batch. The model is called once per
batch, never once per row (the River adapter is the exception, and says so).

Life cycle:

* **open**: the handler is told the feature names (``bind``), loaded once (``load``), and
  warmed up (``warmup``: a few calls on zeros) so that no event pays for first-call
  initialisation. The step then times warm-up calls of 256, 1,024, ... rows and keeps the
  size with the best throughput as its chunk size (past the CPU caches bigger calls get
  *slower* per row), and with a latency budget times warm-up calls of growing size to
  calibrate its batcher. Every call before the first event goes through ``warmup``. A
  model whose input width is not known before the first batch (a 2-D feature column, a
  pre-processing step that changes the width) is warmed up on the first batch, before it
  is scored.
* **each batch**: ``refresh`` (a handler that can swap models does it here, so a batch is
  scored by one version), then the model on each chunk.
* **snapshot**: the model version. A restart asks the handler for that version
  (``use_version``) and refuses to resume when it cannot be served, instead of scoring the
  rest of the stream with another model unannounced.

With ``max_latency="2ms"`` large batches are cut into chunks whose size a
:class:`~tidal.ml.batcher.LatencyBatcher` adapts from measured call times, so that the p99
duration of a model call stays under the budget while the chunks are as large (as fast) as
that allows. That bounds the model's share of each event's latency; the rest is the wait
for the batch to fill (the executor's ``max_wait``) and the other steps. ``max_batch``
caps the chunk size; without either, chunks have the best-throughput size.

Errors raised by the model become :class:`~tidal.errors.ModelError` naming the step and the
model; a missing or non-numeric feature column is a :class:`~tidal.errors.PipelineError`.

Example:
    >>> import numpy as np
    >>> from tidal import Pipeline
    >>> from tidal.ml.handler import BaseHandler
    >>> from tidal.testing import MemorySource, collect, run
    >>> class Total(BaseHandler):
    ...     version = "v1"
    ...     def load(self): pass
    ...     def predict(self, X): return {"total": X.sum(axis=1)}
    >>> p = Pipeline("orders")
    >>> src = p.source("in", MemorySource({"a": [1.0, 2.0], "b": [10.0, 20.0]}))
    >>> out = collect(src.predict("score", Total(), features=["a", "b"]))
    >>> _ = run(p)
    >>> out.records()
    [{'a': 1.0, 'b': 10.0, 'total': 11.0, 'model_version': 'v1'}, \
{'a': 2.0, 'b': 20.0, 'total': 22.0, 'model_version': 'v1'}]
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.core.duration import Duration, to_seconds
from tidal.core.operator import Context, Emit, Operator
from tidal.errors import ConfigError, ModelError, PipelineError, StateError
from tidal.ml import handler as hooks
from tidal.ml.batcher import LatencyBatcher, split_rows
from tidal.ml.handler import ModelHandler, feature_matrix

__all__ = ["Predict"]

_STATE_KIND = "predict/1"
VERSION_COLUMN = "model_version"
WARMUP_SIZES = (1, 64, 1024)
TUNE_MIN, TUNE_MAX, TUNE_SLOW_S = 256, 65_536, 0.02

log = logging.getLogger("tidal.ml.predict")


class Predict(Operator):
    """Score rows with a :class:`~tidal.ml.handler.ModelHandler`; see the module docs.

    Args:
        name: the step's name.
        handler: the model handler.
        features: the feature column names, in the order the model takes them (a single
            name may be a 2-D column: an image, an embedding).
        outputs: which model outputs become columns: a list of output names, or a mapping
            of output name to column name (``None``: every output under its own name).
            Output columns replace columns of the same name.
        max_latency: the latency budget of one model call (``"2ms"``); large batches are
            cut into chunks sized to keep the p99 call time under it.
        max_batch: the largest chunk passed to the model in one call.
        warmup_sizes: batch sizes of the warm-up calls.
        clock: a ``time.perf_counter``-like function, for timing calls (injectable).

    Raises:
        ConfigError: for no features, or a bad ``max_latency`` or ``max_batch``.
    """

    def __init__(
        self,
        name: str,
        handler: ModelHandler,
        *,
        features: str | Sequence[str],
        outputs: Sequence[str] | Mapping[str, str] | None = None,
        max_latency: Duration | None = None,
        max_batch: int | None = None,
        warmup_sizes: Sequence[int] = WARMUP_SIZES,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__(name)
        feats = [features] if isinstance(features, str) else [str(f) for f in features]
        if not feats:
            msg = f"step {name!r}: give the feature columns, e.g. features=['amount', 'age']"
            raise ConfigError(msg)
        if max_batch is not None and max_batch < 1:
            msg = f"step {name!r}: max_batch must be >= 1, got {max_batch!r}"
            raise ConfigError(msg)
        self.handler = handler
        self.features = feats
        self.output_columns: dict[str, str] | None
        if outputs is None:
            self.output_columns = None
        elif isinstance(outputs, Mapping):
            self.output_columns = {str(k): str(v) for k, v in outputs.items()}
        else:
            self.output_columns = {str(k): str(k) for k in outputs}
        self.max_batch = max_batch
        self.max_latency = None if max_latency is None else to_seconds(max_latency)
        self.batcher: LatencyBatcher | None = None
        if self.max_latency is not None:
            if self.max_latency <= 0:
                msg = f"step {name!r}: max_latency must be > 0, got {max_latency!r}"
                raise ConfigError(msg)
            self.batcher = LatencyBatcher(self.max_latency, max_batch=max_batch)
        self.warmup_sizes = tuple(int(s) for s in warmup_sizes)
        self.clock = clock
        self.chunk = max_batch or TUNE_MAX
        """The largest chunk in one call: ``max_batch``, or the best-throughput size."""
        self._loaded = False
        self._warm = False
        self._sizes: deque[int] = deque(maxlen=1024)
        self._calls = 0
        self._version_cache: Array = np.empty(0, dtype=object)
        self._version_cached = ""

    # -- life cycle -----------------------------------------------------------------------
    def open(self, ctx: Context) -> None:
        """Load the model once and warm it up (see the module docs).

        Raises:
            ModelError: if the model cannot be loaded or warmed up.
            ConfigError: if the model was fitted on other feature names.
        """
        super().open(ctx)
        if self._loaded:
            return
        hooks.bind(self.handler, self.features)
        try:
            self.handler.load()
        except Exception as exc:
            msg = "could not be loaded"
            raise self._error(msg, exc) from exc
        self._loaded = True
        self._check_names()
        width = hooks.signature_of(self.handler).n_features
        if width is None:
            return  # warmed up on the first batch, when the width is known
        self._warm_up(width)

    def _check_names(self) -> None:
        wanted = list(hooks.signature_of(self.handler).inputs)
        if wanted and wanted != self.features:
            msg = (
                f"step {self.name!r}: the model {self._label()} was fitted on the features "
                f"{wanted}, the step selects {self.features}; select them in the model's "
                "order (rename columns in a map step if their names differ)"
            )
            raise ConfigError(msg)

    def _warm_up(self, width: int) -> None:
        try:
            hooks.warmup(self.handler, width, self.warmup_sizes)
            self.chunk = self._tune(width)
            if self.batcher is not None:
                self.batcher.max_batch = self.chunk
                self._calibrate(width)
        except Exception as exc:
            msg = f"failed to warm up on {width} features"
            raise self._error(msg, exc) from exc
        self._warm = True

    def _time(self, width: int, size: int) -> float:
        """Time one warm-up call of ``size`` rows.

        It goes through the ``warmup`` hook, so that a handler can tell warm-up calls from
        events (a shadowing handler does not count them).
        """
        t0 = self.clock()
        hooks.warmup(self.handler, width, (size,))
        return self.clock() - t0

    def _tune(self, width: int) -> int:
        """The chunk size with the best throughput: calls of 256, 1,024, ... rows.

        Bigger calls amortise the fixed cost of a call, until the intermediate results of a
        call no longer fit the CPU caches: a small MLP scores 7M rows/s in calls of 8,192
        rows and 4.7M rows/s in calls of 65,536 on the same core. The smallest size within
        3 % of the best rate wins (the same speed, sooner). Sizes stop at ``max_batch``, at
        65,536, or once a call takes over 20 ms (the fixed cost no longer matters there).
        """
        limit = self.max_batch or TUNE_MAX
        rates: dict[int, float] = {}
        size = min(TUNE_MIN, limit)
        while True:
            self._time(width, size)  # the first call at a size allocates
            t = min(self._time(width, size) for _ in range(5))  # noise only adds time
            if t <= 0:
                return limit  # a clock that does not move: nothing to tune
            rates[size] = size / t
            if size >= limit or t > TUNE_SLOW_S:
                break
            size = min(size * 4, limit)
        best = max(rates.values())
        return min(n for n, r in rates.items() if r >= 0.97 * best)

    def _calibrate(self, width: int) -> None:
        """Time calls of growing size until one exceeds the budget (or the chunk size)."""
        assert self.batcher is not None and self.max_latency is not None
        size = 1
        while True:
            n = min(size, self.chunk)
            for _ in range(3):
                t = self._time(width, n)
                self.batcher.record(n, t)
            if size >= self.chunk or t > self.max_latency:
                break
            size *= 4
        self.batcher.refit()

    def snapshot(self) -> dict[str, Any]:
        """The model version in use (the handler's ``version``)."""
        return {"kind": _STATE_KIND, "model_version": hooks.version_of(self.handler)}

    def restore(self, snap: dict[str, Any]) -> None:
        """Ask the handler for the checkpoint's model version.

        Raises:
            StateError: if the snapshot is not a predict step's, has no version, or the
                handler cannot serve that version.
        """
        if snap.get("kind") != _STATE_KIND:
            msg = f"step {self.name!r}: not a predict snapshot (kind {snap.get('kind')!r})"
            raise StateError(msg)
        version = snap.get("model_version")
        fix = (
            f"to move to the handler's version on purpose, start the step afresh with "
            f"CheckpointConfig(drop_state=[{self.name!r}])"
        )
        if not isinstance(version, str) or not version:
            msg = f"step {self.name!r}: the checkpoint records no model version; {fix}"
            raise StateError(msg)
        try:
            hooks.use_version(self.handler, version)
        except Exception as exc:
            msg = (
                f"step {self.name!r}: the checkpoint was scored with model version "
                f"{version!r}, which {self._label()} cannot serve ({exc}). Make that version "
                f"available again (e.g. in the model registry) to resume with it; {fix}"
            )
            raise StateError(msg) from exc

    # -- scoring --------------------------------------------------------------------------
    def process(self, batch: Batch, port: int) -> Emit:
        """Score the batch; pass it on with the output and ``model_version`` columns."""
        n = len(batch)
        if n == 0:
            return [(0, batch)]
        if not self._loaded:
            self.open(self.ctx)
        hooks.refresh(self.handler)
        version = hooks.version_of(self.handler)
        try:
            X = feature_matrix(batch, self.features)
        except PipelineError as exc:
            msg = f"step {self.name!r}: {exc}"
            raise PipelineError(msg) from exc
        if not self._warm:
            self._warm_up(X.shape[1])
        columns = self._select(self._score(X))
        columns[VERSION_COLUMN] = self._versions(version, n)
        return [(0, batch.with_columns(**columns))]

    def _score(self, X: Array) -> dict[str, Array]:
        n = len(X)
        parts: list[dict[str, Array]] = []
        over = 0
        lo = 0
        while lo < n:  # the size is chosen again before every chunk: the batcher may adapt
            if self.batcher is not None:
                size = self.batcher.split(n - lo)[0]
            else:
                size = split_rows(n - lo, self.chunk)[0]
            chunk = X[lo : lo + size]
            t0 = self.clock()
            try:
                out = self.handler.predict(chunk)
            except Exception as exc:
                msg = f"failed on {size} rows x {X.shape[1]} features"
                raise self._error(msg, exc) from exc
            dt = self.clock() - t0
            if self.batcher is not None:
                self.batcher.record(size, dt)
                over += dt > self.batcher.budget
            parts.append(self._check(out, size))
            self._sizes.append(size)
            lo += size
        self._calls += len(parts)
        self.ctx.count(f"{self.name}.model_calls", len(parts))
        self.ctx.count(f"{self.name}.over_budget", over)
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _check(self, out: Any, n: int) -> dict[str, Array]:
        if not isinstance(out, Mapping):
            msg = (
                f"step {self.name!r}: the model {self._label()} returned a "
                f"{type(out).__name__}; predict must return a dict of output columns"
            )
            raise ModelError(msg)
        res: dict[str, Array] = {}
        for k, v in out.items():
            arr = np.asarray(v)
            if arr.ndim == 0 or len(arr) != n:
                msg = (
                    f"step {self.name!r}: the model {self._label()} returned output {k!r} "
                    f"with shape {arr.shape} for {n} rows; every output needs one row per event"
                )
                raise ModelError(msg)
            res[str(k)] = arr
        return res

    def _select(self, out: dict[str, Array]) -> dict[str, Array]:
        if self.output_columns is None:
            return out
        missing = [k for k in self.output_columns if k not in out]
        if missing:
            msg = (
                f"step {self.name!r}: the model {self._label()} has no outputs {missing}; "
                f"it returned {list(out)}"
            )
            raise ModelError(msg)
        return {col: out[k] for k, col in self.output_columns.items()}

    def _versions(self, version: str, n: int) -> Array:
        """A column of ``version`` (a view of a cached array, so not rebuilt per batch)."""
        if version != self._version_cached or len(self._version_cache) < n:
            size = max(n, 2 * len(self._version_cache), 1024)
            self._version_cache = np.full(size, version, dtype=object)
            self._version_cached = version
        return self._version_cache[:n]

    # -- reporting ------------------------------------------------------------------------
    def chosen_sizes(self) -> list[int]:
        """The chunk sizes of the most recent model calls (up to 1,024), oldest first."""
        return list(self._sizes)

    def stats(self) -> dict[str, Any]:
        """Calls, the batcher's target size and fit, for the summary and the dashboard."""
        out: dict[str, Any] = {
            "model": hooks.describe(self.handler),
            "calls": self._calls,
            "chunk": self.chunk,
        }
        b = self.batcher
        if b is not None:
            out.update(
                budget_ms=b.budget * 1e3,
                target=b.target,
                over_budget=b.over_budget,
                fixed_cost_us=round(b.a * 1e6, 2),
                per_row_ns=round(b.b * 1e9, 2),
                noise_p99=round(b.noise, 3),
            )
        return out

    def _label(self) -> str:
        d = hooks.describe(self.handler)
        label = f"{d.get('type', type(self.handler).__name__)} {d.get('version', '?')!s}"
        src = d.get("model")
        return f"{label} ({src})" if isinstance(src, str) else label

    def _error(self, what: str, exc: BaseException) -> ModelError:
        cause = str(exc) if isinstance(exc, ModelError) else f"{type(exc).__name__}: {exc}"
        return ModelError(f"step {self.name!r}: the model {self._label()} {what}: {cause}")
