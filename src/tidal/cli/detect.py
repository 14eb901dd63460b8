r"""``tidal detect IN.csv --time COL --value COL [--key COL] [--detector NAME] --out OUT.csv``.

Streams a CSV through a detector (:mod:`tidal.ml.detect`) and writes one row per input row,
in input order: ``timestamp,value,anomaly_score`` (with ``--key``, the key after the
timestamp; with several ``--value`` columns, their names; with ``--explain``, also
``deviation,expected_low,expected_high,detector,alert``). A summary goes to standard error:
rows, missing values, dead letters with their reasons and rows, and the strongest alerts
with an explanation each.

Rows are scored in file order, per key; the time column is passed through, not parsed, so
any timestamp format works and irregular timestamps are fine. A value that is empty, ``NA``
or ``nan`` is *missing* (no score, counted); one that is not a number, a row without a key,
or a line with the wrong number of fields is a *dead letter* (no score, listed with its
line number in the summary). Neither stops the run.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> rows = [f"{i},{(i % 7) * 0.1}" for i in range(600)] + ["600,9.0", "601,oops"]
    >>> _ = (d / "in.csv").write_text("ts,v\n" + "\n".join(rows) + "\n")
    >>> detect_csv(d / "in.csv", d / "out.csv", time="ts", values=["v"], detector="median_mad",
    ...            quiet=True)["dead_letters"]
    1
    >>> (d / "out.csv").read_text().splitlines()[-2:]
    ['600,9,1', '601,,']
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from tidal.cli.options import _flag, _Option, _positive, _text
from tidal.core.batch import Batch
from tidal.errors import ConfigError
from tidal.ml.detect import AUTO, DetectStep, explain

__all__ = ["detect_csv"]

_MISSING = {"", "na", "nan", "null", "none", "n/a"}


def _detector_name(text: str) -> str:
    from tidal.ml.detect import DETECTORS

    if text != "auto" and text not in DETECTORS:
        msg = f"expected auto or one of {', '.join(sorted(DETECTORS))}, got {text!r}"
        raise ValueError(msg)
    return text


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        msg = f"expected a number, got {text!r}"
        raise ValueError(msg) from None


_TIME = _Option("--time", _text, None, "the timestamp column (passed through as it is)", "COL")
_VALUE = _Option("--value", _text, None, "the value column (several: a,b,c)", "COL")
_KEY = _Option("--key", _text, None, "a key column: one model per key", "COL")
_DETECTOR = _Option(
    "--detector", _detector_name, "auto", f"detector name, or auto (= {AUTO})", "NAME"
)
_DETECT_OUT = _Option("--out", _text, "-", "the output CSV ('-': standard output)", "OUT.csv")
_BATCH = _Option("--batch", _positive, 65536, "rows per batch", "N")
_ALERT_ON = _Option("--alert-on", _float, 5.0, "deviation (sigmas) that raises an alert", "X")
_EXPLAIN = _Option(
    "--explain", _flag, False, "also write deviation, expected range, detector, alert", is_flag=True
)
_OPTIONS = (_TIME, _VALUE, _KEY, _DETECTOR, _DETECT_OUT, _BATCH, _ALERT_ON, _EXPLAIN)


def _add_detect(commands: Any) -> None:
    p = commands.add_parser(
        "detect",
        help="score a CSV for anomalies (timestamp,value,anomaly_score per row)",
        description=(
            "Stream IN.csv through an anomaly detector and write timestamp,value,"
            "anomaly_score for every row, in input order; a summary goes to stderr."
        ),
    )
    p.add_argument("file", metavar="IN.csv", help="the input CSV (with a header line)")
    for opt in _OPTIONS:
        opt.add_to(p)
    p.set_defaults(handler=_detect, options=_OPTIONS)


def _detect(args: argparse.Namespace) -> int:
    if not args.time or not args.value:
        msg = "tidal detect needs --time COL and --value COL (the columns of IN.csv to use)"
        raise ConfigError(msg)
    detect_csv(
        Path(args.file),
        None if args.out == "-" else Path(args.out),
        time=args.time,
        values=[v.strip() for v in args.value.split(",") if v.strip()],
        key=args.key,
        detector=args.detector,
        batch=args.batch,
        alert_on=args.alert_on,
        explain_columns=args.explain,
    )
    return 0


def detect_csv(
    src: Path,
    dst: Path | None,
    *,
    time: str,
    values: list[str],
    key: str | None = None,
    detector: str = "auto",
    batch: int = 65536,
    alert_on: float = 5.0,
    explain_columns: bool = False,
    err: IO[str] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Score ``src`` into ``dst`` (``None``: standard output); return the summary.

    The summary is also printed to ``err`` (default: standard error) unless ``quiet``.

    Raises:
        ConfigError: if the file cannot be read or lacks a named column.
    """
    if not src.is_file():
        msg = f"tidal detect: no such file {str(src)!r}"
        raise ConfigError(msg)
    bad_lines: list[tuple[int | None, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> Literal["skip", "error"]:
        bad_lines.append(
            (row.number, f"{row.actual_columns} fields, expected {row.expected_columns}")
        )
        return "skip"

    wanted = [time, *([key] if key else []), *values]
    try:
        reader = pacsv.open_csv(
            src,
            read_options=pacsv.ReadOptions(block_size=1 << 22, use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in wanted}, strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        msg = f"tidal detect: cannot read {str(src)!r} as CSV: {exc}"
        raise ConfigError(msg) from exc
    names = reader.schema.names
    absent = [c for c in wanted if c not in names]
    if absent:
        msg = f"tidal detect: {str(src)!r} has no column {absent[0]!r}; its columns are {names}"
        raise ConfigError(msg)
    step = DetectStep(
        "detect", detector, value=values, key="__key__" if key else None, alert_on=alert_on
    )
    stats: Counter[str] = Counter()
    dead: list[tuple[int, str]] = []
    top: list[tuple[float, str]] = []
    row0 = 0
    out = open(dst, "w", encoding="utf-8", newline="") if dst else sys.stdout  # noqa: SIM115
    try:
        header = [
            "timestamp",
            *(["key"] if key else []),
            *(["value"] if len(values) == 1 else values),
            "anomaly_score",
        ]
        if explain_columns:
            header += ["deviation", "expected_low", "expected_high", "detector", "alert"]
        out.write(",".join(header) + "\n")
        while True:
            try:
                rb = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:
                msg = f"tidal detect: {str(src)!r} is not valid CSV after row {row0}: {exc}"
                raise ConfigError(msg) from exc
            for start in range(0, rb.num_rows, batch):
                part = rb.slice(start, batch)
                row0 = _chunk(
                    part, step, time, key, values, row0, out, stats, dead, top, explain_columns
                )
    finally:
        if dst:
            out.close()
    summary = {
        "rows": row0,
        "scored": stats["scored"],
        "missing": stats["missing"],
        "dead_letters": len(dead) + len(bad_lines),
        "alerts": stats["alerts"],
        "detector": step.detector.kind,
    }
    if not quiet:
        _report(err or sys.stderr, src, summary, dead, bad_lines, top)
    return summary


def _chunk(
    rb: pa.RecordBatch,
    step: DetectStep,
    time: str,
    key: str | None,
    values: list[str],
    row0: int,
    out: IO[str],
    stats: Counter[str],
    dead: list[tuple[int, str]],
    top: list[tuple[float, str]],
    explain_columns: bool,
) -> int:
    n = rb.num_rows
    ok = np.ones(n, dtype=bool)
    cols: dict[str, np.ndarray] = {}
    for c in values:
        x, bad = _parse(rb.column(c))
        for i in np.flatnonzero(bad).tolist():
            dead.append((row0 + i + 1, f"column {c!r}: not a number: {rb.column(c)[i].as_py()!r}"))
        ok &= ~bad
        cols[c] = x
    if key:
        keys = rb.column(key).to_numpy(zero_copy_only=False).astype(object)
        nokey = keys == ""
        for i in np.flatnonzero(nokey & ok).tolist():
            dead.append((row0 + i + 1, f"column {key!r}: empty key"))
        ok &= ~nokey
        cols["__key__"] = keys
    for c in values:
        cols[c] = np.where(ok, cols[c], np.nan)
    good = Batch({c: v[ok] for c, v in cols.items()})
    scored = step.detect(good)
    score = np.full(n, np.nan)
    score[ok] = scored["anomaly_score"]
    finite = np.isfinite(score)
    stats["scored"] += int(finite.sum())
    stats["missing"] += int(ok.sum() - finite.sum())
    stats["alerts"] += int(scored["alert"].sum())
    ts = rb.column(time).to_numpy(zero_copy_only=False)
    table: dict[str, Any] = {"timestamp": ts}
    if key:
        table["key"] = cols["__key__"]
    for c in values:
        table["value" if len(values) == 1 else c] = cols[c]
    table["anomaly_score"] = score
    if explain_columns:
        for c in ("deviation", "expected_low", "expected_high"):
            full = np.full(n, np.nan)
            full[ok] = scored[c]
            table[c] = full
        det = np.full(n, None, dtype=object)
        det[ok] = scored["detector"]
        table["detector"] = det
        alert = np.zeros(n, dtype=bool)
        alert[ok] = scored["alert"]
        table["alert"] = alert
    _write(out, table)
    records = scored.filter(scored["alert"]).to_records()
    good_ts = ts[ok][scored["alert"]]
    for rec, t in zip(records, good_ts.tolist(), strict=True):
        who = f" key {rec['__key__']}" if key else ""
        line = f"{t}{who}: {explain(rec, values[0])}"
        top.append((float(rec["deviation"]), line))
    top.sort(key=lambda p: -p[0])
    del top[10:]
    return row0 + n


def _parse(col: Any) -> tuple[np.ndarray, np.ndarray]:
    """Floats from strings; NaN for missing; ``bad`` where the text is not a number."""
    text = col.to_numpy(zero_copy_only=False).astype(object)
    norm = pc.utf8_lower(pc.utf8_trim_whitespace(col))
    absent = pc.is_in(norm, value_set=pa.array(sorted(_MISSING)))
    try:
        cast: Any = pc.cast(pc.if_else(absent, pa.scalar(None, pa.string()), col), pa.float64())
        x = cast.to_numpy(zero_copy_only=False).astype(np.float64)
        return x, np.zeros(len(text), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    x = np.full(len(text), np.nan)
    bad = np.zeros(len(text), dtype=bool)
    for i, s in enumerate(text.tolist()):  # slow path, only for a batch with odd values
        s = (s or "").strip()
        if s.lower() in _MISSING:
            continue
        try:
            x[i] = float(s)
        except ValueError:
            bad[i] = True
    return x, bad


def _write(out: IO[str], table: dict[str, Any]) -> None:
    arrays = {}
    for name, v in table.items():
        arr = pa.array(v, from_pandas=True)
        arrays[name] = arr
    t = pa.table(arrays)
    quote: Literal["needed", "none"] = "none"
    for arr in arrays.values():
        if (
            pa.types.is_string(arr.type)
            and pc.any(pc.match_substring_regex(arr, r'[,"\r\n]')).as_py()
        ):
            quote = "needed"  # Arrow then quotes every string; only when a value needs it
    sink = pa.BufferOutputStream()
    pacsv.write_csv(
        t, sink, write_options=pacsv.WriteOptions(include_header=False, quoting_style=quote)
    )
    out.write(sink.getvalue().to_pybytes().decode("utf-8"))


def _report(
    err: IO[str],
    src: Path,
    summary: dict[str, Any],
    dead: list[tuple[int, str]],
    bad_lines: list[tuple[int | None, str]],
    top: list[tuple[float, str]],
) -> None:
    print(
        f"tidal detect: {src}: {summary['rows']:,} rows, {summary['scored']:,} scored by "
        f"{summary['detector']}, {summary['missing']:,} missing values, "
        f"{summary['dead_letters']:,} dead letters, {summary['alerts']:,} alerts",
        file=err,
    )
    for row, why in dead[:10]:
        print(f"  dead letter: data row {row}: {why}", file=err)
    for number, why in bad_lines[:10]:
        where = f"line {number}" if number is not None else "a line"
        print(f"  dead letter: {where}: {why} (skipped, not in the output)", file=err)
    more = len(dead) + len(bad_lines) - min(len(dead), 10) - min(len(bad_lines), 10)
    if more > 0:
        print(f"  ... and {more:,} more dead letters", file=err)
    if top:
        print("  strongest alerts:", file=err)
        for _d, line in top:
            print(f"    {line}", file=err)
