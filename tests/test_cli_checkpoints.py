"""``tidal run``/``tidal demo`` with checkpoints, exactly-once output and replay."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tidal.cli import main
from tidal.io.parts import read_committed

PIPELINE = """
from tidal import Pipeline, bounded, tumbling, aggregations as agg
from tidal.io.generator import GeneratorSource
from tidal.io.jsonl import JsonlPartSink

p = Pipeline("cli-chk")
src = GeneratorSource(lambda seq: {"k": seq % 5, "ts": seq * 10}, total=TOTAL)
(p.source("gen", src, time="ts", watermark=bounded("0s"))
   .key_by("k")
   .window("w", tumbling("1s"), {"n": agg.count()})
   .sink("out", JsonlPartSink(OUT)))
pipeline = p
"""


@pytest.fixture(autouse=True)
def _no_tidal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TIDAL_"):
            monkeypatch.delenv(name)


def _file(tmp_path: Path, total: int = 1000) -> Path:
    path = tmp_path / "job.py"
    text = PIPELINE.replace("TOTAL", str(total)).replace("OUT", repr(str(tmp_path / "out")))
    path.write_text(text)
    return path


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    out = capsys.readouterr().out
    data = json.loads(out.strip().splitlines()[-1])
    assert isinstance(data, dict)
    return data


def test_run_checkpoints_and_a_restart_adds_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job, data = _file(tmp_path), str(tmp_path / "data")
    args = ["run", str(job), "--checkpoint-interval", "10ms", "--data-dir", data, "--json"]
    assert main(args) == 0
    first = _json(capsys)
    assert first["counts"]["checkpoints"] >= 1 and first["restored_from"] is None
    rows = read_committed(tmp_path / "out")
    assert sum(r["n"] for r in rows) == 1000
    assert main(args) == 0
    second = _json(capsys)
    assert second["restored_from"] is not None
    assert read_committed(tmp_path / "out") == rows


def test_data_dir_and_interval_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDAL_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("TIDAL_CHECKPOINT_INTERVAL", "1s")
    assert main(["run", str(_file(tmp_path)), "--json"]) == 0
    assert _json(capsys)["counts"]["checkpoints"] >= 1
    assert (tmp_path / "env-data" / "checkpoints" / "cli-chk").is_dir()


def test_a_part_sink_without_checkpoints_says_how_to_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(_file(tmp_path))]) == 2
    assert "--checkpoint-interval" in capsys.readouterr().err


def test_replay_from_offset_into_a_new_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job, data = _file(tmp_path), str(tmp_path / "data")
    common = ["--checkpoint-interval", "1s", "--data-dir", data, "--json"]
    assert main(["run", str(job), *common]) == 0
    capsys.readouterr()
    job.write_text(job.read_text().replace("/out'", "/out-v2'"))
    assert main(["run", str(job), "--from-offset", "500", *common]) == 0
    replay = _json(capsys)
    assert replay["restored_from"] is None
    assert sum(r["n"] for r in read_committed(tmp_path / "out-v2")) == 500
    assert sum(r["n"] for r in read_committed(tmp_path / "out")) == 1000


def test_replay_from_time_needs_a_seekable_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job, data = str(_file(tmp_path)), str(tmp_path / "data")
    chk = ["--checkpoint-interval", "1s", "--data-dir", data]
    assert main(["run", job, "--from-time", "2024-01-01T00:00:00Z", *chk]) == 2
    assert "cannot start from a time" in capsys.readouterr().err
    assert main(["run", job, "--from-time", "2024-01-01T00:00:00Z", "--from-offset", "3"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["run", job, "--from-time", "noon"]) == 2
    assert "2024-01-01T00:00:00Z" in capsys.readouterr().err


def test_help_names_the_new_options_and_their_env(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in ("CHECKPOINT_INTERVAL", "DATA_DIR", "FROM_OFFSET", "FROM_TIME"):
        assert f"TIDAL_{name}" in text


@pytest.mark.parametrize("source", ["log", "generator"])
def test_demo_resumes_from_its_checkpoint_and_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str
) -> None:
    data, out = str(tmp_path / "data"), str(tmp_path / "alerts")
    base = ["demo", "--rate", "0", "--sensors", "50", "--out", out, "--data-dir", data]
    base += ["--checkpoint-interval", "50ms", "--source", source, "--json"]
    assert main([*base, "--events", "60000"]) == 0
    first = _json(capsys)
    assert first["restored_from"] is None and first["counts"]["checkpoints"] >= 1
    assert first["alerts"] == len(read_committed(out)) > 0
    # --events counts from the start of the demo; reaching it stops without firing the
    # open windows, so the next run goes on from there
    assert main([*base, "--events", "60000"]) == 0
    assert _json(capsys)["alerts"] == 0
    assert main([*base, "--events", "90000"]) == 0
    second = _json(capsys)
    assert second["restored_events"] == 60_000 and second["events_total"] == 90_000
    assert second["events"] == 30_000  # this run's, like its seconds
    committed = read_committed(out)
    assert first["alerts"] + second["alerts"] == len(committed)
    keys = [(a["sensor"], a["window_start"]) for a in committed]
    assert len(set(keys)) == len(keys)


def test_the_log_demo_needs_checkpoints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--checkpoint-interval", "off", "--events", "10"]) == 2
    assert "--source generator" in capsys.readouterr().err


def test_the_log_demo_refuses_another_set_up_in_its_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["demo", "--rate", "0", "--data-dir", str(tmp_path), "--out", "", "--json"]
    assert main([*base, "--sensors", "50", "--events", "100"]) == 0
    capsys.readouterr()
    assert main([*base, "--sensors", "60", "--events", "100"]) == 2
    assert "another demo set-up" in capsys.readouterr().err


LOG_PIPELINE = """
from tidal import Pipeline
from tidal.io.jsonl import JsonlSink
from tidal.io.log import LogSource

p = Pipeline("replay-log")
p.source("in", LogSource(DATA, "events", bounded=True)).sink("out", JsonlSink(OUT))
pipeline = p
"""


def test_replay_from_time_on_the_embedded_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tidal.io.log import Topic

    data = tmp_path / "data"
    topic = Topic.create(data, "events", partitions=2)
    for p in (0, 1):
        values = [b'{"n": %d}' % i for i in range(100)]
        topic.append(p, values, timestamps=[1_704_067_200_000 + i * 1000 for i in range(100)])
    topic.close()
    job = tmp_path / "job.py"
    out = tmp_path / "out.jsonl"
    job.write_text(LOG_PIPELINE.replace("DATA", repr(str(data))).replace("OUT", repr(str(out))))
    assert main(["run", str(job), "--from-time", "2024-01-01T00:01:30Z", "--json"]) == 0
    assert _json(capsys)["events"] == 20
    assert sorted(json.loads(line)["n"] for line in out.read_text().splitlines()) == sorted(
        list(range(90, 100)) * 2
    )
