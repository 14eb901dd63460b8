r"""``tidal learn FILE.csv --target COL [--model NAME] [--metric NAME]``: prequential evaluation.

``tidal learn --topic NAME [--data-dir DIR] --target COL`` does the same over the JSON records
of an embedded-log topic (offset order; several partitions merged by record timestamp).

Streams a CSV through the ``learn`` step (:mod:`tidal.ml.learn.step`) in file order: each row
is predicted, then learned (test-then-train, River's ``progressive_val_score``), and prints
the metrics over all rows and over the last ``--window`` rows, and the samples per second of
the learning loop (reading the file is not counted; it is shown apart).

Features: every column but the target (or those of ``--features``); numeric columns are
standardized online, text columns one-hot encoded (``--categorical`` forces a column to
be). ``--lags K`` adds, for every row, the K previous rows' labels and numeric features
(known when the row is predicted: a prequential stream learns each label right after its
row). The task follows the target: text, booleans or integers with two values are
classification, other numbers regression (``--task`` overrides). ``--model auto`` takes
logistic regression (two classes), softmax (more) or linear regression.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> rows = [f"{i % 10},{'up' if i % 10 > 4 else 'down'}" for i in range(2_000)]
    >>> _ = (d / "in.csv").write_text("x,move\n" + "\n".join(rows) + "\n")
    >>> res = learn_csv(d / "in.csv", target="move", quiet=True)
    >>> res["model"], res["rows"], res["metrics"]["accuracy"] > 0.95
    ('logistic', 2000, True)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from tidal.cli.options import _DATA_DIR, _flag, _Option, _positive, _text
from tidal.core.batch import Batch
from tidal.errors import ConfigError, PipelineError
from tidal.ml.learn import LEARNERS, METRICS, Features, Linear, make
from tidal.ml.learn.kernels import warm_up
from tidal.ml.learn.step import LearnStep

__all__ = ["learn_csv"]


def _model_name(text: str) -> str:
    if text != "auto" and text not in LEARNERS:
        msg = f"expected auto or one of {', '.join(sorted(LEARNERS))}, got {text!r}"
        raise ValueError(msg)
    return text


def _metric_name(text: str) -> str:
    if text not in METRICS:
        msg = f"expected one of {', '.join(METRICS)}, got {text!r}"
        raise ValueError(msg)
    return text


def _task(text: str) -> str:
    if text not in ("auto", "classification", "regression"):
        msg = f"expected auto, classification or regression, got {text!r}"
        raise ValueError(msg)
    return text


def _lags(text: str) -> int:
    value = int(text)
    if value < 0:
        msg = f"expected a number >= 0, got {text!r}"
        raise ValueError(msg)
    return value


_TARGET = _Option("--target", _text, None, "the label column", "COL")
_MODEL = _Option("--model", _model_name, "auto", "learner name (auto: by the target)", "NAME")
_METRIC = _Option("--metric", _metric_name, None, "show only this metric", "NAME")
_TASK = _Option("--task", _task, "auto", "classification or regression (auto: by target)", "T")
_FEATURES = _Option("--features", _text, None, "feature columns a,b,c (default: all)", "COLS")
_CATEGORICAL = _Option("--categorical", _text, None, "columns to one-hot (a,b)", "COLS")
_LAGS = _Option("--lags", _lags, 0, "add the previous K rows' labels and features", "K")
_MODE = _Option("--exact", _flag, False, "exact per-sample updates (linear models)", is_flag=True)
_LR = _Option("--lr", float, None, "learning rate (linear models, MLP)", "X")
_WINDOW = _Option("--window", _positive, 1000, "rows in the rolling metrics", "N")
_BATCH_ROWS = _Option("--batch", _positive, 4096, "rows per batch", "N")
_TOPIC = _Option("--topic", _text, None, "read an embedded-log topic (JSON values) instead", "NAME")
_OPTIONS = (
    _TARGET,
    _MODEL,
    _METRIC,
    _TASK,
    _FEATURES,
    _CATEGORICAL,
    _LAGS,
    _MODE,
    _LR,
    _WINDOW,
    _BATCH_ROWS,
    _TOPIC,
    _DATA_DIR,
)


def _add_learn(commands: Any) -> None:
    p = commands.add_parser(
        "learn",
        help="prequential (test-then-train) evaluation of an online learner over a CSV",
        description=(
            "Stream FILE.csv through an online learner in file order: predict each row, "
            "then learn it; print the metrics and samples/s."
        ),
    )
    p.add_argument("file", metavar="FILE.csv", nargs="?", help="the input CSV (with a header line)")
    for opt in _OPTIONS:
        opt.add_to(p)
    p.set_defaults(handler=_learn, options=_OPTIONS)


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [c.strip() for c in text.split(",") if c.strip()]


def _learn(args: argparse.Namespace) -> int:
    if not args.target:
        msg = "tidal learn needs --target COL (the label column of FILE.csv)"
        raise ConfigError(msg)
    if (args.file is None) == (args.topic is None):
        msg = "tidal learn needs FILE.csv or --topic NAME (one of them)"
        raise ConfigError(msg)
    options: dict[str, Any] = {
        "target": args.target,
        "model": args.model,
        "metric": args.metric,
        "task": args.task,
        "features": _split(args.features),
        "categorical": _split(args.categorical),
        "lags": args.lags,
        "exact": bool(args.exact),
        "lr": args.lr,
        "window": args.window,
        "batch": args.batch,
    }
    if args.topic is not None:
        learn_topic(Path(args.data_dir), args.topic, **options)
        return 0
    learn_csv(Path(args.file), **options)
    return 0


def _read(src: Path) -> pa.Table:
    if not src.is_file():
        msg = f"tidal learn: no such file {str(src)!r}"
        raise ConfigError(msg)
    try:
        return pacsv.read_csv(src)
    except (pa.ArrowInvalid, OSError) as exc:
        msg = f"tidal learn: cannot read {str(src)!r} as CSV: {exc}"
        raise ConfigError(msg) from exc


def _pick_task(y: Any, task: str) -> tuple[str, int]:
    valid = y[~_missing(y)]
    classes = len(np.unique(valid.astype(str))) if len(valid) else 0
    if task == "auto":
        integral = valid.dtype.kind in "iub" or (
            valid.dtype.kind == "f" and bool(np.all(np.floor(valid) == valid))
        )
        task = (
            "classification"
            if valid.dtype.kind in "OUb"
            or (
                integral and classes <= 2  # noqa: PLR2004 - two classes
            )
            else "regression"
        )
    return task, classes


def _missing(y: Any) -> Any:
    if y.dtype.kind == "f":
        return ~np.isfinite(y)
    if y.dtype.kind == "O":
        return np.array([v is None for v in y.tolist()], dtype=bool)
    return np.zeros(len(y), dtype=bool)


def _with_lags(cols: dict[str, Any], names: list[str], target: str, lags: int) -> list[str]:
    """Add ``<col>_lag<k>`` columns (the value k rows earlier; the first rows get 0)."""
    added = []
    for c in [target, *names]:
        col = cols[c]
        if col.dtype.kind == "O":
            _, col = np.unique(col.astype(str), return_inverse=True)  # class ids, stable
        base = np.asarray(col, dtype=np.float64)
        for k in range(1, lags + 1):
            lagged = np.zeros(len(base))
            lagged[k:] = base[:-k]
            cols[f"{c}_lag{k}"] = np.nan_to_num(lagged)
            added.append(f"{c}_lag{k}")
    return added


def learn_csv(  # noqa: PLR0913, C901 - the command's options
    src: Path,
    *,
    target: str,
    model: str = "auto",
    metric: str | None = None,
    task: str = "auto",
    features: list[str] | None = None,
    categorical: list[str] | None = None,
    lags: int = 0,
    exact: bool = False,
    lr: float | None = None,
    window: int = 1000,
    batch: int = 4096,
    out: IO[str] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Prequential evaluation of ``model`` over ``src``; print and return the summary.

    Raises:
        ConfigError: for a file that cannot be read, a missing column, a feature that is
            neither numeric nor declared categorical, or a model that does not fit the task.
    """
    started = time.perf_counter()
    return learn_table(
        _read(src),
        str(src),
        target=target,
        model=model,
        metric=metric,
        task=task,
        features=features,
        categorical=categorical,
        lags=lags,
        exact=exact,
        lr=lr,
        window=window,
        batch=batch,
        out=out,
        quiet=quiet,
        started=started,
    )


def read_topic(data_dir: Path, topic: str) -> pa.Table:
    """Every record of an embedded-log topic (JSON objects) as a table, in offset order.

    Several partitions are merged by record timestamp (stable: offset order within one).

    Raises:
        ConfigError: if the topic does not exist or a value is not a JSON object.
    """
    import io

    import pyarrow.json as pajson

    from tidal.io.log import Topic

    try:
        log = Topic.open(data_dir, topic)
    except Exception as exc:
        msg = f"tidal learn: cannot open topic {topic!r} under {str(data_dir)!r}: {exc}"
        raise ConfigError(msg) from exc
    values: list[bytes] = []
    stamps: list[Any] = []
    try:
        for part in range(log.partitions):
            at = 0
            while at < log.end_offset(part):
                got = log.read(part, at, max_records=65_536)
                values += got.values.tolist()
                stamps.append(got.timestamps)
                at = got.next_offset
    finally:
        log.close()
    if not values:
        msg = f"tidal learn: topic {topic!r} under {str(data_dir)!r} is empty"
        raise ConfigError(msg)
    try:
        table = pajson.read_json(io.BytesIO(b"\n".join(values)))
    except pa.ArrowInvalid as exc:
        msg = f"tidal learn: topic {topic!r} holds values that are not JSON objects: {exc}"
        raise ConfigError(msg) from exc
    order = np.argsort(np.concatenate(stamps), kind="stable")
    return table.take(order)


def learn_topic(data_dir: Path, topic: str, **options: Any) -> dict[str, Any]:
    """Prequential evaluation over an embedded-log topic; the options of :func:`learn_csv`.

    Example:
        >>> import tempfile, pathlib
        >>> from tidal.io.log import Topic
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> t = Topic.create(d, "sales", partitions=1)
        >>> _ = t.append(0, [b'{"x": %d, "y": %d}' % (i % 4, i % 4 > 1) for i in range(400)])
        >>> t.close()
        >>> learn_topic(d, "sales", target="y", quiet=True)["metrics"]["accuracy"] > 0.9
        True
    """
    started = time.perf_counter()
    table = read_topic(data_dir, topic)
    return learn_table(table, f"topic {topic}", started=started, **options)


def learn_table(  # noqa: PLR0913, C901 - the command's options
    table: pa.Table,
    source: str,
    *,
    target: str,
    model: str = "auto",
    metric: str | None = None,
    task: str = "auto",
    features: list[str] | None = None,
    categorical: list[str] | None = None,
    lags: int = 0,
    exact: bool = False,
    lr: float | None = None,
    window: int = 1000,
    batch: int = 4096,
    out: IO[str] | None = None,
    quiet: bool = False,
    started: float | None = None,
) -> dict[str, Any]:
    """Prequential evaluation over the rows of ``table`` (see :func:`learn_csv`)."""
    started = time.perf_counter() if started is None else started
    src = source
    cols = {n: Batch.from_arrow(table.select([n]))[n] for n in table.column_names}
    names = table.column_names
    if target not in cols:
        msg = f"tidal learn: {src} has no column {target!r}; its columns are {names}"
        raise ConfigError(msg)
    chosen = features if features is not None else [c for c in names if c != target]
    absent = [c for c in [*chosen, *(categorical or [])] if c not in cols]
    if absent:
        msg = f"tidal learn: {src} has no column {absent[0]!r}; its columns are {names}"
        raise ConfigError(msg)
    cat = list(categorical or [])
    numeric = []
    for c in chosen:
        if c in cat:
            continue
        kind = cols[c].dtype.kind
        if kind in "iufb":
            numeric.append(c)
        elif features is None:
            cat.append(c)  # text columns found by default are one-hot encoded
        else:
            msg = (
                f"tidal learn: feature column {c!r} is not numeric (e.g. "
                f"{cols[c][:1].tolist()}); add it to --categorical, or leave it out"
            )
            raise ConfigError(msg)
    if not numeric and not cat:
        msg = f"tidal learn: no feature columns besides the target {target!r}"
        raise ConfigError(msg)
    task, n_classes = _pick_task(cols[target], task)
    numeric += _with_lags(cols, numeric, target, lags)
    if model == "auto":
        model = "linear" if task == "regression" else ("logistic" if n_classes <= 2 else "softmax")  # noqa: PLR2004
    settings: dict[str, Any] = {}
    if exact:
        settings["mode"] = "exact"
    if lr is not None:
        settings["lr"] = lr
    if model in ("mlp", "keras"):
        settings.update(task=task, n_classes=max(n_classes, 2))
    learner = make(model, **settings)
    if learner.task != task:
        msg = (
            f"tidal learn: model {model!r} is for {learner.task}, "
            f"the target {target!r} needs {task}"
        )
        raise ConfigError(msg)
    spec = Features(numeric=numeric, categorical=cat)
    try:
        step = LearnStep(
            "learn",
            learner,
            features=spec,
            target=target,
            window=window,
            metrics=[metric] if metric else None,
        )
    except PipelineError as exc:
        raise ConfigError(str(exc).replace("step 'learn'", "tidal learn")) from exc
    data = Batch(cols)
    if isinstance(learner, Linear):
        warm_up()  # numba's compiled kernel: loaded once per process, not timed
    read_s = time.perf_counter() - started
    t0 = time.perf_counter()
    n = len(data)
    try:
        for start in range(0, n, batch):
            step.learn(data.slice(start, min(start + batch, n)))
    except PipelineError as exc:
        raise ConfigError(str(exc).replace("step 'learn'", "tidal learn")) from exc
    seconds = time.perf_counter() - t0
    assert step.metrics is not None
    summary = {
        "file": str(src),
        "rows": n,
        "target": target,
        "task": task,
        "model": model,
        "features": len(spec.columns),
        "width": spec.dim,
        "learned": step.metrics.count,
        "metrics": step.metrics.values(),
        "seconds": seconds,
        "read_seconds": read_s,
        "samples_per_s": n / seconds if seconds > 0 else 0.0,
    }
    if not quiet:
        _print(summary, window, out or sys.stdout)
    return summary


def _print(s: dict[str, Any], window: int, out: IO[str]) -> None:
    out.write(
        f"tidal learn: {s['file']}: {s['rows']:,} rows, target {s['target']!r} ({s['task']}), "
        f"model {s['model']}, {s['features']} feature columns ({s['width']} wide)\n"
    )
    vals = s["metrics"]
    for name in [k for k in vals if not k.endswith("_rolling")]:
        out.write(
            f"  {name:<9} {vals[name]:.4f}   "
            f"(last {window:,} rows: {vals[name + '_rolling']:.4f})\n"
        )
    out.write(
        f"  {s['learned']:,} rows predicted then learned in {s['seconds']:.3f} s: "
        f"{s['samples_per_s']:,.0f} samples/s "
        f"(reading the CSV and loading: {s['read_seconds']:.2f} s)\n"
    )
