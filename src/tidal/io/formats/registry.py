"""A small client of a Confluent-compatible schema registry (stdlib HTTP, no extra package).

:class:`SchemaRegistry` does the two calls :class:`~tidal.io.formats.avro.AvroFormat` needs:
``GET /schemas/ids/{id}`` (the writer schema of a value's id) and ``POST
/subjects/{subject}/versions`` (register a schema, or get the id it already has). Any
registry that speaks Confluent's REST API works: Confluent Schema Registry, Karapace, or
Apicurio Registry under ``/apis/ccompat/v7`` (what the tests run, decision 0048).
Decision 0049 says why this is not confluent-kafka's client.

Example (nothing listens on port 9 here, so the lookup fails with the URL in the message):
    >>> reg = SchemaRegistry("http://127.0.0.1:9/apis/ccompat/v7", timeout=1.0)
    >>> reg
    SchemaRegistry('http://127.0.0.1:9/apis/ccompat/v7')
    >>> try:
    ...     reg.schema(1)
    ... except ConnectorError as exc:
    ...     print(str(exc)[:70])
    schema registry http://127.0.0.1:9/apis/ccompat/v7: GET /schemas/ids/1
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson

from tidal.errors import ConfigError, ConnectorError

__all__ = ["SchemaRegistry"]

_CONTENT = "application/vnd.schemaregistry.v1+json"
_NOT_FOUND = {40401, 40402, 40403}  # subject, version, schema not found


class SchemaRegistry:
    """The Confluent REST API of one registry.

    Args:
        url: its base URL (``http://host:8081``; for Apicurio ``.../apis/ccompat/v7``).
        timeout: seconds per HTTP call.

    Raises:
        ConfigError: for a URL that is not http(s).
    """

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        if urllib.parse.urlparse(url).scheme not in ("http", "https"):
            msg = f"SchemaRegistry: url must be http:// or https://, got {url!r}"
            raise ConfigError(msg)
        self.url = url.rstrip("/")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"SchemaRegistry({self.url!r})"

    def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else orjson.dumps(body)
        req = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": _CONTENT, "Accept": _CONTENT},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return int(resp.status), orjson.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:  # holds the connection: close it
                raw = exc.read()
            try:
                said = orjson.loads(raw)
            except orjson.JSONDecodeError:
                said = {"message": raw[:200].decode(errors="replace")}
            return int(exc.code), said
        except (OSError, urllib.error.URLError) as exc:
            msg = (
                f"schema registry {self.url}: {method} {path} failed: {exc}; is the registry "
                "running and the URL right?"
            )
            raise ConnectorError(msg) from exc

    def schema(self, schema_id: int) -> str | None:
        """The schema text of ``schema_id``, or ``None`` where the registry has no such id.

        Raises:
            ConnectorError: the registry cannot be reached or answers an error.
        """
        path = f"/schemas/ids/{int(schema_id)}"
        status, said = self._call("GET", path)
        if status == 200 and isinstance(said, dict) and isinstance(said.get("schema"), str):
            return str(said["schema"])
        if status == 404 and isinstance(said, dict) and said.get("error_code") in _NOT_FOUND:
            return None
        msg = f"schema registry {self.url}: GET {path} answered {status}: {said}"
        raise ConnectorError(msg)

    def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` (Avro JSON text) under ``subject``; its id (new or existing).

        Raises:
            ConnectorError: the registry cannot be reached or refuses the schema (an
                incompatible change under the subject's compatibility rule, say).
        """
        path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions"
        status, said = self._call("POST", path, {"schema": schema})
        if status == 200 and isinstance(said, dict) and isinstance(said.get("id"), int):
            return int(said["id"])
        msg = f"schema registry {self.url}: POST {path} answered {status}: {said}"
        raise ConnectorError(msg)
