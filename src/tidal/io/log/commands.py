r"""What ``tidal log ...`` runs: list, create and describe topics; produce and consume.

``produce`` reads JSON Lines (one object per line, kept byte for byte as the record value)
or CSV (rows turned into JSON objects) from a file or standard input, in blocks, so that a
large file costs one append per block and partition. ``consume`` prints the values as JSON
Lines and stops at the end offsets it saw when it started; ``tail`` keeps following. Both
work in pipes: a closed pipe (``| head``) ends them quietly, and with ``--group`` only
what was actually written is committed.

Example:
    >>> import io, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> out = io.StringIO()
    >>> create(tmp.name, "events", partitions=2, out=out)
    0
    >>> produce(tmp.name, "events", source=io.BytesIO(b'{"id": 1}\n{"id": 2}\n'), out=out)
    0
    >>> data = io.BytesIO()
    >>> consume(tmp.name, "events", out=data), sorted(data.getvalue().splitlines())
    (0, [b'{"id": 1}', b'{"id": 2}'])
    >>> print(out.getvalue(), end="")  # doctest: +ELLIPSIS
    created topic 'events' with 2 partitions in ...
    produced 2 records to 'events'
    >>> tmp.cleanup()
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import asdict
from typing import IO, Any, Literal

import numpy as np
import orjson

from tidal.core.duration import Duration
from tidal.errors import ConfigError, ConnectorError
from tidal.io.fileutil import open_input, quiet_broken_pipe
from tidal.io.jsonl import dumps_rows
from tidal.io.log.groups import group_positions
from tidal.io.log.sink import route_keys
from tidal.io.log.source import LogSource
from tidal.io.log.topic import DEFAULT_SEGMENT_BYTES, Topic

__all__ = ["DamageReport", "consume", "create", "delete", "describe", "produce", "tail", "topics"]

PathLike = str | os.PathLike[str] | None
_BLOCK = 1 << 20


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def topics(data_dir: PathLike, *, out: IO[str]) -> int:
    """Print the topics, one per line."""
    for name in Topic.names(data_dir):
        print(name, file=out)
    return 0


def create(
    data_dir: PathLike,
    topic: str,
    *,
    partitions: int = 1,
    retention_bytes: int | None = None,
    retention: Duration | None = None,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    out: IO[str],
) -> int:
    """Create a topic."""
    t = Topic.create(
        data_dir,
        topic,
        partitions=partitions,
        retention_bytes=retention_bytes,
        retention=retention,
        segment_bytes=segment_bytes,
    )
    print(f"created topic {topic!r} with {partitions} partitions in {t.path}", file=out)
    t.close()
    return 0


def delete(data_dir: PathLike, topic: str, *, out: IO[str]) -> int:
    """Delete a topic and its groups' positions (refused while something writes it)."""
    t = Topic.open(data_dir, topic)
    records = sum(t.end_offset(p) - t.start_offset(p) for p in range(t.partitions))
    partitions = t.partitions
    t.close()
    groups = Topic.delete(data_dir, topic)
    also = f"; removed the positions of group(s) {', '.join(groups)}" if groups else ""
    print(
        f"deleted topic {topic!r} ({records:,} records in {partitions} partitions){also}",
        file=out,
    )
    return 0


def describe(data_dir: PathLike, topic: str, *, as_json: bool = False, out: IO[str]) -> int:
    """Print a topic's partitions (offsets, sizes, segments) and its groups' positions."""
    t = Topic.open(data_dir, topic)
    parts = []
    for p in range(t.partitions):
        segs = t.segments(p)
        start, end = t.start_offset(p), t.end_offset(p)
        parts.append(
            {
                "partition": p,
                "start": start,
                "end": end,
                "records": end - start,
                "bytes": sum(s for _, s in segs),
                "segments": len(segs),
            }
        )
    groups = {
        g: {
            str(p): {"position": pos, "lag": int(parts[p]["end"]) - pos}
            for p, pos in positions.items()
            if 0 <= p < t.partitions
        }
        for g, positions in group_positions(t.root, topic).items()
    }
    c = t.config
    if as_json:
        body = {"topic": topic, "config": asdict(c), "partitions": parts, "groups": groups}
        print(orjson.dumps(body).decode(), file=out)
        return 0
    keep = []
    if c.retention_bytes is not None:
        keep.append(_human(c.retention_bytes))
    if c.retention_ms is not None:
        keep.append(f"{c.retention_ms / 3_600_000:g} h")
    print(
        f"topic {topic!r}: {c.partitions} partitions, segments of {_human(c.segment_bytes)}, "
        f"retention {' / '.join(keep) or 'none'}",
        file=out,
    )
    head = ("partition", "start", "end", "records", "size")
    print("  ".join(f"{h:>10}" for h in head) + "  segments", file=out)
    for r in parts:
        print(
            f"{r['partition']:>10}  {r['start']:>10}  {r['end']:>10}  {r['records']:>10}  "
            f"{_human(r['bytes']):>10}  {r['segments']:>8}",
            file=out,
        )
    for g, positions in groups.items():
        shown = ", ".join(f"{p}: {v['position']} (lag {v['lag']})" for p, v in positions.items())
        print(f"group {g!r}: {shown}", file=out)
    return 0


# -- produce -------------------------------------------------------------------------------
class _Producer:
    """Appends blocks of values, routed by key (or sticky round-robin), to a topic."""

    def __init__(self, topic: Topic, partition: int | None) -> None:
        self.topic = topic
        self.partition = None if partition is None else int(partition)
        if self.partition is not None:
            topic.folder(self.partition)  # raises for a partition the topic does not have
        self.count = 0
        self._turn = 0

    def send(self, values: list[bytes], keys: list[Any] | None) -> None:
        if not values:
            return
        vals = np.empty(len(values), dtype=object)
        vals[:] = values
        kb: Any = None
        if keys is not None:
            column = np.empty(len(keys), dtype=object)
            try:
                column[:] = keys
            except ValueError as exc:
                msg = f"key values must be text, bytes or numbers: {exc}"
                raise ConnectorError(msg) from exc
            kb, parts = route_keys(column, self.topic.partitions)
        if self.partition is not None or kb is None:
            target = self.partition if self.partition is not None else self._turn
            self._turn = (self._turn + 1) % self.topic.partitions
            self._append(target, vals, kb)
        else:
            for p in np.unique(parts).tolist():
                rows = np.flatnonzero(parts == p)
                self._append(p, vals[rows], kb[rows])

    def _append(self, partition: int, values: Any, keys: Any) -> None:
        try:
            self.topic.append(partition, values, keys=keys)
        except ConnectorError as exc:
            msg = f"{exc}; {self.count:,} records went in before this failure"
            raise ConnectorError(msg) from exc
        self.count += len(values)


def _blocks(source: IO[bytes]) -> Iterator[tuple[bytes, bool]]:
    """Blocks of whole lines (the last block may lack its newline); ``True`` at the end."""
    pending = b""
    read = getattr(source, "read1", source.read)
    while True:
        chunk = read(_BLOCK)
        if not chunk:
            if pending:
                yield pending, True
            return
        data = pending + chunk
        cut = data.rfind(b"\n") + 1
        if cut:
            yield data[:cut], False
        pending = data[cut:]


def _produce_jsonl(source: IO[bytes], name: str, producer: _Producer, key: str | None) -> None:
    line = 0
    for block, _ in _blocks(source):
        lines = block.split(b"\n")
        if block.endswith(b"\n"):
            lines.pop()
        numbers = [line + 1 + i for i, v in enumerate(lines) if v.strip()]
        vals = [v.rstrip(b"\r") for v in lines if v.strip()]
        line += len(lines)
        try:
            objs = list(map(orjson.loads, vals))
            bad = next((i for i, o in enumerate(objs) if type(o) is not dict), None)
            problem = None if bad is None else "not a JSON object"
        except orjson.JSONDecodeError:
            objs, bad, problem = [], None, None
            for i, v in enumerate(vals):
                try:
                    obj = orjson.loads(v)
                except orjson.JSONDecodeError as exc:
                    bad, problem = i, f"invalid JSON: {exc}"
                    break
                if type(obj) is not dict:
                    bad, problem = i, "not a JSON object"
                    break
                objs.append(obj)
        stop = len(vals) if bad is None else bad
        keys = None if key is None else [objs[i].get(key) for i in range(stop)]
        producer.send(vals[:stop], keys)
        if bad is not None:
            msg = (
                f"{name} line {numbers[bad]}: {problem}; each line must be one JSON object "
                f"(the {producer.count} records before it went in)"
            )
            raise ConnectorError(msg)


def _produce_csv(path: str, name: str, producer: _Producer, key: str | None) -> None:
    from tidal.io.csv import CsvSource

    src = CsvSource(path, name=name)
    try:
        src.open({})
        while (batch := src.poll(65_536, 0.0)) is not None:
            dead = src.dead_letters()
            if dead:
                first = dead[0]
                line = int(first.position.get("line", 0))
                assert batch.offset is not None
                batch = batch.filter(batch.offset < line)
            if len(batch):
                vals = dumps_rows(batch, name).split(b"\n")[:-1]
                if key is not None and key not in batch:
                    msg = f"{name}: no column {key!r} for --key; the columns are {batch.names}"
                    raise ConfigError(msg)
                producer.send(vals, None if key is None else batch[key].tolist())
            if dead:
                msg = f"{name} {dead[0].reason} (the {producer.count} records before it went in)"
                raise ConnectorError(msg)
    finally:
        src.close()


def produce(
    data_dir: PathLike,
    topic: str,
    *,
    file: str | None = None,
    fmt: Literal["jsonl", "csv"] | None = None,
    key: str | None = None,
    partition: int | None = None,
    source: IO[bytes] | None = None,
    out: IO[str],
) -> int:
    """Append JSON Lines or CSV from ``file`` (or ``source``, default standard input).

    Raises:
        ConnectorError: at the first bad line, saying how many records went in before it.
    """
    t = Topic.open(data_dir, topic)
    fmt = fmt or ("csv" if file is not None and file.lower().endswith(".csv") else "jsonl")
    if fmt not in ("jsonl", "csv"):
        msg = f"--format must be jsonl or csv, got {fmt!r}"
        raise ConfigError(msg)
    name = file or "<stdin>"
    producer = _Producer(t, partition)
    try:
        if fmt == "csv":
            _produce_csv(file or "/dev/stdin", name, producer, key)
        elif file is not None:
            with open_input(file) as handle:
                _produce_jsonl(handle, name, producer, key)
        else:
            _produce_jsonl(source or sys.stdin.buffer, name, producer, key)
    finally:
        t.close()
    print(f"produced {producer.count} records to {topic!r}", file=out)
    return 0


# -- consume -------------------------------------------------------------------------------
class DamageReport:
    """Damaged records, reported as one line per damaged range instead of one per record.

    Consecutive lost offsets of a partition with the same reason (which names the file and
    byte) are one range; a range is printed when the next one starts, or at :meth:`close`.

    Example:
        >>> import io
        >>> from tidal.core.deadletter import DeadLetter
        >>> at = {"topic": "t", "partition": 0, "file": "0.seg", "byte": 40}
        >>> err = io.StringIO(); report = DamageReport(err)
        >>> report.add([DeadLetter("log:t", "bad CRC at byte 40", {**at, "offset": o})
        ...             for o in (3, 4, 5)])
        >>> report.close(); print(err.getvalue(), end="")
        tidal: skipped 3 damaged records of 't' partition 0 (offsets 3..5): bad CRC at byte 40
    """

    def __init__(self, err: IO[str]) -> None:
        self.err = err
        self.records = 0
        self._range: tuple[tuple[Any, ...], int, int] | None = None  # (what, first, last)

    def add(self, dead: list[Any]) -> None:
        """Take a read's dead letters (:class:`~tidal.core.deadletter.DeadLetter`)."""
        for d in dead:
            where = d.position
            what = (where.get("topic"), where.get("partition"), d.reason)
            offset = where.get("offset")
            if offset is None:  # damaged bytes, no record lost
                self._flush()
                self._line(what, None)
                continue
            if self._range is not None and self._range[0] == what and offset == self._range[2] + 1:
                self._range = (what, self._range[1], offset)
            else:
                self._flush()
                self._range = (what, offset, offset)
            self.records += 1

    def close(self) -> None:
        """Print the range still open."""
        self._flush()

    def _flush(self) -> None:
        if self._range is not None:
            what, first, last = self._range
            self._range = None
            self._line(what, (first, last))

    def _line(self, what: tuple[Any, ...], span: tuple[int, int] | None) -> None:
        topic, partition, reason = what
        if span is None:
            head = f"damaged bytes in {topic!r} partition {partition} (no record lost)"
        else:
            n = span[1] - span[0] + 1
            records = "1 damaged record" if n == 1 else f"{n:,} damaged records"
            head = f"skipped {records} of {topic!r} partition {partition} "
            head += f"(offset {span[0]})" if n == 1 else f"(offsets {span[0]}..{span[1]})"
        print(f"tidal: {head}: {reason}", file=self.err)


def _print(src: LogSource, out: IO[bytes], budget: int | None, timeout: float, err: IO[str]) -> int:
    """Copy values to ``out`` until the source ends or ``budget`` records; return the count."""
    n = 0
    damage = DamageReport(err)
    try:
        while budget is None or n < budget:
            batch = src.poll(8192 if budget is None else min(8192, budget - n), timeout)
            damage.add(src.dead_letters())
            damage.close()  # a read reports a damaged range whole: print it now (for tail)
            if batch is None:
                break
            if len(batch):
                out.write(b"\n".join(batch["value"].tolist()) + b"\n")
                out.flush()
                n += len(batch)
                if src.group:
                    src.commit()
    finally:
        damage.close()
    return n


def consume(
    data_dir: PathLike,
    topic: str,
    *,
    from_beginning: bool = False,
    max_records: int | None = None,
    group: str | None = None,
    partition: int | None = None,
    out: IO[bytes] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Print the values present now as JSON Lines, then stop.

    Starts at the group's committed positions with ``group`` (committing as it prints),
    else at the beginning; ``from_beginning`` ignores the group's positions.
    """
    src = LogSource(
        data_dir,
        topic,
        group=group,
        value_format="raw",
        bounded=True,
        partitions=None if partition is None else [partition],
    )
    start = {p: src.topic.start_offset(p) for p in src.partitions()} if from_beginning else {}
    return _run(src, start, max_records, 0.0, out, err)


def tail(
    data_dir: PathLike,
    topic: str,
    *,
    lines: int = 10,
    max_records: int | None = None,
    partition: int | None = None,
    out: IO[bytes] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Print the last ``lines`` values of each partition, then follow (until Ctrl-C)."""
    src = LogSource(
        data_dir,
        topic,
        value_format="raw",
        partitions=None if partition is None else [partition],
    )
    t = src.topic
    start = {p: max(t.start_offset(p), t.end_offset(p) - lines) for p in src.partitions()}
    return _run(src, start, max_records, 0.5, out, err)


def _run(
    src: LogSource,
    start: dict[int, int],
    budget: int | None,
    timeout: float,
    out: IO[bytes] | None,
    err: IO[str] | None,
) -> int:
    stdout = out is None
    try:
        src.open(start)
        _print(src, out or sys.stdout.buffer, budget, timeout, err or sys.stderr)
    except BrokenPipeError:
        if stdout:
            quiet_broken_pipe()
    except KeyboardInterrupt:
        pass
    finally:
        src.close()
        src.topic.close()
    return 0
