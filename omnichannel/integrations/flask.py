"""Flask shim: a view function or a blueprint serving any handler (``Connector`` …)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omnichannel.integrations import Handler, body_limit, too_large, webhook_route, wsgi_body
from omnichannel.runtime.http import Request, Response

if TYPE_CHECKING:
    import flask

__all__ = ["OMNICHANNEL_RULE", "make_blueprint", "make_view"]

OMNICHANNEL_RULE = "/connector/omnichannel/omnichannel_message/<token>/bot_api_webhook"
"""The Flask URL rule of the omnichannel webhook."""


def make_view(handler: Handler) -> Any:
    """A Flask view function answering with ``handler`` (route it with the methods the handler
    answers: ``methods=["POST"]``; Webex Connect also ``GET``)."""
    import flask

    limit = body_limit(handler)

    def omnichannel_view(**_: Any) -> flask.Response:
        req = flask.request
        length = req.content_length  # None when chunked or absent
        body: bytes | Response
        if length is not None and length > limit:
            body = too_large(handler, limit)
        elif length is not None:
            body = req.get_data(cache=False)
        else:  # chunked: read when the server ends the input (gunicorn, Werkzeug), else 411
            body = wsgi_body({**req.environ, "wsgi.input": req.stream}, handler, limit)
        if isinstance(body, Response):
            return _to_flask(body)
        query = req.query_string.decode("latin-1")
        response = handler.handle(
            Request(req.method, req.path, list(req.headers.items()), body, query, routed=True)
        )
        return _to_flask(response)

    return omnichannel_view


def _to_flask(response: Response) -> flask.Response:
    import flask

    return flask.Response(
        response.body, status=response.status, headers=list(response.headers.items())
    )


def make_blueprint(
    handler: Handler,
    *,
    rule: str | None = None,
    name: str = "omnichannel",
    url_prefix: str | None = None,
    methods: list[str] | None = None,
) -> flask.Blueprint:
    """A blueprint serving ``handler`` at ``rule``.

    Without ``rule``, the handler's own path (:func:`omnichannel.integrations.webhook_route`):
    the omnichannel webhook for a ``Connector`` (``OMNICHANNEL_RULE``), ``webhook_path`` for the
    other channels (``/webex``, ``/omnidesk/rules/<secret>``, ``/pagemessenger/<secret>`` …), its
    secret segment a variable so the handler checks it. ``methods`` default to the ones the
    handler answers (Webex Connect: ``POST``, ``GET``, ``HEAD``; the others ``POST``).

    The blueprint does not start or stop the handler: call ``handler.start()`` when the app
    starts and ``handler.close()`` when it stops (see the frameworks page of the docs).
    """
    import flask

    route = webhook_route(handler)
    blueprint = flask.Blueprint(name, __name__, url_prefix=url_prefix)
    blueprint.add_url_rule(
        rule if rule is not None else route.flask_rule(),
        endpoint="webhook",
        view_func=make_view(handler),
        methods=list(methods) if methods is not None else list(route.methods),
    )
    return blueprint
