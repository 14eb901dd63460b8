"""Prometheus metrics of a running pipeline, from :class:`~tidal.observe.live.LiveRun`.

:func:`registry_for` gives a pipeline its own ``CollectorRegistry`` (never the global one,
so two pipelines in one process, or two tests, do not collide) holding one collector that
renders the run's live figures at scrape time. The figures themselves change once per
micro-batch (:mod:`tidal.observe.hook`), never per row. Every metric carries the
``pipeline`` label; names follow Prometheus' conventions (base units in the name, counters
end in ``_total``):

=============================================  =========  =======================================
metric                                         type       labels (besides ``pipeline``)
=============================================  =========  =======================================
``tidal_events_total``                         counter    events read by this run
``tidal_step_records_in_total``                counter    ``step``
``tidal_step_records_out_total``               counter    ``step``
``tidal_step_batch_size_records``              histogram  ``step``: rows per batch in
``tidal_step_processing_seconds``              histogram  ``step``: time per batch
``tidal_source_records_total``                 counter    ``source``
``tidal_source_latency_seconds``               histogram  ``source``: ingest to end of batch
``tidal_source_watermark_timestamp_seconds``   gauge      ``source``
``tidal_source_watermark_lag_seconds``         gauge      ``source``: wall clock - watermark
``tidal_source_consumer_lag_records``          gauge      ``source``, ``partition``
``tidal_source_partitions``                    gauge      ``source``
``tidal_source_idle_partitions``               gauge      ``source``
``tidal_checkpoints_total``                    counter
``tidal_checkpoint_failures_total``            counter
``tidal_checkpoint_duration_seconds``          histogram
``tidal_checkpoint_size_bytes``                gauge      the last checkpoint's
``tidal_checkpoint_age_seconds``               gauge      since the last checkpoint
``tidal_dead_letters_total``                   counter    ``step``, ``reason``
``tidal_late_records_total``                   counter    ``step``, ``reason`` (``window_closed``)
``tidal_model_calls_total``                    counter    ``step``
``tidal_model_rows_total``                     counter    ``step``
``tidal_model_latency_seconds``                histogram  ``step``: scoring time per batch
``tidal_model_version_info``                   gauge      ``step``, ``version`` (1: serving)
``tidal_model_swaps_total``                    counter    ``step``
``tidal_model_shadow_rows_total``              counter    ``step``
``tidal_model_shadow_agreement_ratio``         gauge      ``step``
``tidal_model_canary_rows_total``              counter    ``step``
``tidal_detector_alerts_total``                counter    ``step``
``tidal_step_counter_total``                   counter    ``step``, ``counter``: the rest
``tidal_step_metric``                          gauge      ``step``, ``metric``: learners' metrics
``tidal_run_start_time_seconds``               gauge
``tidal_run_up``                               gauge      1 while running, 0 once finished
=============================================  =========  =======================================

Example:
    >>> from prometheus_client import generate_latest
    >>> from tidal.observe.live import LiveRun
    >>> text = generate_latest(registry_for(LiveRun())).decode()
    >>> "tidal_events_total" in text
    True
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tidal.observe.buckets import Buckets
from tidal.observe.hook import BATCHES, LATE, ROWS_IN, ROWS_OUT
from tidal.observe.live import LiveRun

__all__ = ["METRIC_NAMES", "TidalCollector", "registry_for"]


class TidalCollector(Collector):
    """Renders a :class:`LiveRun` as Prometheus metric families, at scrape time."""

    def __init__(self, live: LiveRun) -> None:
        self.live = live

    def collect(self) -> Iterator[Metric]:
        """The metric families (the run's figures, copied under its lock)."""
        live = self.live
        with live.lock:
            yield from self._collect(live)

    def _collect(self, live: LiveRun) -> Iterator[Metric]:
        p = live.pipeline
        up = GaugeMetricFamily("tidal_run_up", "1 while the run is going", labels=["pipeline"])
        up.add_metric([p], 1.0 if live.state == "running" else 0.0)
        yield up
        start = GaugeMetricFamily(
            "tidal_run_start_time_seconds", "Unix time the run started", labels=["pipeline"]
        )
        start.add_metric([p], live.started)
        yield start
        ev = CounterMetricFamily("tidal_events", "Events read by this run", labels=["pipeline"])
        ev.add_metric([p], live.events)
        yield ev
        yield from self._steps(live, p)
        yield from self._sources(live, p)
        yield from self._checkpoints(live, p)
        yield from self._dead_and_late(live, p)
        yield from self._models(live, p)
        yield from self._counters(live, p)

    def _steps(self, live: LiveRun, p: str) -> Iterator[Metric]:
        labels = ["pipeline", "step"]
        rin = CounterMetricFamily("tidal_step_records_in", "Records into a step", labels=labels)
        rout = CounterMetricFamily(
            "tidal_step_records_out", "Records out of a step (every output port)", labels=labels
        )
        for name, fig in live.steps.items():
            rin.add_metric([p, name], fig[ROWS_IN])
            rout.add_metric([p, name], fig[ROWS_OUT])
        yield rin
        yield rout
        yield _histogram(
            "tidal_step_batch_size_records", "Rows per batch into a step", p, "step",
            live.step_rows,
        )  # fmt: skip
        yield _histogram(
            "tidal_step_processing_seconds", "A step's processing time per source batch", p,
            "step", live.step_seconds,
        )  # fmt: skip

    def _sources(self, live: LiveRun, p: str) -> Iterator[Metric]:
        labels = ["pipeline", "source"]
        records = CounterMetricFamily("tidal_source_records", "Records read", labels=labels)
        wm = GaugeMetricFamily(
            "tidal_source_watermark_timestamp_seconds", "The source's watermark", labels=labels
        )
        wm_lag = GaugeMetricFamily(
            "tidal_source_watermark_lag_seconds", "Wall clock minus the watermark", labels=labels
        )
        lag = GaugeMetricFamily(
            "tidal_source_consumer_lag_records",
            "Records in the log or Kafka not read yet",
            labels=[*labels, "partition"],
        )
        parts = GaugeMetricFamily("tidal_source_partitions", "Partitions read", labels=labels)
        idle = GaugeMetricFamily(
            "tidal_source_idle_partitions",
            "Partitions idle for longer than the watermark's idle timeout",
            labels=labels,
        )
        for name, s in live.sources.items():
            records.add_metric([p, name], s["records"])
            if s.get("watermark_ms") is not None:
                wm.add_metric([p, name], s["watermark_ms"] / 1000.0)
                wm_lag.add_metric([p, name], s["watermark_lag_s"])
            for part, n in s.get("lag_by_partition", {}).items():
                lag.add_metric([p, name, str(part)], n)
            parts.add_metric([p, name], s["partitions"])
            idle.add_metric([p, name], s["idle_partitions"])
        yield from (records, wm, wm_lag, lag, parts, idle)
        yield _histogram(
            "tidal_source_latency_seconds",
            "End-to-end latency: event ingest to the end of its batch",
            p, "source", live.latency,
        )  # fmt: skip

    def _checkpoints(self, live: LiveRun, p: str) -> Iterator[Metric]:
        c = live.checkpoint
        lab = ["pipeline"]
        total = CounterMetricFamily("tidal_checkpoints", "Checkpoints taken", labels=lab)
        total.add_metric([p], c["count"])
        failed = CounterMetricFamily("tidal_checkpoint_failures", "Failed checkpoints", labels=lab)
        failed.add_metric([p], c["failures"])
        size = GaugeMetricFamily(
            "tidal_checkpoint_size_bytes", "Size of the last checkpoint", labels=lab
        )
        age = GaugeMetricFamily(
            "tidal_checkpoint_age_seconds", "Time since the last checkpoint", labels=lab
        )
        if c["last_at"] is not None:
            size.add_metric([p], c["last_bytes"])
            age.add_metric([p], max(0.0, live.clock() - c["last_at"]))
        yield from (total, failed, size, age)
        b = live.checkpoint_seconds
        dur = HistogramMetricFamily(
            "tidal_checkpoint_duration_seconds", "Checkpoint duration, prepare to commit",
            labels=lab,
        )  # fmt: skip
        dur.add_metric([p], b.cumulative(), sum_value=b.total)
        yield dur

    def _dead_and_late(self, live: LiveRun, p: str) -> Iterator[Metric]:
        dead = CounterMetricFamily(
            "tidal_dead_letters", "Dead letters", labels=["pipeline", "step", "reason"]
        )
        for (step, reason), n in live.dead_by.items():
            dead.add_metric([p, step, reason], n)
        yield dead
        late = CounterMetricFamily(
            "tidal_late_records",
            "Records behind the watermark, sent to a late output",
            labels=["pipeline", "step", "reason"],
        )
        for name, fig in live.steps.items():
            if fig[LATE]:
                late.add_metric([p, name, "window_closed"], fig[LATE])
        yield late

    def _models(self, live: LiveRun, p: str) -> Iterator[Metric]:
        lab = ["pipeline", "step"]
        calls = CounterMetricFamily("tidal_model_calls", "Model calls", labels=lab)
        rows = CounterMetricFamily("tidal_model_rows", "Rows scored", labels=lab)
        version = GaugeMetricFamily(
            "tidal_model_version_info", "The version serving (value 1)", labels=[*lab, "version"]
        )
        swaps = CounterMetricFamily("tidal_model_swaps", "Version swaps", labels=lab)
        shadow = CounterMetricFamily(
            "tidal_model_shadow_rows", "Rows scored by a shadow", labels=lab
        )
        agree = GaugeMetricFamily(
            "tidal_model_shadow_agreement_ratio", "Shadow agrees with production", labels=lab
        )
        canary = CounterMetricFamily(
            "tidal_model_canary_rows", "Rows scored by a canary", labels=lab
        )
        lat: dict[str, Buckets] = {}
        for name, m in live.models.items():
            fig = live.steps.get(name, [0, 0, 0, 0.0, 0])
            n_calls = live.counters.get(f"{name}.model_calls", m.get("calls") or fig[BATCHES])
            calls.add_metric([p, name], n_calls)
            rows.add_metric([p, name], fig[ROWS_IN])
            if m.get("version") is not None:
                version.add_metric([p, name, m["version"]], 1.0)
            swaps.add_metric([p, name], m.get("swaps") or 0)
            shadow.add_metric([p, name], m.get("shadow_rows") or 0)
            if m.get("shadow_agreement") is not None:
                agree.add_metric([p, name], m["shadow_agreement"])
            canary.add_metric([p, name], m.get("canary_rows") or 0)
            if name in live.step_seconds:
                lat[name] = live.step_seconds[name]
        yield from (calls, rows, version, swaps, shadow, agree, canary)
        yield _histogram(
            "tidal_model_latency_seconds", "Scoring time per batch of a model step", p, "step",
            lat,
        )  # fmt: skip

    def _counters(self, live: LiveRun, p: str) -> Iterator[Metric]:
        alerts = CounterMetricFamily(
            "tidal_detector_alerts", "Alerts raised", labels=["pipeline", "step"]
        )
        other = CounterMetricFamily(
            "tidal_step_counter", "Other counters of the steps",
            labels=["pipeline", "step", "counter"],
        )  # fmt: skip
        for key, n in live.counters.items():
            step, _, name = key.rpartition(".")
            if name == "alerts" and step:
                alerts.add_metric([p, step], n)
            elif key != "late" and not key.endswith(".model_calls"):
                other.add_metric([p, step, name], n)
        yield alerts
        yield other
        gauges = GaugeMetricFamily(
            "tidal_step_metric",
            "Current values the steps report, e.g. a learner's prequential metrics",
            labels=["pipeline", "step", "metric"],
        )
        for key, v in live.gauges.items():
            step, _, name = key.rpartition(".")
            gauges.add_metric([p, step, name], v)
        yield gauges


def _histogram(
    name: str, doc: str, pipeline: str, label: str, hists: dict[str, Buckets]
) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=["pipeline", label])
    for key, b in hists.items():
        fam.add_metric([pipeline, key], b.cumulative(), sum_value=b.total)
    return fam


def registry_for(live: LiveRun) -> CollectorRegistry:
    """A registry of its own with the run's collector (not the process-global one).

    Example:
        >>> from tidal.observe.live import LiveRun
        >>> registry_for(LiveRun()) is not registry_for(LiveRun())
        True
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TidalCollector(live))
    return registry


METRIC_NAMES: tuple[str, ...] = tuple(
    line.split("``")[1] for line in (__doc__ or "").splitlines() if line.startswith("``tidal_")
)
"""Every metric name this module exposes (from the table above)."""
