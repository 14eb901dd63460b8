"""Tidal's exception hierarchy.

Every error Tidal raises on purpose derives from :class:`TidalError`::

    TidalError
    ├── ConfigError        bad option, duration string, missing optional dependency
    ├── PipelineError      a pipeline that cannot be built or a user function that failed
    ├── ConnectorError     a source or sink failed (file, log, broker)
    ├── StateError         a snapshot that cannot be restored
    └── ModelError         a model that cannot be loaded or scored

Messages say what was expected, where (the step name and, for user functions, file and
line), what was received and how to fix it. Third-party exceptions are chained with
``from`` at the boundary.

Example:
    >>> try:
    ...     raise ConfigError("max_batch must be > 0, got 0")
    ... except TidalError as exc:
    ...     print(type(exc).__name__, exc)
    ConfigError max_batch must be > 0, got 0
"""

from __future__ import annotations

import errno
import inspect
from collections.abc import Callable
from typing import Any


class TidalError(Exception):
    """Root of every error Tidal raises on purpose."""


class ConfigError(TidalError, ValueError):
    """An option, a duration or an install is not what Tidal needs."""


class PipelineError(TidalError):
    """A pipeline that cannot be built, or a user function that failed in a step."""


class ConnectorError(TidalError):
    """A source or a sink failed."""


class StateError(TidalError):
    """A state snapshot that cannot be taken or restored."""


class ModelError(TidalError):
    """A model that cannot be loaded or scored."""


def where(fn: Callable[..., Any]) -> str:
    """Describe a user function as ``name (file:line)`` for error messages.

    Example:
        >>> def double(batch): return batch
        >>> where(double).startswith("double (")
        True
    """
    name = getattr(fn, "__qualname__", None) or repr(fn)
    try:
        file = inspect.getsourcefile(fn)
        _, line = inspect.getsourcelines(fn)
    except (TypeError, OSError):
        return str(name)
    return f"{name} ({file}:{line})"


_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space on it, or write somewhere else",
    errno.EDQUOT: "the disk quota is used up: free space, or write somewhere else",
    errno.EROFS: "the file system is mounted read-only: write somewhere else",
    errno.EACCES: "check the owner and permissions of that path, or write somewhere else",
    errno.EPERM: "check the owner and permissions of that path, or write somewhere else",
    errno.EFBIG: "a file-size limit was reached: see `ulimit -f`",
}


def os_error_text(exc: OSError) -> str:
    """Describe an ``OSError`` in one line: the reason, the path, and how to fix it.

    Example:
        >>> print(os_error_text(OSError(errno.EFBIG, "File too large", "/data/0.seg")))
        File too large: '/data/0.seg' (a file-size limit was reached: see `ulimit -f`)
    """
    text = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None:
        text += f": '{exc.filename}'"
        if exc.filename2 is not None:
            text += f" -> '{exc.filename2}'"
    hint = _OS_HINTS.get(exc.errno) if exc.errno is not None else None
    return f"{text} ({hint})" if hint else text
