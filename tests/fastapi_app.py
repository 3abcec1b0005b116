"""A FastAPI app with the connector under ``/bot``, for the process tests
(``uvicorn tests.fastapi_app:app``). ``OMNICHANNEL_TEST_ASGI_MODE`` picks how it is wired:

- ``lifespan``: ``app.mount("/bot", asgi_app(connector))`` + ``lifespan=omnichannel_lifespan``;
- ``router``: ``app.include_router(fastapi_router(connector), prefix="/bot")``;
- ``mount``: the mount alone (no lifespan runs it: the shim warns; nothing closes it).

The bot is ``tests/bots.py:bot`` (``OMNICHANNEL_TEST_BOT_DELAY``, ``OMNICHANNEL_TEST_BOT_MARKS``);
``OMNICHANNEL_TOKEN``, ``OMNICHANNEL_CHANNEL_URL``, ``OMNICHANNEL_CHANNEL_TOKEN`` and
``OMNICHANNEL_STORE`` configure the connector. ``GET /ready`` answers once the app serves.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from omnichannel import Connector
from omnichannel.integrations.asgi import asgi_app, omnichannel_lifespan
from omnichannel.integrations.fastapi import fastapi_router
from tests.bots import bot

MODE = os.environ.get("OMNICHANNEL_TEST_ASGI_MODE", "lifespan")

connector = Connector(
    bot,
    token=os.environ["OMNICHANNEL_TOKEN"],
    channel_url=os.environ["OMNICHANNEL_CHANNEL_URL"],
    channel_token=os.environ.get("OMNICHANNEL_CHANNEL_TOKEN"),
    store=os.environ["OMNICHANNEL_STORE"],
)

if MODE == "router":
    app = FastAPI()
    app.include_router(fastapi_router(connector, healthz="/healthz"), prefix="/bot")
elif MODE == "lifespan":
    app = FastAPI(lifespan=omnichannel_lifespan(connector))
    app.mount("/bot", asgi_app(connector))
elif MODE == "mount":
    app = FastAPI()
    app.mount("/bot", asgi_app(connector))
else:
    raise SystemExit(f"unknown OMNICHANNEL_TEST_ASGI_MODE {MODE!r}")


@app.get("/ready")
def ready() -> dict[str, str]:
    return {"mode": MODE}
