"""Tidal inside Apache Flink: Kafka -> Flink SQL windowed features -> Tidal model and
anomaly detection -> Kafka, on PyFlink's local mini-cluster.

Runs in the PyFlink environment (``make flink-env``) against any Kafka cluster, e.g. the
project's own broker::

    tidal kafka up                       # prints the bootstrap address (127.0.0.1:PORT)
    .venv-flink/bin/python examples/flink_job.py --bootstrap 127.0.0.1:PORT \\
        --input metrics --output scored

The job:

1. reads JSON metrics ``{"host": "h1", "ts": <epoch ms>, "latency_ms": 12.5, "errors": 0}``
   from ``--input`` with Flink's own Kafka SQL connector (``flink-sql-connector-kafka``,
   fetched from Maven Central once by :func:`tidal.flink.jars.kafka_connector_jar`);
2. computes per-host features in one-second event-time tumbling windows in Flink SQL
   (mean and max latency, error count, events);
3. scores every window with a Tidal model through a vectorized function
   (:func:`tidal.flink.table.model_function`: one ONNX call per Arrow batch) — the row
   carries ``risk`` and the ``model_version`` that scored it;
4. detects anomalies in each host's mean latency with a Tidal detector whose state lives in
   Flink's keyed state (:class:`tidal.flink.datastream.DetectFunction`), so checkpoints
   cover it;
5. writes the scored windows as JSON to ``--output`` with the same Kafka connector.

``--bounded`` reads the input up to its current end and stops (what the test does); without
it the job runs until stopped, with a checkpoint every ``--checkpoint-ms``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tidal.flink.core import logistic_onnx
from tidal.ml.onnx import OnnxHandler

FEATURES = ("mean_latency", "max_latency", "errors")
WEIGHTS, BIAS = (0.02, 0.01, 0.5), -4.0
"""The example's model: risk = sigmoid(0.02 * mean + 0.01 * max + 0.5 * errors - 4)."""


def model() -> OnnxHandler:
    """The example's risk model (a real ONNX model, built here: no download)."""
    return OnnxHandler(logistic_onnx(WEIGHTS, BIAS, output="risk"), version="risk-v1")


def build(
    bootstrap: str,
    source: str,
    sink: str,
    *,
    bounded: bool = False,
    detector: str = "median_mad",
    group: str = "tidal-flink-example",
    checkpoint_ms: int = 10_000,
) -> Any:
    """Build the job; return the table environment's ``TableResult`` of the running insert."""
    from pyflink.common import Configuration, Types
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    from tidal.flink.datastream import DetectFunction, with_detection
    from tidal.flink.jars import kafka_connector_jar
    from tidal.flink.table import model_function

    conf = Configuration()
    conf.set_string("pipeline.jars", kafka_connector_jar().as_uri())
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    if not bounded:
        env.enable_checkpointing(checkpoint_ms)
    t_env = StreamTableEnvironment.create(env)
    bounded_opt = "'scan.bounded.mode' = 'latest-offset'," if bounded else ""
    t_env.execute_sql(f"""
        CREATE TABLE metrics (
            host STRING, ts BIGINT, latency_ms DOUBLE, errors INT,
            et AS TO_TIMESTAMP_LTZ(ts, 3),
            WATERMARK FOR et AS et - INTERVAL '1' SECOND
        ) WITH (
            'connector' = 'kafka', 'topic' = '{source}',
            'properties.bootstrap.servers' = '{bootstrap}',
            'properties.group.id' = '{group}',
            'scan.startup.mode' = 'earliest-offset', {bounded_opt}
            'format' = 'json', 'json.ignore-parse-errors' = 'true'
        )""")
    t_env.execute_sql(f"""
        CREATE TABLE scored (
            host STRING, window_end STRING, last_ts BIGINT, mean_latency DOUBLE,
            max_latency DOUBLE, errors DOUBLE, events BIGINT, risk DOUBLE,
            model_version STRING, anomaly_score DOUBLE, deviation DOUBLE,
            expected_low DOUBLE, expected_high DOUBLE, detector STRING, alert BOOLEAN
        ) WITH (
            'connector' = 'kafka', 'topic' = '{sink}',
            'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'json'
        )""")
    t_env.create_temporary_function(
        "tidal_risk", model_function(model(), inputs=len(FEATURES), output="risk", version=True)
    )
    features = t_env.sql_query("""
        SELECT host, DATE_FORMAT(window_end, 'yyyy-MM-dd HH:mm:ss.SSS') AS window_end,
               MAX(ts) AS last_ts, AVG(latency_ms) AS mean_latency, MAX(latency_ms) AS max_latency,
               CAST(SUM(errors) AS DOUBLE) AS errors, COUNT(*) AS events
        FROM TABLE(TUMBLE(TABLE metrics, DESCRIPTOR(et), INTERVAL '1' SECOND))
        GROUP BY host, window_start, window_end""")
    t_env.create_temporary_view("features", features)
    scored = t_env.sql_query("""
        SELECT host, window_end, last_ts, mean_latency, max_latency, errors, events,
               r.risk AS risk, r.model_version AS model_version
        FROM (SELECT *, tidal_risk(mean_latency, max_latency, errors) AS r FROM features)""")
    names = ["host", "window_end", "last_ts", *FEATURES, "events", "risk", "model_version"]
    types = [Types.STRING(), Types.STRING(), Types.LONG(), *[Types.DOUBLE()] * 3]
    row = Types.ROW_NAMED(names, [*types, Types.LONG(), Types.DOUBLE(), Types.STRING()])
    stream = t_env.to_data_stream(scored).map(lambda r: r, output_type=row)
    detected = (
        stream.key_by(lambda r: r[0], key_type=Types.STRING())
        .process(DetectFunction("mean_latency", detector, fields=names), with_detection(row))
        .uid("tidal-detect")
    )
    return t_env.from_data_stream(detected).execute_insert("scored")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers (host:port)")
    ap.add_argument("--input", default="metrics", help="topic of JSON metrics")
    ap.add_argument("--output", default="scored", help="topic for the scored windows")
    ap.add_argument("--detector", default="median_mad", help="a Tidal detector name")
    ap.add_argument("--bounded", action="store_true", help="stop at the input's current end")
    ap.add_argument("--checkpoint-ms", type=int, default=10_000)
    args = ap.parse_args(argv)
    result = build(
        args.bootstrap,
        args.input,
        args.output,
        bounded=args.bounded,
        detector=args.detector,
        checkpoint_ms=args.checkpoint_ms,
    )
    result.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
