"""The supervisor alone, with tiny Python children: restarts, failures, signals.

The children wait for a signal with ``sigwait`` (the supervisor starts them with SIGINT
and SIGTERM blocked), or exit at once with a given status; nothing here sleeps.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from tidal.runtime.workers import Supervisor

WAIT = (
    "import signal, sys; "
    "got = signal.sigwait({signal.SIGTERM, signal.SIGINT}); "
    "print('{\"stopped_by\": %d}' % got); sys.exit(0)"
)


def _exit(code: int) -> str:
    return f"import sys; sys.exit({code})"


def test_a_tidal_error_in_one_worker_stops_the_others_and_fails_with_2() -> None:
    codes = {0: WAIT, 1: _exit(2)}
    sup = Supervisor(lambda i: [sys.executable, "-c", codes[i]], 2)
    results = sup.run()
    assert sup.status == 2 and sup.error is not None and "worker 1" in sup.error
    assert results[1].exit_codes == [2] and results[1].restarts == 0
    assert results[0].exit_codes == [0]
    assert results[0].summary == {"stopped_by": int(signal.SIGTERM)}


def test_a_worker_that_keeps_crashing_is_given_up_after_max_restarts() -> None:
    sup = Supervisor(lambda i: [sys.executable, "-c", _exit(3)], 1, max_restarts=2)
    results = sup.run()
    assert sup.status == 1 and results[0].exit_codes == [3, 3, 3]
    assert "failed 3 times" in (sup.error or "")


def test_a_killed_worker_is_restarted_with_its_start_number(tmp_path: Path) -> None:
    # the first start SIGKILLs itself; the restart (start 1) exits cleanly
    code = (
        "import os, signal; "
        "os.environ['START'] == '0' and os.kill(os.getpid(), signal.SIGKILL); "
        "print('{\"start\": %s}' % os.environ['START'])"
    )
    sup = Supervisor(
        lambda i: [sys.executable, "-c", code], 1, env_for=lambda i, n: {"START": str(n)}
    )
    results = sup.run()
    assert sup.status == 0
    assert results[0].exit_codes == [-signal.SIGKILL, 0]
    assert results[0].summary == {"start": 1}


def test_stop_from_a_start_hook_reaches_workers_that_start_later() -> None:
    # stop() while worker 0 starts: worker 1 is started after it and must stop too, and
    # children that block SIGTERM until their handler is in place still get it
    pids: list[int] = []
    sup: Supervisor

    def started(index: int, pid: int) -> None:
        pids.append(pid)
        if index == 0:
            sup.stop()

    sup = Supervisor(lambda i: [sys.executable, "-c", WAIT], 2, on_start=started)
    results = sup.run()
    assert sup.status == 0 and len(pids) == 2
    assert all(r.summary == {"stopped_by": int(signal.SIGTERM)} for r in results)
    assert all(r.restarts == 0 for r in results)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="Linux pidfds")
def test_sigterm_to_the_supervisor_stops_every_worker() -> None:
    def started(index: int, pid: int) -> None:
        if index == 1:  # both started: signal the supervisor itself
            os.kill(os.getpid(), signal.SIGTERM)

    sup = Supervisor(lambda i: [sys.executable, "-c", WAIT], 2, on_start=started)
    results = sup.run()
    assert sup.status == 0
    assert [r.exit_codes for r in results] == [[0], [0]]
    assert signal.getsignal(signal.SIGTERM) is not None  # the old handler is back


def test_a_worker_ended_by_the_ctrl_c_itself_counts_as_stopped() -> None:
    """Ctrl-C reaches every process of the group: a worker whose handlers are already gone
    (on its way out) ends by the SIGINT; the job still stopped cleanly (status 0)."""
    dies = (  # SIGTERM stays blocked (as the supervisor starts it); SIGINT as at shutdown
        "import os, signal, time; "
        "signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
        "time.sleep(0.3); os.kill(os.getpid(), signal.SIGINT)"
    )
    codes = {0: WAIT, 1: dies}
    sups: list[Supervisor] = []

    def started(index: int, pid: int) -> None:
        if index == 1:
            sups[0].stop()  # the stop is under way when worker 1 ends

    sups.append(
        Supervisor(lambda i: [sys.executable, "-c", codes[i]], 2, max_restarts=0, on_start=started)
    )
    results = sups[0].run()
    assert results[1].exit_codes == [-signal.SIGINT], results
    assert sups[0].status == 0, sups[0].error
