"""The evaluation set is deterministic and the NAB-style score rewards early alerts."""

from __future__ import annotations

import numpy as np

from tidal.ml.detect.evalset import Series, evaluation_set, score_alerts


def test_the_set_is_the_same_for_the_same_seed() -> None:
    a, b = evaluation_set(), evaluation_set()
    for s, t in zip(a, b, strict=True):
        np.testing.assert_array_equal(s.x, t.x)
        np.testing.assert_array_equal(s.time, t.time)
        assert s.windows == t.windows
    assert not np.array_equal(evaluation_set(1)[0].x, a[0].x)
    names = {s.name for s in a}
    assert {"drift", "drift_seasonal", "seasonal_wrong_time", "missing", "irregular"} <= names
    irregular = next(s for s in a if s.name == "irregular")
    assert len(np.unique(np.diff(irregular.time))) > 100


def _one(alerts: list[int], windows: list[tuple[int, int]], n: int = 1000) -> float:
    s = Series("s", np.arange(n), np.zeros(n), windows)
    flag = np.zeros(n, dtype=bool)
    flag[alerts] = True
    return score_alerts([(s, flag)]).nab


def test_early_beats_late_and_false_alerts_cost() -> None:
    w = [(100, 200), (500, 600)]
    assert _one([100, 500], w) == 100.0
    assert _one([], w) == 0.0
    early, late = _one([110, 510], w), _one([180, 580], w)
    assert 100 > early > late > 0
    assert _one([100, 500, 800], w) < 100.0
    assert _one([100, 150, 500], w) == 100.0  # a second alert in a window is not penalized
    r = score_alerts(
        [(Series("s", np.arange(10), np.zeros(10), [(2, 5)]), np.eye(1, 10, 7, dtype=bool)[0])]
    )
    assert r.precision == 0.0 and r.recall == 0.0 and r.false_alerts == 1
