"""IoT anomaly detection: the pipeline of ``tidal demo``, as a file for ``tidal run``.

2,000 simulated sensors -> validate -> sliding 10 s / 2 s window features per sensor ->
z-score of the window mean against each sensor's EWMA baseline -> alerts in alerts.jsonl.
See :mod:`tidal.apps.demo` for the sensor model and the injected faults.

    tidal run examples/iot_anomaly.py --events 200000 --json

The generator runs as fast as the pipeline goes (``rate=None``); event time still advances
at 10 readings per sensor per second, so 200,000 events are 10 s of sensor time. Detectors
warm up for the first 20 s; faults start after that.
"""

from tidal.apps.demo import build_demo

pipeline, handles = build_demo(sensors=2_000, rate=None, out="alerts.jsonl")
extra = handles.extra  # adds "alerts", "sensors" and the "scorecard" to the run summary

if __name__ == "__main__":
    summary = pipeline.run(max_events=1_000_000)
    print({**summary.to_json(), **extra(summary)})
