"""The closed loop: drift -> retrain on replayed history -> shadow -> promote or reject.

``stream.retrain_loop("model", "logistic", features=[...], target="y", registry=reg,
model="churn", policy=RetrainPolicy(topic="events"))`` adds a :class:`RetrainLoop`. It
serves and learns online like :class:`~tidal.ml.learn.step.LearnStep` (same columns:
``prediction``, ``prediction_score``, prequential metrics; plus ``model_version``), and
around it runs the loop, one candidate at a time::

    serving ──drift on its errors (or every N rows)──▶ training (child process)
       ▲                                                   │ done: register vN, shadow vN
       │ promote vN (it beat serving)                       ▼
       └──────── reject vN (it did not) ◀──────────── shadow: both predict, then learn,
                                                       the same `horizon` rows

1. **Trigger**: a drift detector (``policy.drift``, ADWIN by default) watches the serving
   model's errors (0/1 for classifiers, ``|y - prediction|`` for regressors); or a schedule,
   every ``policy.every`` rows.
2. **Retrain** off the hot path: a child process (:mod:`tidal.ml.learn.retrain_job`)
   replays the last ``policy.history`` rows up to the trigger (the rows'
   ``Batch.partition`` / ``Batch.offset`` say where; the end offsets are fixed at the
   trigger) from the embedded log topic ``policy.topic``, or, with ``policy.pipeline``,
   through the pipeline built again: its source (a Kafka topic, or the log) and the feature
   steps before the loop (:mod:`tidal.runtime.history`), and trains a fresh learner of the
   same kind; with ``policy.workers > 1`` (the MLP)
   data-parallel with ``torch.distributed`` (gloo). The pipeline keeps going meanwhile.
3. **Register**: the candidate's state (arrays, no pickle) becomes the next version of
   ``model`` in the :class:`~tidal.ml.registry.Registry` (lineage: parent version, the
   offsets trained on, the job), and its ``shadow`` stage.
4. **Shadow**: for the next ``policy.horizon`` rows, serving and candidate both predict
   every row before learning it (prequential, on the same rows); the candidate's
   predictions are the ``shadow_prediction`` column.
5. **Promote or reject**: the candidate is promoted through the registry (``promote``: the
   old version goes onto ``previous``, so ``tidal models rollback`` works) and serves from
   the next row if its metric (``accuracy`` or ``mae``) beats serving's by more than
   ``policy.margin``; else it is rejected (its shadow stage cleared).

Every step is a row on the ``events`` side output (``.side("events")``): ``drift``,
``retrain_started``, ``retrain_finished``, ``retrain_failed``, ``registered``,
``shadow_score``, ``promoted``, ``rejected`` (and ``loaded`` when serving starts from the
registry's production version), with ``row`` (the step's row count), ``version``,
``candidate``, ``serving_metric`` / ``candidate_metric`` and a JSON ``detail``; and counters
``<step>.drifts``, ``.retrains``, ``.promotions``, ``.rejections``.

The job runs ``python -m tidal.ml.learn.retrain_job JOB_DIR`` with the pipeline's environment
plus ``TIDAL_RETRAIN_JOB=<job id>``; with ``policy.pipeline`` it builds the pipeline again
from there (so its Kafka settings, secrets included, come from the user's code and the
environment, never from the job's files or command line; decision 0055).

**Exactly-once**: the serving and candidate learners, the detector, the phase, the job and
the shadow sums are in the step's snapshot (arrays and JSON), so in every checkpoint. A job
that was running at a crash is adopted if it finished, else run again (it is deterministic);
registering is idempotent (a version records its job id), and so is promoting the same
version, so a restore mid-loop never registers or promotes twice or loses the serving
version. With ``policy.adopt_after`` the candidate enters shadow exactly that many rows
after the trigger (the step waits for the job there if it is not done), so results do not
depend on timing; without it, the candidate is picked up at the first batch after the job
ends (never waiting).

Example:
    >>> RetrainPolicy(topic="events", history=2_000, horizon=500).metric is None
    True
    >>> RetrainPolicy(topic="events", drift=None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tidal.errors.ConfigError: a retrain policy needs a trigger: drift='adwin' (...) and/or...
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tidal.core.batch import Array, Batch
from tidal.core.operator import Context, Emit, Operator
from tidal.errors import ConfigError, PipelineError, StateError
from tidal.ml.learn.features import Features
from tidal.ml.learn.retrain_job import (
    DONE_FILE,
    JOB_FILE,
    STATE_FILE,
    decode_state,
    write_atomic,
)
from tidal.ml.learn.retrain_policy import EVENT_COLUMNS, RetrainPolicy, events_batch
from tidal.ml.learn.step import LearnStep
from tidal.ml.registry import Lineage, Registry

__all__ = ["EVENT_COLUMNS", "FORMAT", "RetrainLoop", "RetrainPolicy"]

FORMAT = "tidal-learn-step/1"
"""What a registry version written by the loop records as ``lineage.extra["format"]``."""

_STATE_KIND = "retrain-loop/1"
_RECENT = 100
"""Rows before a drift whose error is compared with the error since the previous drift: a
drift triggers a retrain only where the error got worse. A detector that tests once per
block of ``clock`` values (ADWIN) compares the last block instead where it is longer (in the
drift's batch): at thousands of rows a second, 100 rows are too few to say which way the
error moved."""


def _unlabeled(y: Array) -> Array:
    if y.dtype.kind == "f":
        return ~np.isfinite(y)
    if y.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and v != v) for v in y.tolist()], bool)
    return np.zeros(len(y), dtype=bool)


class RetrainLoop(Operator):
    """Serve and learn online, and retrain -> shadow -> promote on drift (see the module doc).

    Args:
        name: the step's name (keys its state, counters and jobs).
        learner: a learner name from :data:`tidal.ml.learn.LEARNERS` (the child process
            builds candidates by name).
        features: numeric feature columns, or a :class:`Features` spec.
        target: the label column.
        registry: the model registry (or its directory).
        model: the model's name in the registry.
        policy: the :class:`RetrainPolicy`.
        settings: keyword settings of the learner (JSON values).
        output, metrics, window, weight: as for :class:`~tidal.ml.learn.step.LearnStep`.
        seed: seeds the learners and the detector.

    Raises:
        ConfigError: for a learner that is not a name, or unknown settings.
    """

    outputs = ("main", "events")

    def __init__(  # noqa: PLR0913 - keyword settings
        self,
        name: str,
        learner: str,
        *,
        features: Sequence[str] | Features,
        target: str,
        registry: Registry | str | os.PathLike[str],
        model: str,
        policy: RetrainPolicy,
        settings: Mapping[str, Any] | None = None,
        output: str = "prediction",
        metrics: Sequence[str] | None = None,
        window: int = 1000,
        weight: str | None = None,
        seed: int = 0,
    ) -> None:
        from tidal.ml.detect.catalog import make_drift

        super().__init__(name)
        if not isinstance(learner, str):
            msg = (
                f"step {name!r}: the retrain loop builds candidates in another process, so it "
                f"takes a learner name (e.g. 'logistic') and settings=..., not {learner!r}"
            )
            raise ConfigError(msg)
        feats = features if isinstance(features, Features) else Features(numeric=features)
        self.spec: dict[str, Any] = {
            "learner": learner,
            "settings": json.loads(json.dumps(dict(settings or {}))),
            "seed": seed,
            "features": feats.params(),
            "target": target,
            "output": output,
            "metrics": None if metrics is None else list(metrics),
            "window": window,
            "weight": weight,
        }
        self.registry = registry if isinstance(registry, Registry) else Registry(registry)
        self.model = model
        self.registry.stages_path(model)  # checks the name
        self.policy = policy
        self.serving = self._new_step(name)
        task = self.serving.task
        if task not in ("classification", "regression"):
            msg = f"step {name!r}: the retrain loop serves classifiers and regressors, not {task}"
            raise ConfigError(msg)
        self.metric = policy.metric or ("accuracy" if task == "classification" else "mae")
        if (self.metric == "accuracy") != (task == "classification"):
            msg = f"step {name!r}: metric {self.metric!r} does not fit a {task} learner"
            raise ConfigError(msg)
        self.detector = (
            make_drift(policy.drift, seed=seed, settings=policy.drift_settings)
            if policy.drift
            else None
        )
        clock = 0 if self.detector is None else self.detector.params().get("clock", 0)
        self._recent = max(_RECENT, int(clock))
        root = policy.workdir or self.registry.root / model / ".jobs"
        self.workdir = Path(root)
        self.candidate: LearnStep | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.restored = False
        self.pending: list[dict[str, Any]] = []
        self.st: dict[str, Any] = {
            "nonce": uuid.uuid4().hex[:8],
            "phase": "serving",
            "rows": 0,
            "seq": 0,
            "last": 0,  # row of the last trigger or decision (schedule, cooldown)
            "serving_version": None,
            "job": None,
            "shadow": [0, 0, 0.0, 0.0],
            "ends": {},
            "err": [0.0, 0],
        }

    # -- building ---------------------------------------------------------------------------
    def _new_step(self, name: str) -> LearnStep:
        from tidal.ml.learn.catalog import make

        s = self.spec
        return LearnStep(
            name,
            make(s["learner"], seed=s["seed"], **s["settings"]),
            features=Features(**s["features"]),
            target=s["target"],
            output=s["output"],
            metrics=s["metrics"],
            window=s["window"],
            weight=s["weight"],
        )

    def open(self, ctx: Context) -> None:
        """Start serving; without a restored state, from the registry's production version."""
        super().open(ctx)
        self.serving.ctx = ctx
        if self.restored:
            return
        prod = self.registry.stages(self.model).production if self._has_model() else None
        if prod is not None:
            got = self.registry.get(self.model, prod)
            if got.lineage.extra.get("format") == FORMAT:
                self.serving.restore(decode_state(got.file.read_bytes()))
                self.st["serving_version"] = prod
                self.pending.append({"event": "loaded", "row": 0, "version": prod})

    def _has_model(self) -> bool:
        return self.model in self.registry.models()

    # -- the stream ---------------------------------------------------------------------------
    def process(self, batch: Batch, port: int) -> Emit:
        """Serve, learn and score the batch; run the loop's transitions at their rows."""
        if batch.offset is None or batch.partition is None:
            msg = (
                f"step {self.name!r}: the retrain loop replays history by offsets, so its rows "
                "must carry partitions and offsets: read the stream with a LogSource or a "
                "KafkaSource and put no step that drops them before this one"
            )
            raise PipelineError(msg)
        events, self.pending = self.pending, []
        emit: Emit = []
        n, start = len(batch), 0
        if self.policy.adopt_after is None:
            self._poll(events, wait=False)
        while True:
            self._transitions(events)
            if start >= n:
                break
            limit = self._until_boundary()
            stop = n if limit is None else min(n, start + limit)
            seg = batch.slice(start, stop)
            emit.append((0, self._segment(seg, events)))
            start = stop
        if events:
            emit.append((1, self._events(events)))
        return emit

    def _until_boundary(self) -> int | None:
        st, pol = self.st, self.policy
        if st["phase"] == "shadow":
            return int(pol.horizon - st["shadow"][0])
        if st["phase"] == "collecting":
            return int(st["job"]["start_at"] - st["rows"])
        if st["phase"] == "training" and pol.adopt_after is not None:
            return int(st["job"]["adopt_at"] - st["rows"])
        if st["phase"] == "serving":  # a trigger inside a segment must not pass its next row
            step = min(pol.adopt_after or pol.collect or 8192, pol.collect or 8192)
            return max(int(step), 1)
        return None

    def _transitions(self, events: list[dict[str, Any]]) -> None:
        st = self.st
        if st["phase"] == "collecting" and st["job"]["start_at"] == st["rows"]:
            self._start(events)
        if st["phase"] == "training" and st["job"]["adopt_at"] == st["rows"]:
            self._poll(events, wait=True)
        if st["phase"] == "shadow" and st["shadow"][0] >= self.policy.horizon:
            self._decide(events)

    def _segment(self, seg: Batch, events: list[dict[str, Any]]) -> Batch:
        st = self.st
        out = self.serving.learn(seg)
        y = seg[self.spec["target"]]
        labeled = ~_unlabeled(y)
        score = self._score(out[self.spec["output"]], y, labeled)
        version = st["serving_version"]
        cols: dict[str, Any] = {
            "model_version": np.full(len(seg), "online" if version is None else f"v{version}")
        }
        if self.candidate is not None:
            cand = self.candidate.learn(seg)
            cscore = self._score(cand[self.spec["output"]], y, labeled)
            sh = st["shadow"]  # rows, labeled rows, serving's sum, candidate's sum
            sh[0] += len(seg)
            sh[1] += int(labeled.sum())
            sh[2] += float(score[labeled].sum())
            sh[3] += float(cscore[labeled].sum())
            cols["shadow_prediction"] = cand[self.spec["output"]]
            cols["shadow_model_version"] = np.full(len(seg), f"v{st['job']['version']}")
            self.ctx.gauge(f"{self.name}.shadow.serving_{self.metric}", sh[2] / max(sh[1], 1))
            self.ctx.gauge(f"{self.name}.shadow.candidate_{self.metric}", sh[3] / max(sh[1], 1))
        trigger = self._trigger(seg, score, labeled, events)
        if trigger is not None:
            row, reason = trigger
            self._trigger_at(
                reason, st["rows"] + row + 1, self._ends(seg.slice(0, row + 1), dict(st["ends"]))
            )
        st["ends"] = self._ends(seg, st["ends"])
        st["rows"] += len(seg)
        if st["phase"] == "collecting" and st["job"]["start_at"] <= st["rows"]:
            self._start(events)
        return out.with_columns(**cols)

    def _score(self, pred: Array, y: Array, labeled: Array) -> Array:
        """Per row: 1/0 correct (accuracy) or the absolute error (mae); 0 where unlabeled."""
        out = np.zeros(len(y))
        if not labeled.any():
            return out
        if self.metric == "accuracy":
            out[labeled] = np.asarray(pred[labeled] == y[labeled], dtype=bool)
        else:
            out[labeled] = np.abs(np.asarray(pred[labeled], float) - np.asarray(y[labeled], float))
        return out

    def _trigger(
        self, seg: Batch, score: Array, labeled: Array, events: list[dict[str, Any]]
    ) -> tuple[int, str] | None:
        st, pol = self.st, self.policy
        rows0 = st["rows"]
        found: list[tuple[int, str]] = []
        if self.detector is not None and labeled.any():
            idx = np.flatnonzero(labeled)
            err = 1.0 - score[idx] if self.metric == "accuracy" else score[idx]
            drifts = self.detector.update(err, np.zeros(len(idx), dtype=np.int64))
            at = np.flatnonzero(drifts.drift)
            self.ctx.count(f"{self.name}.drifts", len(at))
            cs = np.cumsum(err)
            base = st["err"]  # errors since the last drift: [sum, count]
            for j in at.tolist():
                recent = float(err[max(0, j - self._recent + 1) : j + 1].mean())
                before = float((base[0] + cs[j]) / (base[1] + j + 1))
                worse = bool(recent > before)
                detail = {"detector": pol.drift, "worse": worse, "recent_error": recent}
                events.append({"event": "drift", "row": rows0 + int(idx[j]) + 1, "detail": detail})
                if worse:  # an error rate that fell is no reason to retrain
                    found.append((int(idx[j]), "drift"))
                base[0], base[1] = -float(cs[j]), -(j + 1)
            base[0] += float(cs[-1])
            base[1] += len(err)
        if pol.every is not None:
            due = st["last"] + pol.every - rows0 - 1
            if 0 <= due < len(seg):
                found.append((due, "schedule"))
        if st["phase"] != "serving":
            return None
        ok = [f for f in found if rows0 + f[0] + 1 >= st["last"] + pol.cooldown]
        return min(ok) if ok else None

    @staticmethod
    def _ends(seg: Batch, ends: dict[str, int]) -> dict[str, int]:
        assert seg.partition is not None and seg.offset is not None
        if len(seg):
            order = np.lexsort((seg.offset, seg.partition))
            part, off = seg.partition[order], seg.offset[order]
            last = np.r_[part[1:] != part[:-1], True]
            for p, o in zip(part[last].tolist(), off[last].tolist(), strict=True):
                ends[str(p)] = max(ends.get(str(p), 0), int(o) + 1)
        return ends

    # -- the job ------------------------------------------------------------------------------
    def _job_dir(self) -> Path:
        return self.workdir / str(self.st["job"]["id"])

    def _trigger_at(self, reason: str, row: int, ends: dict[str, int]) -> None:
        """A drift or the schedule at ``row``: collect ``policy.collect`` rows, or start now."""
        st = self.st
        st["seq"] += 1
        wait = self.policy.collect if reason == "drift" else 0
        st["job"] = {
            "id": f"{self.name}-{st['nonce']}-{st['seq']}",
            "row": row,
            "reason": reason,
            "start_at": row + wait,
            "ends": ends,
            "version": None,
        }
        st["phase"], st["last"] = "collecting", row

    def _start(self, events: list[dict[str, Any]]) -> None:
        """Start the job: its history ends with the rows seen so far."""
        st, pol = self.st, self.policy
        job, row = st["job"], st["rows"]
        ends = job["ends"] if job["start_at"] == job["row"] else dict(st["ends"])
        job["starts"] = {p: max(0, e - pol.history) for p, e in ends.items()}
        job["ends"] = ends
        job["adopt_at"] = None if pol.adopt_after is None else row + pol.adopt_after
        reason = job["reason"]
        st["phase"], st["last"] = "training", row
        self._launch()
        self.ctx.count(f"{self.name}.retrains", 1)
        detail = {"reason": reason, "history": pol.history, "workers": pol.workers}
        events.append(
            {"event": "retrain_started", "row": row, "job": st["job"]["id"], "detail": detail}
        )

    def _launch(self) -> None:
        job, pol = self.st["job"], self.policy
        folder = self._job_dir()
        folder.mkdir(parents=True, exist_ok=True)
        spec = {
            **self.spec,
            "id": job["id"],
            "labels": self.serving.labels.snapshot(),
            "data_dir": None if pol.data_dir is None else str(pol.data_dir),
            "topic": pol.topic,
            "pipeline": pol.pipeline,
            "step": self.name,
            "starts": job["starts"],
            "ends": job["ends"],
            "history": pol.history,
            "epochs": pol.epochs,
            "workers": pol.workers,
            "prepare": pol.prepare,
            "parent": os.getpid(),
        }
        if not (folder / DONE_FILE).exists():
            write_atomic(folder / JOB_FILE, json.dumps(spec).encode())
            with open(folder / "stderr.txt", "wb") as err:
                self.proc = subprocess.Popen(  # noqa: S603 - our own module, no shell
                    [sys.executable, "-m", "tidal.ml.learn.retrain_job", str(folder)],
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    env={**os.environ, "TIDAL_RETRAIN_JOB": str(job["id"])},
                )

    def _poll(self, events: list[dict[str, Any]], *, wait: bool) -> None:
        """Adopt the job's candidate if it is done (``wait``: wait for it first)."""
        if self.st["phase"] != "training":
            return
        folder = self._job_dir()
        if not (folder / DONE_FILE).exists():
            if self.proc is None:  # restored: the job's process died with the old one
                self._launch()
            if self.proc is not None and (wait or self.proc.poll() is not None):
                self.proc.wait()
        if (folder / DONE_FILE).exists():
            self.proc = None
            self._adopt(events)
        elif self.proc is not None and self.proc.poll() is not None:
            self._fail(events, self.proc.returncode)

    def _fail(self, events: list[dict[str, Any]], code: int | None) -> None:
        err = (self._job_dir() / "stderr.txt").read_text(errors="replace")[-400:]
        events.append(
            {
                "event": "retrain_failed",
                "row": self.st["rows"],
                "job": self.st["job"]["id"],
                "detail": {"exit": code, "stderr": err},
            }
        )
        self.proc = None
        self.st.update(phase="serving", job=None, last=self.st["rows"])

    def _adopt(self, events: list[dict[str, Any]]) -> None:
        st, folder = self.st, self._job_dir()
        job = st["job"]
        done = json.loads((folder / DONE_FILE).read_text())
        events.append(
            {"event": "retrain_finished", "row": st["rows"], "job": job["id"], "detail": done}
        )
        version = self._register(job, done, folder / STATE_FILE)
        job["version"] = version
        events.append(
            {"event": "registered", "row": st["rows"], "job": job["id"], "candidate": version}
        )
        if self.registry.stages(self.model).production != version:  # (promoted before a crash)
            self.registry.shadow(self.model, version)
        cand = self._new_step(f"{self.name}.candidate")
        cand.restore(decode_state((folder / STATE_FILE).read_bytes()))
        self.candidate = cand
        st["phase"], st["shadow"] = "shadow", [0, 0, 0.0, 0.0]

    def _register(self, job: dict[str, Any], done: dict[str, Any], state: Path) -> int:
        if self._has_model():
            for v in self.registry.versions(self.model):
                if v.lineage.extra.get("job") == job["id"]:
                    return v.version  # registered before a crash: not again
        lineage = Lineage(
            parent=self.st["serving_version"],
            data_range=(json.dumps(job["starts"]), json.dumps(job["ends"])),
            extra={
                "job": job["id"],
                "format": FORMAT,
                "learner": self.spec["learner"],
                "trigger": job["reason"],
                "topic": self.policy.topic,
                "pipeline": self.policy.pipeline,
                "drift": None if self.detector is None else self.detector.params(),
            },
        )
        metrics = {**done.get("metrics", {}), "rows": done.get("rows")}
        return self.registry.register(
            state, name=self.model, metrics=metrics, lineage=lineage
        ).version

    def _decide(self, events: list[dict[str, Any]]) -> None:
        st, pol = self.st, self.policy
        _, n, s_sum, c_sum = st["shadow"]
        serving, cand = s_sum / max(n, 1), c_sum / max(n, 1)
        version = st["job"]["version"]
        better = (
            cand > serving + pol.margin
            if self.metric == "accuracy"
            else cand < serving - pol.margin
        )
        better = better and n > 0
        common = {
            "job": st["job"]["id"],
            "row": st["rows"],
            "version": st["serving_version"],
            "candidate": version,
            "serving_metric": serving,
            "candidate_metric": cand,
        }
        events.append(
            {"event": "shadow_score", **common, "detail": {"metric": self.metric, "rows": n}}
        )
        if better:
            assert self.candidate is not None
            self.registry.promote(self.model, version)  # idempotent for the same version
            self.candidate.name, self.candidate.ctx = self.name, self.ctx
            self.serving, st["serving_version"] = self.candidate, version
            self.ctx.count(f"{self.name}.promotions", 1)
            events.append({"event": "promoted", **common})
        else:
            if self.registry.stages(self.model).shadow == version:
                self.registry.shadow(self.model, None)
            self.ctx.count(f"{self.name}.rejections", 1)
            events.append({"event": "rejected", **common})
        self.candidate = None
        st.update(phase="serving", job=None, last=st["rows"], shadow=[0, 0, 0.0, 0.0])

    def _events(self, events: list[dict[str, Any]]) -> Batch:
        return events_batch(self.name, events)

    # -- state --------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Serving and candidate learners, detector, phase, job and shadow sums."""
        return {
            "kind": _STATE_KIND,
            "params": self._params(),
            "loop": json.loads(json.dumps(self.st)),
            "serving": self.serving.snapshot(),
            "candidate": None if self.candidate is None else self.candidate.snapshot(),
            "detector": None if self.detector is None else self.detector.snapshot(),
        }

    def _params(self) -> dict[str, Any]:
        return {"spec": json.loads(json.dumps(self.spec)), "model": self.model}

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`; a running job is adopted or run again.

        Raises:
            StateError: if the snapshot is another step's or of other settings.
        """
        if snap.get("kind") != _STATE_KIND or snap.get("params") != self._params():
            msg = (
                f"step {self.name!r}: the snapshot is of a retrain loop with "
                f"{snap.get('params')}, this one has {self._params()}; rename the step to "
                "start afresh"
            )
            raise StateError(msg)
        self.st = json.loads(json.dumps(snap["loop"]))
        self.serving.restore(snap["serving"])
        self.candidate = None
        if snap.get("candidate") is not None:
            self.candidate = self._new_step(f"{self.name}.candidate")
            self.candidate.restore(snap["candidate"])
        if self.detector is not None and snap.get("detector") is not None:
            self.detector.restore(snap["detector"])
        self.proc, self.restored = None, True

    def close(self) -> None:
        """Stop a job that is still running (its result would have no one to adopt it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()
        self.proc = None
