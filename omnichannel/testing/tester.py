"""A fluent tester for bots: ``tester.send("hi").expect_reply("Hello!")``."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from omnichannel.channels.omnichannel import Connector
from omnichannel.models import ChatId, OutboundMessage, TextReply
from omnichannel.runtime.bot import Bot
from omnichannel.runtime.http import Request, Response
from omnichannel.testing import events
from omnichannel.testing.channel import RecordingChannelServer

__all__ = ["BotTester"]


class BotTester:
    """Drive a :class:`~omnichannel.Bot` through a real :class:`~omnichannel.Connector`.

    The connector runs inline (the bot answers before ``send`` returns) and delivers replies over
    HTTP to a :class:`RecordingChannelServer` on 127.0.0.1, so what you assert is what a channel
    server would receive. Each ``expect_*`` consumes the next unread reply.

    Example::

        with BotTester(bot) as tester:
            tester.send("hi").expect_reply("Hello!")
            tester.press("Yes").expect_reply(lambda m: "great" in m.text)
    """

    def __init__(self, bot: Bot | None = None, *, chat_id: ChatId = 1, **connector_options: Any):
        self.server = RecordingChannelServer(token="tester-channel-token").start()  # noqa: S106
        self.connector = Connector(
            bot,
            token="tester-token",  # noqa: S106 - a loopback test secret
            channel_url=self.server.channel_url,
            channel_token="tester-channel-token",  # noqa: S106
            inline=True,
            **connector_options,
        )
        self.chat_id = chat_id
        self.last_response: Response | None = None
        self._read = 0

    # sending --------------------------------------------------------------------------------
    def post(self, payload: dict[str, Any] | bytes) -> BotTester:
        """Post any payload (a dict or raw bytes) to the connector's webhook."""
        body = payload if isinstance(payload, bytes) else events.dumps(payload)
        request = Request(
            "POST", self.connector.webhook_path, {"Content-Type": "application/json"}, body
        )
        self.last_response = self.connector.handle(request)
        return self

    def send(self, text: str, **options: Any) -> BotTester:
        """The visitor sends ``text``."""
        return self.post(
            events.text_event(text, chat_id=options.pop("chat_id", self.chat_id), **options)
        )

    def press(self, label: str, button_id: str = "b1", **options: Any) -> BotTester:
        """The visitor presses the button ``label``."""
        chat_id = options.pop("chat_id", self.chat_id)
        return self.post(
            events.button_event(label, button_id=button_id, chat_id=chat_id, **options)
        )

    def send_file(self, url: str, **options: Any) -> BotTester:
        """The visitor sends a file (ready unless ``state=`` says otherwise)."""
        chat_id = options.pop("chat_id", self.chat_id)
        return self.post(events.file_event(url, chat_id=chat_id, **options))

    # checking -------------------------------------------------------------------------------
    @property
    def replies(self) -> list[OutboundMessage]:
        """Every message the channel server received, in order."""
        return [m for m in (c.message for c in self.server.calls) if m is not None]

    def expect_reply(
        self, expected: str | OutboundMessage | Callable[[OutboundMessage], bool]
    ) -> BotTester:
        """Assert the next unread reply equals ``expected`` (a text, a message, or a predicate)."""
        replies = self.replies
        if self._read >= len(replies):
            raise AssertionError(f"expected a reply {expected!r}, got none")
        got = replies[self._read]
        self._read += 1
        if isinstance(expected, str):
            ok = isinstance(got, TextReply) and got.text == expected
        elif callable(expected) and not isinstance(expected, type):
            ok = bool(expected(got))
        else:
            ok = got == expected
        if not ok:
            raise AssertionError(f"expected reply {expected!r}, got {got!r}")
        return self

    def expect_no_reply(self) -> BotTester:
        """Assert there is no unread reply."""
        extra = self.replies[self._read :]
        if extra:
            raise AssertionError(f"expected no reply, got {extra!r}")
        return self

    def expect_status(self, status: int) -> BotTester:
        """Assert the webhook's last answer had ``status``."""
        got = self.last_response.status if self.last_response else None
        if got != status:
            body = self.last_response.text if self.last_response else ""
            raise AssertionError(f"expected status {status}, got {got} {body}")
        return self

    # lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the connector and the recording server."""
        self.connector.close(timeout=5)
        self.server.stop()

    def __enter__(self) -> BotTester:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
