"""WSGI applications the ``peers`` suite serves with gunicorn, all answering the omnichannel
webhook ``POST`` with ``{"result":"ok"}``:

- ``bare``: a plain WSGI function that reads the body and ``json.loads`` it;
- ``flask_app()``: the same in a minimal Flask app (``request.get_json()``);
- ``BareHandler``: the same on the SDK's own server (``python -m benchmarks.peer_apps PORT``
  serves it with :class:`~omnichannel.integrations.server.LocalServer`, as ``omnichannel serve``
  serves the connector);
- ``connector_app()``: the SDK's :class:`~omnichannel.Connector` (echo bot) through its WSGI
  shim, store and channel URL from ``OMNICHANNEL_BENCH_STORE`` and
  ``OMNICHANNEL_BENCH_CHANNEL_URL``.

``gunicorn 'benchmarks.peer_apps:connector_app()'`` (from the repository root).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

TOKEN = "bench-token"
PATH = f"/connector/omnichannel/omnichannel_message/{TOKEN}/bot_api_webhook"
OK = b'{"result":"ok"}'
_HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(OK)))]


def bare(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The least a webhook can do: read the body, decode it, answer."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if environ["PATH_INFO"] != PATH or environ["REQUEST_METHOD"] != "POST":
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    json.loads(environ["wsgi.input"].read(length))
    start_response("200 OK", _HEADERS)
    return [OK]


def flask_app() -> Any:
    """A minimal Flask app with the one route."""
    from flask import Flask, request

    app = Flask("omnichannel-bench")

    @app.post(PATH)
    def webhook() -> Any:
        request.get_json(force=True)
        return {"result": "ok"}

    return app


def connector_app() -> Any:
    """The connector (echo bot) behind the SDK's WSGI shim."""
    from omnichannel import Connector
    from omnichannel.integrations.wsgi import wsgi_app

    connector = Connector(
        token=TOKEN,
        channel_url=os.environ["OMNICHANNEL_BENCH_CHANNEL_URL"],
        store=os.environ.get("OMNICHANNEL_BENCH_STORE", "memory://"),
        max_pending=1_000_000,
    )
    connector.start()
    return wsgi_app(connector)


class BareHandler:
    """The bare webhook as a handler of the SDK's server: read the body, decode it, answer."""

    def handle(self, request: Any) -> Any:
        from omnichannel.runtime.http import Response

        if request.path != PATH or request.method != "POST":
            return Response(404, b"")
        json.loads(request.body)
        return Response(200, OK, {"Content-Type": "application/json"})


if __name__ == "__main__":
    import sys

    from omnichannel.integrations.server import LocalServer

    LocalServer(BareHandler(), port=int(sys.argv[1])).serve_forever()
