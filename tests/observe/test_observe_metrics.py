"""Prometheus metrics of real runs, scraped over HTTP and checked against the run's counts."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
from observed_pipeline import build
from prometheus_client import REGISTRY, generate_latest
from scrape import scrape, total, value, wait_for

from tidal import Executor, Pipeline
from tidal.io.log.source import LogSource
from tidal.io.log.topic import Topic
from tidal.observe.live import LiveRun
from tidal.observe.prometheus import METRIC_NAMES, registry_for
from tidal.observe.summary import RunSummary
from tidal.observe.web.server import ObserveServer
from tidal.runtime.checkpoint import CheckpointConfig
from tidal.testing import MemorySink


def _run_in_thread(executor: Executor) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        box["summary"] = executor.run()

    t = threading.Thread(target=target)
    t.start()
    return t, box


def test_metrics_scraped_during_a_run_match_its_summary() -> None:
    pipeline, _ = build(n=3000, rate=4000)
    live = LiveRun(refresh=0.05)
    ex = Executor(pipeline, observer=live, max_batch=256, handle_signals=False)
    with ObserveServer(live, ui=False) as server:
        url = server.url + "metrics"
        t, box = _run_in_thread(ex)
        seen: list[float] = []

        def running_with_events() -> bool:
            s = scrape(url)
            seen.append(value(s, "tidal_events_total"))
            return value(s, "tidal_run_up") == 1.0 and seen[-1] > 0

        wait_for(running_with_events, message="a scrape during the run")
        t.join(timeout=60)
        summary: RunSummary = box["summary"]
        s = scrape(url)
    assert 0 < seen[-1] < summary.events  # scraped mid-run, counting up
    assert seen == sorted(seen)
    assert value(s, "tidal_run_up") == 0.0
    assert value(s, "tidal_events_total") == summary.events == 2970
    assert value(s, "tidal_source_records_total", source="in") == summary.events
    assert value(s, "tidal_source_latency_seconds_count", source="in") == summary.events
    for sink, n in summary.outputs.items():
        assert value(s, "tidal_step_records_in_total", step=sink) == n
    assert value(s, "tidal_step_records_in_total", step="validate") == summary.events
    invalid = summary.counts["invalid"]
    assert value(s, "tidal_step_records_out_total", step="validate") == summary.events - invalid
    assert total(s, "tidal_dead_letters_total") == summary.dead_letters == 60
    assert total(s, "tidal_dead_letters_total", step="validate") == invalid == 30
    assert value(s, "tidal_late_records_total", step="win", reason="window_closed") == summary.late
    assert summary.late == summary.outputs["late"] == 12
    assert value(s, "tidal_model_calls_total", step="model") == summary.counts["model.model_calls"]
    assert value(s, "tidal_model_rows_total", step="model") == summary.outputs["scores"]
    assert value(s, "tidal_model_version_info", step="model", version="v1") == 1.0
    assert value(s, "tidal_model_latency_seconds_count", step="model") > 0
    alerts = value(s, "tidal_detector_alerts_total", step="detect")
    assert alerts == summary.counts["detect.alerts"] == summary.outputs["alerts"] > 0
    assert value(s, "tidal_step_processing_seconds_count", step="win") > 0
    assert value(s, "tidal_step_batch_size_records_sum", step="validate") == summary.events
    assert value(s, "tidal_source_watermark_lag_seconds", source="in") > 0
    assert value(s, "tidal_step_counter_total", step="", counter="invalid") == invalid


def test_checkpoint_metrics(tmp_path: Path) -> None:
    pipeline, _ = build(n=2000)
    live = LiveRun()
    config = CheckpointConfig(data_dir=tmp_path, interval=None, every_events=500)
    ex = Executor(pipeline, observer=live, max_batch=256, handle_signals=False, checkpoint=config)
    summary = ex.run()
    s = _parse(live)
    assert value(s, "tidal_checkpoints_total") == summary.counts["checkpoints"] >= 4
    assert value(s, "tidal_checkpoint_duration_seconds_count") == summary.counts["checkpoints"]
    assert value(s, "tidal_checkpoint_failures_total") == 0
    newest = max(p for p in (tmp_path).rglob("state.npz"))
    assert value(s, "tidal_checkpoint_size_bytes") > 0
    assert newest.stat().st_size > 0
    assert 0 <= value(s, "tidal_checkpoint_age_seconds") < 60


def test_consumer_lag_of_a_log_source(tmp_path: Path) -> None:
    topic = Topic.create(tmp_path, "readings", partitions=2)
    for p in (0, 1):
        topic.append(p, [orjson.dumps({"x": i}) for i in range(500)])
    topic.close()
    pipeline = Pipeline("lagging")
    source = LogSource(tmp_path, "readings", bounded=True)
    pipeline.source("in", source).sink("out", MemorySink())
    live = LiveRun()
    ex = Executor(
        pipeline, observer=live, max_batch=100, max_events=300, at_limit="stop",
        handle_signals=False,
    )  # fmt: skip
    summary = ex.run()
    s = _parse(live)
    assert summary.events == 300
    lag = total(s, "tidal_source_consumer_lag_records", source="in")
    assert lag == 1000 - 300
    assert value(s, "tidal_source_partitions", source="in") == 2


def test_each_pipeline_has_its_own_registry() -> None:
    a, b = LiveRun(), LiveRun()
    a.pipeline, b.pipeline = "a", "b"
    text_a = generate_latest(registry_for(a)).decode()
    assert 'pipeline="a"' in text_a and 'pipeline="b"' not in text_a
    assert b"tidal_events_total" not in generate_latest(REGISTRY)  # the global one is untouched


def test_every_documented_metric_is_exposed_and_named_by_convention() -> None:
    pipeline, _ = build(n=1000)
    live = LiveRun()
    Executor(pipeline, observer=live, max_batch=256, handle_signals=False).run()
    text = generate_latest(registry_for(live)).decode()
    families = {line.split()[2]: line.split()[3] for line in text.splitlines()
                if line.startswith("# TYPE")}  # fmt: skip
    assert len(METRIC_NAMES) >= 30
    for name in METRIC_NAMES:
        base = name if name in families else name.removesuffix("_total")
        assert base in families, name
        if families[base] == "counter":
            assert name.endswith("_total"), name
    for name, kind in families.items():
        assert name.startswith("tidal_"), name
        if kind == "histogram":
            assert name.endswith(("_seconds", "_records")), name


def _parse(live: LiveRun) -> dict[Any, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry_for(live)).decode()):
        for smp in fam.samples:
            labels = tuple(sorted((k, v) for k, v in smp.labels.items() if k != "pipeline"))
            out[(smp.name, labels)] = smp.value
    return out


def test_a_learners_prequential_metrics_are_gauges_on_metrics() -> None:
    import numpy as np

    from tidal.testing import MemorySource

    rng = np.random.default_rng(3)
    x = rng.normal(size=4000)
    label = np.where(x > 0, "up", "down").astype(object)
    p = Pipeline("learning")
    src = p.source("in", MemorySource({"x": x, "label": label}))
    src.learn("model", "adam-logistic", features=["x"], target="label").sink("out", MemorySink())
    live = LiveRun(refresh=0.05)
    summary = Executor(p, observer=live, max_batch=500, handle_signals=False).run()
    text = generate_latest(registry_for(live)).decode()
    got = {
        line.split('metric="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tidal_step_metric{") and 'step="model"' in line
    }
    want = summary.extra["metrics"]
    assert got and {f"model.{k}" for k in got} == set(want)
    for k, v in got.items():
        assert abs(v - want[f"model.{k}"]) <= 1e-6
    assert got["accuracy"] > 0.9
