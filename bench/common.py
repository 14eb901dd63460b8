"""What every benchmark prints: the machine, and tables (Markdown, ready for the README)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
from rich import box
from rich.console import Console
from rich.table import Table

T = TypeVar("T")

console = Console(width=140, highlight=False, soft_wrap=True)


def machine() -> dict[str, str]:
    """CPU model, logical cores (from /proc/cpuinfo), library versions, OPENBLAS_CORETYPE."""
    model, cores = platform.processor() or platform.machine(), os.cpu_count() or 0
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = f.read().splitlines()
        models = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
        procs = [ln for ln in lines if ln.startswith("processor")]
        if models:
            model = models[0]
        if procs:
            cores = len(procs)
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": str(cores),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
    }


def machine_line() -> str:
    """The machine as one line, printed above every table."""
    m = machine()
    try:
        load = "load avg {:.2f} / {:.2f} (1 / 5 min)".format(*os.getloadavg()[:2])
    except OSError:
        load = "load avg n/a"
    return (
        f"machine: {m['cpu']}, {m['cores']} cores, {load} | Python {m['python']}, "
        f"numpy {m['numpy']}, pyarrow {m['pyarrow']} | OPENBLAS_CORETYPE={m['OPENBLAS_CORETYPE']}"
    )


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print the machine line, then a Markdown table (rich renders it)."""
    console.print()
    console.print(f"### {title}")
    console.print()
    console.print(machine_line())
    console.print()
    t = Table(box=box.MARKDOWN, show_edge=True, pad_edge=True)
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*(str(x) for x in r))
    console.print(t)


def best_of(runs: int, fn: Callable[[], T]) -> tuple[float, T]:
    """The fastest wall time of ``runs`` calls of ``fn`` (seconds), and the last result."""
    best = float("inf")
    result: T | None = None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    assert result is not None
    return best, result


def rate(x: float) -> str:
    """Events per second, human-sized."""
    if x >= 1e6:
        return f"{x / 1e6:.2f} M/s"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k/s"
    return f"{x:.0f} /s"
