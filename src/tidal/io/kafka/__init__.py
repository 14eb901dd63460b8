"""Apache Kafka: connection settings, the project's own broker, sources and sinks.

Needs the ``kafka`` extra (``pip install 'tidal-stream[kafka]'``) for everything that talks
to a broker; :class:`KafkaConfig` itself has no dependency.
"""

from tidal.io.kafka.config import KafkaConfig
from tidal.io.kafka.sink import KafkaSink, KafkaTransactionalSink
from tidal.io.kafka.source import KafkaSource

__all__ = ["KafkaConfig", "KafkaSink", "KafkaSource", "KafkaTransactionalSink"]
