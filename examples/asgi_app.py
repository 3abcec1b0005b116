"""The connector as an ASGI app (production recipe with uvicorn).

    OMNICHANNEL_TOKEN=T OMNICHANNEL_CHANNEL_URL=http://127.0.0.1:9000/channel \
        uvicorn examples.asgi_app:app --host 127.0.0.1 --port 8080

Served as the application, it runs the connector's lifespan itself: startup starts it, shutdown
(SIGTERM) finishes running turns and delivers due replies. Inside FastAPI, include
``fastapi_router(connector)`` or mount ``asgi_app(connector)`` with
``FastAPI(lifespan=omnichannel_lifespan(connector))``: a mounted app's own lifespan never runs
(see docs/frameworks.md).
"""

from __future__ import annotations

from examples import settings
from examples.echo_bot import bot
from omnichannel import Connector
from omnichannel.integrations.asgi import asgi_app

connector = Connector(
    bot,
    token=settings.TOKEN,
    channel_url=settings.CHANNEL_URL,
    channel_token=settings.CHANNEL_TOKEN,
    store=settings.STORE,
)

app = asgi_app(connector)
