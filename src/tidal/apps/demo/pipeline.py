"""The demo's pipeline: where the readings come from, the steps, where the alerts go.

:func:`build_demo` wires it; :func:`sensor_source` is the one place that decides where the
readings come from (a generator in the pipeline, or the embedded log fed by a child
process), so another transport plugs in there; :func:`reset_demo` deletes what a demo left
in a data directory.

Example:
    >>> pipeline, handles = build_demo(sensors=100, rate=None, keep_alerts=True)
    >>> summary = pipeline.run(max_events=100_000, max_wait="0ms", handle_signals=False)
    >>> handles.extra(summary)["scorecard"]
    {'injected': 12, 'due': 12, 'found': 12, 'false_alarms': 0}
"""

from __future__ import annotations

import fcntl
import math
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import orjson

from tidal import aggregations as agg
from tidal.apps.demo.fleet import SensorFleet
from tidal.apps.demo.forecast import JOBS, REGISTRY, LearnWatch, add_forecaster
from tidal.apps.demo.incidents import Incidents
from tidal.apps.demo.screen import AlertPrinter, CommittedAlertPrinter
from tidal.core.batch import Array, Batch
from tidal.core.watermark import bounded
from tidal.core.windows import sliding
from tidal.errors import ConfigError, ConnectorError, StateError
from tidal.io.base import BaseSink, Source
from tidal.io.files import SchemaLike
from tidal.io.generator import GeneratorSource
from tidal.io.log.feed import FeedProcess, LogFeed
from tidal.io.log.groups import resolve_data_dir
from tidal.io.log.source import LogSource
from tidal.io.memory import MemorySink
from tidal.ml.detect.gated import GatedZ
from tidal.pipeline import Pipeline
from tidal.runtime.checkpoint import CheckpointConfig, CheckpointStore
from tidal.runtime.executor import RunSummary

if TYPE_CHECKING:
    from tidal.io.kafka.config import KafkaConfig

__all__ = [
    "ALERTS_TOPIC",
    "KAFKA_PIPELINE",
    "PIPELINE",
    "TOPIC",
    "DemoHandles",
    "SensorSource",
    "build_demo",
    "reset_demo",
    "sensor_source",
]

TOPIC = "demo-sensors"
"""The embedded-log topic of the sensor readings (``source="log"``)."""
PIPELINE = "iot-demo-log"
"""The pipeline's name with ``source="log"`` (its checkpoints are kept under this name)."""
KAFKA_PIPELINE = "iot-demo-kafka"
"""The pipeline's name with ``source="kafka"`` (also its transactional id)."""
ALERTS_TOPIC = "demo-alerts"
"""With ``source="kafka"``: the Kafka topic the alerts are committed to, exactly once."""
PARTITIONS = 4
MARKER = "demo.json"
"""The file in the data directory that records the demo set-up its topic holds."""
KAFKA_MARKER = "demo-kafka.json"
"""As :data:`MARKER`, for the readings in the Kafka topic (``source="kafka"``)."""
_SCHEMA: SchemaLike = {"sensor": "int", "ts": "int", "value": "float", "seq": "int"}

WINDOW = "10s"
SLIDE = "2s"
_WINDOW_S = 10.0


# -- where the readings come from ---------------------------------------------------------
@dataclass
class SensorSource:
    """The readings' source, and what runs beside the pipeline to fill it.

    Attributes:
        source: the pipeline's source of the readings.
        pipeline: the pipeline's name (checkpoints are kept under it).
        feed: a feed that writes the readings into the log from a child process, if any.
        position: the sequence number the source is at (after a restore: where it resumes).
    """

    source: Source
    pipeline: str
    feed: LogFeed | None = None
    position: Callable[[], int] | None = None


FEED_LEAD_S = 5.0
"""Seconds of readings the feed may be ahead of the pipeline. The partitions hold different
numbers of sensors (keyed by sensor), and the log is read round-robin in equal record
counts, so while the pipeline works through a backlog the partitions with fewer sensors
run ahead in event time; the watermark follows the slowest, so a backlog of B seconds of
readings holds windows (alerts) back by up to B seconds. The feed's default lead
(262,144 readings: 262 s of a 100-sensor fleet) let a slower pipeline (the learning
branch) fall minutes behind in event time; 5 s keeps the spread to seconds."""


def sensor_source(
    fleet: SensorFleet,
    kind: Literal["generator", "log", "kafka"],
    *,
    rate: float | None,
    seed: int,
    data_dir: str | Path | None = None,
    kafka: KafkaConfig | None = None,
) -> SensorSource:
    """Where the demo's readings come from: the one place a transport plugs in.

    Args:
        fleet: the sensor model.
        kind: ``"generator"`` (readings made in the pipeline), ``"log"`` (a
            :class:`~tidal.io.log.feed.LogFeed` writes them into the topic :data:`TOPIC` of
            ``data_dir``, a :class:`~tidal.io.log.source.LogSource` reads them) or
            ``"kafka"`` (a :class:`~tidal.io.kafka.feed.KafkaFeed` writes them into the
            Kafka topic :data:`TOPIC`, a :class:`~tidal.io.kafka.source.KafkaSource` reads
            them).
        rate: wall-clock events per second; ``None`` as fast as possible.
        seed: the generator's seed (recorded with the topic).
        data_dir: the log's data directory (``None``: ``$TIDAL_DATA_DIR`` or ``./.tidal``);
            the feed refuses one that holds another demo's readings.
        kafka: the cluster, with ``kind="kafka"``.

    Raises:
        ConfigError: for an unknown ``kind``, or a data directory of another demo set-up.

    Example:
        >>> sensor_source(SensorFleet(10), "generator", rate=None, seed=7).pipeline
        'iot-demo'
    """
    if kind == "generator":
        return SensorSource(GeneratorSource(fleet, rate=rate), "iot-demo")
    if kind not in ("log", "kafka"):
        msg = f"source must be 'generator', 'log' or 'kafka', got {kind!r}"
        raise ConfigError(msg)
    root = resolve_data_dir(data_dir)
    setup = {"topic": TOPIC, "sensors": fleet.sensors, "hz": fleet.hz, "seed": seed}
    setup.update(fleet.setup())
    _check_setup(root / (MARKER if kind == "log" else KAFKA_MARKER), setup)
    if kind == "kafka":
        return _kafka_readings(fleet, root, rate=rate, config=kafka)
    feed = LogFeed(
        fleet,
        root,
        TOPIC,
        key="sensor",
        partitions=PARTITIONS,
        rate=rate,
        lead=max(8192, int(FEED_LEAD_S * fleet.per_s)),
        retention_bytes=128 << 20,  # per partition: minutes of readings at the default rate
        segment_bytes=32 << 20,
    )
    feed.open()  # creates the topic, finds where the feed resumes
    feed.close()  # the feed process opens it again
    source = LogSource(root, TOPIC, schema=_SCHEMA)
    return SensorSource(
        source, PIPELINE, feed, position=lambda: int(sum(source.position().values()))
    )


def _kafka_readings(
    fleet: SensorFleet, root: Path, *, rate: float | None, config: KafkaConfig | None
) -> SensorSource:
    """The readings through the Kafka topic :data:`TOPIC` (see :func:`sensor_source`)."""
    from tidal.io.kafka.admin import KafkaAdmin
    from tidal.io.kafka.config import KafkaConfig
    from tidal.io.kafka.feed import KafkaFeed
    from tidal.io.kafka.source import KafkaSource

    config = config if config is not None else KafkaConfig()
    keep = {"retention.ms": "-1"}  # a restart must find every reading it has not read yet
    feed = KafkaFeed(
        fleet,
        TOPIC,
        config=config,
        key="sensor",
        partitions=PARTITIONS,
        lock_dir=root,
        rate=rate,
        topic_config=keep,
    )
    feed.open()  # creates the topic, finds where the feed resumes
    feed.close()  # the feed process opens it again
    KafkaAdmin(config).create_topic(ALERTS_TOPIC, 1, config=keep, exist_ok=True)
    source = KafkaSource(TOPIC, config=config, schema=_SCHEMA, name="sensors")

    def position() -> int:
        return int(sum(p["offset"] for p in source.position().values()))

    return SensorSource(source, KAFKA_PIPELINE, feed, position=position)


def _check_setup(marker: Path, setup: dict[str, Any]) -> None:
    """Refuse a data directory whose demo readings were made with another set-up."""
    root = marker.parent
    if marker.exists():
        try:
            found = orjson.loads(marker.read_bytes())
        except orjson.JSONDecodeError:
            found = None
        if found != setup:
            msg = (
                f"{root} holds the readings of another demo set-up ({found}); this one is "
                f"{setup}. Run it with that set-up, start afresh with `tidal demo --reset`, "
                "or give it another --data-dir"
            )
            raise ConfigError(msg)
    else:
        root.mkdir(parents=True, exist_ok=True)
        marker.write_bytes(orjson.dumps(setup))


def reset_demo(
    data_dir: str | Path | None,
    out: str | Path | None = None,
    kafka: KafkaConfig | None = None,
) -> list[Path]:
    """Delete what the demo left: its topic, its checkpoints, its set-up and its alerts.

    Refuses while anything runs on that data: a demo holds its checkpoints' lock, a feed
    the topic's feed lock. Other topics and pipelines of the data directory stay.

    Args:
        data_dir: the demo's data directory (``None``: ``$TIDAL_DATA_DIR`` or ``./.tidal``).
        out: the alerts output (a JSON Lines file or a part-file directory), if any.
        kafka: also delete the Kafka demo's topics (:data:`TOPIC`, :data:`ALERTS_TOPIC`)
            and the consumer group its transactions record checkpoints in, on this cluster.

    Returns:
        The paths deleted.

    Raises:
        StateError: while a demo or a feed runs on this data directory.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _, handles = build_demo(sensors=10, rate=None, source="log", data_dir=root)
        >>> [p.name for p in reset_demo(root)]
        ['demo-sensors', 'demo.json']
        >>> reset_demo(root)
        []
    """
    root = resolve_data_dir(data_dir)
    with ExitStack() as held:
        stores = []
        for name in (PIPELINE, KAFKA_PIPELINE, "iot-demo"):
            store = CheckpointStore(CheckpointConfig(data_dir=root), name)
            if store.path.is_dir():
                store.lock()  # raises StateError while a run holds it
                held.callback(store.unlock)
                stores.append(store.path)
        topic = root / "log" / TOPIC
        if (topic / "feed.lock").exists():
            held.enter_context(_feed_lock(topic / "feed.lock"))
        kafka_feed = root / f"kafka-feed-{TOPIC}"
        if (kafka_feed / "feed.lock").exists():
            held.enter_context(_feed_lock(kafka_feed / "feed.lock"))
        targets = [*stores, topic, root / MARKER, kafka_feed, root / KAFKA_MARKER]
        targets += [root / REGISTRY, root / JOBS]
        if kafka is not None:
            _reset_kafka(kafka)
        if out is not None and str(out):
            targets.append(_alerts_output(Path(out)))
        deleted = []
        for path in targets:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            else:
                continue
            deleted.append(path)
    return deleted


def _reset_kafka(config: KafkaConfig) -> None:
    """Delete the Kafka demo's topics and its transactions' checkpoint group."""
    from tidal.io.kafka.admin import KafkaAdmin
    from tidal.io.kafka.sink import KafkaTransactionalSink

    admin = KafkaAdmin(config)
    admin.check()
    for name in (TOPIC, ALERTS_TOPIC):
        admin.delete_topic(name, missing_ok=True)
    group = KafkaTransactionalSink(
        ALERTS_TOPIC, config=config, transactional_id=KAFKA_PIPELINE
    ).checkpoint_group
    admin.delete_group(group, missing_ok=True)


def _alerts_output(out: Path) -> Path:
    """``out`` if it holds only alerts (part files or one JSON Lines file), else refuse.

    ``--reset --out ~`` must not delete a home directory.
    """
    if out.is_dir():
        strange = [
            p.name
            for p in out.iterdir()
            if p.name != ".staging" and not (p.name.startswith("part-") and p.suffix == ".jsonl")
        ]
        if strange:
            msg = (
                f"--reset deletes the demo's alerts, but {out} holds other files too "
                f"({', '.join(sorted(strange)[:3])}); give the alerts' own --out, or delete "
                "them yourself"
            )
            raise StateError(msg)
    elif out.exists() and out.suffix != ".jsonl":
        msg = (
            f"--reset deletes the demo's alerts, but {out} is not a .jsonl file; delete it yourself"
        )
        raise StateError(msg)
    return out


@contextmanager
def _feed_lock(path: Path) -> Iterator[None]:
    """Hold a topic's feed lock, or raise :class:`StateError` if a feed holds it."""
    with path.open("ab") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            msg = f"a feed is writing topic {TOPIC!r} (it holds {path}); stop it first"
            raise StateError(msg) from exc
        yield


# -- the pipeline -------------------------------------------------------------------------
@dataclass
class DemoHandles:
    """What a test or the CLI needs from a built demo.

    Attributes:
        fleet: the sensor model (its :meth:`SensorFleet.faults` are the ground truth).
        alerts: the alerts kept in memory (with ``keep_alerts=True``), else ``None``.
        out: the JSON Lines file (or part-file directory) alerts go to, if any.
        screen: the ``screen`` sink: prints alerts (when given a print function) and keeps
            the scorecard.
        readings: where the readings come from (:func:`sensor_source`); with a feed, run
            the pipeline inside ``with handles.feeding(): ...``.
        learner: the learning branch's screen (:class:`~tidal.apps.demo.forecast.LearnWatch`),
            if the demo learns.
        learn_note: why the demo does not learn, if it does not.
    """

    fleet: SensorFleet
    alerts: MemorySink | None
    out: Path | None
    screen: AlertPrinter
    readings: SensorSource
    learner: LearnWatch | None = None
    learn_note: str | None = None

    @property
    def feed(self) -> LogFeed | None:
        """The feed of the log (``source="log"``), else ``None``."""
        return self.readings.feed

    def consumed(self) -> int:
        """With ``source="log"``: readings the pipeline has read since the topic began."""
        position = self.readings.position
        return 0 if position is None else position()

    @contextmanager
    def feeding(self, on_error: Callable[[BaseException], None] | None = None) -> Iterator[None]:
        """Run the feed (``source="log"``) in a child process for the duration of the block.

        Enter it after the executor opened (restored its checkpoint): the scorecard starts
        where the pipeline resumes. The feed stays at most its ``lead`` ahead of the
        pipeline; if it fails, ``on_error`` is called (e.g. with the executor's ``stop``)
        and the block's end raises :class:`~tidal.errors.ConnectorError`. See
        :class:`~tidal.io.log.feed.FeedProcess`.
        """
        feed = self.readings.feed
        if self.screen.scorecard is not None:
            self.screen.scorecard.start = self.consumed()
        if feed is None:
            yield
            return
        process = FeedProcess(feed, consumed=self.consumed, on_error=on_error)
        process.start()
        try:
            yield
        except BaseException:
            with suppress(ConnectorError):  # the block's error is the one to report
                process.stop()
            raise
        else:
            process.stop()
        finally:
            feed.next_seq = process.produced

    def position(self, summary: RunSummary) -> int:
        """The readings read since the demo began (this run's and those before it)."""
        if self.readings.position is not None:
            return self.readings.position()
        return summary.restored_events + summary.events

    def extra(self, summary: RunSummary) -> dict[str, Any]:
        """Demo figures for the run summary, all of this run unless named otherwise.

        ``alerts``, ``sensors`` and ``scorecard`` (:class:`~tidal.apps.demo.screen.Scorecard`:
        faults injected into this run's readings, due to be found, found, false alarms);
        with ``source="log"`` also ``position``, the readings read since the topic began
        (a resumed run starts where the last one stopped), and ``produced``.
        """
        position = self.position(summary)
        out: dict[str, Any] = {
            "alerts": summary.outputs.get("alerts", 0),
            "sensors": self.fleet.sensors,
        }
        card = self.screen.scorecard
        if card is not None:
            if self.readings.position is None:
                card.start = summary.restored_events
            out["scorecard"] = card.result(position)
        if self.readings.feed is not None:
            out["position"] = position
            out["produced"] = self.readings.feed.next_seq
        if self.learner is not None:
            out["learning"] = self.learner.summary()
        return out

    def scorecard_line(self, summary: RunSummary) -> str:
        """The scorecard as the screen's last line."""
        card = self.screen.scorecard
        assert card is not None
        return card.line(self.position(summary))


def _finite(batch: Batch) -> Array:
    ok: Array = np.isfinite(batch["value"])
    return ok


def _alert_fields(batch: Batch) -> Batch:
    return batch.select(
        ["sensor", "window_start", "window_end", "mean", "std", "min", "max", "count", "score"]
    )


def _is_anomaly(batch: Batch) -> Array:
    flag: Array = batch["is_anomaly"]
    return flag


class _Discard(BaseSink):
    """Counts what reaches it (the executor does), keeps nothing."""

    def write(self, batch: Batch) -> None:
        """Drop the batch."""


def build_demo(
    *,
    sensors: int = 2000,
    rate: float | None = 20_000.0,
    hz: float = 10.0,
    seed: int = 7,
    out: str | Path | None = None,
    screen: Callable[[str], None] | None = None,
    keep_alerts: bool = False,
    exactly_once: bool = False,
    source: Literal["generator", "log", "kafka"] = "generator",
    data_dir: str | Path | None = None,
    kafka: KafkaConfig | None = None,
    alpha: float = 0.05,
    threshold: float = 5.0,
    warmup: int = 5,
    min_std: float = 0.05,
    quiet: str = "10s",
    learn: bool | None = None,
    adopt_after_s: float | None = None,
) -> tuple[Pipeline, DemoHandles]:
    """Build the IoT demo pipeline (see :mod:`tidal.apps.demo`); bound it with ``max_events``.

    Args:
        sensors: how many sensors.
        rate: wall-clock events per second; ``None`` as fast as possible.
        hz: readings per sensor per second of event time.
        seed: the generator's seed.
        out: a JSON Lines file for the alerts (the ``alerts`` sink); ``None`` for none.
        screen: prints alert lines, rate-limited, each naming the fault behind it (the
            ``screen`` sink, which is there, printing nothing, without it: it keeps the
            scorecard).
        keep_alerts: also keep the alerts in memory (``handles.alerts``).
        exactly_once: ``out`` is a directory of part files committed by checkpoints
            (:class:`~tidal.io.jsonl.JsonlPartSink`) and the screen shows alerts as they
            commit (:class:`~tidal.apps.demo.screen.CommittedAlertPrinter`); run with
            checkpoints.
        source: ``"generator"``, ``"log"`` or ``"kafka"``; see :func:`sensor_source`. With
            ``"kafka"`` the alerts are also committed to the Kafka topic
            :data:`ALERTS_TOPIC` in one transaction per checkpoint (run with checkpoints).
        data_dir: the data directory of the log (``None``: ``$TIDAL_DATA_DIR`` or
            ``./.tidal``).
        kafka: the cluster, with ``source="kafka"`` (default ``$TIDAL_KAFKA``).
        alpha: the detector's EWMA weight per window.
        threshold: ``|z|`` of the window mean that raises an alert.
        warmup: windows per sensor before it is scored.
        min_std: the smallest standard deviation of a window mean the detector assumes
            (deviations of the mean below ``threshold * min_std`` never alert).
        quiet: event time without an anomalous window that ends an incident (one alert
            per incident; see :class:`~tidal.apps.demo.incidents.Incidents`).
        learn: add the learning branch (:mod:`~tidal.apps.demo.forecast`: a forecaster
            under the retrain loop, its events on ``screen``). ``None``: with
            ``source="log"`` only, the one source the loop can replay history from; with
            ``"kafka"`` the handles' ``learn_note`` says why not. ``True`` with another
            source raises :class:`~tidal.errors.ConfigError`.
        adopt_after_s: with ``learn``: seconds of readings after a retrain starts at which
            its candidate is taken, waiting for the job there (reproducible decisions);
            ``None``: as soon as the job is done, the pipeline never waiting for it.

    Returns:
        The pipeline and its :class:`DemoHandles`.

    Example:
        >>> pipeline, handles = build_demo(sensors=10, rate=None)
        >>> list(pipeline.nodes)[:4]
        ['sensors', 'validate', 'features', 'complete']
    """
    if learn and source != "log":
        msg = (
            f"the demo's learning branch replays history from the embedded log, so it runs "
            f"with source='log', not {source!r}; leave learn unset"
        )
        raise ConfigError(msg)
    fleet = SensorFleet(sensors, hz=hz, seed=seed)
    readings = sensor_source(fleet, source, rate=rate, seed=seed, data_dir=data_dir, kafka=kafka)
    p = Pipeline(readings.pipeline)
    sensor_stream = p.source("sensors", readings.source, time="ts", watermark=bounded("1s"))
    valid = sensor_stream.validate("validate", {"value must be a finite number": _finite})
    features = valid.key_by("sensor").window(
        "features",
        sliding(WINDOW, SLIDE),
        {
            "mean": agg.mean("value"),
            "std": agg.std("value"),
            "max": agg.max("value"),
            "min": agg.min("value"),
            "count": agg.count(),
        },
    )
    min_count = max(1, math.floor(0.75 * _WINDOW_S * hz))

    def complete(batch: Batch) -> Array:
        full: Array = batch["count"] >= min_count
        return full

    detector = GatedZ(alpha=alpha, warmup=warmup, gate=threshold, min_scale=min_std)

    def signed(batch: Batch) -> Batch:
        """The demo's ``score`` (signed z of the window mean) and ``is_anomaly`` columns."""
        dev = batch["deviation"]
        middle = (batch["expected_low"] + batch["expected_high"]) / 2.0
        with np.errstate(invalid="ignore"):
            sign = np.where(batch["mean"] < middle, -1.0, 1.0)
            flag = dev >= threshold
        return batch.with_columns(score=sign * dev, is_anomaly=flag)

    alerts = (
        features.filter("complete", complete)
        .detect("detect", detector, value="mean", alert_on=threshold, ttl="10m")
        .map("score", signed)
        .filter("anomalies", _is_anomaly)
        .apply(Incidents("incidents", key="sensor", quiet=quiet, window=WINDOW))
        .map("alert", _alert_fields)
    )
    path = None if out is None else Path(out)
    if path is not None:
        from tidal.io.jsonl import JsonlPartSink, JsonlSink

        alerts.sink("alerts", JsonlPartSink(path) if exactly_once else JsonlSink(path))
    if source == "kafka":
        from tidal.io.kafka.sink import KafkaTransactionalSink

        kafka_source: Any = readings.source
        alerts.sink(
            "alerts.kafka",
            KafkaTransactionalSink(
                ALERTS_TOPIC,
                config=kafka_source.config,
                key="sensor",
                transactional_id=KAFKA_PIPELINE,
            ),
        )
    memory = MemorySink() if keep_alerts else None
    if memory is not None:
        alerts.sink("alerts" if path is None else "alerts.memory", memory)
    if path is None and memory is None:
        alerts.sink("alerts", _Discard())
    printer = (CommittedAlertPrinter if exactly_once else AlertPrinter)(screen, fleet=fleet)
    alerts.sink("screen", printer)
    handles = DemoHandles(fleet, memory, path, printer, readings)
    if learn is None and source == "kafka":
        handles.learn_note = (
            "learning: off on Kafka (the retrain loop replays history from the embedded "
            "log; run `tidal demo` without --kafka to see it)"
        )
    elif learn is None and source == "generator":
        handles.learn_note = "learning: off (the retrain loop needs source='log')"
    elif learn is None or learn:
        root = resolve_data_dir(data_dir)
        handles.learner = add_forecaster(valid, fleet, root, TOPIC, screen, adopt_after_s)
    return p, handles
