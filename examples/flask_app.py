"""The connector inside a Flask app.

    OMNICHANNEL_TOKEN=T OMNICHANNEL_CHANNEL_URL=http://127.0.0.1:9000/channel \
        flask --app examples.flask_app run
"""

from __future__ import annotations

import atexit

from flask import Flask

from examples import settings
from examples.echo_bot import bot
from omnichannel import Connector
from omnichannel.integrations.flask import make_blueprint

connector = Connector(
    bot,
    token=settings.TOKEN,
    channel_url=settings.CHANNEL_URL,
    channel_token=settings.CHANNEL_TOKEN,
    store=settings.STORE,
)

app = Flask(__name__)
app.register_blueprint(make_blueprint(connector))  # the omnichannel webhook, POST

# resume what an earlier run left now, not at the first webhook (under gunicorn: the
# post_worker_init hook); at exit finish running turns and deliver due replies
connector.start()
atexit.register(connector.close)


@app.get("/")
def index() -> str:
    return (
        "the bot's webhook is at /connector/omnichannel/omnichannel_message/<token>/bot_api_webhook"
    )
