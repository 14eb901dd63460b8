"""Scale-out: one pipeline in N worker processes (``tidal run FILE.py --workers N``).

- :mod:`~tidal.runtime.workers.plan`: which worker owns which partitions, and where each
  keeps its checkpoints;
- :mod:`~tidal.runtime.workers.resplit`: a run with another number of workers re-splits
  the committed state by key first (decision 0052);
- :mod:`~tidal.runtime.workers.supervisor`: starts the workers, restarts the ones that die,
  stops all on Ctrl-C/SIGTERM.

See ``docs/decisions/0027-workers-on-one-machine.md``.
"""

from tidal.runtime.workers.plan import (
    CRASH_WORKER_ENV,
    WORKER_ENV,
    assign,
    parse_worker,
    worker_count,
    worker_dir,
)
from tidal.runtime.workers.supervisor import Supervisor, WorkerResult, worker_signals

__all__ = [
    "CRASH_WORKER_ENV",
    "WORKER_ENV",
    "Supervisor",
    "WorkerResult",
    "assign",
    "parse_worker",
    "worker_count",
    "worker_dir",
    "worker_signals",
]
