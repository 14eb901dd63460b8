"""``tidal run --metrics-port/--ui`` and ``tidal demo``'s dashboard, as real processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
from scrape import call, scrape, value, wait_for

from tidal.cli import main

SRC = Path(__file__).resolve().parents[2] / "src"

PIPELINE = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from observed_pipeline import build

    pipeline, _ = build(n=6000, rate=3000)
    """
)


def _spawn(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen(
        [sys.executable, "-m", "tidal", *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _end(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            f.close()
    proc.wait()


def _address(proc: subprocess.Popen[str], label: str) -> str:
    assert proc.stderr is not None
    for line in proc.stderr:
        m = re.search(rf"{label}: (http://\S+)", line)
        if m:
            return m.group(1)
    raise AssertionError(f"no {label} address printed")


def test_run_serves_metrics_and_the_dashboard(tmp_path: Path) -> None:
    file = tmp_path / "job.py"
    file.write_text(PIPELINE.format(tests=str(Path(__file__).parent)))
    proc = _spawn(
        ["run", str(file), "--json", "--metrics-port", "0", "--ui", "--ui-port", "0",
         "--checkpoint-interval", "200ms", "--data-dir", str(tmp_path / "data")],
        tmp_path,
    )  # fmt: skip
    try:
        ui = _address(proc, "dashboard")
        metrics = _address(proc, "metrics")
        assert metrics.endswith("/metrics") and ui.startswith("http://127.0.0.1:")
        seen: list[float] = []

        def counting() -> bool:
            seen.append(value(scrape(metrics), "tidal_events_total"))
            return seen[-1] > 0

        wait_for(counting, message="events on /metrics")
        status, _, body = call(ui)
        assert status == 200 and b"graph" in body
        snap = orjson.loads(call(ui + "api/snapshot")[2])
        assert snap["pipeline"] == "observed"
        assert (tmp_path / "data" / "live" / "observed.json").exists()  # for tidal top
        out, _ = proc.communicate(timeout=60)
    finally:
        _end(proc)
    summary = orjson.loads(out)
    assert proc.returncode == 0
    assert 0 < seen[-1] <= summary["events"] == 5940


def test_off_loopback_the_token_is_printed_and_required(tmp_path: Path) -> None:
    file = tmp_path / "job.py"
    file.write_text(PIPELINE.format(tests=str(Path(__file__).parent)))
    proc = _spawn(["run", str(file), "--json", "--metrics-port", "0", "--ui-host", "0.0.0.0"],
                  tmp_path)  # fmt: skip
    try:
        metrics = _address(proc, "metrics")
        token = metrics.split("?token=")[1]
        port = re.search(r":(\d+)/", metrics).group(1)  # type: ignore[union-attr]
        plain = f"http://127.0.0.1:{port}/metrics"
        assert call(plain)[0] == 401
        assert call(plain, headers={"Authorization": f"Bearer {token}"})[0] == 200
    finally:
        _end(proc)


def test_demo_prints_its_dashboard_and_no_ui_turns_it_off(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["demo", "--events", "2000", "--rate", "0", "--sensors", "50", "--out", "",
            "--source", "generator", "--checkpoint-interval", "off"]  # fmt: skip
    assert main([*args, "--ui-port", "0"]) == 0
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/", capsys.readouterr().out)
    assert main([*args, "--no-ui"]) == 0
    assert "dashboard" not in capsys.readouterr().out


def test_a_busy_port_is_one_line_of_error(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code = main(["demo", "--events", "100", "--rate", "0", "--sensors", "5", "--out", "",
                     "--source", "generator", "--checkpoint-interval", "off",
                     "--ui-port", str(port)])  # fmt: skip
    assert code == 2
    assert "choose another port" in capsys.readouterr().err
