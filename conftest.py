"""Collection rules for the whole tree.

The PyFlink modules of ``tidal.flink`` import PyFlink at module level; PyFlink lives in its
own environment (``make flink-env``), so the main environment does not collect their
doctests. ``make flink-test`` runs them (with ``TIDAL_FLINK_TESTS=1``, where a missing
PyFlink is an error, not a skip: see ``tests/flink/conftest.py``).
"""

from __future__ import annotations

import importlib.util

collect_ignore: list[str] = []
if importlib.util.find_spec("pyflink") is None:
    collect_ignore += ["src/tidal/flink/table.py", "src/tidal/flink/datastream.py"]


def pytest_configure(config: object) -> None:
    """In the PyFlink environment, silence the warnings PyFlink's own stack raises.

    PyFlink 2.3 and the Apache Beam it runs on warn about their own deprecations on import
    (pyparsing, TableSchema), PyFlink's Java gateway is a subprocess that lives until the
    interpreter exits (a ResourceWarning under pytest), and when a job is stopped with a
    savepoint, the Beam gRPC reader thread of PyFlink's in-process worker may die with
    "Multiplexer hanging up" (an unhandled-thread-exception warning; seen once in the
    savepoint test, the job and its results unaffected). None of it is Tidal's code; only
    the Flink tests run in this environment. Appended filters win over
    ``filterwarnings = error``.
    """
    if importlib.util.find_spec("pyflink") is None:
        return
    for line in (
        "ignore::DeprecationWarning",
        "ignore::ResourceWarning",
        "ignore::pytest.PytestUnraisableExceptionWarning",
        "ignore::pytest.PytestUnhandledThreadExceptionWarning",
    ):
        config.addinivalue_line("filterwarnings", line)  # type: ignore[attr-defined]
