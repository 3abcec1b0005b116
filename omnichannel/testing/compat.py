"""Names kept importable from earlier layouts of :mod:`omnichannel.testing`. New code serves each
handler (an adapter, a ``Connector``, a bridge) with ``LocalServer(handler)``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

from omnichannel.integrations import Handler
from omnichannel.runtime.http import Request, Response
from omnichannel.testing.server import LocalServer

__all__ = ["LocalApp", "WebhookServer"]


class WebhookServer(LocalServer):
    """``LocalServer`` for a ``handle`` function; an adapter's bound ``handle`` serves the adapter
    (its ``max_body`` applies). ``endpoint`` is ``url + path``. Prefer ``LocalServer(adapter)``."""

    def __init__(
        self, handle: Callable[[Request], Response], *, path: str = "/webex", port: int = 0
    ) -> None:
        owner: Any = getattr(handle, "__self__", None)
        bound = owner is not None and getattr(owner, "handle", None) == handle
        super().__init__(owner if bound else SimpleNamespace(handle=handle), port=port)
        self.endpoint = self.url + "/" + path.strip("/")

    def url_for(self, path: str) -> str:
        """The full URL of ``path`` on this server."""
        return self.url + "/" + path.lstrip("/")


class LocalApp(LocalServer):
    """``LocalServer`` for several handlers, each under its path prefix (the longest matching one
    wins). Prefer one ``LocalServer(handler)`` per handler."""

    def __init__(self, routes: Mapping[str, Handler], *, port: int = 0) -> None:
        self.routes = dict(sorted(routes.items(), key=lambda item: -len(item[0])))
        super().__init__(port=port)

    def handle(self, request: Request) -> Response:
        """Pass the request to the handler whose prefix matches its path."""
        for prefix, handler in self.routes.items():
            if request.path.startswith(prefix):
                return handler.handle(request)
        return Response.error(404, "Not found.")
