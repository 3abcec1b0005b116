"""Framework shims: each converts its framework's request to :class:`omnichannel.Request`, calls
``handler.handle(request)`` and converts the :class:`omnichannel.Response` back. A handler is any
object with ``handle(Request) -> Response``: a ``Connector``, an Omnidesk, Webex or
Page-messenger adapter. Frameworks are imported lazily, only by the shim that needs them."""

from __future__ import annotations

from typing import Protocol

from omnichannel.runtime.http import Request, Response

__all__ = ["Handler", "body_limit"]


class Handler(Protocol):
    """Anything that answers a framework-free request."""

    def handle(self, request: Request) -> Response:
        """Answer one request."""
        ...


DEFAULT_MAX_BODY = 1 << 20


def body_limit(handler: object) -> int:
    """The handler's ``max_body`` (1 MiB when it has none): bodies over it get 413 unread."""
    limit = getattr(handler, "max_body", None)
    return limit if isinstance(limit, int) and limit > 0 else DEFAULT_MAX_BODY


def too_large(handler: object, limit: int) -> Response:
    """The answer to a body over ``limit`` bytes: the handler's own (``handler.too_large()``,
    e.g. Webex's 400) or 413."""
    own = getattr(handler, "too_large", None)
    if callable(own):
        answer = own()
        if isinstance(answer, Response):
            return answer
    return Response.error(413, f"Request body is larger than {limit} bytes.")
