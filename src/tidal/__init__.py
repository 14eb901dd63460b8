"""Tidal: real-time AI on event streams, in columnar micro-batches.

The names a quickstart needs; deeper names stay namespaced (``tidal.windows``,
``tidal.aggregations``, ``tidal.io.files``, ``tidal.testing``).

Example:
    >>> import tidal
    >>> sorted(tidal.__all__)[:3]
    ['Batch', 'CheckpointConfig', 'ConfigError']
"""

from tidal import aggregations
from tidal.core.batch import Batch
from tidal.core.deadletter import DeadLetter
from tidal.core.watermark import bounded, processing_time
from tidal.core.windows import session, sliding, tumbling
from tidal.errors import (
    ConfigError,
    ConnectorError,
    ModelError,
    PipelineError,
    StateError,
    TidalError,
)
from tidal.pipeline import Pipeline, Stream
from tidal.runtime.checkpoint import CheckpointConfig
from tidal.runtime.executor import Executor, RunSummary

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "CheckpointConfig",
    "ConfigError",
    "ConnectorError",
    "DeadLetter",
    "Executor",
    "ModelError",
    "Pipeline",
    "PipelineError",
    "RunSummary",
    "StateError",
    "Stream",
    "TidalError",
    "aggregations",
    "bounded",
    "processing_time",
    "session",
    "sliding",
    "tumbling",
]
