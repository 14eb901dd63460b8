"""The model registry: versioned models in a directory, and the stages that say what serves.

Layout (a local directory; ``fsspec`` URLs are not supported, see decision 0009)::

    <root>/
      fraud/
        stages.json       {"production": 2, "previous": [1], "shadow": 3,
                           "canary": {"version": 4, "fraction": 0.1}, "generation": 7}
        v1/
          model.onnx      the model file, as registered (its suffix kept)
          signature.json  input columns, feature count, input dtype, output columns/dtypes
          metrics.json    whatever the trainer or the compressor measured
          lineage.json    training data range, parent version, compression applied,
                          source file, sha256, registration time
        v2/ ...

A version is immutable once registered: it is written into a staging directory, fsynced,
and renamed to ``v<N>`` in one step, so a reader sees all of it or none of it, and two
writers registering at once get different numbers. ``stages.json`` is written atomically
(temporary file, fsync, rename, fsync of the directory) under a lock file, so a serving
pipeline never reads half a file and two ``promote`` commands never lose an update; every
write increases ``generation``.

Stages:

``production``
    the version a serving pipeline scores with. ``promote`` moves the old one onto
    ``previous``; ``rollback`` takes it back from there.
``shadow``
    a candidate scored on the same rows; its outputs go to ``shadow_*`` columns and are
    compared with production's (agreement counters), never acted upon.
``canary``
    a candidate that scores a deterministic fraction of the *keys* (a hash of the key
    column), so one card or one user always sees the same model.

:meth:`Registry.serving` returns a handler that follows these stages while a pipeline runs
(see :mod:`tidal.ml.swap`).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> tmp = Path(tempfile.mkdtemp())
    >>> _ = (tmp / "model.skops").write_bytes(b"...")
    >>> reg = Registry(tmp / "registry")
    >>> v1 = reg.register(tmp / "model.skops", name="fraud", metrics={"auc": 0.91})
    >>> v2 = reg.register(tmp / "model.skops", name="fraud", lineage=Lineage(parent=1))
    >>> v1.version, v2.version, v2.lineage.parent, v1.file.name
    (1, 2, 1, 'model.skops')
    >>> reg.promote("fraud", 1).production
    1
    >>> reg.promote("fraud", 2).previous
    (1,)
    >>> s = reg.rollback("fraud")
    >>> s.production, s.previous
    (1, ())
    >>> reg.canary("fraud", 2, fraction=0.1).canary
    Canary(version=2, fraction=0.1)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tidal.core.duration import Duration
from tidal.errors import ConfigError, ModelError
from tidal.ml.handler import ModelHandler, Signature
from tidal.ml.swap import Archs, RegistryHandler
from tidal.ml.versions import Canary, Lineage, ModelVersion, Stages, parse_version

__all__ = [
    "Canary",
    "Lineage",
    "ModelVersion",
    "Registry",
    "Stages",
    "default_root",
    "parse_version",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # whole names only: fullmatch
_VERSION_DIR = re.compile(r"v([0-9]+)")
STAGES_FILE = "stages.json"
_KEEP_PREVIOUS = 50


def default_root() -> Path:
    """``$TIDAL_REGISTRY``, or ``<data dir>/registry`` (``$TIDAL_DATA_DIR`` or ``.tidal``).

    Example:
        >>> import os
        >>> str(default_root()) == os.environ.get("TIDAL_REGISTRY", str(default_root()))
        True
    """
    env = os.environ.get("TIDAL_REGISTRY")
    if env:
        return Path(env)
    return Path(os.environ.get("TIDAL_DATA_DIR") or ".tidal") / "registry"


# -- files ----------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: Any, *, atomic: bool = True) -> None:
    """Write JSON durably; with ``atomic``, through a temporary file renamed over ``path``."""
    payload = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
    target = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp") if atomic else path
    with open(target, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    if atomic:
        os.replace(target, path)
        _fsync_dir(path.parent)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        msg = f"cannot read {path}: {exc}"
        raise ModelError(msg) from exc


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def infer_signature(path: Path) -> dict[str, Any]:
    """What an ONNX file says about itself: feature count, input dtype, outputs and dtypes.

    Other formats give an empty signature (pass one to :meth:`Registry.register`).
    """
    if path.suffix != ".onnx":
        return Signature().to_dict()
    from tidal.ml.onnx import OnnxHandler

    h = OnnxHandler(path)
    h.load()
    sig = h.signature.to_dict()
    sig["output_dtypes"] = {
        o.name: o.type.removeprefix("tensor(").rstrip(")") for o in h.session.get_outputs()
    }
    return sig


# -- the registry ---------------------------------------------------------------------------
class Registry:
    """Versioned models under ``root`` (a local directory); see the module docs.

    Args:
        root: the registry directory (created on first write). Default:
            :func:`default_root`.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # -- paths --------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            msg = (
                f"a model name is letters, digits, '.', '_' and '-' (starting with a letter "
                f"or digit, at most 128 characters), got {name!r}"
            )
            raise ConfigError(msg)
        return self.root / name

    def stages_path(self, name: str) -> Path:
        """The path of ``<root>/<name>/stages.json``."""
        return self._dir(name) / STAGES_FILE

    # -- reading ------------------------------------------------------------------------
    def models(self) -> list[str]:
        """The registered model names, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and _NAME.fullmatch(p.name) and self._numbers(p)
        )

    @staticmethod
    def _numbers(folder: Path) -> list[int]:
        if not folder.is_dir():
            return []
        found = (_VERSION_DIR.fullmatch(p.name) for p in folder.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first."""
        return [self.get(name, n) for n in self._numbers(self._dir(name))]

    def get(self, name: str, version: int | str | None = None) -> ModelVersion:
        """One version of ``name``; ``None``: the production version, else the newest.

        Raises:
            ModelError: if the model or the version does not exist.
        """
        folder = self._dir(name)
        numbers = self._numbers(folder)
        if not numbers:
            known = ", ".join(self.models()) or "none"
            msg = (
                f"no model {name!r} in the registry {self.root} (models: {known}); register "
                f"one with `tidal models register FILE --name {name}`"
            )
            raise ModelError(msg)
        if version is None:
            prod = self.stages(name).production
            n = prod if prod is not None else numbers[-1]
        else:
            n = parse_version(version)
        vdir = folder / f"v{n}"
        if n not in numbers:
            msg = (
                f"model {name!r} has no version {n}; its versions are "
                f"{', '.join(f'v{x}' for x in numbers)}"
            )
            raise ModelError(msg)
        files = [p for p in vdir.iterdir() if p.is_file() and p.stem == "model"]
        if len(files) != 1:
            msg = f"{vdir} holds {len(files)} model files; expected one model.<suffix>"
            raise ModelError(msg)
        lineage = _read_json(vdir / "lineage.json")
        return ModelVersion(
            name=name,
            version=n,
            path=vdir,
            file=files[0],
            signature=_read_json(vdir / "signature.json"),
            metrics=_read_json(vdir / "metrics.json"),
            lineage=Lineage.from_dict(lineage),
        )

    def stages(self, name: str) -> Stages:
        """The stages of ``name`` (all empty before the first promotion)."""
        try:
            data = _read_json(self.stages_path(name))
        except FileNotFoundError:
            return Stages()
        return Stages.from_dict(data)

    # -- writing ------------------------------------------------------------------------
    def register(
        self,
        model: str | os.PathLike[str],
        *,
        name: str,
        signature: Signature | Mapping[str, Any] | Sequence[str] | None = None,
        metrics: Mapping[str, Any] | None = None,
        lineage: Lineage | None = None,
    ) -> ModelVersion:
        """Copy a model file into the registry as the next version of ``name``.

        Args:
            model: the model file (``.onnx``, ``.skops``, ``.pt``...).
            name: the model's name.
            signature: the input columns (a list of names), a
                :class:`~tidal.ml.handler.Signature`, or a dict like ``signature.json``.
                For ONNX files the feature count, dtype and outputs are read from the file.
            metrics: figures to keep (accuracy, AUC, a compression report's ``metrics()``).
            lineage: where it comes from; ``source``, ``sha256`` and ``registered_at`` are
                filled in.

        Returns:
            The new version (not promoted: call :meth:`promote`).

        Raises:
            ModelError: if the file does not exist or is not a valid model of its kind.
        """
        src = Path(model)
        folder = self._dir(name)
        if not src.is_file():
            msg = f"cannot register {str(src)!r}: no such file"
            raise ModelError(msg)
        sig = infer_signature(src)
        sig.update(_signature_dict(signature))
        lin = replace(
            lineage or Lineage(),
            source=str(src.resolve()),
            sha256=_sha256(src),
            registered_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            shutil.copyfile(src, staging / ("model" + src.suffix))
            with open(staging / ("model" + src.suffix), "rb+") as f:
                os.fsync(f.fileno())
            _write_json(staging / "signature.json", sig, atomic=False)
            _write_json(staging / "metrics.json", dict(metrics or {}), atomic=False)
            _write_json(staging / "lineage.json", lin.to_dict(), atomic=False)
            _fsync_dir(staging)
            n = self._publish(folder, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self.get(name, n)

    def _publish(self, folder: Path, staging: Path) -> int:
        """Rename ``staging`` to the next free ``v<N>``; concurrent writers get other Ns."""
        n = (self._numbers(folder) or [0])[-1] + 1
        for _ in range(1000):
            target = folder / f"v{n}"
            if not target.exists():
                try:
                    os.rename(staging, target)  # fails if another writer made it non-empty
                except OSError:
                    pass
                else:
                    _fsync_dir(folder)
                    return n
            n += 1
        msg = f"could not allocate a version directory under {folder}"
        raise ModelError(msg)

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[Stages]:
        folder = self._dir(name)
        if not self._numbers(folder):
            self.get(name)  # raises the "no such model" error
        with open(folder / ".lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield self.stages(name)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _write_stages(self, name: str, stages: Stages) -> Stages:
        out = replace(stages, generation=stages.generation + 1)
        _write_json(self.stages_path(name), out.to_dict())
        return out

    def _check(self, name: str, version: int | str) -> int:
        n = parse_version(version)
        self.get(name, n)
        return n

    def promote(self, name: str, version: int | str) -> Stages:
        """Make ``version`` the production version; the old one goes onto ``previous``.

        A shadow or canary of the same version is cleared (it is production now).
        """
        n = self._check(name, version)
        with self._locked(name) as st:
            previous = list(st.previous)
            if st.production is not None and st.production != n:
                previous = [*previous, st.production][-_KEEP_PREVIOUS:]
            return self._write_stages(name, _cleared(st, n, previous=tuple(previous)))

    def rollback(self, name: str) -> Stages:
        """Put the previous production version back.

        Raises:
            ModelError: if there is no previous version.
        """
        with self._locked(name) as st:
            if not st.previous:
                msg = (
                    f"model {name!r} has no previous production version to roll back to "
                    f"(production is {st.production}); promote a version instead"
                )
                raise ModelError(msg)
            *rest, back = st.previous
            return self._write_stages(name, _cleared(st, back, previous=tuple(rest)))

    def shadow(self, name: str, version: int | str | None) -> Stages:
        """Score ``version`` in shadow next to production (``None``: stop)."""
        n = None if version is None else self._check(name, version)
        with self._locked(name) as st:
            _not_production(name, st, n, "shadow")
            return self._write_stages(name, replace(st, shadow=n))

    def canary(self, name: str, version: int | str | None, *, fraction: float = 0.1) -> Stages:
        """Route ``fraction`` of the keys to ``version`` (``None``: stop the canary).

        Raises:
            ConfigError: if ``fraction`` is not in (0, 1].
        """
        if not 0.0 < fraction <= 1.0:
            msg = f"a canary fraction is in (0, 1], e.g. 0.1 for 10% of keys; got {fraction}"
            raise ConfigError(msg)
        n = None if version is None else self._check(name, version)
        with self._locked(name) as st:
            _not_production(name, st, n, "canary")
            canary = None if n is None else Canary(n, float(fraction))
            return self._write_stages(name, replace(st, canary=canary))

    # -- serving ------------------------------------------------------------------------
    def serving(
        self,
        name: str,
        *,
        check_every: Duration = "1s",
        loader: Callable[[ModelVersion], ModelHandler] | None = None,
        arch: Archs | None = None,
        threads: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> RegistryHandler:
        """A handler that serves ``name`` as its stages say, swapping between batches.

        Pass it to ``stream.predict(...)`` (production and shadow), or to
        :class:`~tidal.ml.swap.Serve` for canaries by key. See :mod:`tidal.ml.swap`.

        Args:
            name: the model's name.
            check_every: the longest time between two looks at ``stages.json`` (a
                ``stat``; the file is read only when it changed).
            loader: builds a handler for a version (default: by file suffix, see
                :func:`tidal.ml.swap.default_loader`).
            arch: the PyTorch architecture(s) this process serves state dicts with: a
                callable or ``"package.module:factory"`` for every version, or a mapping from
                the architecture a version's lineage names to one (an allow-list). The
                registry's own records never name code that runs.
            threads: threads per model for the default loader.
            clock: a ``time.monotonic``-like function (injectable for tests).
        """
        return RegistryHandler(
            self,
            name,
            check_every=check_every,
            loader=loader,
            arch=arch,
            threads=threads,
            clock=clock,
        )


def _cleared(st: Stages, production: int, *, previous: tuple[int, ...]) -> Stages:
    """``st`` with a new production version; a shadow or canary of it is cleared."""
    canary = st.canary if st.canary is None or st.canary.version != production else None
    shadow = None if st.shadow == production else st.shadow
    return replace(st, production=production, previous=previous, shadow=shadow, canary=canary)


def _not_production(name: str, st: Stages, version: int | None, stage: str) -> None:
    if version is not None and version == st.production:
        msg = (
            f"v{version} is model {name!r}'s production version; a {stage} must be another "
            "version (a candidate)"
        )
        raise ConfigError(msg)


def _signature_dict(sig: Signature | Mapping[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    if sig is None:
        return {}
    if isinstance(sig, Signature):
        return {k: v for k, v in sig.to_dict().items() if v not in (None, [], ())}
    if isinstance(sig, Mapping):
        return dict(sig)
    if isinstance(sig, str):
        msg = f"give the signature's input columns as a list, not the string {sig!r}"
        raise ConfigError(msg)
    return {"inputs": [str(s) for s in sig]}
