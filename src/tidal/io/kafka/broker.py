"""The project's own Apache Kafka broker: jars from Maven Central, one KRaft node on loopback.

Tests, ``tidal kafka up`` and ``tidal demo --kafka`` need a real broker and nothing else
installed but Java 17 and Maven. :func:`ensure_jars` resolves ``kafka_2.13`` (and a log4j 2
binding) from Maven Central into a cache, once; :class:`Broker` formats a data directory
for a single node that is both broker and controller (KRaft, no ZooKeeper) and runs
``kafka.Kafka`` on 127.0.0.1, on free ports unless told which.

::

    <cache>/<version>/pom.xml          what Maven resolved (``$TIDAL_KAFKA_HOME`` or
    <cache>/<version>/jars/*.jar        ~/.cache/tidal/kafka is the cache)
    <data_dir>/broker.json             ports, cluster id and the running pid
    <data_dir>/server.properties       written on every start, same ports every time
    <data_dir>/broker.log              the broker's log (rolled at 10 MB)
    <data_dir>/broker.out              the JVM's own stdout/stderr (start-up failures)
    <data_dir>/data/                   topic partitions and the KRaft metadata log

A broker started by a Python process is tied to it (Linux): if that process dies, even by
``kill -9``, the kernel kills the JVM too, so a killed test run leaves no broker behind
(``detach=True``, as ``tidal kafka up`` uses, starts one that outlives its starter). The tie
is to the *thread* that calls :meth:`Broker.start`: start it from a thread that lives as long
as the broker should. Stopping sends SIGTERM (a clean shutdown, about 2 s) and SIGKILL after
a timeout. A restart uses the same ports and data, so clients reconnect by themselves.

Example (not run here: it takes Java, Maven and a few seconds)::

    with Broker("/tmp/kafka") as broker:
        cfg = broker.config()            # KafkaConfig(bootstrap_servers="127.0.0.1:PORT")
        ...
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
import weakref
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from tidal.errors import ConfigError, ConnectorError
from tidal.io.kafka.config import KafkaConfig
from tidal.io.kafka.jvm import (
    ELSEWHERE,
    HOST,
    JavaServer,
    cache_home,
    free_port,
    java_path,
    locked,
    maven,
    port_free,
    run_maven,
    tail,
    tie_to_parent,
    wait_ready,
)

__all__ = [
    "FAST_START",
    "KAFKA_JVM_OPTIONS",
    "KAFKA_VERSION",
    "Broker",
    "ensure_jars",
    "java_path",
    "kafka_home",
    "port_free",
]

KAFKA_VERSION = "4.4.0"
FAST_START = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
"""JVM options for a broker that starts on half the CPU time (C1 JIT only, serial GC).

Measured on 2 busy cores: 3.6-3.8 s of JVM CPU time to ready instead of 6.8-7.7 s. For
tests and short-lived brokers; a broker for benchmarks keeps the default JIT.
"""
KAFKA_JVM_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
)
"""The JVM options Apache Kafka's own start script (``kafka-run-class.sh``) gives a broker.

G1 aiming at 20 ms pauses: without them (the JVM's default 200 ms goal) the broker's young
collections took 7-38 ms during the 50,000 events/s latency run, and every record in
flight waits them out (decision 0058). Dropped for the collector flags when
``jvm_options`` picks another collector (:data:`FAST_START`'s serial one).
"""
_STATE = "broker.json"
_HOST = HOST


def _defaults(options: Sequence[str]) -> tuple[str, ...]:
    """:data:`KAFKA_JVM_OPTIONS`, less the collector's own when ``options`` pick a collector.

    Example:
        >>> len(_defaults(())) == len(KAFKA_JVM_OPTIONS)
        True
        >>> _defaults(FAST_START)
        ('-XX:+ExplicitGCInvokesConcurrent', '-XX:MaxInlineLevel=15')
    """
    if not any(o.startswith("-XX:+Use") and o.endswith("GC") for o in options):
        return KAFKA_JVM_OPTIONS
    g1 = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis", "-XX:InitiatingHeapOccupancyPercent")
    return tuple(o for o in KAFKA_JVM_OPTIONS if not o.startswith(g1))


# -- jars ----------------------------------------------------------------------------------
def kafka_home() -> Path:
    """Where resolved Kafka versions are cached: ``$TIDAL_KAFKA_HOME``, else ~/.cache/tidal/kafka.

    Example:
        >>> str(kafka_home()).endswith("kafka") or "TIDAL_KAFKA_HOME" in os.environ
        True
    """
    return cache_home("TIDAL_KAFKA_HOME", "kafka")


def _complete(jars: Path) -> bool:
    marker = jars / ".complete"
    if not marker.is_file():
        return False
    names = marker.read_text().split()
    return bool(names) and all((jars / n).is_file() for n in names)


def ensure_jars(
    version: str = KAFKA_VERSION, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The directory of the broker's jars, resolving them with Maven the first time.

    Args:
        version: the Apache Kafka version (``org.apache.kafka:kafka_2.13``).
        cache_dir: the directory for this version (``jars/`` is made in it); default
            ``kafka_home() / version``.

    Returns:
        The directory holding the jars (``java -cp 'DIR/*'``).

    Raises:
        ConfigError: ``java`` (17 or newer) or, when the jars are not cached yet, ``mvn`` is
            missing; the message names what to install.
        ConnectorError: Maven could not resolve the jars (no network, unknown version).
    """
    home = Path(cache_dir) if cache_dir is not None else kafka_home() / version
    jars = home / "jars"
    java_path()  # fail early and clearly without Java: the jars alone are no use
    if _complete(jars):
        return jars
    mvn = maven(
        f"Kafka {version}'s jars are not in {jars} yet and resolving them from Maven Central "
        "needs Maven",
        ELSEWHERE,
    )
    home.mkdir(parents=True, exist_ok=True)
    with locked(home / ".lock"):
        if _complete(jars):  # another process resolved them while this one waited
            return jars
        template = resources.files("tidal.io.kafka").joinpath("resources", "pom.xml")
        pom = home / "pom.xml"
        pom.write_text(template.read_text().replace("@KAFKA_VERSION@", version))
        partial = home / "jars.partial"
        shutil.rmtree(partial, ignore_errors=True)
        check = run_maven(
            mvn,
            ["-f", str(pom), "dependency:copy-dependencies", "-DincludeScope=runtime"]
            + [f"-DoutputDirectory={partial}"],
            announce=f"resolving Apache Kafka {version} from Maven Central into {home} (once)",
            failed=(
                f"Maven could not resolve org.apache.kafka:kafka_2.13:{version} (`mvn -B "
                f"dependency:copy-dependencies` with {pom})"
            ),
            hint=(
                "check the network (Maven Central) and the version, or set TIDAL_KAFKA_HOME "
                "to a cache that has it"
            ),
        )
        names = sorted(p.name for p in partial.glob("*.jar")) if partial.is_dir() else []
        check(any(n.startswith("kafka_2.13-") for n in names))
        (partial / ".complete").write_text("\n".join(names) + "\n")
        shutil.rmtree(jars, ignore_errors=True)
        partial.rename(jars)
    return jars


# -- processes -----------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not; one that is our child is reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    if stat.rsplit(")", 1)[-1].split()[:1] in (["Z"], ["X"]):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _is_broker(pid: int, properties: Path) -> bool:
    """Whether ``pid`` is the ``kafka.Kafka`` started with ``properties`` (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return _alive(pid)  # no /proc: trust the recorded pid
    return b"kafka.Kafka" in cmdline and str(properties).encode() in cmdline


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((_HOST, port)) == 0


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, base64url without padding (as ``random-uuid``)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):  # Kafka's Uuid.randomUuid avoids these too
            return text


_RUNNING: weakref.WeakSet[Broker] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:  # an interpreter that exits normally stops its brokers cleanly
    for broker in list(_RUNNING):
        with contextlib.suppress(Exception):
            broker.stop()


# -- the broker ----------------------------------------------------------------------------
class Broker(JavaServer):
    """One Apache Kafka node (broker + KRaft controller) on 127.0.0.1, data in ``data_dir``.

    Args:
        data_dir: where the broker keeps its state, logs and topics; made if missing.
        port: the client port; default: the port of the last start in this directory,
            else a free one.
        version: the Apache Kafka version (see :func:`ensure_jars`).
        cache_dir: the jar cache for this version (see :func:`ensure_jars`).
        heap: the JVM's maximum heap (``-Xmx``); 1 GB, as Kafka's own start script.
        detach: start a broker that outlives this process, in its own session (for
            ``tidal kafka up``); by default it dies with the process that started it.
        jvm_options: more options for the broker's JVM, added last; default: the words of
            ``$TIDAL_KAFKA_JVM_OPTIONS``. :data:`FAST_START` halves the CPU time a start
            takes (the tests use it), at some cost in peak throughput.

    Example (not run here: it takes Java and a few seconds)::

        broker = Broker("/tmp/kafka")
        broker.start()
        print(broker.bootstrap)              # 127.0.0.1:PORT
        broker.restart()                     # same port, same topics
        broker.stop()
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        version: str = KAFKA_VERSION,
        cache_dir: str | os.PathLike[str] | None = None,
        heap: str = "1g",
        detach: bool = False,
        jvm_options: Sequence[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.version = version
        self.cache_dir = cache_dir
        self.heap = heap
        self.detach = detach
        if jvm_options is None:
            jvm_options = shlex.split(os.environ.get("TIDAL_KAFKA_JVM_OPTIONS", ""))
        self.jvm_options = tuple(jvm_options)
        state = self._read_state()
        self._port: int | None = port or state.get("port")
        self._controller_port: int | None = state.get("controller_port")
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = state.get("pid")
        self._out: Any = None

    # -- where ------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT``, the address clients connect to.

        Raises:
            ConnectorError: the broker was never started, so it has no port yet.
        """
        if self._port is None:
            msg = f"the Kafka broker in {self.data_dir} has no port yet: start() it first"
            raise ConnectorError(msg)
        return f"{_HOST}:{self._port}"

    @property
    def port(self) -> int | None:
        """The client port (``None`` before the first start)."""
        return self._port

    @property
    def pid(self) -> int | None:
        """The JVM's process id while it runs, else ``None``."""
        return self._pid if self.running else None

    @property
    def log_path(self) -> Path:
        """The broker's log file."""
        return self.data_dir / "broker.log"

    @property
    def properties_path(self) -> Path:
        """The ``server.properties`` the broker runs with."""
        return self.data_dir / "server.properties"

    @property
    def running(self) -> bool:
        """Whether this directory's broker process is alive (started here or elsewhere)."""
        if self._proc is not None:
            return self._proc.poll() is None
        return self._pid is not None and _is_broker(self._pid, self.properties_path)

    def config(self, **settings: Any) -> KafkaConfig:
        """A :class:`KafkaConfig` for this broker (``settings`` go to ``KafkaConfig``).

        Example:
            >>> Broker("/tmp/not-started", port=19092).config().bootstrap_servers
            '127.0.0.1:19092'
        """
        return KafkaConfig(bootstrap_servers=self.bootstrap, **settings)

    @classmethod
    def find(cls, data_dir: str | os.PathLike[str]) -> Broker | None:
        """The broker running in ``data_dir`` (started by any process), or ``None``.

        Example:
            >>> Broker.find("/no/such/dir") is None
            True
        """
        broker = cls(data_dir)
        return broker if broker._pid is not None and broker.running else None

    # -- state file -------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        path = self.data_dir / _STATE
        try:
            state = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            msg = (
                f"cannot read the Kafka broker's state {path}: {exc}; remove the directory "
                "to start afresh"
            )
            raise ConnectorError(msg) from exc
        return state if isinstance(state, dict) else {}

    def _write_state(self, **changes: Any) -> None:
        state = self._read_state()
        state.update(changes)
        path = self.data_dir / _STATE
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))
        tmp.replace(path)

    # -- start ------------------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> None:
        """Start the broker and return once it answers metadata requests.

        The first start in a directory formats its storage (a new cluster id); later ones
        reuse the data and the ports.

        Args:
            timeout: seconds to wait for the broker to answer.

        Raises:
            ConfigError: Java or Maven is missing, or the port is taken.
            ConnectorError: another process's broker runs in ``data_dir``, or the broker
                exited or did not answer in time (the message quotes its log).
        """
        if self._proc is not None and self._proc.poll() is None:
            return
        if self._pid is not None and self._proc is None and self.running:
            msg = (
                f"a Kafka broker already runs in {self.data_dir} (pid {self._pid}, "
                f"{self.bootstrap}); use it, or stop it first (`tidal kafka down`)"
            )
            raise ConnectorError(msg)
        jars = ensure_jars(self.version, self.cache_dir)
        java = java_path()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        formatted = (self.data_dir / "data" / "meta.properties").is_file()
        if self._controller_port is None or not formatted:
            self._controller_port = free_port()
        if self._port is None:
            self._port = free_port()
            while self._port == self._controller_port:
                self._port = free_port()
        for what, port in (("client", self._port), ("controller", self._controller_port)):
            if not port_free(port):
                msg = (
                    f"cannot start Kafka in {self.data_dir}: its {what} port {_HOST}:{port} "
                    "is in use (another broker?); stop that, or give another port (--port)"
                )
                raise ConfigError(msg)
        self._write_files()
        if not formatted:
            self._format(java, jars)
        self._launch(java, jars)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self._kill()
            raise

    def _write_files(self) -> None:
        data = self.data_dir / "data"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{_HOST}:{self._controller_port}",
            "listeners": f"PLAINTEXT://{_HOST}:{self._port},CONTROLLER://{_HOST}:{self._controller_port}",
            "advertised.listeners": f"PLAINTEXT://{_HOST}:{self._port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            # One node: every internal topic has one replica.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # A consumer group starts consuming at once instead of after 3 s.
            "group.initial.rebalance.delay.ms": "0",
        }
        text = "# Written by tidal.io.kafka.broker on every start.\n" + "".join(
            f"{k}={v}\n" for k, v in props.items()
        )
        self.properties_path.write_text(text)
        log4j = resources.files("tidal.io.kafka").joinpath("resources", "log4j2.properties")
        (self.data_dir / "log4j2.properties").write_text(log4j.read_text())

    def _format(self, java: str, jars: Path) -> None:
        cluster = _cluster_id()
        cmd = [
            java,
            "-Xmx256m",
            *FAST_START,
            "-cp",
            f"{jars}/*",
            *self._log_flags(),
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            cluster,
            "-c",
            str(self.properties_path),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            said = " | ".join((done.stdout + done.stderr).strip().splitlines()[-4:])
            msg = (
                f"formatting Kafka's storage in {self.data_dir} failed "
                f"(exit {done.returncode}): {said}"
            )
            raise ConnectorError(msg)
        self._write_state(cluster_id=cluster, version=self.version)

    def _log_flags(self) -> list[str]:
        return [
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            f"-Dtidal.kafka.log={self.data_dir}",
        ]

    def _launch(self, java: str, jars: Path) -> None:
        cmd = [
            java,
            "-Xms256m",
            f"-Xmx{self.heap}",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            *_defaults(self.jvm_options),
            *self._log_flags(),
            *self.jvm_options,
            "-cp",
            f"{jars}/*",
            "kafka.Kafka",
            str(self.properties_path),
        ]
        out_path = self.data_dir / "broker.out"
        if self.detach:
            fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                self._pid = os.posix_spawn(
                    java,
                    cmd,
                    dict(os.environ),
                    file_actions=[
                        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                        (os.POSIX_SPAWN_DUP2, fd, 1),
                        (os.POSIX_SPAWN_DUP2, fd, 2),
                    ],
                    setsid=True,
                )
            finally:
                os.close(fd)
        else:
            self._out = out_path.open("wb")
            self._proc = subprocess.Popen(  # noqa: S603
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=subprocess.STDOUT,
                preexec_fn=tie_to_parent(),
            )
            self._pid = self._proc.pid
            _RUNNING.add(self)
        self._write_state(
            pid=self._pid,
            port=self._port,
            controller_port=self._controller_port,
            version=self.version,
        )

    def _exit_status(self) -> int | None:
        """The JVM's exit status if it has exited, else ``None``."""
        if self._proc is not None:
            return self._proc.poll()
        assert self._pid is not None
        try:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:  # not our child: look it up
            return None if _alive(self._pid) else -1
        return None if pid == 0 else os.waitstatus_to_exitcode(status)

    def _wait_ready(self, timeout: float) -> None:
        from tidal.io.kafka.admin import KafkaAdmin

        admins: list[KafkaAdmin] = []
        port = self._port
        assert port is not None
        out = self.data_dir / "broker.out"

        def ready(left: float) -> bool:
            if not _accepts(port):
                return False  # the JVM is still loading: nothing to ask yet
            if not admins:
                admins.append(KafkaAdmin(self.config(), timeout=min(5.0, left)))
            return admins[0].answers(min(2.0, max(left, 0.1)))

        wait_ready(
            f"the Kafka broker in {self.data_dir} (at {self.bootstrap})",
            exit_status=self._exit_status,
            ready=ready,
            timeout=timeout,
            log=lambda: f"{tail(out) or tail(self.log_path)} (logs: {self.log_path}, {out})",
        )

    # -- stop -------------------------------------------------------------------------------
    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker: SIGTERM (a clean shutdown), SIGKILL after ``timeout`` seconds.

        Works for a broker started by another process too (``tidal kafka down``). Returns
        once the process is gone; a broker that is not running is left as it is.
        """
        pid = self._pid
        try:
            if pid is None or not self.running:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not self._wait_gone(timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_gone(30.0)
        finally:
            self._forget()

    def _kill(self) -> None:
        pid = self._pid
        if pid is not None and self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_gone(30.0)
        self._forget()

    def _wait_gone(self, timeout: float) -> bool:
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self._exit_status() is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)  # another process's child: no handle to wait on
        return True

    def _forget(self) -> None:
        self._proc = None
        self._pid = None
        if self._out is not None:
            self._out.close()
            self._out = None
        _RUNNING.discard(self)
        if (self.data_dir / _STATE).is_file():
            self._write_state(pid=None)

    def restart(self, timeout: float = 180.0) -> None:
        """Stop, then start again on the same ports with the same data."""
        self.stop()
        self.start(timeout)

    def __repr__(self) -> str:
        where = f"{_HOST}:{self._port}" if self._port else "no port yet"
        state = "running" if self.running else "stopped"
        return f"Broker({str(self.data_dir)!r}, {where}, {state})"
