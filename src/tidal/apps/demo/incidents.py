"""One alert per incident: the anomalous windows of one fault, folded into one.

A fault shows in many windows: the demo's windows are 10 s long and start every 2 s, so a
single spike lies in five of them, and a sensor stuck for 8 s in about nine, followed by a
few more while its baseline settles. The detector flags each such window; :class:`Incidents`
keeps the first anomalous window of each incident and folds the rest into it. An incident
stays open (hysteresis) until its sensor has gone ``quiet`` of event time with no anomalous
window; the next anomalous window after that opens a new incident::

    anomalous windows of one sensor (start, s):  10 12 14 16 18    36 38    60
    alerts (quiet = 10 s):                       10                         60
    folded into the open incident:                  12 14 16 18    36 38

(the window starting at 36 s opens no incident: the one open since 10 s last saw an
anomalous window end at 28 s, less than 10 s before).

The demo uses ``quiet="10s"``: on 100 sensors over 300 s of event time it turns 310
anomalous windows into 42 alerts, one for each of the 39 faults due and none twice
(``tests/test_demo.py``); two faults of one sensor 20 s apart stay two incidents.

Per-key state is the end of the key's last anomalous window; keys quiet for longer than
``quiet`` plus one ``window`` of event time behind the watermark are dropped, so state
holds only the sensors with an open incident. The step sees anomalous windows only (a few
rows a second), and walks them in Python, one row at a time: a documented slow path that
the rest of the pipeline never takes. Results do not depend on batching: each key's rows are
taken in window order.

Example:
    >>> from tidal.core.batch import Batch
    >>> op = Incidents("incidents", quiet="10s", window="10s")
    >>> starts = [s * 1000 for s in (10, 12, 14, 16, 18, 36, 38, 60)]
    >>> rows = Batch({"sensor": [1] * 8, "window_start": starts,
    ...               "window_end": [s + 10_000 for s in starts]})
    >>> [b["window_start"].tolist() for _, b in op.process(rows, 0)]
    [[10000, 60000]]
    >>> op.ctx.counters
    {'incidents.repeats': 6}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tidal.core.batch import Batch
from tidal.core.duration import Duration, to_millis
from tidal.core.operator import Context, Emit, Operator
from tidal.errors import StateError

__all__ = ["Incidents"]

_STATE_KIND = "incidents/1"


class Incidents(Operator):
    """Keeps the first anomalous window of each incident per key (see the module docs).

    Input rows need the columns ``key`` (ints), ``window_start`` and ``window_end`` (ms).
    Folded rows are counted as ``<name>.repeats``.

    Args:
        name: the step's name.
        key: the key column.
        quiet: event time with no anomalous window that closes an incident.
        window: the length of the windows (how far behind the watermark a window may end
            and still arrive).
    """

    def __init__(
        self, name: str, *, key: str = "sensor", quiet: Duration = "10s", window: Duration
    ) -> None:
        super().__init__(name)
        self.ctx = Context()
        self.key = key
        self.quiet_ms = to_millis(quiet)
        self.window_ms = to_millis(window)
        self.last: dict[int, int] = {}  # key -> end of its last anomalous window

    def process(self, batch: Batch, port: int) -> Emit:
        """Pass on the rows that open an incident."""
        if not len(batch):
            return []
        keys = np.asarray(batch[self.key], dtype=np.int64)
        starts = np.asarray(batch["window_start"], dtype=np.int64)
        ends = np.asarray(batch["window_end"], dtype=np.int64)
        keep = np.zeros(len(batch), dtype=bool)
        for i in np.lexsort((starts, keys)).tolist():  # each key's rows in window order
            k, start, end = int(keys[i]), int(starts[i]), int(ends[i])
            last = self.last.get(k)
            keep[i] = last is None or start >= last + self.quiet_ms
            self.last[k] = end if last is None else max(last, end)
        self.ctx.count(f"{self.name}.repeats", int((~keep).sum()))
        return [(0, batch.filter(keep))] if keep.any() else []

    def on_watermark(self, wm: int) -> Emit:
        """Forget keys whose incident can no longer continue."""
        horizon = wm - self.quiet_ms - self.window_ms
        for k in [k for k, last in self.last.items() if last < horizon]:
            del self.last[k]
        return []

    def snapshot(self) -> dict[str, Any]:
        """Keys and the ends of their last anomalous windows, as int64 arrays."""
        keys = sorted(self.last)
        return {
            "kind": _STATE_KIND,
            "keys": np.asarray(keys, dtype=np.int64),
            "last": np.asarray([self.last[k] for k in keys], dtype=np.int64),
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore from :meth:`snapshot`.

        Raises:
            StateError: if the snapshot is not an incidents step's.
        """
        if snap.get("kind") != _STATE_KIND or len(snap["keys"]) != len(snap["last"]):
            msg = f"step {self.name!r}: not an Incidents snapshot (kind {snap.get('kind')!r})"
            raise StateError(msg)
        keys = np.asarray(snap["keys"], dtype=np.int64).tolist()
        last = np.asarray(snap["last"], dtype=np.int64).tolist()
        self.last = dict(zip(keys, last, strict=True))
