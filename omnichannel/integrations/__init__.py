"""Framework shims: each converts its framework's request to :class:`omnichannel.Request`, calls
``handler.handle(request)`` and converts the :class:`omnichannel.Response` back. A handler is any
object with ``handle(Request) -> Response``: a ``Connector``, an Omnidesk, Webex or
Page-messenger adapter. Frameworks are imported lazily, only by the shim that needs them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from omnichannel.runtime.http import Request, Response

__all__ = ["Handler", "WebhookRoute", "body_limit", "too_large", "webhook_route", "wsgi_body"]


class Handler(Protocol):
    """Anything that answers a framework-free request."""

    def handle(self, request: Request) -> Response:
        """Answer one request."""
        ...


DEFAULT_MAX_BODY = 1 << 20

OMNICHANNEL_TEMPLATE = "/connector/omnichannel/omnichannel_message/{token}/bot_api_webhook"
"""The omnichannel webhook as a route template (what a handler without a path gets)."""


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


# routes -------------------------------------------------------------------------------------
class WebhookRoute(NamedTuple):
    """Where a framework's URL rule should send requests to a handler.

    ``path`` is a template: ``{name}`` marks a segment the handler checks itself (the token or
    secret, compared in constant time, answered with the platform's own status when wrong; the
    method of a channel server). ``methods`` are the HTTP methods the handler answers.
    """

    path: str
    methods: tuple[str, ...]

    def flask_rule(self) -> str:
        """The path as a Flask / Werkzeug rule (``<name>`` placeholders)."""
        return _PLACEHOLDER.sub(r"<\1>", self.path)

    def django_pattern(self) -> str:
        """The path as a Django ``re_path`` pattern (named groups; a trailing slash allowed)."""
        parts = _PLACEHOLDER.split(self.path.strip("/"))
        # split() alternates literal text and placeholder names
        pattern = "".join(
            f"(?P<{part}>[^/]+)" if index % 2 else re.escape(part)
            for index, part in enumerate(parts)
        )
        return f"^{pattern}/?$"


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def webhook_route(handler: object) -> WebhookRoute:
    """The route a framework should give ``handler`` when none is given (Flask
    ``make_blueprint``, Django ``urlpatterns``, FastAPI ``fastapi_router``):

    - ``Connector``: the omnichannel webhook, ``/connector/…/{token}/bot_api_webhook``;
    - ``OmnideskChannel``, ``CustomChannel``, ``WebexConnectBot``, ``PageMessengerBridge``: the
      handler's ``webhook_path``, its secret segment as ``{secret}``;
    - ``ChannelServer``: ``{path}[/{secret}]/{method}`` (``send_message``, ``close_chat``,
      ``redirect_chat``);
    - any other handler: its ``webhook_path`` when it has one, else the omnichannel webhook.
    """
    from omnichannel.channel_server.server import ChannelServer
    from omnichannel.channels.omnichannel import WEBHOOK_PATH, Connector
    from omnichannel.channels.omnidesk.custom_channel import (
        CUSTOM_CHANNEL_WEBHOOK_PATH,
        CustomChannel,
    )
    from omnichannel.channels.omnidesk.rules import RULE_WEBHOOK_PATH, OmnideskChannel
    from omnichannel.channels.pagemessenger.bridge import PageMessengerBridge
    from omnichannel.channels.webex.bot import WebexConnectBot

    methods = _methods(handler)
    if isinstance(handler, Connector):
        return WebhookRoute(WEBHOOK_PATH, methods)
    if isinstance(handler, OmnideskChannel):
        return WebhookRoute(RULE_WEBHOOK_PATH, methods)
    if isinstance(handler, CustomChannel):
        return WebhookRoute(CUSTOM_CHANNEL_WEBHOOK_PATH, methods)
    if isinstance(handler, PageMessengerBridge):
        return WebhookRoute(f"{handler.path_prefix}/{{secret}}", methods)
    if isinstance(handler, WebexConnectBot):
        base = handler.path or "/webex"
        # with a secret the webhook path is {base}/{secret}
        secret = "/{secret}" if handler.webhook_path != base else ""
        return WebhookRoute(f"{base}{secret}", methods)
    if isinstance(handler, ChannelServer):
        secret = "/{secret}" if handler.webhook_path != f"{handler.path}/send_message" else ""
        return WebhookRoute(f"{handler.path}{secret}/{{method}}", methods)
    path = getattr(handler, "webhook_path", None)
    if isinstance(path, str) and path.startswith("/"):
        return WebhookRoute(path, methods)
    return WebhookRoute(OMNICHANNEL_TEMPLATE, methods)


def _methods(handler: object) -> tuple[str, ...]:
    for each in (handler, getattr(handler, "webhook", None)):
        methods = getattr(each, "allowed_methods", None)
        if isinstance(methods, tuple) and methods and all(isinstance(m, str) for m in methods):
            return tuple(m.upper() for m in methods)
    return ("POST",)


# WSGI bodies --------------------------------------------------------------------------------
def wsgi_body(environ: Mapping[str, Any], handler: object, limit: int) -> bytes | Response:
    """The request body of a WSGI ``environ``, or the answer to give instead.

    By ``Content-Length`` when there is one (400 when it is not a number, the handler's 413
    when it is over ``limit``, unread). Without one, a body sent chunked is read to its end when
    the server says it ends the input there (``wsgi.input_terminated``: gunicorn, Werkzeug,
    uWSGI with chunked input); the handler's 413 once it passes ``limit``. A chunked body the
    server cannot end gets ``411 Length Required``; no length and no chunking means no body.
    """
    raw = environ.get("CONTENT_LENGTH")
    stream = environ.get("wsgi.input")
    # a chunked body has no length, whatever Content-Length says (RFC 9112, 6.3)
    chunked = "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()
    if raw not in (None, "") and not chunked:
        try:
            length = int(str(raw).strip())
        except ValueError:
            return Response.error(400, "Content-Length is not a number.")
        if length < 0:
            return Response.error(400, "Content-Length is negative.")
        if length > limit:
            return too_large(handler, limit)
        return bytes(stream.read(length)) if length and stream is not None else b""
    if environ.get("wsgi.input_terminated") and stream is not None:
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = stream.read(min(1 << 16, limit + 1 - size))
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                return too_large(handler, limit)
            chunks.append(chunk)
    if chunked:
        return Response.error(
            411, "Length Required: this server cannot read a chunked body; send Content-Length."
        )
    return b""
