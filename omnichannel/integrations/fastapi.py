"""FastAPI shim: an ``APIRouter`` that serves a handler at its webhook path and carries its
lifespan (FastAPI >= 0.112.2 runs the lifespans of included routers).

::

    app = FastAPI()
    app.include_router(fastapi_router(connector))                 # or prefix="/bot"

FastAPI is imported only when :func:`fastapi_router` is called. For a mount instead
(``app.mount("/bot", asgi_app(connector))``), give the app
``lifespan=omnichannel_lifespan(connector)`` (:mod:`omnichannel.integrations.asgi`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omnichannel.integrations import Handler, webhook_route
from omnichannel.integrations.asgi import DEFAULT_CLOSE_TIMEOUT, ASGIApp, Lifespan

if TYPE_CHECKING:
    import fastapi

__all__ = ["fastapi_router"]


def fastapi_router(
    handler: Handler,
    *,
    path: str | None = None,
    methods: list[str] | None = None,
    name: str = "omnichannel",
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    drain: bool | None = None,
    healthz: str | None = None,
    **router_options: Any,
) -> fastapi.APIRouter:
    """An ``APIRouter`` serving ``handler``; include it with ``app.include_router(router)``
    (``prefix=`` allowed).

    Args:
        handler: a ``Connector``, an adapter, or anything with ``handle(Request) -> Response``.
        path: the route (Starlette syntax, ``{name}`` for a segment the handler checks itself);
            by default the handler's own (:func:`omnichannel.integrations.webhook_route`: the
            omnichannel webhook for a ``Connector``, ``webhook_path`` for the other channels).
        methods: the methods routed (default: the ones the handler answers).
        name: the route's name.
        close_timeout, drain: the shutdown (see :class:`~omnichannel.integrations.asgi.Lifespan`).
        healthz: also answer ``GET healthz`` with ``{"status": "ok"}`` (``None``: no route).
        router_options: passed to ``APIRouter`` (``tags``, …).

    The router's lifespan starts the handler on startup and closes it on shutdown. The route
    is a plain Starlette route (the body is handed over untouched, as signatures need; the
    handler reads the token or secret segment itself): it is not in the OpenAPI schema.
    """
    import fastapi

    route = webhook_route(handler)
    lifespan = Lifespan(handler, close_timeout=close_timeout, drain=drain)
    router = fastapi.APIRouter(lifespan=lifespan, **router_options)
    app = ASGIApp(handler, healthz=None, close_timeout=close_timeout, routed=True)

    async def omnichannel_webhook(request: fastapi.Request) -> fastapi.Response:
        answer = await app.respond(request.scope, request.receive)
        return fastapi.Response(answer.body, answer.status, dict(answer.headers.items()))

    async def omnichannel_healthz(request: fastapi.Request) -> fastapi.Response:
        return fastapi.Response(b'{"status":"ok"}', 200, media_type="application/json")

    router.add_route(
        path if path is not None else route.path,
        omnichannel_webhook,
        methods=list(methods) if methods is not None else list(route.methods),
        name=name,
        include_in_schema=False,
    )
    if healthz is not None:
        router.add_route(
            healthz,
            omnichannel_healthz,
            methods=["GET"],
            name=f"{name}-healthz",
            include_in_schema=False,
        )
    return router
