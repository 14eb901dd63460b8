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
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from tidal.errors import ConfigError
from tidal.io.kafka.jvm import (
    HOST,
    JavaServer,
    cache_home,
    free_port,
    java_path,
    locked,
    maven,
    run_maven,
    tail,
    terminate,
    tie_to_parent,
    wait_ready,
)

__all__ = ["APICURIO_VERSION", "Registry", "ensure_registry", "registry_home"]

APICURIO_VERSION = "2.4.2.Final"
"""The Apicurio Registry release built (decision 0048: the newest whose parts are served)."""

_HOST = HOST
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
    return cache_home("TIDAL_REGISTRY_HOME", "registry")


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
    mvn = maven(f"the schema registry is not built in {app} yet and building it needs Maven")
    home.mkdir(parents=True, exist_ok=True)
    with locked(home / ".lock"):
        if _complete(app):
            return app
        project = home / "project"
        shutil.rmtree(project, ignore_errors=True)
        source = resources.files("tidal.io.kafka").joinpath("resources", "registry")
        for name, place in _FILES.items():
            target = project / place
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(source.joinpath(name).read_text())
        check = run_maven(
            mvn,
            ["-f", str(project / "pom.xml"), "package", "-DskipTests"],
            announce=(
                f"building Apicurio Registry {APICURIO_VERSION} from Maven Central into "
                f"{home} (once, a few minutes)"
            ),
            failed=(
                f"Maven could not build Apicurio Registry {APICURIO_VERSION} (`mvn package` in "
                f"{project})"
            ),
            hint=(
                "check the network (Maven Central), or set TIDAL_REGISTRY_HOME to a cache "
                "that has it built"
            ),
        )
        target_dir = project / "target"
        check((target_dir / _RUNNER).is_file())
        shutil.rmtree(app, ignore_errors=True)
        app.mkdir()
        (target_dir / _RUNNER).rename(app / _RUNNER)
        (target_dir / "lib").rename(app / "lib")
        (app / ".complete").write_text(APICURIO_VERSION + "\n")
        shutil.rmtree(project / "target", ignore_errors=True)
    return app


class Registry(JavaServer):
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
            self.port = free_port()
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
                preexec_fn=tie_to_parent(),
            )
        try:
            self._wait_ready(timeout, out)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float, out: Path) -> None:
        proc = self._proc
        assert proc is not None

        def ready(left: float) -> bool:
            with contextlib.suppress(OSError, urllib.error.URLError):
                with urllib.request.urlopen(f"{self.url}/subjects", timeout=2.0) as resp:  # noqa: S310
                    return bool(resp.status == 200)
            return False  # still loading: Quarkus answers nothing until it is up

        wait_ready(
            f"the schema registry at {self.url}",
            exit_status=proc.poll,
            ready=ready,
            timeout=timeout,
            log=lambda: tail(out),
            pause=0.25,
        )

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns once the JVM is gone."""
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, timeout)
