"""A running pipeline's live figures: :class:`LiveRun`, the observer behind every view.

The executor hands :class:`LiveRun` each micro-batch's figures (see
:mod:`tidal.observe.hook`); it keeps them under one lock and serves three readers:

* :mod:`tidal.observe.prometheus` renders them as Prometheus metrics on ``/metrics``;
* :mod:`tidal.observe.web` pushes :meth:`LiveRun.snapshot` to the dashboard (server-sent
  events);
* ``tidal top`` reads the same snapshot from the run's live file,
  ``<data dir>/live/<pipeline>.json``, which :class:`LiveRun` rewrites once a second.

Cheap per batch: the step figures arrive summed, the latencies are bucketed with one
``searchsorted``; what costs more (consumer lag, model stats, counters, dead letters, the
live file) is read at most every ``refresh`` seconds and once more at the end, so the final
figures equal the run's :class:`~tidal.observe.summary.RunSummary`.

Example:
    >>> from tidal.testing import MemorySink, MemorySource, run
    >>> from tidal import Pipeline
    >>> p = Pipeline("double")
    >>> out = MemorySink()
    >>> p.source("in", MemorySource([{"x": i} for i in range(5)])).map(
    ...     "twice", lambda b: b.with_columns(x=b["x"] * 2)).sink("out", out)
    >>> live = LiveRun()
    >>> summary = run(p, observer=live)
    >>> snap = live.snapshot()
    >>> snap["events"], snap["steps"]["twice"]["in"], snap["steps"]["out"]["in"]
    (5, 5, 5)
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tidal.core.batch import Array, Batch
from tidal.core.watermark import MAX_TIME, MIN_TIME
from tidal.observe.buckets import (
    BATCH_ROWS,
    CHECKPOINT_SECONDS,
    LATENCY_SECONDS,
    STEP_SECONDS,
    Buckets,
    FineToCoarse,
)
from tidal.observe.hook import BATCHES, LATE, ROWS_IN, ROWS_OUT, SECONDS, ObservedRun, StepTally
from tidal.observe.metrics import LatencyHistogram
from tidal.observe.summary import RunSummary

__all__ = ["LiveRun", "live_file", "reason_kind"]

_REASONS_PER_STEP = 20
_KEEP_DEAD = 10
_KEEP_ALERTS = 20
_SERIES = 180
_LAG_EVERY_S = 2.0
"""Consumer lag is read at most this often (the embedded log reads each partition's end)."""


def live_file(data_dir: str | os.PathLike[str], pipeline: str) -> Path:
    """Where a run of ``pipeline`` publishes its live figures for ``tidal top``.

    Example:
        >>> live_file(".tidal", "demo").as_posix()
        '.tidal/live/demo.json'
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", pipeline)
    return Path(data_dir) / "live" / f"{safe}.json"


def reason_kind(reason: str) -> str:
    """A dead letter's reason without its values: a label of few distinct values.

    Example:
        >>> reason_kind("line 3: expected a number in 'value', got 'abc'")
        'expected a number in _, got _'
    """
    text = re.sub(r"^(line|row|offset|record) \d+: ", "", reason)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "_", text)
    text = re.sub(r"-?\d+(\.\d+)?(e-?\d+)?", "N", text)
    return text[:80]


def _version_number(v: Any) -> float | None:
    m = re.search(r"\d+(\.\d+)?", str(v))
    return float(m.group()) if m else None


def _jsonable(rec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in rec.items():
        if isinstance(v, float | int | bool | str) or v is None:
            out[k] = v if not isinstance(v, float) or np.isfinite(v) else None
        else:
            out[k] = str(v)[:200]
    return out


class LiveRun:
    """Observes a run (pass it as ``Executor(observer=...)``) and keeps its live figures.

    Args:
        refresh: seconds between reads of what costs more than a batch's figures
            (model stats, counters, dead letters, the live file; consumer lag every 2 s).
        live_path: the live file for ``tidal top`` (``None``: none); see :func:`live_file`.
        alert_sinks: sinks whose last records are shown as alerts (default: the sinks whose
            name starts with ``alert``).
        ui: the dashboard's address, written into the live file (without its token).
        clock: wall-clock seconds (``time.time``), for tests.

    Attributes:
        lock: held while the figures change and while a reader copies them.
    """

    def __init__(
        self,
        *,
        refresh: float = 0.5,
        live_path: str | os.PathLike[str] | None = None,
        alert_sinks: tuple[str, ...] | None = None,
        ui: str | None = None,
        clock: Any = time.time,
    ) -> None:
        self.refresh = refresh
        self.live_path = None if live_path is None else Path(live_path)
        self.alert_sinks = alert_sinks
        self.ui = ui
        self.clock = clock
        self.lock = threading.Lock()
        self.run: ObservedRun | None = None
        self.pipeline = ""
        self.state = "starting"
        self.started = clock()
        self.graph: dict[str, Any] = {"nodes": [], "edges": []}
        self.steps: dict[str, list[Any]] = {}
        self.step_seconds: dict[str, Buckets] = {}
        self.step_rows: dict[str, Buckets] = {}
        self.sources: dict[str, dict[str, Any]] = {}
        self.latency: dict[str, Buckets] = {}
        self.events = 0
        self.counters: dict[str, int] = {}
        self.gauges: dict[str, float] = {}
        self.dead_count = 0
        self.dead_by: dict[tuple[str, str], int] = {}
        self.dead_recent: deque[dict[str, Any]] = deque(maxlen=_KEEP_DEAD)
        self.checkpoint: dict[str, Any] = {
            "count": 0, "failures": 0, "last_id": None, "last_seconds": None,
            "last_bytes": None, "last_at": None,
        }  # fmt: skip
        self.checkpoint_seconds = Buckets(CHECKPOINT_SECONDS)
        self.models: dict[str, dict[str, Any]] = {}
        self.model_history: deque[dict[str, Any]] = deque(maxlen=50)
        self.alerts_recent: deque[dict[str, Any]] = deque(maxlen=_KEEP_ALERTS)
        self._alerts_pending: list[dict[str, Any]] = []
        self._transactional: set[str] = set()
        self.series: deque[dict[str, Any]] = deque(maxlen=_SERIES)
        self._hist_marks: deque[tuple[float, Array]] = deque(maxlen=12)
        self._model_ops: dict[str, Any] = {}
        self._alert_sink_names: tuple[str, ...] = ()
        self._coarse = FineToCoarse(LATENCY_SECONDS)
        self._fine_seen: Array | None = None
        self._next_refresh = 0.0
        self._next_lag = 0.0
        self._summary: RunSummary | None = None

    # -- the observer hook ------------------------------------------------------------------
    def on_open(self, run: ObservedRun) -> None:
        """Learn the graph; the figures start from the run's restored state."""
        tally = run.tally
        nodes: list[dict[str, Any]] = []
        edges: list[dict[str, Any]] = []
        alert_sinks: list[str] = []
        for name, node in run.pipeline.nodes.items():
            kind = "source" if node.source is not None else "sink" if node.sink else "op"
            what = node.source or node.sink or node.op
            nodes.append({"name": name, "kind": kind, "type": type(what).__name__})
            edges.extend({"from": up.name, "to": name, "port": port} for up, port in node.inputs)
            if node.op is not None and "late" in node.op.outputs and tally is not None:
                tally.late_ports[name] = node.op.outputs.index("late")
            if node.op is not None and callable(getattr(node.op, "stats", None)):
                self._model_ops[name] = node.op
            if node.sink is not None:
                wanted = self.alert_sinks
                if (wanted is None and name.startswith("alert")) or (wanted and name in wanted):
                    alert_sinks.append(name)
                    if callable(getattr(node.sink, "prepare", None)):
                        self._transactional.add(name)
        self._alert_sink_names = tuple(alert_sinks)
        if tally is not None:
            tally.keep_sinks = frozenset(alert_sinks)
        with self.lock:
            self.run = run
            self.pipeline = run.pipeline.name
            self.graph = {"nodes": nodes, "edges": edges}
            for n in nodes:
                self.steps.setdefault(n["name"], [0, 0, 0, 0.0, 0])
            for s in run.sources:
                name = s.node.name
                self.latency[name] = Buckets(LATENCY_SECONDS)
                self.sources[name] = {
                    "records": 0, "watermark_ms": None, "watermark_lag_s": None,
                    "partitions": len(tuple(s.tracker.partitions)), "idle_partitions": 0,
                    "consumer_lag": None, "lag_by_partition": {},
                }  # fmt: skip
            self.state = "running"
            self.started = self.clock()
            self.restored_from = run.restored_from
        hist = getattr(run, "hist", None)
        if hist is not None:
            self._fine_seen = np.array(hist.counts, copy=True)
        self._refresh(force=True)

    def on_batch(self, source: str, latency_ns: Array | None, tally: StepTally) -> None:
        """Add a source batch's figures (the step tally, the latencies)."""
        steps = tally.take()
        sinks = tally.sink_rows
        alerts = self._alert_records(sinks) if sinks else None
        if sinks:
            tally.sink_rows = {}
        run = self.run
        with self.lock:
            self._absorb(steps)
            src = self.sources.get(source)
            if latency_ns is not None and src is not None:
                n = len(latency_ns)
                src["records"] += n
                self.steps[source][ROWS_OUT] += n
                self.events += n
                self._add_latency(source, latency_ns, run)
            if alerts:
                self._add_alerts(alerts)
        if run is not None and time.monotonic() >= self._next_refresh:
            self._refresh()

    def _absorb(self, steps: dict[str, list[Any]]) -> None:
        for name, fig in steps.items():
            mine = self.steps.get(name)
            if mine is None:
                mine = self.steps[name] = [0, 0, 0, 0.0, 0]
            for i in (BATCHES, ROWS_IN, ROWS_OUT, SECONDS, LATE):
                mine[i] += fig[i]
            hist = self.step_seconds.get(name)
            if hist is None:
                hist = self.step_seconds[name] = Buckets(STEP_SECONDS)
                self.step_rows[name] = Buckets(BATCH_ROWS)
            hist.observe(fig[SECONDS])
            if fig[ROWS_IN]:
                self.step_rows[name].observe(fig[ROWS_IN])

    def _add_latency(self, source: str, latency_ns: Array, run: ObservedRun | None) -> None:
        """Bucket a batch's latencies: from the executor's histogram when it has one."""
        hist = None if run is None else getattr(run, "hist", None)
        counts = None if hist is None else getattr(hist, "counts", None)
        if counts is None or self._fine_seen is None:
            self.latency[source].observe_many(latency_ns * 1e-9)
            return
        fine = counts - self._fine_seen  # what the executor recorded since the last batch
        self._fine_seen = counts.copy()
        total = float(latency_ns.sum()) * 1e-9
        self.latency[source].add_counts(self._coarse.regroup(fine), total)

    def on_checkpoint(self, checkpoint_id: int, seconds: float, size: int) -> None:
        """Count a checkpoint (``size`` -1: it failed); committed alerts become visible."""
        with self.lock:
            c = self.checkpoint
            if size < 0:
                c["failures"] += 1
                return
            c["count"] += 1
            c.update(last_id=checkpoint_id, last_seconds=seconds, last_bytes=size)
            c["last_at"] = self.clock()
            self.checkpoint_seconds.observe(seconds)
            for rec in self._alerts_pending:
                rec["shown_at"] = c["last_at"]
                self.alerts_recent.append(rec)
            self._alerts_pending = []

    def on_close(self, summary: RunSummary) -> None:
        """The run ended: take the final figures."""
        self._summary = summary
        run = self.run
        tally = None if run is None else run.tally
        if tally is not None:  # what the last windows fired, after the last batch
            steps = tally.take()
            alerts = self._alert_records(tally.sink_rows) if tally.sink_rows else None
            tally.sink_rows = {}
            with self.lock:
                self._absorb(steps)
                if alerts:
                    self._add_alerts(alerts)
        self._refresh(force=True, state="finished")

    # -- reading the run (in its thread, every `refresh` seconds) -------------------------
    def _refresh(self, *, force: bool = False, state: str | None = None) -> None:
        run = self.run
        if run is None:
            return
        now = self.clock()
        self._next_refresh = time.monotonic() + self.refresh
        lag = force or time.monotonic() >= self._next_lag
        if lag:
            self._next_lag = time.monotonic() + max(self.refresh, _LAG_EVERY_S)
        sources = {s.node.name: self._source_figures(s, now, lag=lag) for s in run.sources}
        models = {name: self._model_figures(name, op) for name, op in self._model_ops.items()}
        counters = dict(run.counters)
        gauges = dict(getattr(run, "gauges", {}))
        new_dead = run.dead_count - self.dead_count
        letters = list(run.dead_kept)[-new_dead:] if new_dead > 0 else []
        hist = getattr(run, "hist", None)
        marks = None if hist is None else np.array(hist.counts, copy=True)
        summary = self._summary if self._summary is not None else None
        with self.lock:
            for name, fig in sources.items():
                self.sources[name].update(fig)
            for name, fig in models.items():
                self._note_model(name, fig, now)
            self.counters = counters
            self.gauges = gauges
            self._add_dead(letters, run.dead_count)
            if marks is not None:
                self._hist_marks.append((now, marks))
            if state is not None:
                self.state = state
            self.series.append(self._point(now, summary))
        if self.live_path is not None:
            self._write_live()

    def _source_figures(self, s: Any, now: float, *, lag: bool) -> dict[str, Any]:
        tracker = s.tracker
        wm = tracker.emitted
        fig: dict[str, Any] = {"finished": bool(s.finished)}
        if wm not in (MIN_TIME, MAX_TIME):
            fig["watermark_ms"] = int(wm)
            fig["watermark_lag_s"] = round(max(0.0, now - wm / 1000.0), 3)
        idle_ms = tracker.strategy.idle_ms
        if idle_ms is not None:
            mono = time.monotonic()
            seen = tracker.seen_at
            fig["idle_partitions"] = sum(
                1 for p in tracker.partitions if (mono - seen.get(p, -1e18)) * 1000.0 >= idle_ms
            )
        read_lag = getattr(s.source, "lag", None) if lag else None
        if callable(read_lag):
            try:
                per = {str(k): int(v) for k, v in read_lag().items()}
            except Exception:  # noqa: BLE001 - a figure for the eyes; never stop the run
                per = {}
            fig["lag_by_partition"] = per
            fig["consumer_lag"] = sum(per.values())
        return fig

    def _model_figures(self, name: str, op: Any) -> dict[str, Any]:
        try:
            stats = dict(op.stats())
        except Exception:  # noqa: BLE001 - a figure for the eyes; never stop the run
            return {}
        model = stats.get("model")
        version = stats.get("version")
        if version is None and isinstance(model, dict):
            version = model.get("version")
        return {
            "version": None if version is None else str(version),
            "calls": stats.get("calls"),
            "swaps": stats.get("swaps", 0),
            "shadow_rows": stats.get("shadow_rows", 0),
            "shadow_agree": stats.get("shadow_agree", 0),
            "shadow_agreement": stats.get("shadow_agreement"),
            "canary_rows": stats.get("canary_rows", 0),
            "load_failures": stats.get("load_failures", 0),
        }

    def _note_model(self, name: str, fig: dict[str, Any], now: float) -> None:
        old = self.models.get(name, {}).get("version")
        new = fig.get("version")
        if old is not None and new is not None and new != old:
            a, b = _version_number(old), _version_number(new)
            kind = "swap" if a is None or b is None else "promote" if b > a else "rollback"
            self.model_history.append(
                {"time": now, "step": name, "from": old, "to": new, "kind": kind}
            )
        self.models[name] = fig

    def _add_dead(self, letters: list[Any], total: int) -> None:
        for d in letters:
            key = (d.step, reason_kind(d.reason))
            if key not in self.dead_by:
                per_step = sum(1 for s, _ in self.dead_by if s == d.step)
                if per_step >= _REASONS_PER_STEP:
                    key = (d.step, "other")
            self.dead_by[key] = self.dead_by.get(key, 0) + 1
            raw = None if d.raw is None else str(d.raw)[:200]
            self.dead_recent.append(
                {"step": d.step, "reason": d.reason[:300], "position": dict(d.position), "raw": raw}
            )
        missed = total - self.dead_count - len(letters)
        if missed > 0:  # more dead letters than the executor keeps: counted, reason unknown
            self.dead_by[("?", "unknown")] = self.dead_by.get(("?", "unknown"), 0) + missed
        self.dead_count = total

    def _alert_records(self, sinks: dict[str, list[Batch]]) -> list[dict[str, Any]]:
        recs: list[dict[str, Any]] = []
        for name, batches in sinks.items():
            for b in batches[-_KEEP_ALERTS:]:
                tail = b.slice(max(0, len(b) - _KEEP_ALERTS), len(b))
                recs.extend({"sink": name, **_jsonable(r)} for r in tail.to_records())
        return recs[-_KEEP_ALERTS:]

    def _add_alerts(self, recs: list[dict[str, Any]]) -> None:
        now = self.clock()
        for rec in recs:
            if rec["sink"] in self._transactional:  # shown once a checkpoint commits it
                self._alerts_pending.append(rec)
            else:
                rec["shown_at"] = now
                self.alerts_recent.append(rec)
        del self._alerts_pending[:-_KEEP_ALERTS]

    def _point(self, now: float, summary: RunSummary | None) -> dict[str, Any]:
        lags = [s["watermark_lag_s"] for s in self.sources.values() if s.get("watermark_lag_s")]
        return {
            "t": round(now, 3),
            "events": self.events,
            "dead": self.dead_count,
            "alerts": self._alerts_total(),
            "latency_ms": self._recent_latency(),
            "watermark_lag_s": max(lags) if lags else None,
        }

    def _alerts_total(self) -> int:
        """Rows written to the alert sinks; without any, the detectors' alert counters."""
        if self._alert_sink_names:
            return sum(self.steps.get(name, [0, 0])[ROWS_IN] for name in self._alert_sink_names)
        return sum(v for k, v in self.counters.items() if k.endswith(".alerts"))

    def _recent_latency(self) -> dict[str, float | None]:
        """p50/p99/p999 over the last few seconds (from the executor's fine histogram)."""
        marks = self._hist_marks
        if not marks:
            return {"p50": None, "p99": None, "p999": None}
        now_t, now_c = marks[-1]
        base = next((c for t, c in marks if now_t - t <= 5.0 and c is not now_c), None)
        h = LatencyHistogram()
        h.counts = now_c - base if base is not None else now_c
        h.total = int(h.counts.sum())
        h.max_ns = 1 << 62
        return h.summary_ms()

    # -- readers ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything the dashboard and ``tidal top`` show, as JSON-ready values."""
        with self.lock:
            steps = {
                k: {"batches": v[BATCHES], "in": v[ROWS_IN], "out": v[ROWS_OUT],
                    "seconds": round(v[SECONDS], 6), "late": v[LATE]}
                for k, v in self.steps.items()
            }  # fmt: skip
            by_reason = [{"step": s, "reason": r, "count": n} for (s, r), n in self.dead_by.items()]
            return {
                "pipeline": self.pipeline,
                "state": self.state,
                "pid": os.getpid(),
                "time": self.clock(),
                "started": self.started,
                "ui": self.ui,
                "events": self.events,
                "late": self.counters.get("late", 0),
                "counters": dict(self.counters),
                "graph": self.graph,
                "steps": steps,
                "sources": {k: dict(v) for k, v in self.sources.items()},
                "latency_ms": self.series[-1]["latency_ms"] if self.series else {},
                "checkpoints": dict(self.checkpoint),
                "dead_letters": {
                    "count": self.dead_count,
                    "by_reason": by_reason,
                    "recent": list(self.dead_recent),
                },
                "models": {k: dict(v) for k, v in self.models.items()},
                "model_history": list(self.model_history),
                "alerts": {
                    "total": self._alerts_total(),
                    "by_step": {
                        k[: -len(".alerts")]: v
                        for k, v in self.counters.items()
                        if k.endswith(".alerts")
                    },
                    "recent": list(self.alerts_recent),
                },
                "series": list(self.series),
            }

    def _write_live(self) -> None:
        assert self.live_path is not None
        path = self.live_path
        data = orjson.dumps(self.snapshot(), option=orjson.OPT_NON_STR_KEYS, default=str)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:  # a full or read-only disk must not stop the run; top shows it stale
            pass
