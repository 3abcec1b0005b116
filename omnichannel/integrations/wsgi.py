"""WSGI shim: serve any handler (``Connector`` …) from gunicorn, uWSGI, mod_wsgi or wsgiref."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from omnichannel.integrations import Handler, body_limit, wsgi_body
from omnichannel.runtime.http import Request, Response

__all__ = ["WSGIApp", "wsgi_app"]

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]


def _status_line(status: int) -> str:
    """``"401 Unauthorized"``: a status line with its reason phrase (WSGI servers refuse a bare
    code), ``"599 Unknown"`` for a code without one."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


class WSGIApp:
    """A WSGI application around a handler, with ``GET /healthz`` for load balancers.

    Bodies are read by ``Content-Length``, or chunked when the server ends the input
    (``wsgi.input_terminated``: gunicorn, Werkzeug); a chunked body the server cannot end is
    answered ``411 Length Required``. Bodies over the handler's ``max_body`` are refused.
    """

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
        headers = [*response.headers.items(), ("Content-Length", str(len(response.body)))]
        start_response(_status_line(response.status), headers)
        return [response.body]

    def _respond(self, environ: dict[str, Any]) -> Response:
        path = environ.get("PATH_INFO", "") or "/"  # relative to the mount (SCRIPT_NAME)
        method = environ.get("REQUEST_METHOD", "GET")
        if self.healthz and path == self.healthz and method in ("GET", "HEAD"):
            return Response.json(200, {"status": "ok"})
        body = wsgi_body(environ, self.handler, self.max_body)
        if isinstance(body, Response):
            return body
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
