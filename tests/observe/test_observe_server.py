"""The dashboard/metrics server: loopback by default, tokens off loopback, read-only, 4xx."""

from __future__ import annotations

import http.client
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from scrape import call, wait_for

from tidal.errors import ConfigError
from tidal.observe.live import LiveRun
from tidal.observe.web.server import ObserveServer, is_loopback


@pytest.fixture
def local() -> Any:
    with ObserveServer(LiveRun(), port=0) as server:
        yield server


def test_loopback_serves_the_dashboard_without_a_token(local: ObserveServer) -> None:
    assert local.token is None and local.url.startswith("http://127.0.0.1:")
    status, headers, body = call(local.url)
    assert status == 200 and b'<svg id="graph"' in body
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == "no-referrer"
    assert b"http://" not in body and b"https://" not in body  # nothing from the internet
    for path in ("static/app.js", "static/style.css", "api/snapshot", "metrics", "healthz"):
        assert call(local.url + path)[0] == 200, path
    snap = orjson.loads(call(local.url + "api/snapshot")[2])
    assert {"events", "graph", "steps", "series", "dead_letters"} <= set(snap)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_read_only(local: ObserveServer, method: str) -> None:
    for path in ("", "metrics", "api/snapshot"):
        status, _, body = call(local.url + path, method=method)
        assert status == 405
        assert orjson.loads(body)["error"].startswith("read-only")


@pytest.mark.parametrize(
    "path", ["nope", "static/nope.js", "static/../server.py", "static/%2e%2e/server.py",
             "api/snapshot/x", "events/1"],
)  # fmt: skip
def test_bad_paths_get_404_json_without_a_traceback(local: ObserveServer, path: str) -> None:
    status, headers, body = call(local.url + path)
    assert status == 404, (path, body)
    assert b"Traceback" not in body and b'File "' not in body
    assert "error" in orjson.loads(body)


def test_a_foreign_host_header_is_refused_on_loopback(local: ObserveServer) -> None:
    port = urlsplit(local.url).port
    status, _, body = call(local.url, headers={"Host": f"evil.example:{port}"})
    assert status == 400 and b"127.0.0.1" in body
    assert call(local.url, headers={"Host": f"localhost:{port}"})[0] == 200


def test_a_failing_handler_gives_500_json_not_a_traceback() -> None:
    class Broken(LiveRun):
        def snapshot(self) -> dict[str, Any]:
            raise RuntimeError("secret detail")

    with ObserveServer(Broken(), port=0) as server:
        status, _, body = call(server.url + "api/snapshot")
    assert status == 500
    assert b"secret" not in body and b"Traceback" not in body
    assert orjson.loads(body) == {"error": "internal error (see the run's log)"}


def test_off_loopback_every_request_needs_the_token() -> None:
    with ObserveServer(LiveRun(), host="0.0.0.0", port=0) as server:
        token = server.token
        assert token is not None and len(token) >= 24  # generated
        port = urlsplit(server.url).port
        base = f"http://127.0.0.1:{port}/"
        for path in ("", "metrics", "events", "api/snapshot", "static/app.js", "healthz"):
            status, _, body = call(base + path)
            assert status == 401, path
            assert b"token" in body
            assert call(base + path + "?token=wrong")[0] == 401
            bearer = {"Authorization": f"Bearer {token}"}
            if path != "events":
                assert call(base + path, headers=bearer)[0] == 200, path
            assert call(base + path, headers={"Authorization": "Bearer nope"})[0] == 401
        status, headers, _ = call(base + f"?token={token}")
        assert status == 303 and headers["location"] == "/"
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        jar = {"Cookie": cookie.split(";")[0]}
        assert call(base + "api/snapshot", headers=jar)[0] == 200
        assert call(base + "metrics?token=" + token)[0] == 200


def test_a_given_token_is_used_and_an_empty_one_refused() -> None:
    with ObserveServer(LiveRun(), host="0.0.0.0", port=0, token="s3cret-token") as server:
        port = urlsplit(server.url).port
        ok = {"Authorization": "Bearer s3cret-token"}
        assert call(f"http://127.0.0.1:{port}/metrics", headers=ok)[0] == 200
    with pytest.raises(ConfigError, match="empty"):
        ObserveServer(LiveRun(), host="0.0.0.0", token=" ")


def test_a_busy_port_is_a_config_error(local: ObserveServer) -> None:
    port = urlsplit(local.url).port
    assert port is not None
    with pytest.raises(ConfigError, match="choose another port"):
        ObserveServer(LiveRun(), port=port).start()


def test_server_sent_events_stream_snapshots_and_end_on_stop() -> None:
    live = LiveRun()
    live.pipeline = "sse"
    server = ObserveServer(live, port=0, interval=0.1).start()
    u = urlsplit(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", "/events")
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("content-type").startswith("text/event-stream")
    events: list[dict[str, Any]] = []

    def two_events() -> bool:
        line = r.readline()
        if line.startswith(b"data: "):
            events.append(orjson.loads(line[6:]))
        return len(events) >= 2

    wait_for(two_events, timeout=10, message="two server-sent events")
    assert events[0]["pipeline"] == "sse"
    server.stop()  # ends the open stream
    rest = r.read()
    assert isinstance(rest, bytes)
    conn.close()


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")
    assert is_loopback("127.0.0.2") and is_loopback("[::1]")
    assert not is_loopback("192.0.2.1")


def test_a_port_another_server_listens_on_is_refused_at_start() -> None:
    """Two runs asking for one port: the second gets a ConfigError, never a dead thread."""
    from tidal.errors import ConfigError
    from tidal.observe.live import LiveRun

    first = ObserveServer(LiveRun(), port=0).start()
    try:
        with pytest.raises(ConfigError, match="cannot serve"):
            ObserveServer(LiveRun(), port=first.port).start()
    finally:
        first.stop()
