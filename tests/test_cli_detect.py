"""``tidal detect``: any two-column CSV in, one scored row per input row out, in order."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tidal.cli import main


def _write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _series(n: int = 1500) -> list[str]:
    rng = np.random.default_rng(0)
    v = 50 + rng.normal(0, 1, n)
    if n > 1200:
        v[1200] = 90.0
    return [
        f"2024-05-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z,{v[i]:.4f}" for i in range(n)
    ]


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_two_column_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _series()
    src = _write(tmp_path / "in.csv", "when,cpu", rows)
    out = tmp_path / "out.csv"
    assert main(["detect", str(src), "--time", "when", "--value", "cpu", "--out", str(out)]) == 0
    got = _read(out)
    assert list(got[0]) == ["timestamp", "value", "anomaly_score"]
    assert [r["timestamp"] for r in got] == [r.split(",")[0] for r in rows]
    scores = np.array([float(r["anomaly_score"]) for r in got])
    assert ((scores >= 0) & (scores <= 1)).all()
    assert int(np.argmax(scores)) == 1200
    err = capsys.readouterr().err
    assert "1,500 rows" in err and "by ensemble" in err and "90 is" in err


def test_bad_rows_become_dead_letters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _series(800)
    rows[100] = rows[100].split(",")[0] + ",n/a"  # missing
    rows[200] = rows[200].split(",")[0] + ",12,5"  # too many fields
    rows[300] = rows[300].split(",")[0] + ",oops"  # not a number
    src = _write(tmp_path / "in.csv", "t,v", rows)
    out = tmp_path / "out.csv"
    code = main(
        [
            "detect",
            str(src),
            "--time",
            "t",
            "--value",
            "v",
            "--detector",
            "median_mad",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    got = _read(out)
    assert len(got) == 799  # the malformed line is not a row
    assert got[100]["anomaly_score"] == "" and got[100]["value"] == ""
    oops = next(r for r in got if r["timestamp"] == rows[300].split(",")[0])
    assert oops["anomaly_score"] == ""
    err = capsys.readouterr().err
    assert "2 dead letters" in err and "1 missing values" in err
    assert "'oops'" in err and "3 fields, expected 2" in err


def test_keys_and_explanations(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    lines = []
    for i in range(1200):
        for host in ("a", "b"):
            v = (10 if host == "a" else 500) + rng.normal()
            if host == "b" and i == 1000:
                v = 530.0
            lines.append(f"{i},{host},{v:.3f}")
    src = _write(tmp_path / "in.csv", "ts,host,ms", lines)
    out = tmp_path / "out.csv"
    args = [
        "detect",
        str(src),
        "--time",
        "ts",
        "--value",
        "ms",
        "--key",
        "host",
        "--detector",
        "median_mad",
        "--explain",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    got = _read(out)
    assert list(got[0])[:4] == ["timestamp", "key", "value", "anomaly_score"]
    alerts = [r for r in got if r["alert"] == "true"]
    assert [(r["timestamp"], r["key"]) for r in alerts] == [("1000", "b")]
    assert float(alerts[0]["expected_high"]) < 530.0 and alerts[0]["detector"] == "median_mad"


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write(tmp_path / "in.csv", "t,v", ["1,2"])
    assert main(["detect", str(src), "--time", "t", "--value", "nope"]) == 2
    assert "has no column 'nope'" in capsys.readouterr().err
    assert main(["detect", str(tmp_path / "missing.csv"), "--time", "t", "--value", "v"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["detect", str(src), "--time", "t", "--value", "v", "--detector", "x"]) == 2
    assert main(["detect", str(src), "--value", "v"]) == 2
    assert "--time" in capsys.readouterr().err


def test_the_command_runs_as_a_program(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.csv", "t,v", _series(600))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tidal",
            "detect",
            str(src),
            "--time",
            "t",
            "--value",
            "v",
            "--detector",
            "median_mad",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 601
    assert "600 rows" in proc.stderr
