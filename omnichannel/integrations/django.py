"""Django shim: a view and a ``urlpatterns`` helper serving any handler (``Connector`` …).

Turns run in background threads: each turn is wrapped in ``close_old_connections()`` so a
handler that uses the ORM never keeps a stale or leaked database connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omnichannel.integrations import Handler, body_limit, too_large
from omnichannel.runtime.http import Request, Response

__all__ = ["make_view", "urlpatterns"]

OMNICHANNEL_PATTERN = (
    r"^connector/omnichannel/omnichannel_message/(?P<token>[^/]+)/bot_api_webhook/?$"
)


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
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        if length > limit:
            response = too_large(handler, limit)
        else:
            headers = list(request.headers.items())
            query = request.META.get("QUERY_STRING", "")
            response = handler.handle(
                Request(request.method, request.path, headers, request.body, query, routed=True)
            )
        return _to_django(response)

    view: Callable[..., Any] = csrf_exempt(omnichannel_view)
    return view


def _to_django(response: Response) -> Any:
    from django.http import HttpResponse

    out = HttpResponse(response.body, status=response.status)
    for key, value in response.headers.items():
        out[key] = value
    return out


def urlpatterns(
    handler: Handler, *, pattern: str = OMNICHANNEL_PATTERN, name: str = "omnichannel"
) -> list[Any]:
    """URL patterns to include: ``urlpatterns += omnichannel_urls(connector)``."""
    from django.urls import re_path

    return [re_path(pattern, make_view(handler), name=name)]
