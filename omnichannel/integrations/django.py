"""Django shim: a view and a ``urlpatterns`` helper serving any handler (``Connector`` …).

Bot work runs in background threads: each job is wrapped in ``close_old_connections()`` so a
handler that uses the ORM never keeps a stale or leaked database connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omnichannel.integrations import Handler, body_limit, too_large
from omnichannel.runtime.http import Request, Response

__all__ = ["DjangoRunner", "make_view", "urlpatterns"]

OMNICHANNEL_PATTERN = (
    r"^connector/omnichannel/omnichannel_message/(?P<token>[^/]+)/bot_api_webhook/?$"
)


class DjangoRunner:
    """Wraps a runner so each job starts and ends with ``close_old_connections()``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def submit(self, key: str, job: Callable[[], None]) -> None:
        """Submit ``job`` wrapped for Django's connection handling."""
        from django.db import close_old_connections

        def wrapped() -> None:
            close_old_connections()
            try:
                job()
            finally:
                close_old_connections()

        self.inner.submit(key, wrapped)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for the inner runner."""
        return bool(self.inner.drain(timeout))

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop the inner runner."""
        return bool(self.inner.shutdown(timeout))


def _wrap_runner(handler: Handler) -> None:
    runtime = getattr(handler, "runtime", None)
    if runtime is not None and not isinstance(runtime.runner, DjangoRunner):
        runtime.runner = DjangoRunner(runtime.runner)


def make_view(handler: Handler) -> Callable[..., Any]:
    """A CSRF-exempt Django view answering with ``handler``."""
    from django.http import HttpResponse
    from django.views.decorators.csrf import csrf_exempt

    _wrap_runner(handler)
    limit = body_limit(handler)

    def omnichannel_view(request: Any, **_: Any) -> HttpResponse:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        if length > limit:
            response = too_large(limit)
        else:
            headers = list(request.headers.items())
            query = request.META.get("QUERY_STRING", "")
            response = handler.handle(
                Request(request.method, request.path, headers, request.body, query)
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
