"""The model examples run as ``tidal run examples/NAME.py --events N --json`` and meet floors."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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


def test_model_lifecycle_compress_register_serve_promote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's "Models on the stream" flow, on 3,000 images, with a promotion mid-run."""
    from tidal.cli import main
    from tidal.ml.registry import Registry
    from tidal.runtime.executor import Executor

    spec = importlib.util.spec_from_file_location(
        "model_lifecycle", ROOT / "examples" / "model_lifecycle.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.train(tmp_path)["test_accuracy"] >= 0.95
    for name in [n for n in os.environ if n.startswith("TIDAL_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    registry = ["--registry", str(tmp_path / "registry")]
    assert (
        main(["models", "register", "digits.onnx", "--name", "digits", "--promote", *registry]) == 0
    )
    compress = ["models", "compress", "digits.onnx", "--method", "int8-dynamic"]
    compress += ["--eval", "eval.npz", "--out", "digits.int8.onnx", "--max-accuracy-drop", "0.005"]
    capsys.readouterr()
    assert main([*compress, "--register", "digits", "--json", *registry]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["registered"] == {"name": "digits", "version": 2}

    reg = Registry(tmp_path / "registry")
    pipeline = mod.build(rate=None, registry=reg, check_every="0ms", total=3_000)
    ex = Executor(pipeline, max_batch=250, max_wait="0ms", handle_signals=False)
    ex.open()
    for _ in range(4):
        assert ex.step()
    reg.promote("digits", 2)  # while the stream runs, between two batches
    while ex.step():
        pass
    ex.finish(drain=True)
    table = mod.STATE["tally"].table()
    assert set(table) == {"v1", "v2"} and mod.extra(None)["swaps"] == 1
    assert (table["v1"]["rows"], table["v1"]["first_seq"], table["v1"]["last_seq"]) == (
        1_000,
        0,
        999,
    )
    assert (table["v2"]["rows"], table["v2"]["first_seq"], table["v2"]["last_seq"]) == (
        2_000,
        1_000,
        2_999,
    )
    assert all(t["accuracy"] >= 0.95 for t in table.values()), table

    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDAL_")}
    env["TIDAL_REGISTRY"] = str(tmp_path / "registry")
    res = subprocess.run(  # as `tidal run` loads it: production is v2 now
        [sys.executable, "-m", "tidal", "run", str(ROOT / "examples" / "model_lifecycle.py")]
        + ["--events", "2000", "--max-wait", "1ms", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert list(data["versions"]) == ["v2"] and data["versions"]["v2"]["rows"] == 2_000


def test_model_lifecycle_without_a_model_says_to_train_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDAL_")}
    env["TIDAL_REGISTRY"] = str(tmp_path / "registry")  # empty: nothing trained yet
    res = subprocess.run(
        [sys.executable, "-m", "tidal", "run", str(ROOT / "examples" / "model_lifecycle.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "no model 'digits' in the registry" in res.stderr
    assert "python model_lifecycle.py train" in res.stderr and "promote one" not in res.stderr


_WITHOUT_SKLEARN = "import sys, runpy; sys.modules['sklearn'] = None; "


@pytest.mark.parametrize("name", ["model_lifecycle", "digits_cnn", "fraud"])
def test_an_example_without_its_extra_names_the_install_command(name: str) -> None:
    path = str(ROOT / "examples" / f"{name}.py")
    code = f"sys.argv = [{path!r}, 'train']; runpy.run_path({path!r}, run_name='__main__')"
    res = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SKLEARN + code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith(f"{name}.py needs scikit-learn: pip install -e '.[sklearn]'")


def test_tidal_run_of_an_example_without_its_extra_is_one_line() -> None:
    path = str(ROOT / "examples" / "model_lifecycle.py")
    code = f"from tidal.cli import main; sys.exit(main(['run', {path!r}]))"
    res = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SKLEARN + code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert "needs scikit-learn: pip install -e '.[sklearn]'" in res.stderr
