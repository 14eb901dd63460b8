"""``tidal learn``: prequential evaluation over a CSV, and its errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from tidal.cli import main
from tidal.cli.learn import learn_csv
from tidal.errors import ConfigError


def _csv(tmp_path: Path, n: int = 3_000) -> Path:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "green"], n)
    label = np.where(a + (colour == "red") - b > 0.5, "buy", "sell")
    amount = 3 * a - b + rng.normal(0, 0.1, n)
    lines = [
        f"{x:.5f},{y:.5f},{c},{lab},{m:.5f}"
        for x, y, c, lab, m in zip(a, b, colour, label, amount, strict=True)
    ]
    path = tmp_path / "in.csv"
    path.write_text("a,b,colour,label,amount\n" + "\n".join(lines) + "\n")
    return path


def test_classification_with_text_columns_one_hot(tmp_path: Path) -> None:
    out = io.StringIO()
    res = learn_csv(
        _csv(tmp_path), target="label", features=["a", "b"], categorical=["colour"], out=out
    )
    assert res["task"] == "classification" and res["model"] == "logistic"
    assert res["metrics"]["accuracy"] > 0.9 and res["learned"] == 3_000
    text = out.getvalue()
    assert "accuracy" in text and "roc_auc" in text and "samples/s" in text


def test_regression_by_default_columns_and_one_metric(tmp_path: Path) -> None:
    res = learn_csv(_csv(tmp_path), target="amount", metric="mae", exact=True, quiet=True)
    assert res["task"] == "regression" and res["model"] == "linear"
    assert list(res["metrics"]) == ["mae", "mae_rolling"]
    assert res["metrics"]["mae_rolling"] < 0.3


def test_lags_add_the_previous_labels(tmp_path: Path) -> None:
    # a label that repeats with period 2 is learnable only from the previous label
    path = tmp_path / "alt.csv"
    path.write_text("x,y\n" + "\n".join(f"1.0,{i % 2}" for i in range(2_000)) + "\n")
    plain = learn_csv(path, target="y", quiet=True)
    lagged = learn_csv(path, target="y", lags=1, quiet=True)
    assert plain["metrics"]["accuracy"] < 0.6 < 0.99 < lagged["metrics"]["accuracy"]


def test_cli_prints_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _csv(tmp_path)
    assert main(["learn", str(path), "--target", "label", "--metric", "accuracy"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "f1" not in printed and "samples/s" in printed


def test_clear_errors(tmp_path: Path) -> None:
    path = _csv(tmp_path)
    with pytest.raises(ConfigError, match="no column 'nope'; its columns are"):
        learn_csv(path, target="nope", quiet=True)
    with pytest.raises(ConfigError, match="'colour' is not numeric.*--categorical"):
        learn_csv(path, target="label", features=["a", "colour"], quiet=True)
    with pytest.raises(ConfigError, match="no such file"):
        learn_csv(tmp_path / "missing.csv", target="label", quiet=True)
    with pytest.raises(ConfigError, match="model 'linear' is for regression"):
        learn_csv(path, target="label", model="linear", quiet=True)
    with pytest.raises(ConfigError, match="do not fit"):
        learn_csv(path, target="amount", metric="accuracy", quiet=True)
    assert main(["learn", str(path)]) != 0  # no --target: an error message, not a traceback


def test_learn_over_a_log_topic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import orjson

    from tidal.io.log import Topic

    rng = np.random.default_rng(1)
    x = rng.normal(size=2_000)
    topic = Topic.create(tmp_path, "sales", partitions=2)
    rows = [orjson.dumps({"x": float(v), "big": bool(v > 0.3)}) for v in x]
    topic.append(0, rows[::2], timestamps=np.arange(0, 2_000, 2))
    topic.append(1, rows[1::2], timestamps=np.arange(1, 2_000, 2))
    topic.close()
    args = ["learn", "--topic", "sales", "--data-dir", str(tmp_path), "--target", "big"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "topic sales: 2,000 rows" in printed and "accuracy" in printed
    with pytest.raises(ConfigError, match="cannot open topic 'nope'"):
        from tidal.cli.learn import learn_topic

        learn_topic(tmp_path, "nope", target="big", quiet=True)
    assert main(["learn", str(tmp_path / "a.csv"), "--topic", "sales", "--target", "y"]) != 0
