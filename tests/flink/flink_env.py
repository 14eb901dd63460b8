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
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
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


def gated_rows(
    env: Any, n: int, hold: int, gate: Path, row: Callable[[int], Any], row_type: Any
) -> Any:
    """The stream ``row(0), ..., row(n - 1)``, held at row ``hold`` until ``gate`` exists.

    A stop-with-savepoint test requests the stop, then creates ``gate``: the first run
    cannot finish before it is stopped (a condition, not a time). The operators have uids,
    so a second run restores their state from the savepoint.
    """
    from pyflink.common import WatermarkStrategy
    from pyflink.datastream.connectors.number_seq import NumberSequenceSource
    from pyflink.datastream.functions import MapFunction

    class Gate(MapFunction):  # type: ignore[misc]
        def map(self, i: int) -> Any:
            while i >= hold and not gate.exists():  # wait for a condition, not a time
                time.sleep(0.01)
            return row(i)

    src = env.from_source(
        NumberSequenceSource(0, n - 1), WatermarkStrategy.no_watermarks(), "seq"
    ).uid("seq")
    return src.map(Gate(), output_type=row_type).uid("gate")


def write_jsonl(ds: Any, out: Path, record: Callable[[Any], dict[str, Any]]) -> None:
    """Append ``record(row)`` of every row of ``ds`` to ``out`` as JSON lines (a sink)."""
    from pyflink.common import Types
    from pyflink.datastream.functions import FlatMapFunction

    class Write(FlatMapFunction):  # type: ignore[misc]
        def open(self, runtime_context: Any) -> None:
            self.f = out.open("a")

        def flat_map(self, r: Any) -> Any:
            self.f.write(json.dumps(record(r)) + "\n")
            self.f.flush()
            return iter(())

        def close(self) -> None:
            self.f.close()

    ds.flat_map(Write(), Types.STRING()).uid("write").print()


def read_jsonl(path: Path) -> dict[int, dict[str, Any]]:
    """The records of ``path`` by ``seq``; a row written twice (replayed) must agree."""
    seen: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        assert seen.setdefault(rec["seq"], rec) == rec  # a replayed row must agree
    return seen


def stop_and_resume(
    tmp_path: Path, job: Callable[[Any, Path, Path], None], *, n: int, hold: int
) -> tuple[dict[int, dict[str, Any]], int]:
    """Run ``job(env, out, gate)`` twice: stopped with a savepoint part-way, then resumed.

    The first run is stopped once it has written ``hold // 2`` rows (its source is held
    at ``hold`` by :func:`gated_rows` until the stop is requested); the second restores
    every operator's state from the savepoint and finishes the stream.

    Returns:
        The rows of both runs by ``seq`` (:func:`read_jsonl`), and how many the first saw.
    """
    from tidal.flink.datastream import stop_with_savepoint

    out, gate, saves = tmp_path / "out.jsonl", tmp_path / "gate", tmp_path / "savepoints"
    out.touch()
    env = stream_env({"python.fn-execution.bundle.size": "50"})
    job(env, out, gate)
    client = env.execute_async("tidal-state-1")
    deadline = time.monotonic() + 240
    while len(out.read_text().splitlines()) < hold // 2:  # the job is well under way
        assert time.monotonic() < deadline, "the first run produced no output in 240 s"
        time.sleep(0.05)
    stopping = stop_with_savepoint(client, saves.as_uri())
    gate.touch()  # let the held rows through: the savepoint barrier is behind them
    savepoint = stopping.result()
    first = len(read_jsonl(out))
    assert hold // 2 <= first < n, f"the first run saw {first} of {n} rows"

    env2 = stream_env({"execution.savepoint.path": savepoint})
    job(env2, out, gate)
    env2.execute("tidal-state-2")
    got = read_jsonl(out)
    assert sorted(got) == list(range(n)), "every row exactly once across the two runs"
    return got, first
