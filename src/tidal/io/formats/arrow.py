"""Arrow IPC values for Tidal-to-Tidal topics: :class:`ArrowFormat`.

Each value is one Arrow IPC stream: the schema and one record batch of many rows. A
producer writes one value per chunk of rows (a sink's batch, per partition); a consumer
maps the buffers straight into columns, with no per-row parsing at all.

Positions: one value gives many rows, so ``Decoded.rows`` repeats the value's index for
each of its rows and a source gives every row its value's offset. A source hands out all
the rows of a value in one batch and its position moves past the value, so a checkpoint
never falls inside a value: after a restart a value is read again whole, or not at all,
and exactly-once holds per value (see ``docs/decisions/0016-value-formats.md``).

Values with different schemas in one call are unified (missing columns become nulls,
types widened where Arrow can: ``promote_options="permissive"``); a value that is not an
IPC stream, holds no batch, or cannot be unified with the first value of the call is a
failure.

Example:
    >>> fmt = ArrowFormat()
    >>> one = fmt.encode({"sensor": ["a", "b"], "value": [1.5, 2.0]})
    >>> two = fmt.encode({"sensor": ["c"], "value": [3.0]})
    >>> len(one), len(two)
    (1, 1)
    >>> decoded = fmt.decode([one[0], b"oops", two[0]])
    >>> decoded.batch().to_records()
    [{'sensor': 'a', 'value': 1.5}, {'sensor': 'b', 'value': 2.0}, {'sensor': 'c', 'value': 3.0}]
    >>> decoded.rows.tolist(), [f.index for f in decoded.failures]
    ([0, 0, 2], [1])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from tidal.core.batch import Batch
from tidal.errors import ConfigError, ConnectorError
from tidal.io.formats.base import ARROW_ERRORS, Decoded, Failure, Values, as_values, columns_of

__all__ = ["ArrowFormat"]

Compression = Literal["lz4", "zstd"]


class ArrowFormat:
    """One Arrow IPC stream (schema + one record batch) per value; many rows per value.

    Args:
        compression: compress the buffers with ``"lz4"`` or ``"zstd"`` (``None``: none;
            readers need no setting).

    Raises:
        ConfigError: for another compression.
    """

    name = "arrow"
    batched = True

    def __init__(self, *, compression: Compression | None = None) -> None:
        if compression not in (None, "lz4", "zstd"):
            msg = f"ArrowFormat: compression must be None, 'lz4' or 'zstd', got {compression!r}"
            raise ConfigError(msg)
        self.compression = compression
        self._options = pa.ipc.IpcWriteOptions(compression=compression)

    def __repr__(self) -> str:
        return f"ArrowFormat(compression={self.compression!r})"

    def decode(self, values: Values) -> Decoded:
        """Read each value's record batch; concatenate them into the columns."""
        items = as_values(values)
        batches: list[pa.RecordBatch] = []
        owners: list[int] = []
        failures: list[Failure] = []
        for i, value in enumerate(items):
            if value is None:
                failures.append(Failure(i, "no value (null)", None))
                continue
            try:
                reader = pa.ipc.open_stream(value)
                got = list(reader)
            except (*ARROW_ERRORS, OSError) as exc:
                failures.append(Failure(i, f"not an Arrow IPC stream: {exc}", value))
                continue
            if len(got) != 1:
                reason = f"an Arrow value holds one record batch, this one has {len(got)}"
                failures.append(Failure(i, reason, value))
                continue
            batches.append(got[0])
            owners.append(i)
        kept, owners, failures = self._unify(batches, owners, items, failures)
        rows = np.repeat(np.asarray(owners, dtype=np.int64), [b.num_rows for b in kept])
        if not kept:
            return Decoded({}, rows, failures)
        tables = [pa.Table.from_batches([b]) for b in kept]
        table = pa.concat_tables(tables, promote_options="permissive")
        return Decoded(Batch.from_arrow(table).columns, rows, failures)

    @staticmethod
    def _unify(
        batches: list[pa.RecordBatch],
        owners: list[int],
        items: list[bytes | None],
        failures: list[Failure],
    ) -> tuple[list[pa.RecordBatch], list[int], list[Failure]]:
        """Drop the batches whose schema cannot be unified with the first one's."""
        if not batches or all(b.schema.equals(batches[0].schema) for b in batches):
            return batches, owners, failures
        schema = batches[0].schema
        kept, kept_owners = [batches[0]], [owners[0]]
        for b, i in zip(batches[1:], owners[1:], strict=True):
            try:
                schema = pa.unify_schemas([schema, b.schema], promote_options="permissive")
            except ARROW_ERRORS as exc:
                reason = f"its Arrow schema cannot be unified with the first value's: {exc}"
                failures.append(Failure(i, reason, items[i]))
                continue
            kept.append(b)
            kept_owners.append(i)
        failures.sort(key=lambda f: f.index)
        return kept, kept_owners, failures

    def encode(self, batch: Batch | Mapping[str, Any]) -> list[bytes]:
        """All the rows as one value: an IPC stream with the schema and one record batch.

        Raises:
            ConnectorError: for a column Arrow cannot hold.
        """
        b = columns_of(batch)
        try:
            table = b.to_arrow()
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema, options=self._options) as writer:
                writer.write_batch(table.combine_chunks().to_batches()[0] if table.num_rows
                                   else pa.RecordBatch.from_pylist([], schema=table.schema))
        except ARROW_ERRORS as exc:
            msg = f"{self!r}: cannot write the batch ({b!r}) as Arrow: {exc}"
            raise ConnectorError(msg) from exc
        return [sink.getvalue().to_pybytes()]
