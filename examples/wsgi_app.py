"""The connector as a WSGI app (production recipe with gunicorn).

    OMNICHANNEL_TOKEN=T OMNICHANNEL_CHANNEL_URL=http://127.0.0.1:9000/channel \
        gunicorn examples.wsgi_app:app --bind 127.0.0.1:8080 --workers 2 --threads 8

With several workers, give them a shared store (``OMNICHANNEL_STORE=sqlite:///bot.db`` on one
machine, ``redis://…`` across machines) so deliveries are deduplicated across workers. Start and
close the connector in gunicorn's ``post_worker_init`` and ``worker_exit`` hooks (see
docs/frameworks.md). Chunked request bodies are read (gunicorn ends the input).
"""

from __future__ import annotations

from examples import settings
from examples.echo_bot import bot
from omnichannel import Connector
from omnichannel.integrations.wsgi import wsgi_app

connector = Connector(
    bot,
    token=settings.TOKEN,
    channel_url=settings.CHANNEL_URL,
    channel_token=settings.CHANNEL_TOKEN,
    store=settings.STORE,
)

app = wsgi_app(connector)
