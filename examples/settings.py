"""Configuration shared by the app examples: environment variables with loopback defaults."""

from __future__ import annotations

import os

TOKEN = os.environ.get("OMNICHANNEL_TOKEN", "change-me")
CHANNEL_URL = os.environ.get("OMNICHANNEL_CHANNEL_URL", "http://127.0.0.1:9000/channel")
CHANNEL_TOKEN = os.environ.get("OMNICHANNEL_CHANNEL_TOKEN") or None
STORE = os.environ.get("OMNICHANNEL_STORE", "sqlite:///omnichannel.db")
