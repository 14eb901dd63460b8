"""The project's own schema registry: Apicurio Registry built from Maven Central, on loopback.

Tests of Avro in the Confluent wire format against a real registry need one that speaks
Confluent's REST API. Apicurio Registry serves it under ``/apis/ccompat/v7``; its
``apicurio-registry-app`` jar is on Maven Central, but not as a runnable application (the
upstream build packages it with Quarkus). :func:`ensure_registry` does that packaging once:
it copies the small Maven project in ``tidal/io/kafka/resources/registry/`` into the cache
and runs ``mvn package`` (quarkus-maven-plugin), about 3 minutes with a warm ~/.m2 on a
loaded 2-core machine; decision 0048 says why this version and these work-arounds.
:class:`Registry` runs the result with Java 17 on 127.0.0.1, a free port, storage in
memory (H2), and stops it.

::

    <cache>/<version>/project/         the Maven project (pom.xml and two small files)
    <cache>/<version>/app/             the runner jar and lib/ (``$TIDAL_REGISTRY_HOME`` or
                                        ~/.cache/tidal/registry is the cache)

Example (not run here: it takes Java, Maven and about 40 s to start)::

    with Registry("/tmp/registry") as registry:
        fmt = AvroFormat(schema, wire="confluent", registry=registry.url, subject="t-value")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from types import TracebackType

from tidal.errors import ConfigError, ConnectorError
from tidal.io.kafka.broker import _free_port, _locked, _tail, _tie_to_parent, java_path

__all__ = ["APICURIO_VERSION", "Registry", "ensure_registry", "registry_home"]

APICURIO_VERSION = "2.4.2.Final"
"""The Apicurio Registry release built (decision 0048: the newest whose parts are served)."""

_HOST = "127.0.0.1"
_RUNNER = "tidal-test-registry-1-runner.jar"
_FILES = {  # resource name -> place in the Maven project
    "pom.xml": "pom.xml",
    "application.properties": "src/main/resources/application.properties",
    "ConfigIndexBeans.java": "src/main/java/dev/tidal/registry/ConfigIndexBeans.java",
}


def registry_home() -> Path:
    """Where the built registry is cached: ``$TIDAL_REGISTRY_HOME``, else ~/.cache/tidal/registry.

    Example:
        >>> str(registry_home()).endswith("registry") or "TIDAL_REGISTRY_HOME" in os.environ
        True
    """
    env = os.environ.get("TIDAL_REGISTRY_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tidal" / "registry"


def _complete(app: Path) -> bool:
    return (app / ".complete").is_file() and (app / _RUNNER).is_file()


def ensure_registry(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The directory of the runnable registry (runner jar and ``lib/``), building it once.

    Args:
        cache_dir: the directory for this version; default ``registry_home() / version``.

    Raises:
        ConfigError: no Java 17+, or (when not built yet) no ``mvn`` on PATH.
        ConnectorError: the Maven build failed (no network, a part not served); the
            message quotes Maven's first errors.
    """
    home = Path(cache_dir) if cache_dir is not None else registry_home() / APICURIO_VERSION
    app = home / "app"
    java_path()
    if _complete(app):
        return app
    mvn = shutil.which("mvn")
    if mvn is None:
        msg = (
            f"the schema registry is not built in {app} yet and building it needs Maven: "
            "no `mvn` on PATH; install Maven 3.8+ (apt-get install maven)"
        )
        raise ConfigError(msg)
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / ".lock"):
        if _complete(app):
            return app
        project = home / "project"
        shutil.rmtree(project, ignore_errors=True)
        source = resources.files("tidal.io.kafka").joinpath("resources", "registry")
        for name, place in _FILES.items():
            target = project / place
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(source.joinpath(name).read_text())
        cmd = [mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(project / "pom.xml")]
        cmd += ["package", "-DskipTests"]
        print(
            f"tidal: building Apicurio Registry {APICURIO_VERSION} from Maven Central into "
            f"{home} (once, a few minutes)",
            file=sys.stderr,
        )
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        target_dir = project / "target"
        if done.returncode != 0 or not (target_dir / _RUNNER).is_file():
            lines = (done.stdout + done.stderr).splitlines()
            errors = [ln for ln in lines if "ERROR" in ln] or lines
            shown = " | ".join(ln.strip() for ln in errors[:3]) or "no output"
            msg = (
                f"Maven could not build Apicurio Registry {APICURIO_VERSION} (`mvn package` in "
                f"{project}, exit {done.returncode}): {shown}; check the network (Maven "
                "Central), or set TIDAL_REGISTRY_HOME to a cache that has it built"
            )
            raise ConnectorError(msg)
        shutil.rmtree(app, ignore_errors=True)
        app.mkdir()
        (target_dir / _RUNNER).rename(app / _RUNNER)
        (target_dir / "lib").rename(app / "lib")
        (app / ".complete").write_text(APICURIO_VERSION + "\n")
        shutil.rmtree(project / "target", ignore_errors=True)
    return app


class Registry:
    """One Apicurio Registry on 127.0.0.1 with in-memory storage; a context manager.

    Args:
        data_dir: where its output (``registry.out``) goes.
        port: the HTTP port; a free one by default.
        cache_dir: the build cache (see :func:`ensure_registry`).
        heap: the JVM's ``-Xmx``.
        jvm_options: more JVM options (the tests pass the broker's ``FAST_START``).

    The JVM is tied to the Python process that starts it (as the Kafka broker is): a
    killed test run leaves no registry behind. Its schemas live in memory only.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        heap: str = "384m",
        jvm_options: Sequence[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.cache_dir = cache_dir
        self.heap = heap
        self.jvm_options = tuple(jvm_options)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The Confluent-compatible API's base URL (``http://127.0.0.1:PORT/apis/ccompat/v7``)."""
        if self.port is None:
            msg = "the registry has no port yet: start() it first"
            raise ConfigError(msg)
        return f"http://{_HOST}:{self.port}/apis/ccompat/v7"

    @property
    def running(self) -> bool:
        """Whether its JVM is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 240.0) -> None:
        """Build (once), launch and wait until ``GET /subjects`` answers 200.

        Raises:
            ConnectorError: the JVM exited, or did not answer within ``timeout`` seconds.
        """
        if self.running:
            return
        app = ensure_registry(self.cache_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = _free_port()
        out = self.data_dir / "registry.out"
        cmd = [
            java_path(),
            f"-Xmx{self.heap}",
            "-XX:+ExitOnOutOfMemoryError",
            *self.jvm_options,
            f"-Dquarkus.http.host={_HOST}",
            f"-Dquarkus.http.port={self.port}",
            "-Dquarkus.datasource.jdbc.min-size=1",
            "-Dquarkus.datasource.jdbc.initial-size=1",
            "-Dquarkus.datasource.jdbc.max-size=8",
            "-jar",
            str(app / _RUNNER),
        ]
        with out.open("wb") as sink:
            self._proc = subprocess.Popen(  # noqa: S603
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                preexec_fn=_tie_to_parent(),
            )
        try:
            self._wait_ready(timeout, out)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float, out: Path) -> None:
        deadline = time.monotonic() + timeout
        assert self._proc is not None
        while True:
            status = self._proc.poll()
            if status is not None:
                msg = (
                    f"the schema registry exited with status {status} while starting: {_tail(out)}"
                )
                raise ConnectorError(msg)
            if time.monotonic() > deadline:
                msg = (
                    f"the schema registry did not answer at {self.url} within {timeout:g} s: "
                    f"{_tail(out)}"
                )
                raise ConnectorError(msg)
            with contextlib.suppress(OSError, urllib.error.URLError):
                with urllib.request.urlopen(f"{self.url}/subjects", timeout=2.0) as resp:  # noqa: S310
                    if resp.status == 200:
                        return
            time.sleep(0.25)  # still loading: Quarkus answers nothing until it is up

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns once the JVM is gone."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30.0)

    def __enter__(self) -> Registry:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
