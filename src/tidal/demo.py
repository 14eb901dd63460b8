"""The IoT anomaly demo: thousands of sensors, sliding-window features, z-score alerts.

It needs no server. With ``source="log"`` (what ``tidal demo`` runs) a feed process
(:class:`~tidal.io.log.feed.FeedProcess`, a child of the demo) writes the sensor readings
into the embedded log topic ``demo-sensors`` (4 partitions, keyed by sensor) and the
pipeline reads them from there, checkpointing its positions, state and alerts together:
stopped by Ctrl-C or ``kill -9`` and started again, it continues with no lost or repeated
alert (``tests/test_demo_resume.py``). With ``source="generator"`` the readings come from a
:class:`~tidal.io.generator.GeneratorSource` in the pipeline itself::

    sensors (LogSource or GeneratorSource, event time "ts", watermark bounded("1s"))
      -> validate     finite values only; NaN readings go to the dead letters
      -> key_by("sensor")
      -> features     sliding("10s", "2s"): mean, std, max, min, count per sensor
      -> complete     drop windows with < 75% of the expected readings (a run's edges)
      -> detect       ZScoreDetector on the window mean (EWMA baseline per sensor,
                      5 windows of warm-up, |z| >= 5, standard deviation at least 0.05)
      -> anomalies    keep rows flagged is_anomaly
      -> alert        the alert's fields
      -> alerts (JSON Lines file or memory) and screen (a few lines per second)

The sensor stream (:class:`SensorFleet`) is a pure function of the sequence number, so any
run, at any speed and batching, sees the same events:

* ``sensors`` sensors report round-robin, each ``hz`` times per second of event time; event
  ``seq`` is sensor ``seq % sensors`` at true time ``seq / (sensors * hz)`` seconds after
  :data:`EPOCH_MS`;
* each sensor has its own level (15-30 units) and noise (standard deviation 0.2-0.6), and
  its baseline drifts as a random walk (one Gaussian step per second of event time);
* arrival is out of order: ``ts`` is the true time minus a jitter of 0-999 ms, so no event
  is later than the watermark's 1 s bound;
* about one reading in 10,000 is NaN (a dropout), which the validate step dead-letters;
* faults (:class:`Fault`) are injected at known sequence numbers: from 20 s of event time
  on (when the detectors have warmed up), every 20 s three sensors fail, one each with a
  *spike* (a single reading 60-120 units off, a glitch), *stuck* (reads 0.0 for 8 s) and
  *shift* (offset by 2.5-5 units for 8 s). :meth:`SensorFleet.faults` lists them, so tests
  can measure recall.

The detector's ``min_std`` floor matters here: the means of overlapping sliding windows
form a smooth series, so the variance a new sensor's first few windows show underestimates
what the series will do later; flooring the standard deviation at the noise level of a
window mean keeps early false alarms away, while every injected fault moves the mean by many
times that.

``rate`` is the wall-clock pace (events per second; ``None`` as fast as possible) and is
independent of event time: with the defaults (2,000 sensors at 10 Hz, 20,000 events/s) event
time runs at wall-clock speed; a higher rate replays faster than real time.

Example:
    >>> pipeline, handles = build_demo(sensors=100, rate=None, keep_alerts=True)
    >>> summary = pipeline.run(max_events=100_000, max_wait="0ms", handle_signals=False)
    >>> faults = handles.fleet.faults(100_000)  # 100 s of event time
    >>> alerted = {r["sensor"] for r in handles.alerts.records()}
    >>> len(faults), all(f.sensor in alerted for f in faults)
    (12, True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from tidal import aggregations as agg
from tidal.core.batch import Array, Batch
from tidal.core.watermark import bounded
from tidal.core.windows import sliding
from tidal.errors import ConfigError, ConnectorError
from tidal.io.base import BaseSink
from tidal.io.files import SchemaLike
from tidal.io.generator import GeneratorSource
from tidal.io.log.feed import FeedProcess, LogFeed
from tidal.io.log.groups import resolve_data_dir
from tidal.io.log.source import LogSource
from tidal.io.memory import MemorySink
from tidal.ml.anomaly import ZScoreDetector
from tidal.pipeline import Pipeline
from tidal.runtime.executor import RunSummary

__all__ = [
    "EPOCH_MS",
    "TOPIC",
    "AlertPrinter",
    "CommittedAlertPrinter",
    "DemoHandles",
    "Fault",
    "SensorFleet",
    "build_demo",
]

EPOCH_MS = 1_704_067_200_000
"""Event time of sequence number 0: 2024-01-01T00:00:00Z, in ms."""

FaultKind = Literal["spike", "stuck", "shift"]
_KINDS: tuple[FaultKind, ...] = ("spike", "stuck", "shift")

_U64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB

# independent random streams of the generator
_LEVEL, _NOISE_SD, _NOISE_A, _NOISE_B, _JITTER, _DROP, _WALK_A, _WALK_B, _FAULT = range(9)

TOPIC = "demo-sensors"
"""The embedded-log topic of the sensor readings (``source="log"``)."""
PARTITIONS = 4
_SCHEMA: SchemaLike = {"sensor": "int", "ts": "int", "value": "float", "seq": "int"}

WINDOW = "10s"
SLIDE = "2s"
_WINDOW_S = 10.0


def _mix_int(x: int) -> int:
    """splitmix64 of a Python int (for stream keys)."""
    x = (x + _GOLDEN) & _U64
    x = ((x ^ (x >> 30)) * _C1) & _U64
    x = ((x ^ (x >> 27)) * _C2) & _U64
    return x ^ (x >> 31)


def _hash(key: int, idx: Array) -> Array:
    """splitmix64 of ``idx`` xor ``key``, elementwise, as uint64 (wrapping arithmetic)."""
    x = idx.astype(np.uint64) ^ np.uint64(key)
    x = x + np.uint64(_GOLDEN)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(_C1)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(_C2)
    out: Array = x ^ (x >> np.uint64(31))
    return out


class _Random:
    """Counter-based randomness: the value for an index never depends on other indices."""

    def __init__(self, seed: int) -> None:
        self.keys = [_mix_int(seed * 1_000_003 + stream) for stream in range(16)]

    def uniform(self, stream: int, idx: Array) -> Array:
        """Uniform in (0, 1) per index."""
        h = _hash(self.keys[stream], idx)
        out: Array = ((h >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
        return out

    def normal(self, a: int, b: int, idx: Array) -> Array:
        """Standard normal per index (Box-Muller over streams ``a`` and ``b``)."""
        u1, u2 = self.uniform(a, idx), self.uniform(b, idx)
        out: Array = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
        return out


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault injected into one sensor's readings.

    Attributes:
        kind: ``"spike"`` (one reading off by ``level``), ``"stuck"`` (readings are
            ``level``) or ``"shift"`` (readings off by ``level``).
        sensor: the sensor id.
        start: the first sequence number of the episode.
        end: one past its last sequence number.
        level: the offset, or the stuck value.

    Example:
        >>> Fault("stuck", 3, 100, 200, 0.0).kind
        'stuck'
    """

    kind: FaultKind
    sensor: int
    start: int
    end: int
    level: float


class SensorFleet:
    """The demo's sensor readings, as a function of the sequence number.

    Call it with an int64 array of sequence numbers to get the columns ``sensor`` (int64),
    ``ts`` (int64 ms) and ``value`` (float64); see the module docs for the model.

    Args:
        sensors: how many sensors.
        hz: readings per sensor per second of event time.
        seed: changes every random choice.
        drift: standard deviation of the baseline's random walk per second.
        dropout: fraction of readings that are NaN.
        fault_start: event-time seconds before the first fault period.
        fault_every: seconds per fault period (three faults each).
        fault_length: seconds a stuck or shift episode lasts.

    Example:
        >>> fleet = SensorFleet(4, hz=1.0)
        >>> cols = fleet(np.arange(6))
        >>> cols["sensor"].tolist()
        [0, 1, 2, 3, 0, 1]
        >>> bool(((cols["ts"] - EPOCH_MS) // 250 <= np.arange(6)).all())  # up to 1 s early
        True
    """

    def __init__(
        self,
        sensors: int = 2000,
        *,
        hz: float = 10.0,
        seed: int = 7,
        drift: float = 0.01,
        dropout: float = 1e-4,
        fault_start: float = 20.0,
        fault_every: float = 20.0,
        fault_length: float = 8.0,
    ) -> None:
        if sensors < 1 or hz <= 0:
            msg = f"a sensor fleet needs sensors >= 1 and hz > 0, got {sensors} and {hz}"
            raise ConfigError(msg)
        if not 0 < fault_length < fault_every - 1:
            msg = f"fault_length must be in (0, fault_every - 1s), got {fault_length}"
            raise ConfigError(msg)
        self.sensors = int(sensors)
        self.hz = float(hz)
        self.per_s = self.sensors * self.hz
        self.drift = drift
        self.dropout = dropout
        self.fault_start = fault_start
        self.fault_every = fault_every
        self.fault_length = fault_length
        self.rng = _Random(seed)
        ids = np.arange(self.sensors, dtype=np.int64)
        self.level = 15.0 + 15.0 * self.rng.uniform(_LEVEL, ids)
        self.noise_sd = 0.2 + 0.4 * self.rng.uniform(_NOISE_SD, ids)
        self._walk_block = 0
        self._walk = np.zeros(self.sensors, dtype=np.float64)

    # -- time ---------------------------------------------------------------------------
    def seconds(self, seq: Any) -> Any:
        """True event time of ``seq`` in seconds after :data:`EPOCH_MS` (no jitter)."""
        return seq / self.per_s

    def seq_at(self, seconds: float) -> int:
        """The first sequence number at or after ``seconds`` of event time."""
        return math.ceil(seconds * self.per_s)

    # -- readings -----------------------------------------------------------------------
    def __call__(self, seq: Array) -> dict[str, Array]:
        """Columns ``sensor``, ``ts`` and ``value`` for the sequence numbers ``seq``."""
        seq = np.asarray(seq, dtype=np.int64)
        sensor = seq % self.sensors
        true_ms = np.floor(seq * (1000.0 / self.per_s)).astype(np.int64)
        jitter = np.floor(self.rng.uniform(_JITTER, seq) * 1000.0).astype(np.int64)
        value = self.level[sensor] + self.noise_sd[sensor] * self.rng.normal(
            _NOISE_A, _NOISE_B, seq
        )
        if len(seq):
            block = true_ms // 1000
            lo = int(block.min())
            walk = self._walks(lo, int(block.max()))
            value += walk[block - lo, sensor]
            for f in self.faults_between(int(seq.min()), int(seq.max()) + 1):
                hit = (sensor == f.sensor) & (seq >= f.start) & (seq < f.end)
                if f.kind == "stuck":
                    value[hit] = f.level
                else:
                    value[hit] += f.level
        value[self.rng.uniform(_DROP, seq) < self.dropout] = np.nan
        return {"sensor": sensor, "ts": EPOCH_MS + true_ms - jitter, "value": value}

    def _walks(self, lo: int, hi: int) -> Array:
        """Baseline offsets per (block ``lo..hi``, sensor): a random walk, one step a block.

        The walk is summed block after block in the same order whatever the batching, so
        values are bit-identical across runs; the last block reached is cached.
        """
        if lo < self._walk_block:
            self._walk_block, self._walk = 0, np.zeros(self.sensors, dtype=np.float64)
        while self._walk_block < lo:
            step = min(lo - self._walk_block, 256)
            self._walk = self._steps(self._walk, self._walk_block, step)[-1]
            self._walk_block += step
        rows = self._steps(self._walk, lo, hi - lo)
        self._walk_block, self._walk = hi, rows[-1]
        return rows

    def _steps(self, start: Array, block: int, steps: int) -> Array:
        """Walk values at blocks ``block .. block + steps``, from ``start`` at ``block``."""
        s = self.sensors
        idx = np.arange(block + 1, block + 1 + steps, dtype=np.int64)[:, None] * s
        idx = (idx + np.arange(s, dtype=np.int64)).reshape(-1)
        incs = self.drift * self.rng.normal(_WALK_A, _WALK_B, idx).reshape(steps, s)
        out: Array = np.cumsum(np.vstack((start[None, :], incs)), axis=0)
        return out

    # -- faults -------------------------------------------------------------------------
    def faults(self, until: int) -> list[Fault]:
        """Every fault that starts before sequence number ``until``.

        Example:
            >>> [f.kind for f in SensorFleet(50).faults(SensorFleet(50).seq_at(50.0))]
            ['spike', 'stuck', 'shift', 'spike', 'stuck', 'shift']
        """
        return [f for f in self.faults_between(0, until) if f.start < until]

    def faults_between(self, lo: int, hi: int) -> list[Fault]:
        """Faults whose episode overlaps sequence numbers ``[lo, hi)``."""
        t_lo, t_hi = self.seconds(lo), self.seconds(hi)
        first = max(0, math.floor((t_lo - self.fault_start) / self.fault_every) - 1)
        last = math.floor((t_hi - self.fault_start) / self.fault_every)
        out: list[Fault] = []
        for period in range(first, last + 1):
            out.extend(f for f in self._period(period) if f.start < hi and f.end > lo)
        return out

    def _period(self, period: int) -> list[Fault]:
        s = self.sensors
        per = min(len(_KINDS), s)
        idx = np.arange(period * 16, period * 16 + 16, dtype=np.int64)
        u = self.rng.uniform(_FAULT, idx)
        first_sensor = int(u[0] * s)
        out: list[Fault] = []
        for j in range(per):
            kind = _KINDS[j]
            sensor = (first_sensor + j * (s // per)) % s
            onset = (
                self.fault_start
                + period * self.fault_every
                + u[1 + j] * (self.fault_every - self.fault_length - 1.0)
            )
            start = self.seq_at(onset)
            sign = 1.0 if u[4 + j] < 0.5 else -1.0
            if kind == "spike":
                start += (sensor - start) % s
                fault = Fault(
                    kind, sensor, start, start + 1, sign * float(60.0 + 120.0 * abs(u[7] - 0.5))
                )
            elif kind == "stuck":
                fault = Fault(kind, sensor, start, self.seq_at(onset + self.fault_length), 0.0)
            else:
                level = sign * float(2.5 + 5.0 * abs(u[8] - 0.5))
                fault = Fault(kind, sensor, start, self.seq_at(onset + self.fault_length), level)
            out.append(fault)
        return out


# -- sinks --------------------------------------------------------------------------------
def format_alert(row: dict[str, Any]) -> str:
    """One screen line for an alert row.

    Example:
        >>> format_alert({"sensor": 42, "window_start": EPOCH_MS, "window_end": EPOCH_MS + 10_000,
        ...               "mean": 31.234, "max": 85.0, "score": 9.31})
        'ALERT sensor 42  00:00:00-00:00:10  mean 31.23  max 85.00  z=+9.3'
    """

    def hms(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%S")

    return (
        f"ALERT sensor {row['sensor']}  {hms(row['window_start'])}-{hms(row['window_end'])}  "
        f"mean {row['mean']:.2f}  max {row['max']:.2f}  z={row['score']:+.1f}"
    )


class AlertPrinter(BaseSink):
    """Prints alerts as lines, at most ``per_second`` lines a second (the rest are counted).

    Args:
        print_fn: where lines go (``print``, or a status line's ``print``).
        per_second: the most lines shown per wall-clock second.
        clock: a ``time.monotonic``-like function.

    Example:
        >>> lines = []
        >>> printer = AlertPrinter(lines.append, per_second=1, clock=lambda: 0.0)
        >>> rows = [{"sensor": s, "window_start": EPOCH_MS, "window_end": EPOCH_MS + 10_000,
        ...          "mean": 1.0, "max": 2.0, "score": 5.0} for s in (1, 2)]
        >>> printer.write(Batch.from_records(rows)); printer.close()
        >>> lines[1]
        '... 1 more alert not shown'
    """

    def __init__(
        self,
        print_fn: Callable[[str], None],
        *,
        per_second: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.print_fn = print_fn
        self.per_second = per_second
        self.clock = clock
        self.shown = 0
        self.hidden = 0
        self._second = -1

    def write(self, batch: Batch) -> None:
        """Print up to the second's budget of lines."""
        if not len(batch):
            return
        now = int(self.clock())
        if now != self._second:
            self._second, self.shown = now, 0
            self._report_hidden()
        room = max(self.per_second - self.shown, 0)
        for row in batch.slice(0, room).to_records():
            self.print_fn(format_alert(row))
        self.shown += min(room, len(batch))
        self.hidden += len(batch) - min(room, len(batch))

    def _report_hidden(self) -> None:
        if self.hidden:
            s = "" if self.hidden == 1 else "s"
            self.print_fn(f"... {self.hidden} more alert{s} not shown")
            self.hidden = 0

    def flush(self) -> None:
        """Report the alerts that were not shown."""
        self._report_hidden()


class CommittedAlertPrinter(AlertPrinter):
    """An :class:`AlertPrinter` that shows alerts when their checkpoint commits.

    It is a transactional sink (:class:`~tidal.io.base.TransactionalSink`): alerts written
    since the last checkpoint are held back, and printed when the checkpoint that covers
    them commits, so the screen shows what the exactly-once alerts file holds and a restart
    after a crash does not show an alert twice. Alerts lag by up to a checkpoint interval.
    A crash between a checkpoint's write and its commit skips that checkpoint's lines on
    screen (they are in the alerts file).

    Example:
        >>> lines = []
        >>> printer = CommittedAlertPrinter(lines.append, clock=lambda: 0.0)
        >>> printer.recover([])
        >>> row = {"sensor": 7, "window_start": EPOCH_MS, "window_end": EPOCH_MS + 10_000,
        ...        "mean": 1.0, "max": 2.0, "score": 5.0}
        >>> printer.write(Batch.from_records([row]))
        >>> lines, printer.prepare(1)
        ([], {'checkpoint': 1, 'alerts': 1})
        >>> printer.commit(1, {"checkpoint": 1, "alerts": 1}); len(lines)
        1
    """

    def __init__(
        self,
        print_fn: Callable[[str], None],
        *,
        per_second: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(print_fn, per_second=per_second, clock=clock)
        self._staged: list[Batch] = []
        self._prepared: dict[int, list[Batch]] = {}

    def write(self, batch: Batch) -> None:
        """Hold the alerts until their checkpoint commits."""
        if len(batch):
            self._staged.append(batch)

    def prepare(self, checkpoint_id: int) -> dict[str, Any]:
        """Set aside what was written since the last checkpoint."""
        staged, self._staged = self._staged, []
        self._prepared[checkpoint_id] = staged
        return {"checkpoint": checkpoint_id, "alerts": sum(len(b) for b in staged)}

    def commit(self, checkpoint_id: int, pending: dict[str, Any]) -> None:
        """Print the checkpoint's alerts (once: a repeated call prints nothing)."""
        for batch in self._prepared.pop(checkpoint_id, []):
            super().write(batch)

    def recover(self, pending: Sequence[dict[str, Any]]) -> None:
        """Forget everything held: a new process has nothing to show yet."""
        self._staged.clear()
        self._prepared.clear()


class _Discard(BaseSink):
    """Counts what reaches it (the executor does), keeps nothing."""

    def write(self, batch: Batch) -> None:
        """Drop the batch."""


# -- the pipeline -------------------------------------------------------------------------
@dataclass
class DemoHandles:
    """What a test or the CLI needs from a built demo.

    Attributes:
        fleet: the sensor model (its :meth:`SensorFleet.faults` are the ground truth).
        alerts: the alerts kept in memory (with ``keep_alerts=True``), else ``None``.
        out: the JSON Lines file (or part-file directory) alerts go to, if any.
        feed: with ``source="log"``, the feed that writes the readings into the log;
            run the pipeline inside ``with handles.feeding(): ...``.
        source: with ``source="log"``, the pipeline's :class:`LogSource`.
    """

    fleet: SensorFleet
    alerts: MemorySink | None
    out: Path | None
    feed: LogFeed | None = None
    source: LogSource | None = None

    def consumed(self) -> int:
        """With ``source="log"``: readings the pipeline has read since the topic began."""
        if self.source is None:
            return 0
        return int(sum(self.source.position().values()))

    @contextmanager
    def feeding(self, on_error: Callable[[BaseException], None] | None = None) -> Iterator[None]:
        """Run the feed (``source="log"``) in a child process for the duration of the block.

        The feed stays at most its ``lead`` ahead of the pipeline; if it fails, ``on_error``
        is called (e.g. with the executor's ``stop``) and the block's end raises
        :class:`~tidal.errors.ConnectorError`. See :class:`~tidal.io.log.feed.FeedProcess`.
        """
        if self.feed is None:
            yield
            return
        process = FeedProcess(self.feed, consumed=self.consumed, on_error=on_error)
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
            self.feed.next_seq = process.produced

    def extra(self, summary: RunSummary) -> dict[str, Any]:
        """Demo figures for the run summary.

        ``alerts`` (this run), ``sensors``, ``faults`` (injected into the readings read so
        far); with ``source="log"`` also ``position``, the readings read since the topic
        began (a resumed run starts where the last one stopped), and ``produced``.
        """
        position = self.consumed() if self.source is not None else summary.events
        out: dict[str, Any] = {
            "alerts": summary.outputs.get("alerts", 0),
            "sensors": self.fleet.sensors,
            "faults": len(self.fleet.faults(position)),
        }
        if self.feed is not None:
            out["position"] = position
            out["produced"] = self.feed.next_seq
        return out


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
    source: Literal["generator", "log"] = "generator",
    data_dir: str | Path | None = None,
    alpha: float = 0.05,
    threshold: float = 5.0,
    warmup: int = 5,
    min_std: float = 0.05,
) -> tuple[Pipeline, DemoHandles]:
    """Build the IoT demo pipeline (see the module docs); run it with ``max_events`` to bound it.

    Args:
        sensors: how many sensors.
        rate: wall-clock events per second; ``None`` as fast as possible.
        hz: readings per sensor per second of event time.
        seed: the generator's seed.
        out: a JSON Lines file for the alerts (the ``alerts`` sink); ``None`` for none.
        screen: prints alert lines, rate-limited (the ``screen`` sink); ``None`` for none.
        keep_alerts: also keep the alerts in memory (``handles.alerts``).
        exactly_once: ``out`` is a directory of part files committed by checkpoints
            (:class:`~tidal.io.jsonl.JsonlPartSink`) and the screen shows alerts as they
            commit (:class:`CommittedAlertPrinter`); run with checkpoints.
        source: ``"generator"`` (readings made in the pipeline) or ``"log"`` (a
            :class:`~tidal.io.log.feed.LogFeed` writes them into the topic :data:`TOPIC`
            of ``data_dir``, the pipeline reads them with a
            :class:`~tidal.io.log.source.LogSource`; see :meth:`DemoHandles.feeding`).
        data_dir: the data directory of the log (``None``: ``$TIDAL_DATA_DIR`` or
            ``./.tidal``); the feed refuses one that holds another demo's readings.
        alpha: the detector's EWMA weight per window.
        threshold: ``|z|`` of the window mean that raises an alert.
        warmup: windows per sensor before it is scored.
        min_std: the smallest standard deviation of a window mean the detector assumes
            (deviations of the mean below ``threshold * min_std`` never alert).

    Returns:
        The pipeline and its :class:`DemoHandles`.

    Example:
        >>> pipeline, handles = build_demo(sensors=10, rate=None)
        >>> list(pipeline.nodes)[:4]
        ['sensors', 'validate', 'features', 'complete']
    """
    fleet = SensorFleet(sensors, hz=hz, seed=seed)
    feed: LogFeed | None = None
    log_source: LogSource | None = None
    if source == "log":
        feed, log_source = _log_feed(fleet, data_dir, rate=rate, seed=seed)
        p = Pipeline("iot-demo-log")
        readings = p.source("sensors", log_source, time="ts", watermark=bounded("1s"))
    elif source == "generator":
        p = Pipeline("iot-demo")
        readings = p.source(
            "sensors", GeneratorSource(fleet, rate=rate), time="ts", watermark=bounded("1s")
        )
    else:
        msg = f"source must be 'generator' or 'log', got {source!r}"
        raise ConfigError(msg)
    features = (
        readings.validate("validate", {"value must be a finite number": _finite})
        .key_by("sensor")
        .window(
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
    )
    min_count = max(1, math.floor(0.75 * _WINDOW_S * hz))

    def complete(batch: Batch) -> Array:
        full: Array = batch["count"] >= min_count
        return full

    detector = ZScoreDetector(
        "detect",
        key="sensor",
        value="mean",
        alpha=alpha,
        threshold=threshold,
        warmup=warmup,
        min_std=min_std,
        ttl="10m",
    )
    alerts = (
        features.filter("complete", complete)
        .apply(detector)
        .filter("anomalies", _is_anomaly)
        .map("alert", _alert_fields)
    )
    path = None if out is None else Path(out)
    if path is not None:
        from tidal.io.jsonl import JsonlPartSink, JsonlSink

        alerts.sink("alerts", JsonlPartSink(path) if exactly_once else JsonlSink(path))
    memory = MemorySink() if keep_alerts else None
    if memory is not None:
        alerts.sink("alerts" if path is None else "alerts.memory", memory)
    if path is None and memory is None:
        alerts.sink("alerts", _Discard())
    if screen is not None:
        printer = CommittedAlertPrinter(screen) if exactly_once else AlertPrinter(screen)
        alerts.sink("screen", printer)
    return p, DemoHandles(fleet, memory, path, feed, log_source)


def _log_feed(
    fleet: SensorFleet, data_dir: str | Path | None, *, rate: float | None, seed: int
) -> tuple[LogFeed, LogSource]:
    """The feed of the readings into :data:`TOPIC`, and the source that reads them."""
    root = resolve_data_dir(data_dir)
    setup = {"topic": TOPIC, "sensors": fleet.sensors, "hz": fleet.hz, "seed": seed}
    marker = root / "demo.json"
    if marker.exists():
        try:
            found = orjson.loads(marker.read_bytes())
        except orjson.JSONDecodeError:
            found = None
        if found != setup:
            msg = (
                f"{root} holds the readings of another demo set-up ({found}); this one is "
                f"{setup}. Run it with that set-up, or give it another --data-dir (or delete "
                f"{root} to start over)"
            )
            raise ConfigError(msg)
    else:
        root.mkdir(parents=True, exist_ok=True)
        marker.write_bytes(orjson.dumps(setup))
    feed = LogFeed(
        fleet,
        root,
        TOPIC,
        key="sensor",
        partitions=PARTITIONS,
        rate=rate,
        retention_bytes=128 << 20,  # per partition: minutes of readings at the default rate
        segment_bytes=32 << 20,
    )
    feed.open()  # creates the topic, finds where the feed resumes
    feed.close()  # the feed process opens it again
    return feed, LogSource(root, TOPIC, schema=_SCHEMA)
