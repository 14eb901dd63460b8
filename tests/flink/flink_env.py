"""Helpers for the tests of Tidal inside Apache Flink (PyFlink's local mini-cluster).

These tests need PyFlink, which lives in its own environment: ``make flink-test`` builds
``.venv-flink`` and runs them there with ``TIDAL_FLINK_TESTS=1``. In the main environment
(no PyFlink) :func:`require_pyflink` skips the module with a reason; with
``TIDAL_FLINK_TESTS=1`` a missing PyFlink is an error instead, so ``make flink-test`` can
never pass by skipping. (A module, not a ``conftest.py``: ``tests/integration`` has the
one conftest of this tree of rootless test directories.)
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

import pytest


def require_pyflink() -> None:
    """Skip the calling test module without PyFlink (fail under ``TIDAL_FLINK_TESTS=1``)."""
    if importlib.util.find_spec("pyflink") is not None:
        return
    if os.environ.get("TIDAL_FLINK_TESTS") == "1":
        msg = (
            f"TIDAL_FLINK_TESTS=1 but PyFlink is not importable in {sys.executable}; "
            "run `make flink-env` (it builds .venv-flink)"
        )
        raise RuntimeError(msg)
    pytest.skip(
        "PyFlink lives in .venv-flink: `make flink-test` runs this", allow_module_level=True
    )


def stream_env(config: dict[str, str] | None = None) -> Any:
    """A StreamExecutionEnvironment on the local mini-cluster: Python workers from this
    interpreter, parallelism 1 (so a key's rows keep their order)."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    conf = Configuration()
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    for k, v in (config or {}).items():
        conf.set_string(k, v)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    return env
