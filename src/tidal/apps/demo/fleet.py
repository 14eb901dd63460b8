"""The demo's sensor readings: a pure function of the sequence number, faults included.

* ``sensors`` sensors report round-robin, each ``hz`` times per second of event time; event
  ``seq`` is sensor ``seq % sensors`` at true time ``seq / (sensors * hz)`` seconds after
  :data:`EPOCH_MS`;
* each sensor has its own level (15-30 units) and noise (standard deviation 0.2-0.6), and
  its baseline drifts as a random walk (one Gaussian step per second of event time);
* arrival is out of order: ``ts`` is the true time minus a jitter of 0-999 ms, so no event
  is later than the watermark's 1 s bound;
* about one reading in 10,000 is NaN (a *dropout*), which the pipeline dead-letters;
* faults (:class:`Fault`) are injected at known sequence numbers: from 20 s of event time
  on (when the detectors have warmed up), every 20 s three sensors fail, one each with a
  *spike* (a single reading 60-120 units off, a glitch), *stuck* (reads 0.0 for 8 s) and
  *shift* (offset by 2.5-5 units for 8 s). :meth:`SensorFleet.faults` lists them, so tests
  and the demo's scorecard can measure recall, and :meth:`SensorFleet.fault_behind` names
  the fault behind an alert;
* a *concept change* (not a fault: nothing breaks, the dynamics change): from
  ``change_at`` seconds of event time (60 s) on, every ``change_every``-th sensor (one in 10)
  starts to vibrate, its readings oscillating by ``change_amp`` units (3) with a period
  of ``change_period`` seconds (2 s). The period divides the windows' 10 s and 2 s, so the
  window means the anomaly detector watches do not move; a model that forecasts each
  reading from the sensor's previous ones does get worse on those sensors, which is what
  the demo's learning branch must notice (:meth:`SensorFleet.changing`).

Any run, at any speed and batching, sees the same events.

Example:
    >>> fleet = SensorFleet(100)
    >>> [f.describe() for f in fleet.faults(fleet.seq_at(40.0))]
    ['spike -107.9', 'stuck at 0', 'level shift +3.2']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tidal.core.batch import Array
from tidal.errors import ConfigError

__all__ = ["EPOCH_MS", "SETTLE_MS", "Fault", "FaultKind", "SensorFleet"]

EPOCH_MS = 1_704_067_200_000
"""Event time of sequence number 0: 2024-01-01T00:00:00Z, in ms."""

FaultKind = Literal["spike", "stuck", "shift"]
_KINDS: tuple[FaultKind, ...] = ("spike", "stuck", "shift")

_U64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB

# independent random streams of the generator
SETTLE_MS = 30_000
"""How long after a fault's episode an alert on its sensor is still put down to it."""

_LEVEL, _NOISE_SD, _NOISE_A, _NOISE_B, _JITTER, _DROP, _WALK_A, _WALK_B, _FAULT = range(9)


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

    def describe(self) -> str:
        """The fault in a few words, as the demo's screen names it.

        Example:
            >>> Fault("shift", 3, 100, 200, -3.25).describe()
            'level shift -3.2'
        """
        if self.kind == "stuck":
            return f"stuck at {self.level:g}"
        if self.kind == "shift":
            return f"level shift {self.level:+.1f}"
        return f"spike {self.level:+.1f}"


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
        change_at: event-time seconds at which the concept change begins (``None``: none).
        change_every: one sensor in this many changes (those with ``id % change_every ==
            change_every // 2``).
        change_amp: the oscillation's amplitude, in units.
        change_period: the oscillation's period in seconds (a divisor of 2 s keeps the
            demo's window means still).

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
        change_at: float | None = 60.0,
        change_every: int = 10,
        change_amp: float = 3.0,
        change_period: float = 2.0,
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
        if change_every < 1 or change_period <= 0:
            msg = (
                "a sensor fleet needs change_every >= 1 and change_period > 0, got "
                f"{change_every} and {change_period}"
            )
            raise ConfigError(msg)
        self.change_at = change_at
        self.change_every = int(change_every)
        self.change_amp = float(change_amp)
        self.change_period = float(change_period)
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

    def changing(self) -> Array:
        """The ids of the sensors whose dynamics change at ``change_at`` (empty without).

        Example:
            >>> SensorFleet(50).changing().tolist()
            [5, 15, 25, 35, 45]
        """
        if self.change_at is None:
            return np.zeros(0, dtype=np.int64)
        ids = np.arange(self.sensors, dtype=np.int64)
        out: Array = ids[ids % self.change_every == self.change_every // 2]
        return out

    def setup(self) -> dict[str, Any]:
        """The settings that shape the readings beyond sensors, rate and seed (JSON)."""
        return {
            "change_at": self.change_at,
            "change_every": self.change_every,
            "change_amp": self.change_amp,
            "change_period": self.change_period,
        }

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
            if self.change_at is not None:
                at = np.floor(self.change_at * 1000.0)
                vib = (sensor % self.change_every == self.change_every // 2) & (true_ms >= at)
                if vib.any():
                    t = (true_ms[vib] - at) / (1000.0 * self.change_period)
                    value[vib] += self.change_amp * np.sin(2.0 * np.pi * t)
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

    def fault_behind(self, sensor: int, window_start: int, window_end: int) -> Fault | None:
        """The injected fault that explains an alert on ``sensor``'s window, if any.

        A fault explains a window that overlaps its episode, from 1 s before it (readings
        arrive up to 1 s early in ``ts``) to :data:`SETTLE_MS` after it (when the episode
        ends, the baseline that followed it needs a few windows to settle back). Of two
        such faults of one sensor, the later one is behind the alert.

        Args:
            sensor: the alert's sensor.
            window_start: the window's start, event time in ms.
            window_end: the window's end, event time in ms.

        Example:
            >>> fleet = SensorFleet(100)
            >>> f = fleet.faults(fleet.seq_at(40.0))[0]
            >>> at = EPOCH_MS + int(fleet.seconds(f.start) * 1000)
            >>> fleet.fault_behind(f.sensor, at - 5_000, at + 5_000) == f
            True
            >>> fleet.fault_behind(f.sensor, at - 60_000, at - 50_000) is None
            True
        """
        lo = self.seq_at(max(0.0, (window_start - EPOCH_MS - SETTLE_MS) / 1000))
        hi = self.seq_at(max(0.0, (window_end - EPOCH_MS + 1000) / 1000)) + 1
        behind: Fault | None = None
        for f in self.faults_between(lo, hi):
            start_ms = EPOCH_MS + self.seconds(f.start) * 1000 - 1000
            end_ms = EPOCH_MS + self.seconds(f.end) * 1000 + SETTLE_MS
            if f.sensor == sensor and window_start < end_ms and window_end > start_ms:
                if behind is None or f.start > behind.start:
                    behind = f  # the latest fault that began before the window ended
        return behind

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
