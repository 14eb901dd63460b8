"""The embedded log: Kafka-like topics in plain files, the default source and sink.

Topics have partitions; each partition is a folder of append-only segment files with a
sparse offset index; every record carries an offset, a timestamp, a key, a value and
headers, with a CRC. All of it lives under one data directory (``data_dir``, default
``./.tidal``, environment variable ``TIDAL_DATA_DIR``)::

    <data_dir>/log/<topic>/topic.json
    <data_dir>/log/<topic>/<partition>/<base_offset:020d>.seg (+ .idx)
    <data_dir>/groups/<group>/<topic>.json

The modules, bottom up:

- :mod:`~tidal.io.log.format`: the record layout, batch encoding, bulk verification;
- :mod:`~tidal.io.log.segment`: segment files, indexes, a cursor that walks a segment;
- :mod:`~tidal.io.log.writer`: appends under a file lock, torn-tail recovery, roll,
  retention;
- :mod:`~tidal.io.log.reader`: sequential reads as columns, damage as dead letters;
- :mod:`~tidal.io.log.topic`: :class:`Topic`, the API over all of it;
- :mod:`~tidal.io.log.groups`: committed consumer positions;
- :mod:`~tidal.io.log.source` / :mod:`~tidal.io.log.sink`: :class:`LogSource` and
  :class:`LogSink` for pipelines;
- :mod:`~tidal.io.log.commands`: what ``tidal log ...`` runs.

Example:
    >>> import tempfile
    >>> from tidal import Batch, Pipeline
    >>> from tidal.testing import collect, run
    >>> tmp = tempfile.TemporaryDirectory()
    >>> sink = LogSink(tmp.name, "readings", key="sensor", partitions=2)
    >>> sink.write(Batch({"sensor": ["a", "b", "a"], "value": [1.0, 2.0, 3.0]})); sink.close()
    >>> p = Pipeline("read")
    >>> out = collect(p.source("in", LogSource(tmp.name, "readings", bounded=True)))
    >>> run(p).events, sorted(r["value"] for r in out.records())
    (3, [1.0, 2.0, 3.0])
    >>> tmp.cleanup()
"""

from tidal.io.log.groups import commit_positions, load_positions, resolve_data_dir
from tidal.io.log.reader import PartitionReader, RecordBatch
from tidal.io.log.sink import LogSink
from tidal.io.log.source import LogSource
from tidal.io.log.topic import Topic, TopicConfig

__all__ = [
    "LogSink",
    "LogSource",
    "PartitionReader",
    "RecordBatch",
    "Topic",
    "TopicConfig",
    "commit_positions",
    "load_positions",
    "resolve_data_dir",
]
