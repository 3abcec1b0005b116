"""Flask shim: a view function or a blueprint serving any handler (``Connector`` …)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omnichannel.integrations import Handler, body_limit, too_large
from omnichannel.runtime.http import Request, Response

if TYPE_CHECKING:
    import flask

__all__ = ["OMNICHANNEL_RULE", "make_blueprint", "make_view"]

OMNICHANNEL_RULE = "/connector/omnichannel/omnichannel_message/<token>/bot_api_webhook"
"""The Flask URL rule of the omnichannel webhook."""


def make_view(handler: Handler) -> Any:
    """A Flask view function answering with ``handler`` (route it with ``methods=["POST"]``)."""
    import flask

    limit = body_limit(handler)

    def omnichannel_view(**_: Any) -> flask.Response:
        req = flask.request
        if (req.content_length or 0) > limit:
            response = too_large(handler, limit)
        else:
            body = req.get_data(cache=False)
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
    rule: str = OMNICHANNEL_RULE,
    name: str = "omnichannel",
    url_prefix: str | None = None,
) -> flask.Blueprint:
    """A blueprint serving ``handler`` at ``rule`` (the omnichannel webhook by default)."""
    import flask

    blueprint = flask.Blueprint(name, __name__, url_prefix=url_prefix)
    blueprint.add_url_rule(rule, endpoint="webhook", view_func=make_view(handler), methods=["POST"])
    return blueprint
