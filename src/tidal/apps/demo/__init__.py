"""The IoT anomaly demo (``tidal demo``): thousands of sensors, sliding windows, z-score alerts.

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
      -> incidents    one alert per incident: later anomalous windows of the same sensor
                      are folded in until it has been quiet for 10 s (hysteresis)
      -> alert        the alert's fields
      -> alerts (JSON Lines file or memory) and screen (a few lines per second, each
         naming the fault behind the alert; a scorecard at the end)
    validate (the same readings; with source="log") -> the learning branch
      -> lags, deltas  each sensor's last four readings, the changes between them
      -> forecast      retrain_loop: a linear model forecasts each reading from the sensor's
                       own last ones and learns it; drift of its errors -> retrain in a
                       child process on history replayed from the log -> shadow -> promote
      -> screen        one `learn` line per loop event (see tidal.apps.demo.forecast)

The sensor stream (:class:`~tidal.apps.demo.fleet.SensorFleet`) is a pure function of
the sequence number, so any run, at any speed and batching, sees the same events; every 20 s
of event time three sensors fail (a spike, a sensor stuck at zero, a level shift), at
sequence numbers the fleet can list. At 60 s one sensor in 20 starts to vibrate (a concept
change for the forecaster, invisible to the window means). About one reading in 10,000 is
NaN (a *dropout*): the validate step sends it to the dead letters, which is what the status line's
``dropouts`` counts.

The package's modules: :mod:`~tidal.apps.demo.fleet` (the readings and the faults),
:mod:`~tidal.apps.demo.pipeline` (:func:`build_demo`, where the readings come from,
:func:`reset_demo`), :mod:`~tidal.apps.demo.incidents` (one alert per incident),
:mod:`~tidal.apps.demo.screen` (alert lines and the scorecard),
:mod:`~tidal.apps.demo.forecast` (the learning branch) and
:mod:`~tidal.apps.demo.learning` (``tidal demo --learn``, the loop on a classifier).

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
    >>> print(handles.scorecard_line(summary))
    scorecard: 12 of 12 faults found, 0 false alarms
      12 injected: 4 spike, 4 stuck, 4 shift
"""

from tidal.apps.demo.fleet import EPOCH_MS, Fault, SensorFleet
from tidal.apps.demo.pipeline import (
    TOPIC,
    DemoHandles,
    SensorSource,
    build_demo,
    reset_demo,
    sensor_source,
)
from tidal.apps.demo.screen import AlertPrinter, CommittedAlertPrinter, Scorecard

__all__ = [
    "EPOCH_MS",
    "TOPIC",
    "AlertPrinter",
    "CommittedAlertPrinter",
    "DemoHandles",
    "Fault",
    "Scorecard",
    "SensorFleet",
    "SensorSource",
    "build_demo",
    "reset_demo",
    "sensor_source",
]
