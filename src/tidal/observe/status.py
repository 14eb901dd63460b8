"""A live one-line status for long runs, fed by the executor's ``progress`` callback.

::

    ● 1,204,000 events  20,013 ev/s  p50 2.9ms  p99 6.1ms  late 0  dead 12  alerts 87

The line redraws in place with `rich <https://rich.readthedocs.io>`_ while a run goes on,
and lines printed through :meth:`StatusLine.print` (alerts, say) scroll above it. It is
quiet where a live line makes no sense: when the console is not a terminal (output piped
to a file or another program) or when the caller asks for JSON output.

:func:`summary_table` renders a finished run's :class:`~tidal.runtime.executor.RunSummary`.

Example:
    >>> from tidal.observe.summary import RunSummary
    >>> s = RunSummary(events=1500, seconds=1.0, latency_ms={"p50": 1.5, "p99": 4.0,
    ...                "p999": 9.0}, late=2, dead_letters=1, outputs={"alerts": 3})
    >>> status_text(s, rate=1500.0, alerts=3).plain
    '● 1,500 events  1,500 ev/s  p50 1.5ms  p99 4.0ms  late 2  dead 1  alerts 3'
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tidal.observe.summary import RunSummary

__all__ = ["StatusLine", "status_text", "summary_table"]


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}ms"


def _compact(n: float) -> str:
    """Three digits: ``12,345,678`` as ``12.3M``, ``123,456`` as ``123k``; below 1,000 as is."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.0f}{unit}" if abs(n) >= 100 * size else f"{n / size:.1f}{unit}"
    return f"{n:,.0f}"


def _ms_compact(value: Any) -> str:
    """A latency in ms, as seconds from 1 s on."""
    if value is not None and float(value) >= 1000:
        return f"{float(value) / 1000:.1f}s"
    return _ms(value)


def status_text(
    summary: RunSummary,
    *,
    rate: float,
    alerts: int | None = None,
    dead: str = "dead",
    width: int | None = None,
) -> Text:
    """The status line for a running summary; ``rate`` is the current events per second.

    The line fits in ``width`` columns (when given): it first writes numbers compactly
    (``12.3M``, latencies of a second or more in seconds), then leaves out the parts that
    matter least (p50, then ``late`` while it is 0); at 80 columns that always fits, and a
    narrower terminal cuts the rest.

    Args:
        summary: the running summary.
        rate: the current events per second.
        alerts: the alerts so far, shown when not ``None``.
        dead: the label of the dead-letter count (the demo says ``dropouts``).
        width: the columns the line may take (``None``: no limit).

    Example:
        >>> from tidal.observe.summary import RunSummary
        >>> s = RunSummary(0, 0.0, {"p50": None, "p99": None, "p999": None}, 0, 0)
        >>> status_text(s, rate=0.0).plain
        '● 0 events  0 ev/s  p50 -  p99 -  late 0  dead 0'
        >>> s = RunSummary(123_456_789, 9.0, {"p50": 7.25, "p99": 19.5}, 0, 12_345)
        >>> status_text(s, rate=1_234_567.0, alerts=4_321, dead="dropouts", width=60).plain
        '● 123M events  1.2M ev/s  p99 19.5ms  dropouts 12.3k  alerts 4.3k'
    """
    lat = summary.latency_ms
    for compact in (False, True):
        num = _compact if compact else (lambda n: f"{n:,.0f}")
        ms = _ms_compact if compact else _ms
        # (text, style, may be left out: lower goes first; 0 = always shown)
        parts: list[tuple[str, str, int]] = [
            ("● ", "green", 0),
            (num(summary.events), "bold", 0),
            (" events  ", "", 0),
            (num(rate), "bold", 0),
            (" ev/s", "", 0),
            (f"  p50 {ms(lat.get('p50'))}", "", 1),
            (f"  p99 {ms(lat.get('p99'))}", "", 0),
            (
                f"  late {num(summary.late)}",
                "yellow" if summary.late else "",
                0 if summary.late else 2,
            ),
            (f"  {dead} {num(summary.dead_letters)}", "red" if summary.dead_letters else "", 0),
        ]
        if alerts is not None:
            parts.append((f"  alerts {num(alerts)}", "bold magenta" if alerts else "", 0))
        for drop in (None, 1, 2):
            if drop is not None:
                parts = [p for p in parts if p[2] != drop]
            if width is None or sum(len(p[0]) for p in parts) < width:
                break
        if width is None or sum(len(p[0]) for p in parts) < width:
            break
    text = Text(no_wrap=True, overflow="ellipsis")
    for part, style, _ in parts:
        text.append(part, style=style)
    return text


class StatusLine:
    r"""A live status line; pass :meth:`update` as the executor's ``progress`` callback.

    Use it as a context manager around the run. While it is *enabled* the line redraws in
    place; otherwise :meth:`update` does nothing and :meth:`print` prints plainly.

    Args:
        console: where to draw (default: a console on standard output).
        enabled: force the live line on or off; ``None``: on when the console is a terminal.
        alerts: names of sink steps whose output counts are shown as ``alerts``.
        dead: the label of the dead-letter count (``dead``; the demo says ``dropouts``).
        clock: a ``time.monotonic``-like function, for the events-per-second figure.

    Example:
        >>> import io
        >>> from rich.console import Console
        >>> from tidal.observe.summary import RunSummary
        >>> out = io.StringIO()
        >>> with StatusLine(Console(file=out), alerts=["alerts"]) as status:
        ...     status.update(RunSummary(10, 1.0, {}, 0, 0, outputs={"alerts": 1}))
        ...     status.print("ALERT sensor 7")
        >>> status.enabled, out.getvalue()
        (False, 'ALERT sensor 7\n')
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        enabled: bool | None = None,
        alerts: Iterable[str] = (),
        dead: str = "dead",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console if console is not None else Console()
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self.alerts = tuple(alerts)
        self.dead = dead
        self.clock = clock
        self.live: Live | None = None
        self._last: tuple[float, int] | None = None
        self.rate = 0.0

    def __enter__(self) -> StatusLine:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start drawing (when enabled)."""
        if self.enabled and self.live is None:
            self.live = Live(
                Text("● starting ..."),
                console=self.console,
                refresh_per_second=4,
                transient=True,
            )
            self.live.start()

    def stop(self) -> None:
        """Stop drawing and clear the line."""
        if self.live is not None:
            self.live.stop()
            self.live = None

    def update(self, summary: RunSummary) -> None:
        """Redraw with a running summary (the executor's ``progress`` callback)."""
        now = self.clock()
        if self._last is not None and now > self._last[0]:
            self.rate = (summary.events - self._last[1]) / (now - self._last[0])
        elif self._last is None and summary.seconds > 0:
            self.rate = summary.events_per_s
        self._last = (now, summary.events)
        if self.live is None:
            return
        alerts = sum(summary.outputs.get(n, 0) for n in self.alerts) if self.alerts else None
        self.live.update(
            status_text(
                summary, rate=self.rate, alerts=alerts, dead=self.dead, width=self.console.width
            )
        )

    def print(self, line: str) -> None:
        """Print a line above the status line (plainly when there is none)."""
        self.console.print(Text(line), soft_wrap=True)


def summary_table(summary: RunSummary, *, title: str = "run summary") -> Table:
    """A finished run as a two-column table (what ``tidal run`` prints without ``--json``).

    Example:
        >>> import io
        >>> from rich.console import Console
        >>> from tidal.observe.summary import RunSummary
        >>> s = RunSummary(20_000, 0.5, {"p50": 1.0, "p99": 2.0, "p999": 3.0}, 0, 4,
        ...                outputs={"alerts": 12})
        >>> console = Console(file=io.StringIO(), width=60)
        >>> console.print(summary_table(s))
        >>> "40,000" in console.file.getvalue()
        True
    """
    data = summary.to_json()
    lat = summary.latency_ms
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("events", f"{summary.events:,}")
    table.add_row("seconds", f"{summary.seconds:,.2f}")
    table.add_row("events/s", f"{summary.events_per_s:,.0f}")
    table.add_row(
        "latency p50 / p99 / p999",
        " / ".join(_ms(lat.get(q)) for q in ("p50", "p99", "p999")),
    )
    table.add_row("late", f"{summary.late:,}")
    table.add_row("dead letters", f"{summary.dead_letters:,}")
    for name, n in summary.outputs.items():
        table.add_row(f"output {name}", f"{n:,}")
    for name, n in summary.counts.items():
        table.add_row(name, f"{n:,}")
    known = {"events", "seconds", "events_per_s", "latency_ms", "late", "dead_letters"}
    for name, value in data.items():
        if name not in known | {"counts", "outputs"}:
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            table.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    return table
