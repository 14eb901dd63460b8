"""``tidal kafka`` connection flags and their environment variables map onto KafkaConfig."""

from __future__ import annotations

import pytest

from tidal.cli import _parser, main
from tidal.cli.kafka import kafka_config


def _config(argv: list[str]) -> dict[str, object]:
    args = _parser().parse_args(argv)
    for opt in args.options:
        opt.resolve(args)
    return kafka_config(args).client()


def test_flags_map_to_librdkafka_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIDAL_KAFKA", raising=False)
    monkeypatch.setenv("TIDAL_KAFKA_SASL_PASSWORD", "from-env")
    got = _config(
        [
            "kafka",
            "topics",
            "--bootstrap-servers",
            "b1:9093,b2:9093",
            "--security-protocol",
            "sasl_ssl",
            "--sasl-mechanism",
            "SCRAM-SHA-512",
            "--sasl-username",
            "tidal",
            "--ssl-ca-location",
            "/etc/ca.pem",
            "-X",
            "compression.type=lz4",
            "-X",
            "client.id=me",
        ]
    )
    assert got == {
        "bootstrap.servers": "b1:9093,b2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "tidal",
        "sasl.password": "from-env",
        "ssl.ca.location": "/etc/ca.pem",
        "compression.type": "lz4",
        "client.id": "me",
    }


def test_bootstrap_comes_from_tidal_kafka_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDAL_KAFKA", "env-host:1234")
    assert _config(["kafka", "consume", "t"])["bootstrap.servers"] == "env-host:1234"
    flag = ["kafka", "consume", "t", "--bootstrap-servers", "flag-host:1"]
    assert _config(flag)["bootstrap.servers"] == "flag-host:1"
    monkeypatch.delenv("TIDAL_KAFKA")
    assert _config(["kafka", "consume", "t"])["bootstrap.servers"] == "127.0.0.1:9092"


def test_bad_settings_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kafka", "topics", "-X", "no-equals-sign"]) == 2
    assert capsys.readouterr().err.strip() == (
        "tidal: error: -X takes key=value, got 'no-equals-sign'"
    )
    bad = ["kafka", "topics", "--sasl-username", "u", "--bootstrap-servers", "h:1"]
    assert main(bad) == 2  # SASL settings without a SASL protocol
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SASL_SSL" in err[0]
    assert main(["kafka", "topics", "--security-protocol", "TLS"]) == 2
    assert "expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL" in capsys.readouterr().err
