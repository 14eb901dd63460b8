"""Where a Kafka cluster is and how to talk to it: one frozen :class:`KafkaConfig`.

Every Kafka piece of Tidal (sources, sinks, the admin tools, ``tidal kafka``) takes one
``KafkaConfig`` and turns it into librdkafka settings with :meth:`KafkaConfig.client`.
Security settings (TLS, SASL) pass through unchanged; ``extra`` carries any other
librdkafka property (``compression.type``, ``linger.ms``, ...).

The bootstrap address defaults to ``$TIDAL_KAFKA`` (``host:port[,host:port...]``), else
``127.0.0.1:9092``, so a pipeline written against the project's own broker
(``tidal kafka up``) runs against an existing cluster by setting one variable.

Example:
    >>> cfg = KafkaConfig(bootstrap_servers="127.0.0.1:9092", extra={"linger.ms": "5"})
    >>> cfg.client()["bootstrap.servers"], cfg.client()["linger.ms"]
    ('127.0.0.1:9092', '5')
    >>> KafkaConfig(bootstrap_servers="b:9093", security_protocol="SASL_SSL",
    ...             sasl_mechanism="SCRAM-SHA-512", sasl_username="u",
    ...             sasl_password="p").client()["sasl.mechanism"]
    'SCRAM-SHA-512'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tidal.errors import ConfigError

__all__ = ["DEFAULT_BOOTSTRAP", "KafkaConfig", "default_bootstrap"]

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def default_bootstrap() -> str:
    """``$TIDAL_KAFKA`` if set, else ``127.0.0.1:9092``."""
    return os.environ.get("TIDAL_KAFKA") or DEFAULT_BOOTSTRAP


@dataclass(frozen=True, kw_only=True)
class KafkaConfig:
    """Connection settings for a Kafka cluster.

    Args:
        bootstrap_servers: ``host:port[,host:port...]``; default ``$TIDAL_KAFKA`` or
            ``127.0.0.1:9092``.
        security_protocol: ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``.
        sasl_mechanism: e.g. ``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``.
        sasl_username: the SASL user.
        sasl_password: the SASL password (never printed: see ``__repr__``).
        ssl_ca_location: CA certificate file to verify the brokers.
        ssl_certificate_location: client certificate (mutual TLS).
        ssl_key_location: client private key (mutual TLS).
        extra: any other librdkafka property, passed through as is.

    Raises:
        ConfigError: for an empty bootstrap address, an unknown protocol, or SASL settings
            without a SASL protocol.
    """

    bootstrap_servers: str = field(default_factory=default_bootstrap)
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.bootstrap_servers.strip():
            msg = "KafkaConfig: bootstrap_servers is empty; give host:port (or set TIDAL_KAFKA)"
            raise ConfigError(msg)
        if self.security_protocol not in _PROTOCOLS:
            msg = (
                f"KafkaConfig: security_protocol must be one of {', '.join(_PROTOCOLS)}, "
                f"got {self.security_protocol!r}"
            )
            raise ConfigError(msg)
        sasl = self.sasl_mechanism or self.sasl_username or self.sasl_password
        if sasl and not self.security_protocol.startswith("SASL"):
            msg = (
                "KafkaConfig: SASL settings given with security_protocol="
                f"{self.security_protocol!r}; use SASL_SSL (or SASL_PLAINTEXT on a trusted network)"
            )
            raise ConfigError(msg)

    def client(self, **overrides: Any) -> dict[str, Any]:
        """The librdkafka settings for a producer, consumer or admin client.

        Args:
            **overrides: settings added last (dots written as in librdkafka, passed as a
                mapping: ``cfg.client(**{"group.id": "g"})``).
        """
        out: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        out.update(self.extra)
        out.update(overrides)
        return out
