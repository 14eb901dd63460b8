"""``tidal top``: the live file an observed run writes, shown in the terminal."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import orjson
import pytest
from observed_pipeline import build
from scrape import wait_for

from tidal import Executor
from tidal.cli import main
from tidal.observe.live import LiveRun, live_file
from tidal.observe.top import find_live, read_live


def test_top_shows_a_running_pipeline_then_its_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline, _ = build(n=4000, rate=4000)
    path = live_file(tmp_path, pipeline.name)
    live = LiveRun(refresh=0.05, live_path=path)
    ex = Executor(pipeline, observer=live, max_batch=256, handle_signals=False)
    box: dict[str, object] = {}
    t = threading.Thread(target=lambda: box.update(summary=ex.run()))
    t.start()
    try:
        wait_for(lambda: (read_live(path) or {}).get("events", 0) > 0, message="a live file")
        assert find_live(tmp_path) == [path]
        assert main(["top", "--data-dir", str(tmp_path), "--once"]) == 0
        out = capsys.readouterr().out
        assert "observed" in out and "running" in out
        for step in ("validate", "win", "model", "detect", "alerts"):
            assert step in out
    finally:
        t.join(timeout=60)
    summary = box["summary"]
    snap = read_live(path)
    assert snap is not None and snap["state"] == "finished"
    assert snap["events"] == summary.events  # type: ignore[attr-defined]
    assert main(["top", "--data-dir", str(tmp_path), "--pipeline", "observed", "--once"]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and f"{summary.events:,}" in out  # type: ignore[attr-defined]
    # without --once it draws until the run is finished: here at once
    assert main(["top", "--data-dir", str(tmp_path), "--interval", "10ms"]) == 0


def test_top_says_when_a_run_went_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = live_file(tmp_path, "gone")
    path.parent.mkdir(parents=True)
    path.write_bytes(orjson.dumps({"pipeline": "gone", "state": "running", "time": 1.0,
                                   "events": 10, "steps": {}}))  # fmt: skip
    old = time.time() - 60
    os.utime(path, (old, old))
    assert main(["top", "--data-dir", str(tmp_path), "--once"]) == 1
    assert "stale" in capsys.readouterr().out


def test_top_without_a_run_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["top", "--data-dir", str(tmp_path), "--once"]) == 2
    assert "no running pipeline" in capsys.readouterr().err
    assert main(["top", "--data-dir", str(tmp_path), "--pipeline", "x", "--once"]) == 2
    assert "no live figures of pipeline 'x'" in capsys.readouterr().err
    path = live_file(tmp_path, "torn")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"pipeline": ')
    assert main(["top", "--data-dir", str(tmp_path), "--once"]) == 2
    assert "cannot read" in capsys.readouterr().err
