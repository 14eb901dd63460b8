"""The window scoring operator and the SQL OVER-window detector, on the local mini-cluster."""

from __future__ import annotations

import numpy as np
import pytest
from flink_env import require_pyflink, stream_env  # noqa: E402

from tidal.flink.core import KeyedDetector, Scorer, logistic_onnx
from tidal.ml.onnx import OnnxHandler

require_pyflink()
pytestmark = pytest.mark.slow

MODEL = logistic_onnx([0.7, -1.3], 0.2, output="p")


def test_score_window_function_equals_tidal() -> None:
    from pyflink.common import Row, Types
    from pyflink.datastream.window import CountTumblingWindowAssigner

    from tidal.flink.datastream import ScoreWindowFunction, with_score

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=60), rng.normal(size=60)
    rows = Types.ROW_NAMED(
        ["id", "k", "a", "b"], [Types.LONG(), Types.STRING(), Types.DOUBLE(), Types.DOUBLE()]
    )
    data = [Row(i, f"k{i % 3}", float(a[i]), float(b[i])) for i in range(60)]
    env = stream_env()
    fn = ScoreWindowFunction(
        OnnxHandler(MODEL, version="v2"),
        features=["a", "b"],
        fields=rows.get_field_names(),
        output="p",
    )
    out = (
        env.from_collection(data, type_info=rows)
        .key_by(lambda r: r[1], Types.STRING())
        .window(CountTumblingWindowAssigner.of(5))
        .process(fn, with_score(rows, "p"))
    )
    got = sorted(out.execute_and_collect(), key=lambda r: r[0])
    scorer = Scorer(OnnxHandler(MODEL, version="v2"))
    scorer.open()
    want = scorer.score([a, b])["score"]  # the model's first output, under "score"
    assert [r[0] for r in got] == list(range(60))
    np.testing.assert_array_equal([r["p"] for r in got], want)
    assert {r["model_version"] for r in got} == {"v2"}


def test_detect_over_scores_each_row_against_its_window() -> None:
    import sys

    from pyflink.table import EnvironmentSettings, TableEnvironment

    from tidal.flink.table import detect_over

    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("parallelism.default", "1")
    t_env.get_config().set("python.executable", sys.executable)
    t_env.create_temporary_function("detect", detect_over("median_mad", output="deviation"))
    x = np.r_[np.sin(np.arange(200) / 4.0), 9.0, np.sin(np.arange(201, 220) / 4.0)]
    t_env.create_temporary_view(
        "s",
        t_env.from_elements([(i, float(v)) for i, v in enumerate(x)], ["i", "v"]),
    )
    t = t_env.sql_query(
        "SELECT i, detect(v) OVER (ORDER BY pt ROWS BETWEEN 149 PRECEDING AND CURRENT ROW) "
        "FROM (SELECT i, v, PROCTIME() AS pt FROM s)"
    )
    got = {int(r[0]): float(r[1]) for r in t.execute().collect()}
    assert sorted(got) == list(range(len(x)))
    for i in (150, 200, 210):  # each row: a fresh detector over its window of 150 rows
        cols, _ = KeyedDetector("median_mad").score(None, x[max(0, i - 149) : i + 1])
        assert got[i] == float(cols["deviation"][-1])
    assert got[200] > 5 > max(got[i] for i in range(150, 200))
