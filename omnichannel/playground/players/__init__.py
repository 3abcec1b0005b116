"""The platforms the playground plays, one player per channel.

A player is the visitor's side of one channel: it turns what the page sends (a text, a button
press, a file) into the platform's real webhook and posts it to the channel's endpoint on the
local webhook server (so the statuses are the channel's own), and it sits behind the channel's
fake platform, seeing every outbound call the bot makes (and the fake's answer) and showing it
in the chat as that platform would.

The Page-messenger window is the player of the channel a ``PageMessengerBridge`` is plugged
into, with the bridge and a fake Page-messenger AI on top (:func:`bridged_player`): the visitor
writes on that channel, the bridge forwards to the AI, the AI's answer comes back as a webhook.

Each kind has a module: :mod:`~omnichannel.playground.players.base` (:class:`Player`, what
every player shares), :mod:`~omnichannel.playground.players.omnichannel`,
:mod:`~omnichannel.playground.players.omnidesk`, :mod:`~omnichannel.playground.players.webex`
and :mod:`~omnichannel.playground.players.pagemessenger` (the player and the fake platform of
each); :data:`PLAYERS` maps each kind to them.
"""

from __future__ import annotations

from typing import Any

from omnichannel.playground.players.base import VISITOR as VISITOR  # importable, as before
from omnichannel.playground.players.base import Player
from omnichannel.playground.players.omnichannel import OmnichannelPlayer, PlaygroundChannelServer
from omnichannel.playground.players.omnidesk import OmnideskPlayer, PlaygroundOmnidesk
from omnichannel.playground.players.pagemessenger import (
    PAGE,
    PageMessengerPlayer,
    PlaygroundPageMessenger,
    bridged_player,
)
from omnichannel.playground.players.webex import PlaygroundWebex, WebexPlayer

__all__ = [
    "PAGE",
    "PLAYERS",
    "OmnichannelPlayer",
    "OmnideskPlayer",
    "PageMessengerPlayer",
    "Player",
    "PlaygroundChannelServer",
    "PlaygroundOmnidesk",
    "PlaygroundPageMessenger",
    "PlaygroundWebex",
    "WebexPlayer",
    "bridged_player",
]

PLAYERS: dict[str, tuple[type[Player], type[Any]]] = {
    "omnichannel": (OmnichannelPlayer, PlaygroundChannelServer),
    "omnidesk": (OmnideskPlayer, PlaygroundOmnidesk),
    "webex": (WebexPlayer, PlaygroundWebex),
    PAGE: (PageMessengerPlayer, PlaygroundPageMessenger),
}
"""The kinds the playground plays: the player and the fake platform of each (a Page-messenger
bridge is played in the window of the channel it bridges: :func:`bridged_player`)."""
