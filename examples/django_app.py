"""The connector inside a Django project (a single-file project for brevity).

    OMNICHANNEL_TOKEN=T OMNICHANNEL_CHANNEL_URL=http://127.0.0.1:9000/channel \
        python examples/django_app.py runserver 127.0.0.1:8000
"""

from __future__ import annotations

import atexit
import sys

import django
from django.conf import settings as django_settings

if not django_settings.configured:
    django_settings.configure(
        DEBUG=False,
        SECRET_KEY="example-only",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        INSTALLED_APPS=[],
        DATABASES={},
    )
    django.setup()

from django.core.wsgi import get_wsgi_application

from examples import settings
from examples.echo_bot import bot
from omnichannel import Connector
from omnichannel.integrations.django import urlpatterns as omnichannel_urls

connector = Connector(
    bot,
    token=settings.TOKEN,
    channel_url=settings.CHANNEL_URL,
    channel_token=settings.CHANNEL_TOKEN,
    store=settings.STORE,
)

urlpatterns = [*omnichannel_urls(connector)]  # the omnichannel webhook

# in a project: in your AppConfig.ready(). Resume what an earlier run left now, not at the first
# webhook; at exit finish running turns and deliver due replies
connector.start()
atexit.register(connector.close)

application = get_wsgi_application()

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
