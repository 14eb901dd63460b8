"""Fixtures for the tests of Tidal inside Apache Flink (PyFlink's local mini-cluster).

These tests need PyFlink, which lives in its own environment: ``make flink-test`` builds
``.venv-flink`` and runs them there with ``TIDAL_FLINK_TESTS=1``. In the main environment
(no PyFlink) the modules that need it skip with a reason; with ``TIDAL_FLINK_TESTS=1`` a
missing PyFlink is an error instead, so ``make flink-test`` can never pass by skipping.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any

import pytest

HAVE_PYFLINK = importlib.util.find_spec("pyflink") is not None

if os.environ.get("TIDAL_FLINK_TESTS") == "1" and not HAVE_PYFLINK:
    msg = (
        "TIDAL_FLINK_TESTS=1 but PyFlink is not importable in "
        f"{sys.executable}; run `make flink-env` (it builds .venv-flink)"
    )
    raise RuntimeError(msg)


@pytest.fixture
def stream_env() -> Callable[..., Any]:
    """Make a StreamExecutionEnvironment on the local mini-cluster, Python workers from
    this interpreter, parallelism 1 (so a key's rows keep their order)."""

    def make(config: dict[str, str] | None = None) -> Any:
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

    return make
