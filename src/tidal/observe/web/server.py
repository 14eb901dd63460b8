"""The dashboard and ``/metrics`` server: FastAPI on uvicorn, in a background thread.

:class:`ObserveServer` serves one :class:`~tidal.observe.live.LiveRun`:

==================  =============================================================
``GET /``           the dashboard (``ui=True``): plain HTML, JS and SVG from
                    ``static/``, nothing from the internet
``GET /events``     server-sent events: the run's snapshot every ``interval``
``GET /api/snapshot``  the same snapshot, once (JSON)
``GET /metrics``    Prometheus text format (:mod:`tidal.observe.prometheus`)
``GET /healthz``    ``ok``
==================  =============================================================

Safe by default:

* it binds ``127.0.0.1``, and then answers only requests whose ``Host`` is a loopback name
  (so a web page elsewhere cannot reach it through DNS rebinding);
* binding any other address needs a token: given, or generated and printed at start. Every
  request must carry it, ``/metrics`` and ``/events`` included: ``Authorization: Bearer
  TOKEN`` (Prometheus' ``authorization`` setting), or ``?token=TOKEN`` once in the browser,
  which sets an HttpOnly, SameSite=Strict cookie and redirects to the same page without the
  token in the address. Tokens are compared in constant time (:func:`hmac.compare_digest`);
* it is read-only: only ``GET`` and ``HEAD``; anything else gets 405;
* a bad request gets a 4xx and a one-line JSON error, never a traceback, and every page is
  sent with ``Content-Security-Policy: default-src 'self'`` and ``Referrer-Policy:
  no-referrer``.

Example:
    >>> import urllib.request
    >>> from tidal.observe.live import LiveRun
    >>> server = ObserveServer(LiveRun(), port=0).start()
    >>> with urllib.request.urlopen(server.url + "healthz") as r:
    ...     r.read()
    b'ok'
    >>> server.stop()
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tidal.errors import ConfigError
from tidal.observe.live import LiveRun
from tidal.observe.prometheus import registry_for

if TYPE_CHECKING:  # FastAPI, Starlette and uvicorn load when a server starts, not before
    from starlette.requests import Request

__all__ = ["ObserveServer", "is_loopback"]

log = logging.getLogger("tidal.observe")

_COOKIE = "tidal_token"
_MAX_STREAMS = 16
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only reaches this machine.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host.strip("[]") in _LOOPBACK_NAMES or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The host of a ``Host`` header, without its port."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class ObserveServer:
    """Serves a run's dashboard and metrics from a background thread.

    Args:
        live: the run's figures.
        host: the address to bind (default ``127.0.0.1``). Any other than a loopback
            address needs a token.
        port: the port (0: any free one; see :attr:`port` after :meth:`start`).
        token: the token every request must carry; ``None`` on a loopback address means
            none, and on another address one is generated (see :attr:`token`).
        ui: serve the dashboard (``False``: ``/metrics`` and ``/healthz`` only).
        interval: seconds between two server-sent events.

    Raises:
        ConfigError: for an empty token.
    """

    def __init__(
        self,
        live: LiveRun,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        ui: bool = True,
        interval: float = 1.0,
    ) -> None:
        if token is not None and not token.strip():
            msg = "the dashboard token is empty; give a non-empty --ui-token, or none"
            raise ConfigError(msg)
        self.live = live
        self.host = host
        self.port = port
        self.loopback = is_loopback(host)
        self.token = token if token is not None or self.loopback else secrets.token_urlsafe(24)
        self.ui = ui
        self.interval = interval
        self.registry = registry_for(live)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._streams = 0

    @property
    def url(self) -> str:
        """The base address, ending in ``/`` (without the token)."""
        host = self.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - naming what the user chose
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def start(self) -> ObserveServer:
        """Bind the port and start serving; returns ``self``.

        Raises:
            ConfigError: if the address cannot be bound (in use, not this machine's).
        """
        import uvicorn

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            # listen here, not in the server's thread: with SO_REUSEADDR two processes can
            # both bind a port; only listen() tells which one has it (the other falls back)
            sock.listen(128)
        except OSError as exc:
            sock.close()
            msg = (
                f"cannot serve the dashboard/metrics on {self.host}:{self.port}: "
                f"{exc.strerror or exc}; choose another port (0: any free one)"
            )
            raise ConfigError(msg) from exc
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app(),
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="tidal-ui", daemon=True
        )
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            self._stopping.wait(0.01)
        if not self._server.started:
            msg = f"the dashboard/metrics server on {self.host}:{self.port} did not start"
            raise ConfigError(msg)
        return self

    def stop(self) -> None:
        """Stop serving (open event streams end) and wait for the thread."""
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ObserveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the app ---------------------------------------------------------------------------
    def app(self) -> Any:
        """The FastAPI application (routes and the safety checks above)."""
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse, RedirectResponse, Response
        from starlette.exceptions import HTTPException
        from starlette.responses import StreamingResponse
        from starlette.staticfiles import StaticFiles

        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        def error(status: int, text: str) -> Response:
            return JSONResponse({"error": text}, status_code=status, headers=_HEADERS)

        @app.middleware("http")
        async def guard(request: Request, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
            if request.method not in ("GET", "HEAD"):
                return error(405, "read-only: only GET and HEAD")
            if self.loopback and _host_name(request.headers.get("host", "")) not in (
                _LOOPBACK_NAMES
            ):
                return error(400, "this server answers only to 127.0.0.1 and localhost")
            if self.token is not None:
                given = request.query_params.get("token")
                if given is not None:
                    if not hmac.compare_digest(given.encode(), self.token.encode()):
                        return error(401, "wrong token")
                    if request.url.path == "/":  # set the cookie; drop the token from the URL
                        out = RedirectResponse("/", status_code=303, headers=_HEADERS)
                        out.set_cookie(
                            _COOKIE, self.token, httponly=True, samesite="strict", path="/"
                        )
                        return out
                elif not self._authorized(request):
                    return error(401, "a token is required: ?token=... or a Bearer header")
            response = await call_next(request)
            for k, v in _HEADERS.items():
                response.headers.setdefault(k, v)
            return response

        @app.exception_handler(HTTPException)
        async def http_error(request: Request, exc: HTTPException) -> Response:
            return error(exc.status_code, str(exc.detail))

        @app.exception_handler(Exception)
        async def crash(request: Request, exc: Exception) -> Response:
            log.exception("dashboard request %s failed", request.url.path)
            return error(500, "internal error (see the run's log)")

        @app.get("/healthz")
        async def healthz() -> Response:
            return Response(b"ok", media_type="text/plain")

        @app.get("/metrics")
        async def metrics() -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        if not self.ui:
            return app

        static = resources.files("tidal.observe.web") / "static"
        index = (static / "index.html").read_bytes()

        @app.get("/")
        async def page() -> Response:
            return Response(index, media_type="text/html; charset=utf-8")

        @app.get("/api/snapshot")
        async def snapshot() -> Response:
            return Response(self._json(), media_type="application/json")

        async def events(request: Request) -> Response:
            if self._streams >= _MAX_STREAMS:
                return error(503, f"too many open dashboards (at most {_MAX_STREAMS})")
            return StreamingResponse(
                self._stream(request),
                media_type="text/event-stream",
                headers={"X-Accel-Buffering": "no"},
            )

        app.add_route("/events", events, methods=["GET"])  # a plain route: it takes the request

        app.mount("/static", StaticFiles(directory=str(static)), name="static")
        return app

    def _authorized(self, request: Request) -> bool:
        assert self.token is not None
        want = self.token.encode()
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and hmac.compare_digest(auth[7:].encode(), want):
            return True
        cookie = request.cookies.get(_COOKIE)
        return cookie is not None and hmac.compare_digest(cookie.encode(), want)

    def _json(self) -> bytes:
        return orjson.dumps(self.live.snapshot(), option=orjson.OPT_NON_STR_KEYS, default=str)

    async def _stream(self, request: Request) -> AsyncIterator[bytes]:
        self._streams += 1
        try:
            yield b"retry: 2000\n\n"
            while not self._stopping.is_set():
                yield b"data: " + self._json() + b"\n\n"
                waited = 0.0
                while waited < self.interval and not self._stopping.is_set():
                    await asyncio.sleep(0.1)
                    waited += 0.1
                if await request.is_disconnected():
                    break
        finally:
            self._streams -= 1
