"""Django shim: a view and a ``urlpatterns`` helper serving any handler (``Connector`` …).

Turns run in background threads: each turn is wrapped in ``close_old_connections()`` so a
handler that uses the ORM never keeps a stale or leaked database connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omnichannel.integrations import Handler, body_limit, too_large, webhook_route, wsgi_body
from omnichannel.runtime.http import Request, Response

__all__ = ["make_view", "urlpatterns"]

OMNICHANNEL_PATTERN = (
    r"^connector/omnichannel/omnichannel_message/(?P<token>[^/]+)/bot_api_webhook/?$"
)
"""The Django URL pattern of the omnichannel webhook."""


def _with_fresh_connections(run: Callable[[], None]) -> None:
    """Run a turn between two ``close_old_connections()`` (as Django does around a request)."""
    from django.db import close_old_connections

    close_old_connections()
    try:
        run()
    finally:
        close_old_connections()


def _wrap_turns(handler: Handler) -> None:
    runtime = getattr(handler, "runtime", None)
    if runtime is not None:
        runtime.wrap_turns(_with_fresh_connections)


def make_view(handler: Handler) -> Callable[..., Any]:
    """A CSRF-exempt Django view answering with ``handler``."""
    from django.http import HttpResponse
    from django.views.decorators.csrf import csrf_exempt

    _wrap_turns(handler)
    limit = body_limit(handler)

    def omnichannel_view(request: Any, **_: Any) -> HttpResponse:
        body = _body(request, handler, limit)
        if isinstance(body, Response):
            return _to_django(body)
        headers = list(request.headers.items())
        query = request.META.get("QUERY_STRING", "")
        response = handler.handle(
            Request(request.method, request.path, headers, body, query, routed=True)
        )
        return _to_django(response)

    view: Callable[..., Any] = csrf_exempt(omnichannel_view)
    return view


def _body(request: Any, handler: Handler, limit: int) -> bytes | Response:
    """The body, or the answer instead (413 over ``limit``, unread; 411 for a chunked body the
    server cannot end). Under WSGI, Django reads no chunked body (``request.body`` is empty
    without ``Content-Length``): it is read here when the server ends the input (gunicorn)."""
    meta = request.META
    chunked = "chunked" in str(meta.get("HTTP_TRANSFER_ENCODING", "")).lower()
    if "wsgi.input" in meta and (chunked or meta.get("CONTENT_LENGTH") in (None, "")):
        return wsgi_body(meta, handler, limit)
    try:
        length = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return Response.error(400, "Content-Length is not a number.")
    if length > limit:
        return too_large(handler, limit)
    return bytes(request.body)


def _to_django(response: Response) -> Any:
    from django.http import HttpResponse

    out = HttpResponse(response.body, status=response.status)
    for key, value in response.headers.items():
        out[key] = value
    return out


def urlpatterns(
    handler: Handler, *, pattern: str | None = None, name: str = "omnichannel"
) -> list[Any]:
    """URL patterns to include: ``urlpatterns += omnichannel_urls(connector)``.

    Without ``pattern``, the handler's own path (:func:`omnichannel.integrations.webhook_route`):
    the omnichannel webhook for a ``Connector`` (``OMNICHANNEL_PATTERN``), ``webhook_path`` for
    the other channels, its secret segment a group so the handler checks it. Methods are not
    restricted here: the handler answers others with 405.

    The patterns do not start or stop the handler: call ``handler.start()`` in your
    ``AppConfig.ready()`` and ``handler.close()`` at exit (see the frameworks page of the docs).
    """
    from django.urls import re_path

    if pattern is None:
        pattern = webhook_route(handler).django_pattern()
    return [re_path(pattern, make_view(handler), name=name)]
