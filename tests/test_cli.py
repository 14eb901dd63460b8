"""The ``tidal`` command line, as real subprocesses where it matters (JSON, SIGINT)."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tidal.cli import main
from tidal.io.parts import read_committed

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SUMMARY_KEYS = {"events", "seconds", "events_per_s", "latency_ms", "late", "dead_letters"}


def _tidal(
    *args: str, cwd: Path, env: dict[str, str] | None = None, module: str = "tidal.cli"
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TIDAL_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _one_json(stdout: str) -> dict[str, Any]:
    """stdout holds exactly one JSON object and nothing else."""
    data = json.loads(stdout)
    assert isinstance(data, dict)
    assert stdout.strip().count("\n") == 0
    return data


@pytest.fixture(autouse=True)
def _no_tidal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TIDAL_"):
            monkeypatch.delenv(name)


# -- tidal run ---------------------------------------------------------------------------------


def test_run_quickstart_json(tmp_path: Path) -> None:
    proc = _tidal(
        "run", str(EXAMPLES / "quickstart.py"), "--events", "1000", "--json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    data = _one_json(proc.stdout)
    assert SUMMARY_KEYS <= set(data)
    assert data["events"] == 1000
    assert set(data["latency_ms"]) == {"p50", "p99", "p999"}
    assert data["outputs"]["print"] > 0
    assert '"sensor"' in proc.stderr  # what the pipeline printed went to stderr


def test_run_iot_example_json(tmp_path: Path) -> None:
    proc = _tidal(
        "run", str(EXAMPLES / "iot_anomaly.py"), "--events", "50000", "--json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    data = _one_json(proc.stdout)
    assert data["events"] == 50_000
    assert {"alerts", "sensors", "scorecard"} <= set(data)
    assert data["sensors"] == 2000
    assert (tmp_path / "alerts.jsonl").exists()


def test_run_prints_a_summary_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(EXAMPLES / "quickstart.py"), "--events", "600"]) == 0
    out = capsys.readouterr().out
    assert "events/s" in out and "600" in out


def test_run_with_build_function_and_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "job.py"
    file.write_text(
        "import tidal\n"
        "from tidal.testing import MemorySink, MemorySource\n"
        "def build():\n"
        "    p = tidal.Pipeline('job')\n"
        "    p.source('in', MemorySource({'x': [1, 2, 3]})).sink('out', MemorySink())\n"
        "    return p\n"
        "def extra(summary):\n"
        "    return {'answer': 42}\n"
    )
    assert main(["run", str(file), "--json"]) == 0
    data = _one_json(capsys.readouterr().out)
    assert data["events"] == 3 and data["answer"] == 42


def test_options_from_environment_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIDAL_EVENTS", "1500")
    monkeypatch.setenv("TIDAL_JSON", "yes")
    monkeypatch.setenv("TIDAL_MAX_BATCH", "100")
    monkeypatch.setenv("TIDAL_MAX_WAIT", "1ms")
    assert main(["run", str(EXAMPLES / "quickstart.py")]) == 0
    assert _one_json(capsys.readouterr().out)["events"] == 1500
    # a flag on the command line wins over the environment
    assert main(["run", str(EXAMPLES / "quickstart.py"), "--events", "300"]) == 0
    assert _one_json(capsys.readouterr().out)["events"] == 300


def test_environment_variables_in_a_subprocess(tmp_path: Path) -> None:
    env = {"TIDAL_EVENTS": "20000", "TIDAL_RATE": "0", "TIDAL_JSON": "1", "TIDAL_OUT": ""}
    proc = _tidal("demo", "--sensors", "100", cwd=tmp_path, env=env, module="tidal")
    assert proc.returncode == 0, proc.stderr
    assert _one_json(proc.stdout)["events"] == 20_000
    assert not (tmp_path / "alerts.jsonl").exists()


@pytest.mark.parametrize(
    ("name", "value"),
    [("TIDAL_EVENTS", "many"), ("TIDAL_MAX_WAIT", "soon"), ("TIDAL_JSON", "maybe")],
)
def test_bad_environment_variable_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["run", str(EXAMPLES / "quickstart.py")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tidal: error: environment variable {name}={value!r}")
    assert err.count("\n") == 1


def test_help_names_the_environment_variables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--help"]) == 0
    text = capsys.readouterr().out.replace("\N{NO-BREAK SPACE}", " ")
    for var in ("TIDAL_EVENTS", "TIDAL_RATE", "TIDAL_SENSORS", "TIDAL_OUT", "TIDAL_JSON"):
        assert f"[env: {var}]" in text
    assert main(["run", "--help"]) == 0
    text = capsys.readouterr().out.replace("\N{NO-BREAK SPACE}", " ")
    for var in ("TIDAL_EVENTS", "TIDAL_MAX_BATCH", "TIDAL_MAX_WAIT", "TIDAL_JSON"):
        assert f"[env: {var}]" in text


# -- errors ----------------------------------------------------------------------------------


def test_bad_file_path_exits_2_with_a_message(tmp_path: Path) -> None:
    proc = _tidal("run", "no/such/pipeline.py", "--json", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("tidal: error: cannot run 'no/such/pipeline.py': no such file")
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x = 1\n", "must define `pipeline"),
        ("import tidal\n\n1 / 0\n", r"job.py:3: loading the file raised ZeroDivisionError"),
        ("def broken(:\n", "job.py:1: syntax error"),
        ("def build():\n    raise RuntimeError('nope')\n", "build() raised RuntimeError: nope"),
    ],
)
def test_broken_pipeline_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, message: str
) -> None:
    file = tmp_path / "job.py"
    file.write_text(source)
    assert main(["run", str(file)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_a_failing_step_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "job.py"
    file.write_text(
        "import tidal\n"
        "from tidal.testing import MemorySink, MemorySource\n"
        "pipeline = tidal.Pipeline('job')\n"
        "def boom(batch):\n"
        "    raise ValueError('bad row')\n"
        "src = pipeline.source('in', MemorySource({'x': [1]}))\n"
        "src.map('boom', boom).sink('o', MemorySink())\n"
    )
    assert main(["run", str(file), "--json"]) == 2
    captured = capsys.readouterr()
    assert "step 'boom'" in captured.err and "bad row" in captured.err
    assert captured.out == ""


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--events", "-5"]) == 2
    assert "expected a number >= 0" in capsys.readouterr().err
    assert main([]) == 2


# -- tidal demo ------------------------------------------------------------------------------


def test_demo_json_as_fast_as_possible(tmp_path: Path) -> None:
    proc = _tidal("demo", "--events", "20000", "--rate", "0", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = _one_json(proc.stdout)
    assert SUMMARY_KEYS <= set(data)
    assert data["events"] == 20_000
    assert data["sensors"] == 2000 and data["alerts"] == 0  # 1 s of event time: warming up
    assert data["position"] == 20_000 and data["produced"] >= 20_000  # through the log
    assert (tmp_path / "alerts").is_dir()  # exactly-once part files, none committed yet
    assert (tmp_path / ".tidal" / "log" / "demo-sensors").is_dir()


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> list[str]:
    """Lines of ``proc``'s stdout up to the first one that starts with ``marker``."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        if not sel.select(deadline - time.monotonic()):
            break
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(marker):
            return lines
    msg = f"no line starting with {marker!r} within {timeout} s; got {lines}"
    raise AssertionError(msg)


@contextmanager
def _demo_process(cwd: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``python -m tidal demo ARGS`` in ``cwd`` (no TIDAL_* variables), killed if left running."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDAL_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidal", "demo", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_demo_reset_starts_afresh_and_events_counts_the_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = str(tmp_path / "d"), str(tmp_path / "alerts")
    base = ["demo", "--rate", "max", "--sensors", "50", "--data-dir", data, "--out", out]
    base += ["--json"]
    assert main([*base, "--events", "20000"]) == 0
    first = _one_json(capsys.readouterr().out)
    assert first["events"] == first["events_total"] == first["position"] == 20_000
    # --events bounds the job since it began: the same command again reads nothing more,
    # and says so consistently (this run's events and seconds, the job's total)
    assert main([*base, "--events", "20000"]) == 0
    again = _one_json(capsys.readouterr().out)
    assert again["events"] == 0 and again["events_total"] == 20_000
    assert again["restored_events"] == 20_000
    assert main([*base, "--events", "50000"]) == 0
    more = _one_json(capsys.readouterr().out)
    assert more["events"] == 30_000 and more["events_total"] == more["position"] == 50_000
    assert more["events_per_s"] == pytest.approx(30_000 / more["seconds"], rel=0.01)
    committed = len(read_committed(out))
    assert committed > 0
    # --reset: the topic, the checkpoints and the alerts are gone; the demo starts at 0
    sentinel = tmp_path / "d" / "log" / "demo-sensors" / "was-here"
    sentinel.touch()  # gone only if --reset deletes the topic (a new one is made)
    assert main([*base, "--events", "20000", "--reset"]) == 0
    fresh = _one_json(capsys.readouterr().out)
    assert fresh["restored_from"] is None and fresh["restored_events"] == 0
    assert fresh["events"] == fresh["events_total"] == fresh["position"] == 20_000
    assert not sentinel.exists() and sentinel.parent.is_dir()  # the feed wrote the topic anew
    assert len(read_committed(out)) == fresh["alerts"] < committed
    # an --out that holds more than alerts is not deleted
    (tmp_path / "alerts" / "notes.txt").write_text("mine")
    assert main([*base, "--reset"]) == 2
    assert "holds other files too (notes.txt)" in capsys.readouterr().err
    assert (tmp_path / "alerts" / "notes.txt").exists() and (tmp_path / "d" / "demo.json").exists()


def test_demo_screen_fits_80_columns_and_ends_with_a_scorecard(tmp_path: Path) -> None:
    proc = _tidal(
        "demo", "--source", "generator", "--checkpoint-interval", "off", "--out", "",
        "--rate", "max", "--sensors", "100", "--events", "150000",
        cwd=tmp_path, env={"COLUMNS": "80"}, module="tidal",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("tidal demo: 100 sensors at 10 Hz, as fast as possible")
    assert any("dropouts: readings a sensor lost (NaN)" in line for line in lines[:6])
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    alerts = [line for line in lines if line.startswith("ALERT")]
    assert alerts  # rate-limited to 5 a second: the first ones of the run
    kinds = ("spike", "stuck at 0", "level shift", "false alarm")
    assert all(line.rsplit("  ", 1)[1].startswith(kinds) for line in alerts), alerts
    assert not any("false alarm" in line for line in alerts)
    # 150 s of event time: 21 faults, each found (3 of them in their first 12 s)
    assert "scorecard: 21 of 21 faults found, 0 false alarms" in proc.stdout
    assert "21 injected: 7 spike, 7 stuck, 7 shift\n" in proc.stdout


def test_demo_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    with _demo_process(tmp_path, "--rate", "0", "--sensors", "200") as proc:
        seen = _read_until(proc, "ALERT", timeout=180)  # it runs and prints alerts
        assert seen[0].startswith("tidal demo: 200 sensors")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "tidal demo" in out and "events/s" in out and "alerts" in out
    assert len(read_committed(tmp_path / "alerts")) >= 1


def test_a_second_demo_on_the_same_data_dir_fails_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with _demo_process(tmp_path, "--sensors", "50", "--data-dir", "d") as first:
        _read_until(first, "tidal demo:", timeout=120)
        checkpoints = tmp_path / "d" / "checkpoints" / "iot-demo-log"
        deadline = time.monotonic() + 120
        while not list(checkpoints.glob("chk-*")):  # it runs, holding the checkpoint lock
            assert time.monotonic() < deadline, "the first demo wrote no checkpoint"
            time.sleep(0.02)
        data = str(tmp_path / "d")
        assert main(["demo", "--sensors", "50", "--data-dir", data, "--events", "10"]) == 2
        assert "another process is running pipeline 'iot-demo-log'" in capsys.readouterr().err
        # --reset refuses too, and deletes nothing
        assert main(["demo", "--sensors", "50", "--data-dir", data, "--reset"]) == 2
        assert "another process is running pipeline 'iot-demo-log'" in capsys.readouterr().err
        assert (tmp_path / "d" / "log" / "demo-sensors").is_dir()
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err  # the first one was not disturbed


# -- tidal run --dead-letters ---------------------------------------------------------------
DEAD_JOB = """
import numpy as np
import tidal
from tidal.testing import MemorySink, MemorySource

pipeline = tidal.Pipeline("dead")
(pipeline.source("in", MemorySource({"x": [1.0, float("nan"), 3.0, float("nan")]}))
    .validate("check", {"x must be a number": lambda b: np.isfinite(b["x"])})
    .sink("out", MemorySink()))
"""


def test_run_dead_letters_to_a_jsonl_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job, dead = tmp_path / "job.py", tmp_path / "dead.jsonl"
    job.write_text(DEAD_JOB)
    assert main(["run", str(job), "--dead-letters", str(dead), "--json"]) == 0
    assert _one_json(capsys.readouterr().out)["dead_letters"] == 2
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [(d["step"], d["reason"]) for d in letters] == [("check", "x must be a number")] * 2
    assert [json.loads(d["position"]) for d in letters] == [{"offset": 1}, {"offset": 3}]
    # the same from the environment, in a subprocess
    proc = _tidal("run", str(job), cwd=tmp_path, env={"TIDAL_DEAD_LETTERS": "env.jsonl"})
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "env.jsonl").read_text().splitlines()) == 2


def test_run_dead_letters_refuses_a_pipeline_that_has_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "job.py"
    own = DEAD_JOB.replace(
        'tidal.Pipeline("dead")', 'tidal.Pipeline("dead", dead_letters=MemorySink())'
    )
    job.write_text(own)
    assert main(["run", str(job), "--dead-letters", str(tmp_path / "d.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "already sends its dead letters to MemorySink" in err and err.count("\n") == 1
