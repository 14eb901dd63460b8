"""A data-parallel retrain: two processes train the MLP with torch.distributed (gloo, CPU).

The job replays the history from the log, every rank fits the feature statistics on all of
it, learns its own half of the rows and averages gradients with the other rank each step:
both ranks end with the same weights (their digests match), and the candidate rank 0 wrote
has learned the (non-linear) concept.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tidal import Batch
from tidal.io.log import LogSink
from tidal.ml.learn.catalog import make
from tidal.ml.learn.features import Features
from tidal.ml.learn.retrain_job import DONE_FILE, STATE_FILE, decode_state
from tidal.ml.learn.step import LearnStep

pytest.importorskip("torch")
N = 2_000


def _xor(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(n, 2))
    return x, ((x[:, 0] * x[:, 1]) > 0).astype(np.int64)


@pytest.mark.slow
def test_two_ranks_train_the_mlp_data_parallel(tmp_path: Path) -> None:
    x, y = _xor(N, 0)
    sink = LogSink(tmp_path, "xor", partitions=2, key="k")
    sink.write(Batch({"k": np.arange(N) % 5, "a": x[:, 0], "b": x[:, 1], "y": y}))
    sink.close()
    job = tmp_path / "job"
    job.mkdir()
    settings = {"hidden": [16], "lr": 0.02, "batch_size": 32}
    spec = {
        "id": "dist-1",
        "learner": "mlp",
        "settings": settings,
        "seed": 3,
        "features": Features(numeric=["a", "b"]).params(),
        "target": "y",
        "output": "prediction",
        "metrics": ["accuracy"],
        "window": 1000,
        "weight": None,
        "labels": {"mode": "int", "classes": []},
        "data_dir": str(tmp_path),
        "topic": "xor",
        "starts": {"0": 0, "1": 0},
        "ends": {"0": 10**9, "1": 10**9},
        "history": N,
        "epochs": 4,
        "workers": 2,
        "parent": None,
    }
    (job / "job.json").write_text(json.dumps(spec))
    proc = subprocess.run(
        [sys.executable, "-m", "tidal.ml.learn.retrain_job", str(job)],
        capture_output=True,
        timeout=300,
        check=False,
    )
    errs = "".join(p.read_text() for p in sorted(job.glob("rank*.err")))
    assert proc.returncode == 0, proc.stderr.decode() + errs
    done = json.loads((job / DONE_FILE).read_text())
    assert done["workers"] == 2 and done["rows"] == N
    digests = {p.read_text() for p in job.glob("rank*.digest")}
    assert len(list(job.glob("rank*.digest"))) == 2 and len(digests) == 1  # same weights
    step = LearnStep(
        "c", make("mlp", seed=3, **settings), features=["a", "b"], target="y", metrics=["accuracy"]
    )
    step.restore(decode_state((job / STATE_FILE).read_bytes()))
    xt, yt = _xor(2_000, 1)
    pred = step.learner.predict(
        step.features.transform({"a": xt[:, 0], "b": xt[:, 1]}, update=False)
    )
    assert float((pred == yt).mean()) > 0.9
