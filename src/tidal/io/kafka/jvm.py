"""The Java processes Tidal starts itself, and the Maven runs that fetch them.

The Kafka broker (:mod:`tidal.io.kafka.broker`) and the schema registry
(:mod:`tidal.io.kafka.registry`), and Flink's Kafka connector jar
(:mod:`tidal.flink.jars`), come from Maven Central into a cache under ``~/.cache/tidal``
once (:func:`cache_home`, :func:`run_maven`, :func:`locked`), and the two servers run
with Java 17 or newer (:func:`java_path`) on 127.0.0.1 on a free port (:func:`free_port`),
tied to the Python process that starts them (:func:`tie_to_parent`): a killed test run
leaves no JVM behind. :func:`wait_ready` waits until one answers, quoting its log
(:func:`tail`) when it exits or does not answer; :func:`terminate` stops one.

Example:
    >>> str(cache_home("TIDAL_NO_SUCH_HOME", "things")).endswith("/.cache/tidal/things")
    True
    >>> port_free(free_port())
    True
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from tidal.errors import ConfigError, ConnectorError

__all__ = [
    "ELSEWHERE",
    "JavaServer",
    "HOST",
    "INSTALL_JAVA",
    "INSTALL_MVN",
    "cache_home",
    "free_port",
    "java_path",
    "locked",
    "maven",
    "port_free",
    "run_maven",
    "tail",
    "terminate",
    "tie_to_parent",
    "wait_ready",
]

HOST = "127.0.0.1"
INSTALL_JAVA = (
    "install Java 17 or newer (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`; "
    "macOS: `brew install openjdk@17`)"
)
INSTALL_MVN = "install Maven (Debian/Ubuntu: `apt-get install maven`; macOS: `brew install maven`)"
ELSEWHERE = "or point --bootstrap-servers / TIDAL_KAFKA at an existing Kafka cluster"


# -- caches and Maven ----------------------------------------------------------------------
def cache_home(env: str, name: str) -> Path:
    """A cache directory: ``$<env>`` if set, else ``~/.cache/tidal/<name>``."""
    value = os.environ.get(env)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "tidal" / name


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (made if missing): one process fills a cache."""
    with path.open("a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def maven(missing: str, otherwise: str = "") -> str:
    """The ``mvn`` on PATH.

    Raises:
        ConfigError: there is none; the message starts with ``missing`` (what is not
            cached yet), says what to install, then ``otherwise`` (another way out).
    """
    mvn = shutil.which("mvn")
    if mvn is None:
        msg = f"{missing}: no `mvn` on PATH; {INSTALL_MVN}" + (
            f", {otherwise}" if otherwise else ""
        )
        raise ConfigError(msg)
    return mvn


def run_maven(
    mvn: str,
    args: Sequence[str],
    *,
    announce: str,
    failed: str,
    hint: str,
    cwd: Path | None = None,
) -> Callable[[bool], None]:
    """Run ``mvn -B -q ARGS`` (batch mode, no colours), saying ``announce`` on stderr first.

    Returns a check to call with whether the expected result is there: it raises
    ``ConnectorError("<failed> (exit N): <Maven's first errors>; <hint>")`` when Maven
    failed or the result is missing.
    """
    cmd = [mvn, "-B", "-q", "-Dstyle.color=never", *args]
    print(f"tidal: {announce}", file=sys.stderr)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=cwd)  # noqa: S603

    def check(present: bool) -> None:
        if done.returncode == 0 and present:
            return
        lines = (done.stdout + done.stderr).splitlines()
        errors = [ln for ln in lines if "ERROR" in ln] or lines
        shown = " | ".join(ln.strip() for ln in errors[:3]) or "no output"
        msg = f"{failed} (exit {done.returncode}): {shown}; {hint}"
        raise ConnectorError(msg)

    return check


@functools.cache
def java_path() -> str:
    """The ``java`` to run with (``$JAVA_HOME/bin/java``, else PATH), checked >= 17.

    Raises:
        ConfigError: no Java, or one older than 17 (Kafka 4 needs 17).
    """
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home, "bin", "java") if home else None
    java = str(candidate) if candidate is not None and candidate.is_file() else shutil.which("java")
    if java is None:
        msg = (
            "the Kafka broker needs Java 17 or newer: no `java` on PATH; "
            f"{INSTALL_JAVA}, {ELSEWHERE}"
        )
        raise ConfigError(msg)
    done = subprocess.run(  # noqa: S603
        [java, "-version"], capture_output=True, text=True, check=False
    )
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if found is None:
        said = done.stderr.strip()
        msg = f"cannot tell the version of {java} (`java -version` said {said!r}); {INSTALL_JAVA}"
        raise ConfigError(msg)
    major = int(found.group(1))
    if major == 1 and found.group(2):  # "1.8.0_292" is Java 8
        major = int(found.group(2))
    if major < 17:
        msg = f"the Kafka broker needs Java 17 or newer, {java} is Java {major}; {INSTALL_JAVA}"
        raise ConfigError(msg)
    return java


# -- ports ---------------------------------------------------------------------------------
def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A free port of 127.0.0.1, below the kernel's ephemeral range where it can.

    A port in that range can be taken, while a server is down for a restart, by any
    outgoing connection's local end (its clients reconnecting, say); one below it cannot.
    """
    low, _ = _ephemeral_range()
    if low > 20000:
        for _ in range(200):
            port = secrets.randbelow(low - 15000) + 15000
            if port_free(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether nothing listens on ``port`` of 127.0.0.1 (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM binds
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


# -- processes -----------------------------------------------------------------------------
def tie_to_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when this process dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def tie() -> None:  # runs in the child between fork and exec: nothing but two calls
        prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the tie was made
            os._exit(1)

    return tie


def tail(path: Path, lines: int = 6) -> str:
    """The last error lines of a log (else its last lines), joined with `` | ``."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    wanted = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in wanted if " ERROR " in ln or "Exception" in ln or "Error:" in ln]
    return " | ".join((errors or wanted)[-lines:])


def wait_ready(
    what: str,
    *,
    exit_status: Callable[[], int | None],
    ready: Callable[[float], bool],
    timeout: float,
    log: Callable[[], str],
    pause: float = 0.1,
) -> None:
    """Wait until ``ready(seconds_left)`` says a starting server answers.

    Args:
        what: the server, for the messages (``"the Kafka broker in DIR"``).
        exit_status: its exit status once it exited, else ``None``.
        ready: whether it answers now (may take up to the seconds it is given).
        timeout: seconds to wait in all.
        log: where it says why (the end of its log), for the messages.
        pause: seconds between two tries.

    Raises:
        ConnectorError: it exited, or did not answer within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        status = exit_status()
        if status is not None:
            msg = f"{what} exited with status {status} while starting: {log()}"
            raise ConnectorError(msg)
        left = deadline - time.monotonic()
        if left <= 0:
            msg = f"{what} did not answer within {timeout:g} s: {log()}"
            raise ConnectorError(msg)
        if ready(left):
            return
        time.sleep(pause)  # still loading: nothing answers yet


def terminate(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM (a clean shutdown), SIGKILL after ``timeout`` seconds; returns once it is gone."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30.0)


class JavaServer:
    """A server Tidal starts itself: ``start()``/``stop()``, and ``with`` starts and stops it."""

    def start(self) -> None:
        """Start it and return once it answers."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop it; returns once it is gone."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
