"""WSGI shim: serve any handler (``Connector`` …) from gunicorn, uWSGI, mod_wsgi or wsgiref."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from omnichannel.integrations import Handler, body_limit, too_large
from omnichannel.runtime.http import Request, Response

__all__ = ["WSGIApp", "wsgi_app"]

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class WSGIApp:
    """A WSGI application around a handler, with ``GET /healthz`` for load balancers."""

    def __init__(self, handler: Handler, *, healthz: str | None = "/healthz") -> None:
        self.handler = handler
        self.healthz = healthz
        self.max_body = body_limit(handler)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            response = self._respond(environ)
        except Exception:
            log.exception("wsgi: unexpected error")
            response = Response.error(500, "Internal server error.")
        reason = _REASONS.get(response.status, "")
        headers = [*response.headers.items(), ("Content-Length", str(len(response.body)))]
        start_response(f"{response.status} {reason}".strip(), headers)
        return [response.body]

    def _respond(self, environ: dict[str, Any]) -> Response:
        path = environ.get("PATH_INFO", "") or "/"  # relative to the mount (SCRIPT_NAME)
        method = environ.get("REQUEST_METHOD", "GET")
        if self.healthz and path == self.healthz and method in ("GET", "HEAD"):
            return Response.json(200, {"status": "ok"})
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return Response.error(400, "Content-Length is not a number.")
        if length > self.max_body:
            return too_large(self.handler, self.max_body)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        headers = [
            (key[5:].replace("_", "-").title(), value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        ]
        if environ.get("CONTENT_TYPE"):
            headers.append(("Content-Type", environ["CONTENT_TYPE"]))
        request = Request(method, path, headers, body, environ.get("QUERY_STRING", ""))
        return self.handler.handle(request)


def wsgi_app(handler: Handler, *, healthz: str | None = "/healthz") -> WSGIApp:
    """The WSGI application serving ``handler`` (see :class:`WSGIApp`)."""
    return WSGIApp(handler, healthz=healthz)
