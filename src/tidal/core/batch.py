"""The columnar micro-batch that every operator works on.

A :class:`Batch` is a set of equal-length numpy columns plus four optional *system arrays*
that the runtime keeps in step with the rows:

``time``
    event time, int64 milliseconds since the epoch (the pipeline's clock);
``wm``
    the watermark in force when the row arrived (int64 ms). Operators judge lateness
    row by row against it, so event-time results do not depend on how rows were batched;
``ingest``
    wall-clock nanoseconds when the row entered the pipeline (for latency);
``partition``
    the source partition the row came from (int32);
``offset``
    the row's position in that partition (a log offset, a file's line or row number),
    so that dead letters can say where a bad record came from.

User functions see and return plain columns; ``map`` and ``filter`` carry the system arrays
along. Strings are numpy ``object`` arrays; numbers keep their numpy dtype. Conversion to and
from Arrow is one call each way, so file and broker decoding stays in bulk.

Example:
    >>> b = Batch({"sensor": ["a", "b", "a"], "value": [1.0, 2.5, 4.0]}, time=[10, 20, 30])
    >>> len(b), b.names
    (3, ['sensor', 'value'])
    >>> b.filter(b["value"] > 1.5).to_records()
    [{'sensor': 'b', 'value': 2.5}, {'sensor': 'a', 'value': 4.0}]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tidal.errors import PipelineError

Array = npt.NDArray[Any]
"""Any numpy array; columns have any dtype, system arrays are int64 (partition int32)."""

SYSTEM = ("time", "wm", "ingest", "partition", "offset")


def as_column(values: Any) -> Array:
    """Turn a list, an Arrow array or a numpy array into a 1-D numpy column.

    Strings (and anything non-numeric) become ``object`` arrays.

    Example:
        >>> as_column(["x", "y"]).dtype, as_column([1, 2]).dtype
        (dtype('O'), dtype('int64'))
        >>> as_column(["a", [1, 2]]).tolist()
        ['a', [1, 2]]
    """
    if isinstance(values, np.ndarray):
        arr = values
    elif isinstance(values, pa.ChunkedArray | pa.Array):
        arr = values.to_numpy(zero_copy_only=False)
    else:
        try:
            arr = np.asarray(values)
        except ValueError:  # ragged lists or dicts mixed with scalars: one object per row
            items = list(values)
            arr = np.empty(len(items), dtype=object)
            arr[:] = items
    if arr.ndim != 1:
        arr = arr.reshape(len(arr), -1) if arr.ndim > 1 else arr.reshape(-1)
    if arr.dtype.kind in "US":
        arr = arr.astype(object)
    return arr


class Batch:
    """Equal-length numpy columns plus the runtime's per-row system arrays.

    Args:
        columns: column name to values (lists, numpy or Arrow arrays).
        time: event time per row, int64 ms.
        wm: watermark in force at each row's arrival, int64 ms.
        ingest: wall-clock ns at which each row entered the pipeline.
        partition: source partition of each row.
        offset: position of each row in its partition.
        length: the number of rows, for a batch without columns.

    Raises:
        PipelineError: if the columns differ in length.
    """

    __slots__ = ("columns", "time", "wm", "ingest", "partition", "offset", "_n")

    def __init__(
        self,
        columns: Mapping[str, Any] | None = None,
        *,
        time: Any = None,
        wm: Any = None,
        ingest: Any = None,
        partition: Any = None,
        offset: Any = None,
        length: int | None = None,
    ) -> None:
        cols = {str(k): as_column(v) for k, v in (columns or {}).items()}
        n = length
        for name, col in cols.items():
            if n is None:
                n = len(col)
            elif len(col) != n:
                lengths = {k: len(v) for k, v in cols.items()}
                msg = f"all columns of a batch must have the same length; got {lengths} ({name!r})"
                raise PipelineError(msg)
        self.columns: dict[str, Array] = cols
        self.time: Array | None = None if time is None else np.asarray(time, dtype=np.int64)
        self.wm: Array | None = None if wm is None else np.asarray(wm, dtype=np.int64)
        self.ingest: Array | None = None if ingest is None else np.asarray(ingest, dtype=np.int64)
        self.partition: Array | None = (
            None if partition is None else np.asarray(partition, dtype=np.int32)
        )
        self.offset: Array | None = None if offset is None else np.asarray(offset, dtype=np.int64)
        if n is None:
            n = next((len(a) for a in self._system() if a is not None), 0)
        self._n = n
        for label, arr in zip(SYSTEM, self._system(), strict=True):
            if arr is not None and len(arr) != n:
                msg = f"system array {label!r} has {len(arr)} rows, the batch has {n}"
                raise PipelineError(msg)

    def _system(self) -> tuple[Array | None, ...]:
        return (self.time, self.wm, self.ingest, self.partition, self.offset)

    # -- shape and access ---------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def __getitem__(self, name: str) -> Array:
        try:
            return self.columns[name]
        except KeyError:
            msg = f"no column {name!r} in batch; columns are {self.names}"
            raise KeyError(msg) from None

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns)

    @property
    def names(self) -> list[str]:
        """Column names, in order."""
        return list(self.columns)

    def __repr__(self) -> str:
        cols = ", ".join(f"{k}:{v.dtype}" for k, v in self.columns.items())
        return f"Batch({self._n} rows; {cols})"

    # -- row selection (system arrays follow) --------------------------------------------
    def take(self, index: Array) -> Batch:
        """Rows at ``index`` (an int array), in that order."""
        return self._derive({k: v[index] for k, v in self.columns.items()}, index)

    def filter(self, mask: Array) -> Batch:
        """Rows where the boolean ``mask`` is true."""
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or len(mask) != self._n:
            msg = f"filter needs a boolean mask of {self._n} rows, got {mask.dtype} x {len(mask)}"
            raise PipelineError(msg)
        return self._derive({k: v[mask] for k, v in self.columns.items()}, mask)

    def slice(self, start: int, stop: int) -> Batch:
        """Rows ``start`` to ``stop`` (a view, no copy)."""
        return self._derive({k: v[start:stop] for k, v in self.columns.items()}, slice(start, stop))

    def _derive(self, cols: dict[str, Array], sel: Any) -> Batch:
        out = Batch.__new__(Batch)
        out.columns = cols
        out.time = None if self.time is None else self.time[sel]
        out.wm = None if self.wm is None else self.wm[sel]
        out.ingest = None if self.ingest is None else self.ingest[sel]
        out.partition = None if self.partition is None else self.partition[sel]
        out.offset = None if self.offset is None else self.offset[sel]
        n = len(np.arange(self._n)[sel]) if not cols else len(next(iter(cols.values())))
        out._n = n  # noqa: SLF001 - same class
        return out

    # -- columns ------------------------------------------------------------------------
    def with_columns(self, **columns: Any) -> Batch:
        """A batch with columns added or replaced; the system arrays are kept.

        Example:
            >>> Batch({"x": [1, 2]}).with_columns(y=[3, 4]).names
            ['x', 'y']
        """
        cols = dict(self.columns)
        cols.update({k: as_column(v) for k, v in columns.items()})
        return self.with_data(cols)

    def select(self, names: Sequence[str]) -> Batch:
        """A batch with only ``names``, in that order."""
        return self.with_data({n: self[n] for n in names})

    def drop(self, names: Iterable[str]) -> Batch:
        """A batch without ``names``."""
        gone = set(names)
        return self.with_data({k: v for k, v in self.columns.items() if k not in gone})

    def rename(self, mapping: Mapping[str, str]) -> Batch:
        """A batch with columns renamed by ``mapping``."""
        return self.with_data({mapping.get(k, k): v for k, v in self.columns.items()})

    def with_data(self, columns: Mapping[str, Any]) -> Batch:
        """The same rows (and system arrays) with other columns of the same length."""
        return Batch(
            columns,
            time=self.time,
            wm=self.wm,
            ingest=self.ingest,
            partition=self.partition,
            offset=self.offset,
            length=self._n,
        )

    # -- building -----------------------------------------------------------------------
    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        """Stack batches with the same columns (system arrays kept where all have them)."""
        batches = [b for b in batches if len(b)] or list(batches[:1])
        if not batches:
            return Batch()
        if len(batches) == 1:
            return batches[0]
        names = batches[0].names
        for b in batches[1:]:
            if b.names != names:
                msg = f"cannot concatenate batches with columns {names} and {b.names}"
                raise PipelineError(msg)

        def sys(label: str) -> Array | None:
            parts = [getattr(b, label) for b in batches]
            if any(p is None for p in parts):
                return None
            return np.concatenate(parts)

        cols = {n: _concat_col([b.columns[n] for b in batches]) for n in names}
        return Batch(
            cols,
            time=sys("time"),
            wm=sys("wm"),
            ingest=sys("ingest"),
            partition=sys("partition"),
            offset=sys("offset"),
            length=sum(len(b) for b in batches),
        )

    @staticmethod
    def from_records(records: Sequence[Mapping[str, Any]], columns: Sequence[str] = ()) -> Batch:
        """Build a batch from dicts (the slow path: one Python object per value).

        Example:
            >>> Batch.from_records([{"a": 1}, {"a": 2}])["a"].tolist()
            [1, 2]
        """
        names = list(columns) or list(dict.fromkeys(k for r in records for k in r))
        return Batch({n: [r.get(n) for r in records] for n in names}, length=len(records))

    @staticmethod
    def from_arrow(data: pa.RecordBatch | pa.Table) -> Batch:
        """Columns from an Arrow record batch or table (numeric columns are zero-copy)."""
        return Batch(
            {name: _arrow_to_numpy(data.column(i)) for i, name in enumerate(data.schema.names)},
            length=data.num_rows,
        )

    def to_arrow(self) -> pa.Table:
        """The user columns as an Arrow table."""
        return pa.table({k: _numpy_to_arrow(v) for k, v in self.columns.items()})

    def to_records(self) -> list[dict[str, Any]]:
        """Rows as dicts of Python values (the slow path; for tests and sinks)."""
        if not self.columns:
            return [{} for _ in range(self._n)]
        lists = {k: v.tolist() for k, v in self.columns.items()}
        keys = list(lists)
        return [dict(zip(keys, vals, strict=True)) for vals in zip(*lists.values(), strict=True)]


def _concat_col(parts: list[Array]) -> Array:
    kinds = {p.dtype.kind for p in parts}
    if "O" in kinds and len(kinds) > 1:
        parts = [p.astype(object) for p in parts]
    return np.concatenate(parts)


def _arrow_to_numpy(col: Any) -> Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    t = col.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        col = col.cast(pa.timestamp("ms")).cast(pa.int64())
    if col.null_count and (pa.types.is_integer(t) or pa.types.is_boolean(t)):
        col = col.cast(pa.float64())
    if pa.types.is_dictionary(t):
        col = col.dictionary_decode()
    arr: Array = col.to_numpy(zero_copy_only=False)
    if arr.dtype.kind in "US":
        arr = arr.astype(object)
    return arr


def _numpy_to_arrow(arr: Array) -> Any:
    if arr.ndim > 1:
        return pa.array(list(arr))
    return pa.array(arr, from_pandas=arr.dtype.kind == "f")
