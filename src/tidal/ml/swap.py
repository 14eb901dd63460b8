"""Serving from the model registry: hot swap, shadow and canary, between batches.

:class:`RegistryHandler` (``registry.serving("fraud")``) is a model handler that follows the
stages of one registry model while the pipeline runs:

* **hot swap**: between batches (the ``refresh`` hook), at most every ``check_every``, it
  looks at ``stages.json`` (a ``stat``); only when the file changed is it read, and only when the
  stages changed are new versions loaded and warmed up — *before* they replace the old
  ones, so no batch waits for a load and no batch is scored by two versions. A version
  that fails to load is logged and skipped: the stream keeps the version it had.
* **shadow**: the shadow version scores the same rows; its outputs go to ``shadow_<output>``
  columns (plus ``shadow_model_version``) and are compared with production's decision
  (the class, or ``score > 0.5``); ``stats()`` counts rows and agreements. Nothing
  downstream has to act on them.
* **canary**: with :class:`Serve` and a key column, a deterministic fraction of the *keys*
  (a 64-bit hash of the key, the same in every process and run) is scored by the canary
  version, the rest by production.
* **versions on rows and in checkpoints**: every output row carries ``model_version``
  (``"v3"``). The step's snapshot holds the versions in use; a restored step serves them
  (pinned) until its next look at ``stages.json`` (one ``check_every`` later), when the
  registry's stages win again.

Two ways to serve:

``stream.predict("score", registry.serving("fraud"), features=[...])``
    production and shadow, with the ``predict`` step's latency-budget batching. The
    ``predict`` step records one version per batch, so it serves no canary (it warns).
``stream.apply(Serve("score", registry.serving("fraud"), features=[...], key="card"))``
    production, shadow and canary by key; ``model_version`` per row.

Versions load by file suffix (:func:`default_loader`), and never run code named by the
registry: a PyTorch state dict is loaded into the architecture the serving process gives,
``registry.serving("fraud", arch=Net)`` or an allow-list ``arch={"nets:Net": Net}`` keyed by
the label the version's lineage records (decision 0013).

Example:
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from onnx import TensorProto, helper, numpy_helper
    >>> from tidal import Pipeline
    >>> from tidal.ml.registry import Registry
    >>> from tidal.testing import MemorySource, collect, run
    >>> def scale_model(k: float) -> bytes:
    ...     w = numpy_helper.from_array(np.full((1, 1), k, dtype=np.float32), "w")
    ...     graph = helper.make_graph(
    ...         [helper.make_node("MatMul", ["x", "w"], ["y"])], "scale",
    ...         [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
    ...         [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])], [w])
    ...     opset = [helper.make_opsetid("", 17)]
    ...     return helper.make_model(graph, opset_imports=opset).SerializeToString()
    >>> tmp = Path(tempfile.mkdtemp())
    >>> reg = Registry(tmp / "registry")
    >>> for k in (1.0, 10.0):
    ...     _ = (tmp / "m.onnx").write_bytes(scale_model(k))
    ...     _ = reg.register(tmp / "m.onnx", name="scale", signature=["x"])
    >>> _ = reg.promote("scale", 1)
    >>> _ = reg.shadow("scale", 2)
    >>> p = Pipeline("p")
    >>> src = p.source("in", MemorySource({"x": [1.0, 2.0]}))
    >>> out = collect(src.predict("score", reg.serving("scale"), features=["x"]))
    >>> _ = run(p)
    >>> [(r["y"], r["model_version"], r["shadow_y"]) for r in out.records()]
    [(1.0, 'v1', 10.0), (2.0, 'v1', 20.0)]
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.core.duration import Duration, to_seconds
from tidal.core.keys import unique_inverse
from tidal.core.operator import Context, Emit, Operator
from tidal.errors import ConfigError, ModelError, PipelineError, StateError
from tidal.ml import handler as hooks
from tidal.ml.handler import BaseHandler, ModelHandler, Signature, feature_matrix
from tidal.ml.versions import Canary, ModelVersion, RegistryReader, parse_version

__all__ = [
    "SHADOW_PREFIX",
    "VERSION_COLUMN",
    "ArchSpec",
    "Archs",
    "RegistryHandler",
    "Serve",
    "canary_mask",
    "check_archs",
    "default_loader",
    "key_hash",
]

VERSION_COLUMN = "model_version"
SHADOW_PREFIX = "shadow_"
_STATE_KIND = "serve/1"

log = logging.getLogger("tidal.ml.swap")

Served = tuple[int, int | None, Canary | None]
"""``(production, shadow, canary)``."""


# -- keys -> canary -------------------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix(x: Array) -> Array:
    """SplitMix64's finalizer: a well-spread 64-bit hash of each uint64."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return np.asarray(z ^ (z >> np.uint64(31)))


def key_hash(keys: Array) -> Array:
    """A uint64 hash per key, stable across processes and runs (never Python's ``hash``).

    Integers and booleans hash by value, floats by their bits, anything else by the
    BLAKE2b digest of its text (once per distinct key in the batch).

    Example:
        >>> key_hash(np.array([7, 7, 8])).tolist() == key_hash(np.array([7, 7, 8])).tolist()
        True
        >>> a, b = key_hash(np.array(["card-1", "card-2"], dtype=object))
        >>> bool(a != b)
        True
    """
    keys = np.asarray(keys)
    if keys.dtype.kind in "biu":
        raw = keys.astype(np.int64).view(np.uint64)
    elif keys.dtype.kind == "f":
        raw = keys.astype(np.float64).view(np.uint64)
    else:
        uniq, inv = unique_inverse(keys)
        digests = np.array(
            [
                int.from_bytes(hashlib.blake2b(str(k).encode(), digest_size=8).digest(), "little")
                for k in uniq
            ],
            dtype=np.uint64,
        )
        raw = digests[inv]
    return _mix(raw)


def canary_mask(keys: Array, fraction: float) -> Array:
    """Which rows belong to the canary: keys whose hash falls in the first ``fraction``.

    The same key always gets the same answer, and raising the fraction only adds keys.

    Example:
        >>> keys = np.arange(10_000)
        >>> m = canary_mask(keys, 0.1)
        >>> bool(0.08 < m.mean() < 0.12), bool((canary_mask(keys, 0.2) | ~m).all())
        (True, True)
    """
    u = (key_hash(keys) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.asarray(u < fraction)


# -- loading versions -----------------------------------------------------------------------
ArchSpec = str | Callable[[], Any]
"""A PyTorch architecture: a callable returning the untrained module, or its importable path
``"package.module:factory"``."""

Archs = ArchSpec | Mapping[str, ArchSpec]
"""What a serving process gives for PyTorch state dicts: one architecture for every version,
or an allow-list from the architecture a version's lineage names to the code to run for it."""

_MODULE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def check_archs(arch: Archs | None) -> None:
    """Check the form of ``arch`` (see :data:`Archs`) without importing anything.

    A string must be an importable module path, ``"package.module:factory"``: a file path
    (``"net.py:Net"``) would be resolved against the serving process's working directory.

    Raises:
        ConfigError: for another form.

    Example:
        >>> check_archs({"nets:Small": "mypkg.nets:Small"})
        >>> try:
        ...     check_archs("net.py:Net")
        ... except ConfigError as exc:
        ...     print(str(exc)[:60])
        an architecture to serve is a callable or an importable 'pac
    """
    specs = list(arch.values()) if isinstance(arch, Mapping) else [arch]
    for spec in specs:
        if spec is None or callable(spec):
            continue
        mod, sep, attr = str(spec).partition(":")
        is_module = _MODULE_PATH.fullmatch(mod) and not mod.endswith(".py")
        if not (sep and is_module and attr.isidentifier()):
            msg = (
                "an architecture to serve is a callable or an importable "
                f"'package.module:factory', got {spec!r}; make the file importable (a package "
                "on sys.path) or pass the callable itself"
            )
            raise ConfigError(msg)


def _architecture(version: ModelVersion, arch: Archs | None) -> Callable[[], Any]:
    """The code that builds ``version``'s module: only ever what the serving process gave.

    The lineage's ``arch`` (registry data, written by whoever registered the version) is a
    label: it picks an entry of an allow-list, and is never imported or run itself.
    """
    named = version.lineage.extra.get("arch")
    where = f"model {version.name!r} {version.label} ({version.file.name}, a PyTorch state dict)"
    if arch is None:
        hint = f"arch={{{str(named)!r}: factory}}" if named else "arch='package.module:factory'"
        msg = (
            f"{where}: serving builds the module only from code the serving process names, "
            f"never from the registry (its lineage names {named!r}); pass "
            f"registry.serving(..., arch=factory) or {hint}"
        )
        raise ModelError(msg)
    if isinstance(arch, Mapping):
        if named is None or str(named) not in arch:
            label = "no architecture" if named is None else f"the architecture {named!r}"
            msg = (
                f"{where}: its lineage names {label}, which is not among those this "
                f"process serves ({', '.join(map(repr, arch)) or 'none'}); add it to "
                "arch={...} if it is the code you mean to run, or pass arch=factory"
            )
            raise ModelError(msg)
        spec = arch[str(named)]
    else:
        spec = arch
    check_archs(spec)
    from tidal.ml.compress_torch import resolve_arch

    try:
        return resolve_arch(spec)
    except ConfigError as exc:
        msg = f"{where}: {exc}"
        raise ModelError(msg) from exc


def default_loader(
    version: ModelVersion, *, threads: int = 1, arch: Archs | None = None
) -> ModelHandler:
    """A handler for a registered version, by its file's suffix.

    ``.onnx`` -> :class:`~tidal.ml.onnx.OnnxHandler`; ``.skops`` ->
    :class:`~tidal.ml.sklearn.SklearnHandler` (``method`` from the signature, default
    ``predict``; only skops' trusted types); ``.pt`` / ``.pth`` (a state dict, read with
    ``torch.load(weights_only=True)``) -> :class:`~tidal.ml.torch.TorchHandler` around the
    module that ``arch`` builds.

    No code named by the registry is ever run: the lineage's ``arch`` (``Lineage(extra=
    {"arch": "pkg.mod:Net"})``, ``tidal models register --arch``) only selects an entry when
    ``arch`` is a mapping, the allow-list of architectures this process serves.

    Args:
        version: the registered version.
        threads: threads per model.
        arch: for state dicts: a callable or ``"package.module:factory"`` used for every
            version, or a mapping from the architecture a version's lineage names to one.

    Raises:
        ModelError: for another suffix, or a state dict whose architecture the serving
            process did not give.
    """
    path, label = version.file, version.label
    if path.suffix == ".onnx":
        from tidal.ml.onnx import OnnxHandler

        return OnnxHandler(path, intra_op_threads=threads, version=label)
    if path.suffix == ".skops":
        from tidal.ml.sklearn import SklearnHandler

        method = version.signature.get("method", "predict")
        return SklearnHandler(path, method=method, version=label)
    if path.suffix in (".pt", ".pth"):
        factory = _architecture(version, arch)
        from tidal.ml.compress_torch import load_torch
        from tidal.ml.torch import TorchHandler

        return TorchHandler(load_torch(path, factory), threads=threads, version=label)
    msg = (
        f"no default loader for {path.name} (model {version.name!r} {label}); "
        "pass registry.serving(..., loader=fn) with fn(version) -> handler"
    )
    raise ModelError(msg)


def _decision(out: Mapping[str, Array]) -> Array | None:
    """What a model decided per row: an integer output, an argmax, or ``score > 0.5``."""
    for arr in out.values():
        if arr.dtype.kind in "iub" and arr.ndim == 1:
            return arr
    for arr in out.values():
        if arr.dtype.kind == "f":
            return arr.argmax(axis=1) if arr.ndim == 2 else arr > 0.5
    return None


# -- the handler ----------------------------------------------------------------------------
class RegistryHandler(BaseHandler):
    """Serve a registry model as its stages say; see the module docs.

    Made by :meth:`tidal.ml.registry.Registry.serving`.
    """

    def __init__(
        self,
        registry: RegistryReader,
        name: str,
        *,
        check_every: Duration = "1s",
        loader: Callable[[ModelVersion], ModelHandler] | None = None,
        arch: Archs | None = None,
        threads: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        registry.stages_path(name)  # validates the name
        check_archs(arch)
        self.arch = arch
        self.registry = registry
        self.name = name
        self.check_every = to_seconds(check_every)
        self.threads = threads
        self.loader = loader
        self.clock = clock
        self.production: int | None = None
        self.shadow: int | None = None
        self.canary: Canary | None = None
        self.swaps = 0
        self.shadow_rows = 0
        self.shadow_agree = 0
        self.canary_rows = 0
        self.load_failures = 0
        self._handlers: dict[int, ModelHandler] = {}
        self._pinned: Served | None = None
        self._pinned_production: int | None = None
        self._stat: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._features: list[str] | None = None
        self._width: int | None = None
        self._sizes: tuple[int, ...] = (1, 64, 1024)
        self._warned_canary = False
        self._loaded = False

    # -- the protocol -----------------------------------------------------------------------
    @property
    def version(self) -> str:  # type: ignore[override]
        """The production version as recorded on rows: ``"v3"``."""
        n = self.production if self._loaded else self._pinned_production
        if n is None and self._pinned is not None:
            n = self._pinned[0]
        return "unversioned" if n is None else f"v{n}"

    def bind(self, features: Sequence[str]) -> None:
        """Remember the feature names; every version is bound to them."""
        self._features = list(features)
        for h in self._handlers.values():
            hooks.bind(h, self._features)

    def load(self) -> None:
        """Read the stages (or the pinned versions) and load what serves.

        Raises:
            ModelError: if there is no production version, or it cannot be loaded.
        """
        if self._loaded:
            return
        stages = self.registry.stages(self.name)
        self._stat = self._stat_now()
        prod, shadow, canary = stages.serving()
        if self._pinned is not None:
            prod, shadow, canary = self._pinned
        elif self._pinned_production is not None:
            prod = self._pinned_production
        if prod is None:
            msg = (
                f"model {self.name!r} in {self.registry.root} has no production version; "
                f"promote one: `tidal models promote {self.name} VERSION`"
            )
            raise ModelError(msg)
        self._apply((prod, shadow, canary), strict=True)
        if self._pinned is not None or self._pinned_production is not None:
            self._stat = None  # the next look at the stages reads the file
        self._pinned = self._pinned_production = None
        self._next_check = self.clock() + self.check_every
        self._loaded = True

    def warmup(self, n_features: int, batch_sizes: Sequence[int] = (1, 64, 1024)) -> None:
        """Warm up every version in use; versions swapped in later are warmed up alike."""
        self._width, self._sizes = int(n_features), tuple(batch_sizes)
        for h in self._handlers.values():
            hooks.warmup(h, self._width, self._sizes)

    @property
    def signature(self) -> Signature:
        """The production version's signature (inputs from the registry)."""
        if self.production is None or self.production not in self._handlers:
            return Signature()
        sig = hooks.signature_of(self._handlers[self.production])
        inputs = self.registry.get(self.name, self.production).signature.get("inputs") or ()
        return sig.with_inputs(inputs) if inputs and not sig.inputs else sig

    def describe(self) -> dict[str, Any]:
        """Type, model name, registry and the versions in use."""
        return {
            "type": "RegistryHandler",
            "version": self.version,
            "model": f"{self.registry.root}/{self.name}",
            "shadow": None if self.shadow is None else f"v{self.shadow}",
            "canary": (
                None
                if self.canary is None
                else {"version": f"v{self.canary.version}", "fraction": self.canary.fraction}
            ),
        }

    def use_version(self, version: str) -> None:
        """Serve ``version`` as production until the next look at the stages (a restore).

        Raises:
            ModelError: if the registry has no such version.
        """
        n = parse_version(version)
        self.registry.get(self.name, n)
        if not self._loaded:
            self._pinned_production = n
            return
        self._apply((n, self.shadow, self.canary), strict=True)
        self._stat = None
        self._next_check = self.clock() + self.check_every

    def refresh(self) -> None:
        """Between batches: swap to the registry's stages if they changed (cheaply)."""
        if not self._loaded:
            return
        now = self.clock()
        if now < self._next_check:
            return
        self._next_check = now + self.check_every
        stat = self._stat_now()
        if stat == self._stat:
            return
        self._stat = stat
        try:
            stages = self.registry.stages(self.name)
        except ModelError as exc:
            log.warning("model %r: cannot read its stages (%s); keeping %s", self.name, exc, self)
            return
        prod, shadow, canary = stages.serving()
        if prod is None or (prod, shadow, canary) == (self.production, self.shadow, self.canary):
            return
        self._apply((prod, shadow, canary), strict=False)

    def predict(self, X: Array) -> dict[str, Array]:
        """Production's outputs, plus the shadow's as ``shadow_*`` columns (if any)."""
        if self.canary is not None and not self._warned_canary:
            self._warned_canary = True
            log.warning(
                "model %r has a canary (v%d), which needs keys: the predict step scores every "
                "row with production; serve with tidal.ml.swap.Serve(..., key=COLUMN)",
                self.name,
                self.canary.version,
            )
        out, _ = self.score(X, None)
        return out

    # -- scoring ----------------------------------------------------------------------------
    def score(self, X: Array, keys: Array | None) -> tuple[dict[str, Array], Array]:
        """Score ``X``; with ``keys`` and a canary, the canary's keys by the canary.

        Returns:
            The output columns (with ``shadow_*`` ones when a shadow is set) and, per row,
            the version that scored it.
        """
        if self.production is None:
            msg = f"RegistryHandler for {self.name!r} is not loaded; call load() first"
            raise ModelError(msg)
        n = len(X)
        versions = np.full(n, self.production, dtype=np.int64)
        prod = self._handlers[self.production]
        canary = self.canary
        if canary is not None and keys is not None and n:
            mask = canary_mask(keys, canary.fraction)
            k = int(mask.sum())
            self.canary_rows += k
            versions[mask] = canary.version
            if k == n:
                out = self._handlers[canary.version].predict(X)
            elif k:
                a = prod.predict(X[~mask])
                b = self._handlers[canary.version].predict(X[mask])
                out = _merge(a, b, mask, self.name)
            else:
                out = prod.predict(X)
        else:
            out = prod.predict(X)
        out = dict(out)
        if self.shadow is not None:
            shadow = self._handlers[self.shadow].predict(X)
            ours, theirs = _decision(out), _decision(shadow)
            self.shadow_rows += n
            if ours is not None and theirs is not None and ours.shape == theirs.shape:
                self.shadow_agree += int(np.count_nonzero(ours == theirs))
            for k_, v in shadow.items():
                out[SHADOW_PREFIX + k_] = v
            out[SHADOW_PREFIX + VERSION_COLUMN] = np.full(n, f"v{self.shadow}", dtype=object)
        return out, versions

    def stats(self) -> dict[str, Any]:
        """Swaps, shadow agreement, canary rows and load failures so far."""
        return {
            "version": self.version,
            "swaps": self.swaps,
            "shadow_rows": self.shadow_rows,
            "shadow_agree": self.shadow_agree,
            "shadow_agreement": (
                round(self.shadow_agree / self.shadow_rows, 6) if self.shadow_rows else None
            ),
            "canary_rows": self.canary_rows,
            "load_failures": self.load_failures,
        }

    # -- snapshots (for Serve) --------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The versions in use, for a snapshot."""
        return {
            "production": self.production,
            "shadow": self.shadow,
            "canary": (
                None
                if self.canary is None
                else {"version": self.canary.version, "fraction": self.canary.fraction}
            ),
        }

    def pin(self, state: Mapping[str, Any]) -> None:
        """Serve the versions of a snapshot until the next look at the stages.

        Raises:
            StateError: for a snapshot without a production version.
        """
        prod = state.get("production")
        if prod is None:
            msg = f"the snapshot of model {self.name!r} records no production version"
            raise StateError(msg)
        shadow = state.get("shadow")
        c = state.get("canary")
        served: Served = (
            int(prod),
            None if shadow is None else int(shadow),
            None if not c else Canary(int(c["version"]), float(c["fraction"])),
        )
        if not self._loaded:
            self._pinned = served
            return
        self._apply(served, strict=True)
        self._stat = None
        self._next_check = self.clock() + self.check_every

    # -- internals --------------------------------------------------------------------------
    def _stat_now(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.registry.stages_path(self.name))
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _handler(self, n: int) -> ModelHandler:
        h = self._handlers.get(n)
        if h is not None:
            return h
        mv = self.registry.get(self.name, n)
        if self.loader is not None:
            h = self.loader(mv)
        else:
            h = default_loader(mv, threads=self.threads, arch=self.arch)
        if self._features is not None:
            hooks.bind(h, self._features)
        h.load()
        if self._width is not None:
            hooks.warmup(h, self._width, self._sizes)
        return h

    def _apply(self, served: Served, *, strict: bool) -> None:
        """Load (and warm up) what ``served`` needs, then switch to it in one step."""
        prod, shadow, canary = served
        wanted = [v for v in (prod, shadow, canary.version if canary else None) if v is not None]
        try:
            fresh = {n: self._handler(n) for n in dict.fromkeys(wanted)}
        except Exception as exc:
            if strict:
                raise
            self.load_failures += 1
            log.error(
                "model %r: cannot load the versions %s (%s); still serving %s",
                self.name,
                wanted,
                exc,
                self.version,
            )
            return
        old = self.production
        self._handlers = fresh
        self.production, self.shadow, self.canary = prod, shadow, canary
        if old is not None and old != prod:
            self.swaps += 1
            log.info("model %r: production v%d -> v%d", self.name, old, prod)

    def __repr__(self) -> str:
        return f"RegistryHandler({self.name!r}, {self.version})"


def _merge(
    a: Mapping[str, Array], b: Mapping[str, Array], mask: Array, name: str
) -> dict[str, Array]:
    """Interleave production outputs ``a`` (rows ``~mask``) and canary outputs ``b``."""
    if set(a) != set(b):
        msg = (
            f"model {name!r}: the canary's outputs {sorted(b)} differ from production's "
            f"{sorted(a)}; a canary must give the same columns"
        )
        raise ModelError(msg)
    out: dict[str, Array] = {}
    n = len(mask)
    for k, x in a.items():
        y = b[k]
        if x.shape[1:] != y.shape[1:]:
            msg = (
                f"model {name!r}: output {k!r} has shape {x.shape[1:]} per row in production "
                f"and {y.shape[1:]} in the canary"
            )
            raise ModelError(msg)
        col = np.empty((n, *x.shape[1:]), dtype=np.result_type(x, y))
        col[~mask] = x
        col[mask] = y
        out[k] = col
    return out


# -- the operator ---------------------------------------------------------------------------
class Serve(Operator):
    """Score rows with a registry model: production, shadow, and a canary by key.

    Adds the output columns, ``model_version`` per row, and with a shadow the
    ``shadow_*`` columns. Counters (in the run summary): ``<name>.canary_rows``,
    ``<name>.shadow_rows``, ``<name>.shadow_agree``, ``<name>.model_swaps``.

    Args:
        name: the step's name.
        model: ``registry.serving("fraud")``.
        features: the feature columns, in the model's order.
        key: the column whose hash picks the canary's keys (``None``: no canary routing).
        outputs: which outputs become columns (names, or output -> column); the shadow's
            are selected alike and prefixed ``shadow_``.

    Raises:
        ConfigError: for no features.
    """

    def __init__(
        self,
        name: str,
        model: RegistryHandler,
        *,
        features: str | Sequence[str],
        key: str | None = None,
        outputs: Sequence[str] | Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name)
        feats = [features] if isinstance(features, str) else [str(f) for f in features]
        if not feats:
            msg = f"step {name!r}: give the feature columns, e.g. features=['amount', 'age']"
            raise ConfigError(msg)
        self.model = model
        self.features = feats
        self.key = key
        self.columns: dict[str, str] | None
        if outputs is None or isinstance(outputs, Mapping):
            self.columns = None if outputs is None else {str(k): str(v) for k, v in outputs.items()}
        else:
            self.columns = {str(k): str(k) for k in outputs}
        self._warm = False
        self._seen = (0, 0, 0, 0)
        self._labels: dict[int, str] = {}

    def open(self, ctx: Context) -> None:
        """Load the model (or the restored versions) and warm it up."""
        super().open(ctx)
        self.model.bind(self.features)
        self.model.load()
        width = self.model.signature.n_features
        if width is not None and not self._warm:
            self.model.warmup(width)
            self._warm = True

    def process(self, batch: Batch, port: int) -> Emit:
        """Refresh the stages, score the batch, add the columns."""
        n = len(batch)
        if n == 0:
            return [(0, batch)]
        self.model.refresh()
        try:
            X = feature_matrix(batch, self.features)
        except PipelineError as exc:
            msg = f"step {self.name!r}: {exc}"
            raise PipelineError(msg) from exc
        if not self._warm:
            self.model.warmup(X.shape[1])
            self._warm = True
        keys = None
        if self.key is not None and self.model.canary is not None:
            keys = batch[self.key]
        try:
            out, versions = self.model.score(X, keys)
        except ModelError as exc:
            msg = f"step {self.name!r}: {exc}"
            raise ModelError(msg) from exc
        cols = self._select(out)
        cols[VERSION_COLUMN] = self._version_labels(versions)
        self._count()
        return [(0, batch.with_columns(**cols))]

    def _select(self, out: dict[str, Array]) -> dict[str, Array]:
        if self.columns is None:
            return out
        res: dict[str, Array] = {}
        for k, col in self.columns.items():
            if k not in out:
                msg = f"step {self.name!r}: the model has no output {k!r}; it gave {sorted(out)}"
                raise ModelError(msg)
            res[col] = out[k]
            if SHADOW_PREFIX + k in out:
                res[SHADOW_PREFIX + col] = out[SHADOW_PREFIX + k]
        if SHADOW_PREFIX + VERSION_COLUMN in out:
            res[SHADOW_PREFIX + VERSION_COLUMN] = out[SHADOW_PREFIX + VERSION_COLUMN]
        return res

    def _version_labels(self, versions: Array) -> Array:
        uniq = np.unique(versions)
        for v in uniq.tolist():
            self._labels.setdefault(int(v), f"v{v}")
        if len(uniq) == 1:
            return np.full(len(versions), self._labels[int(uniq[0])], dtype=object)
        table = np.array([self._labels[int(v)] for v in uniq.tolist()], dtype=object)
        return np.asarray(table[np.searchsorted(uniq, versions)])

    def _count(self) -> None:
        m = self.model
        now = (m.canary_rows, m.shadow_rows, m.shadow_agree, m.swaps)
        names = ("canary_rows", "shadow_rows", "shadow_agree", "model_swaps")
        for label, a, b in zip(names, now, self._seen, strict=True):
            self.ctx.count(f"{self.name}.{label}", a - b)
        self._seen = now

    def snapshot(self) -> dict[str, Any]:
        """The versions in use (production, shadow, canary)."""
        return {"kind": _STATE_KIND, **self.model.state()}

    def restore(self, snap: dict[str, Any]) -> None:
        """Serve the snapshot's versions until the next look at the stages.

        Raises:
            StateError: for a snapshot of another kind of step.
        """
        if snap.get("kind") != _STATE_KIND:
            msg = f"step {self.name!r}: not a serve snapshot (kind {snap.get('kind')!r})"
            raise StateError(msg)
        self.model.pin(snap)

    def stats(self) -> dict[str, Any]:
        """The model's :meth:`RegistryHandler.stats`."""
        return self.model.stats()
