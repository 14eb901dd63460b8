"""The boundary to confluent-kafka: importing it, its logs and errors, broker outages.

Everything here is shared by :mod:`tidal.io.kafka.source` and :mod:`tidal.io.kafka.sink`:

- :func:`confluent` imports ``confluent_kafka`` or raises an ``ImportError`` naming the
  extra to install;
- :class:`Health` is the ``error_cb`` and ``logger`` of a client: librdkafka's logs go to the
  ``tidal.kafka`` logger, and a broker that cannot be reached is reported once as a warning
  (``broker unreachable``), counted, and reported again when it answers (``broker back``),
  so a pipeline that waits for its broker says so instead of hanging silently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from tidal.errors import ConnectorError

__all__ = ["Health", "confluent", "kafka_error", "transient"]

log = logging.getLogger("tidal.kafka")

_OUTAGE = {"_TRANSPORT", "_ALL_BROKERS_DOWN", "_RESOLVE", "_TIMED_OUT"}


def confluent() -> Any:
    """The ``confluent_kafka`` module.

    Raises:
        ImportError: naming the install command, when the ``kafka`` extra is missing.
    """
    try:
        import confluent_kafka
    except ImportError as exc:  # pragma: no cover - the extra is installed in CI
        msg = "Kafka sources and sinks need the 'kafka' extra: pip install 'tidal-stream[kafka]'"
        raise ImportError(msg, name=exc.name) from exc
    return confluent_kafka


_COORDINATOR_CODES = {
    14,  # COORDINATOR_LOAD_IN_PROGRESS
    15,  # COORDINATOR_NOT_AVAILABLE
    16,  # NOT_COORDINATOR
}


def transient(exc: BaseException) -> bool:
    """Whether a client error will pass by itself (retriable, or a coordinator moving/loading).

    librdkafka does not mark a coordinator that is still loading (a broker that just
    started) as retriable for ``committed()``; callers retry those too.
    """
    err = exc.args[0] if exc.args else None
    if err is None or not hasattr(err, "code"):
        return False
    return bool(err.retriable()) or err.code() in _COORDINATOR_CODES or err.name() in _OUTAGE


def kafka_error(where: str, what: str, exc: BaseException) -> ConnectorError:
    """A :class:`ConnectorError` for a failed client call (chain it with ``from``)."""
    return ConnectorError(f"{where}: {what} failed: {exc}")


class Health:
    """Tracks whether a client reaches its brokers; librdkafka's ``error_cb`` and ``logger``.

    Attributes:
        errors: client errors reported by librdkafka so far.
        outages: times the brokers became unreachable.
        down_since: ``time.monotonic()`` when the current outage began, or ``None``.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.errors = 0
        self.outages = 0
        self.down_since: float | None = None
        self._lock = threading.Lock()

    def settings(self, live: Callable[[], bool] | None = None) -> dict[str, Any]:
        """The client settings that route errors and logs here.

        ``live``, if given, is asked at each error: a client that was replaced or is being
        closed says ``False``, and its late errors (a connection refused while the broker
        was away, delivered when ``close`` or a call left hanging serves the queue) no
        longer count as an outage of the client that replaced it.
        """
        if live is None:
            return {"error_cb": self.on_error, "logger": _LibrdkafkaLog(self)}

        def on_error(err: Any) -> None:
            if live():
                self.on_error(err)

        return {"error_cb": on_error, "logger": _LibrdkafkaLog(self)}

    def on_error(self, err: Any) -> None:
        """Librdkafka's ``error_cb``: count, and warn once per outage."""
        with self._lock:
            self.errors += 1
            name = err.name() if hasattr(err, "name") else str(err)
            if name in _OUTAGE:
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    self.outages += 1
                    log.warning(
                        "%s: broker unreachable (%s: %s); waiting for it to come back",
                        self.label,
                        name,
                        err.str() if hasattr(err, "str") else err,
                    )
                return
        log.warning("%s: Kafka client error %s", self.label, err)

    def waiting(self, what: str, seconds: float) -> None:
        """A call has waited ``seconds`` for the cluster: report it as an outage, once."""
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = time.monotonic() - seconds
            self.outages += 1
        log.warning(
            "%s: broker unreachable: %s has waited %.0f s for an answer; waiting on",
            self.label,
            what,
            seconds,
        )

    def ok(self) -> None:
        """Called after a successful round trip: end the current outage, if any."""
        if self.down_since is None:
            return
        with self._lock:
            since, self.down_since = self.down_since, None
        if since is not None:
            log.warning("%s: broker back after %.1f s", self.label, time.monotonic() - since)

    @property
    def down(self) -> bool:
        """Whether an outage is going on."""
        return self.down_since is not None


class _LibrdkafkaLog:
    """A ``logging.Logger``-like object for librdkafka's ``logger`` setting."""

    def __init__(self, health: Health) -> None:
        self.health = health
        self.logger = logging.getLogger("tidal.kafka.librdkafka")

    def log(self, level: int, fmt: str, *args: Any) -> None:
        # librdkafka's own connection chatter is debug-level; the outages are reported once
        # by Health.on_error
        self.logger.log(min(level, logging.INFO), fmt, *args)
