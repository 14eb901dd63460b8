"""The model examples run as ``tidal run examples/NAME.py --events N --json`` and meet floors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _run_example(name: str, events: int, data_dir: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDAL_")}
    env["TIDAL_DATA_DIR"] = str(data_dir)  # a fresh cache: the run trains its model
    res = subprocess.run(
        [sys.executable, "-m", "tidal", "run", f"examples/{name}.py"]
        + ["--events", str(events), "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout  # --json: exactly one JSON object on stdout
    data: dict[str, Any] = json.loads(lines[0])
    assert data["events"] == events and data["dead_letters"] == 0
    return data


def test_digits_cnn_fp32_and_int8_accuracy(tmp_path: Path) -> None:
    data = _run_example("digits_cnn", 5_000, tmp_path)
    acc = data["accuracy"]
    assert set(acc) == {"fp32", "int8-dynamic", "int8-static", "stream"}
    assert all(v >= 0.9 for v in acc.values()), acc
    assert abs(acc["fp32"] - acc["int8-static"]) <= 0.02
    speed = data["images_per_s"]
    assert set(speed) == {"fp32", "int8-dynamic", "int8-static", "stream"}
    assert all(v > 0 for v in speed.values())
    assert data["served"] in ("fp32", "int8-dynamic", "int8-static")
    assert data["cached"] is False and data["test_images"] == 450
    for report in data["compression"].values():
        assert report["winner"] in ("original", "compressed") and "verdict" in report
    assert data["outputs"]["tally"] == 5_000
    cached = list((tmp_path / "models").glob("digits_cnn-*/info.json"))
    assert len(cached) == 1  # the next run reuses it


def test_fraud_scoring_quality(tmp_path: Path) -> None:
    data = _run_example("fraud", 30_000, tmp_path)
    q = data["quality"]
    assert q["transactions"] == 30_000 and 0.015 < q["fraud_rate"] < 0.035
    assert q["auc"] >= 0.85, q
    assert q["precision_at_k"] >= 0.6 and q["k"] == 300, q
    assert q["average_precision"] >= 0.35, q
    assert data["events_per_s"] > 0 and data["model_call_rows"]["max"] >= 1
    assert data["counts"]["score.model_calls"] >= 1
