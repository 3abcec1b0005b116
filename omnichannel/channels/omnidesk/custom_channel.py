"""Omnidesk custom channels (seed 003): your app as a channel of Omnidesk.

:class:`CustomChannel` sends your users' messages to Omnidesk (the first creates a case, later
ones continue it) through the runtime's durable outbox, and receives what staff write on the
channel's Webhook URL (``type=message_new``, form-encoded ``object[...]`` or JSON) as
:class:`StaffReply` objects, on the shared webhook pipeline
(:class:`~omnichannel.runtime.pipeline.WebhookChannel`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import attrs

from omnichannel.channels.omnidesk._webhook import forbidden, url_secret_ok
from omnichannel.channels.omnidesk.client import OmnideskClient
from omnichannel.channels.omnidesk.models import (
    _EMPTY,
    Attachment,
    OmnideskError,
    _attachments,
    _to_int,
    _to_time,
    html_to_text,
)
from omnichannel.decoding import decode_object, read_bool, read_int, read_text, wrong
from omnichannel.errors import ConfigurationError, PayloadError, UnsupportedEvent
from omnichannel.runtime.http import Request, Response
from omnichannel.runtime.pipeline import Delivery, Runtime, WebhookChannel
from omnichannel.runtime.stores import update_state

__all__ = [
    "CUSTOM_CHANNEL_WEBHOOK_PATH",
    "CustomChannel",
    "CustomConversation",
    "StaffReply",
    "parse_staff_reply",
]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

CUSTOM_CHANNEL_WEBHOOK_PATH = "/omnidesk/custom-channel/{secret}"
"""A suggested path for the webhook of :class:`CustomChannel` (the secret is its last segment;
any path whose last segment, or ``?secret=`` query parameter, is the secret works)."""


@attrs.frozen(kw_only=True)
class StaffReply:
    """A message Omnidesk posts to a custom channel's webhook (``type=message_new``): a staff
    reply, a note (``note``) or a message sent by a rule (``sent_via_rule``).

    ``custom_user_id`` is the user's id in your system (``user_custom_id`` of the case);
    ``user_id`` the user's Omnidesk id. ``created_at`` is ``None`` when absent or unreadable
    (the text stays in ``raw``).
    """

    message_id: int
    case_id: int
    staff_id: int | None = None
    user_id: int | None = None
    custom_user_id: str | None = None
    content: str = ""
    note: bool = False
    sent_via_rule: bool = False
    created_at: datetime | None = None
    attachments: tuple[Attachment, ...] = ()
    content_html: str | None = None
    type: str = "message_new"
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False, repr=False)

    @property
    def text(self) -> str:
        """The reply as plain text (HTML from the editor turned into text)."""
        return html_to_text(self.content or self.content_html or "")


def _wire_int(obj: Mapping[str, Any], key: str) -> int | None:
    return read_int(obj.get(key), f"object.{key}")


def _wire_id(obj: Mapping[str, Any], key: str) -> int:
    value = read_int(obj.get(key), f"object.{key}", required=True)
    assert value is not None
    return value


def _wire_bool(obj: Mapping[str, Any], key: str) -> bool:
    return read_bool(obj.get(key), f"object.{key}")


def _wire_text(obj: Mapping[str, Any], key: str) -> str | None:
    return read_text(obj.get(key), f"object.{key}")


def parse_staff_reply(
    body: bytes | str | Mapping[str, Any], content_type: str | None = None
) -> StaffReply:
    """Parse a custom-channel webhook body into a :class:`StaffReply`.

    Omnidesk posts ``type=message_new`` with ``object[message_id]=…`` form fields; JSON with the
    same structure (``{"type": …, "object": {…}}``) is accepted too, as is an already decoded
    mapping. ``content_type`` is the request's ``Content-Type``; without it the body is sniffed.

    Raises:
        PayloadError: the body is not form/JSON, ``object`` or a required id is missing, or a
            field has the wrong type; the message and ``.path`` name the field
            (``object.case_id``).
        UnsupportedEvent: a ``type`` other than ``message_new``.
    """
    data = body if isinstance(body, Mapping) else decode_object(body, content_type, forms=True)
    kind = data.get("type", "message_new")
    if not isinstance(kind, str):
        wrong("type", "a string", kind)
    if kind != "message_new":
        raise UnsupportedEvent("type", kind, data)
    obj = data.get("object")
    if obj is None or obj == "":
        raise PayloadError("object", "required field is missing", missing=True)
    if not isinstance(obj, Mapping):
        wrong("object", "an object", obj)
    attachments = obj.get("attachments")
    if attachments not in (None, "") and not isinstance(attachments, (list, Mapping)):
        raise PayloadError("object.attachments", "expected a list of attachments")
    created_at = _wire_text(obj, "created_at")
    return StaffReply(
        message_id=_wire_id(obj, "message_id"),
        case_id=_wire_id(obj, "case_id"),
        staff_id=_wire_int(obj, "staff_id"),
        user_id=_wire_int(obj, "user_id"),
        custom_user_id=_wire_text(obj, "custom_user_id") or None,
        content=_wire_text(obj, "content") or "",
        content_html=_wire_text(obj, "content_html") or None,
        note=_wire_bool(obj, "note"),
        sent_via_rule=_wire_bool(obj, "sent_via_rule"),
        created_at=_to_time(created_at),
        attachments=_attachments(attachments),
        type=kind,
        raw=dict(data),
    )


# =============================================================================================
# the channel


@attrs.frozen(kw_only=True)
class CustomConversation:
    """What a :class:`CustomChannel` remembers about one of your users: their Omnidesk
    ``user_id`` and the current ``case_id`` (``None`` until the first case was created)."""

    user_custom_id: str
    user_id: int | None = None
    case_id: int | None = None


ReplyHandler = Callable[[StaffReply], None]


class CustomChannel(WebhookChannel):
    """Your app as an Omnidesk custom channel (seed 003; variant 2 of seed 001).

    :meth:`send` queues a message of one of your users: the first one creates a case (with
    ``user_custom_id`` and ``channel``), and the returned ``user_id`` and case id are kept in the
    store; later messages are added to that case as the user. Delivery goes through the runtime's
    outbox: durable, in order per user, rate limits waited out.

    Omnidesk posts staff replies, notes and rule messages to the channel's Webhook URL; point it
    at :meth:`handle` with the secret in the URL (``https://app.example/omnidesk/custom-channel/
    {secret}``). Its answers:

    - 403 for a wrong or missing secret (nothing is parsed or stored);
    - 400 ``{"error": "Malformed staff reply: object.case_id: …"}`` naming the field;
    - 200 ``{"result": "ok", "skipped": "note"}`` for a note (unless ``include_notes``), and
      ``"skipped": "rule"`` for a rule message (with ``include_rule_messages=False``);
    - 200 ``{"result": "ok"}`` once the reply is stored in the runtime's durable inbox, for a
      repeated ``message_id`` and for a ``type`` other than ``message_new``;
    - 503 with ``Retry-After`` when the store cannot take it (or the inbox is over
      ``max_pending``); 405 for a method other than POST; 413 for a body over ``max_body``.

    The ``on_reply`` handlers run in a worker after the answer (before it with ``inline=True``).

    Args:
        client: the :class:`OmnideskClient`.
        channel: the custom channel's key (``"cch1"``, see ``list_custom_channels()``).
        secret: the secret in the webhook URL (constant-time check; wrong → 403).
        on_reply: a handler for staff replies (more with the :meth:`on_reply` decorator).
        include_notes: hand notes to the handlers too.
        include_rule_messages: hand messages sent by Omnidesk rules to the handlers.
        subject: the subject of new cases (default: the start of the first message).
        runtime, store, inline, runtime_options: as for :class:`~omnichannel.Connector`.
        max_body: bodies over this many bytes get 413.
        name: tells several custom channels sharing one store apart.
    """

    kind = "omnidesk-custom"

    def __init__(
        self,
        client: OmnideskClient,
        channel: str,
        *,
        secret: str,
        on_reply: ReplyHandler | None = None,
        include_notes: bool = False,
        include_rule_messages: bool = True,
        subject: str | None = None,
        runtime: Runtime | None = None,
        store: Any = None,
        inline: bool = False,
        max_body: int = 1 << 20,
        name: str = "omnidesk-custom",
        **runtime_options: Any,
    ) -> None:
        if not secret:
            raise ConfigurationError("secret must be a non-empty string")
        if not channel:
            raise ConfigurationError("channel (the custom channel's key, e.g. 'cch1') is required")
        self.client = client
        self.channel = channel
        self.include_notes = include_notes
        self.include_rule_messages = include_rule_messages
        self.subject = subject
        self.max_body = max_body
        self._secret = secret.encode()
        self._handlers: list[ReplyHandler] = []
        if on_reply is not None:
            self._handlers.append(on_reply)
        self._attach(runtime, name, store=store, inline=inline, **runtime_options)

    def __repr__(self) -> str:
        return f"CustomChannel(channel={self.channel!r}, client={self.client!r})"

    @property
    def webhook_path(self) -> str:
        """A path for the channel's Webhook URL (``/omnidesk/custom-channel/{secret}``)."""
        return CUSTOM_CHANNEL_WEBHOOK_PATH.format(secret=self._secret.decode())

    def on_reply(self, handler: F) -> F:
        """Register ``handler(reply: StaffReply)`` for staff replies (usable as a decorator)."""
        self._handlers.append(handler)
        return handler

    # your users' messages -------------------------------------------------------------------
    def _user_key(self, user_custom_id: str) -> str:
        return f"{self.destination}:user:{user_custom_id}"

    def _case_key(self, case_id: int) -> str:
        return f"{self.destination}:case:{case_id}"

    def conversation(self, user_custom_id: str) -> CustomConversation | None:
        """The remembered ``user_id`` and case of a user, or ``None`` before their first case."""
        state = self.runtime.store.get_state(self._user_key(str(user_custom_id)))
        if not state:
            return None
        return CustomConversation(
            user_custom_id=str(user_custom_id),
            user_id=_to_int(state.get("user_id")),
            case_id=_to_int(state.get("case_id")),
        )

    def user_for_case(self, case_id: int) -> str | None:
        """The ``user_custom_id`` whose case ``case_id`` is (as far as this channel knows)."""
        state = self.runtime.store.get_state(self._case_key(int(case_id)))
        value = state.get("user_custom_id") if state else None
        return str(value) if value is not None else None

    def forget(self, user_custom_id: str) -> None:
        """Forget a user's case: their next message creates a new one."""
        self.runtime.store.set_state(self._user_key(str(user_custom_id)), None)

    def send(
        self,
        user_custom_id: str,
        text: str,
        *,
        user_full_name: str | None = None,
        user_email: str | None = None,
        user_phone: str | None = None,
        subject: str | None = None,
        attachment_urls: Iterable[str] = (),
        labels: Iterable[int] = (),
        group_id: int | None = None,
        new_case: bool = False,
    ) -> None:
        """Queue a message of your user ``user_custom_id`` for Omnidesk.

        The user's first message (or any with ``new_case=True``) creates a case; the name,
        e-mail, phone (which link the user to other channels), subject, labels and group apply
        to that creation. Later messages are added to the case as the user. Inside a turn of
        the same runtime the message is stored with the turn's completion.

        Raises:
            ValueError: an empty ``user_custom_id`` or ``text``.
        """
        if not user_custom_id:
            raise ValueError("user_custom_id must not be empty")
        if not text or not text.strip():
            raise ValueError("text must not be empty")
        create: dict[str, Any] = {
            k: v
            for k, v in (
                ("user_full_name", user_full_name),
                ("user_email", user_email),
                ("user_phone", user_phone),
                ("subject", subject),
                ("group_id", group_id),
            )
            if v is not None
        }
        if label_ids := [int(i) for i in labels]:
            create["labels"] = label_ids
        payload: dict[str, Any] = {
            "op": "send",
            "user_custom_id": str(user_custom_id),
            "text": text,
            "new_case": new_case,
            "create": create,
        }
        if urls := list(attachment_urls):
            payload["attachment_urls"] = urls
        self.runtime.outbox.put(self.destination, self.chat_key(f"user:{user_custom_id}"), payload)

    def _subject_for(self, text: str) -> str:
        if self.subject:
            return self.subject
        first = html_to_text(text).strip().split("\n", 1)[0]
        return first[:77] + "…" if len(first) > 80 else (first or "Message")

    def deliver(self, payload: Mapping[str, Any]) -> None:
        """Send one queued message of a user (one attempt; the outbox retries).

        The message is added to the user's remembered case; when there is none (or it is gone,
        or ``new_case`` was asked) a case is created and its ids are remembered.
        """
        user = str(payload["user_custom_id"])
        text = str(payload["text"])
        urls = list(payload.get("attachment_urls", ()))
        known = self.conversation(user)
        if known is not None and known.case_id is not None and not payload.get("new_case"):
            try:
                self.client.add_message(
                    known.case_id,
                    text,
                    user_id=known.user_id,
                    attachment_urls=urls,
                    attempts=1,
                )
                return
            except OmnideskError as exc:
                if exc.error != "case_not_found" and exc.status != 404:
                    raise
                log.info("omnidesk: case %s of %s is gone; creating a new one", known.case_id, user)
        create = dict(payload.get("create", {}))
        subject = create.pop("subject", None) or self._subject_for(text)
        case = self.client.create_case(
            user_custom_id=user,
            channel=self.channel,
            content=text,
            subject=subject,
            attachment_urls=urls,
            attempts=1,
            **create,
        )
        # the outbox sends one user's messages one at a time: nobody else writes these keys now
        self.runtime.store.set_state(
            self._user_key(user), {"user_id": case.user_id, "case_id": case.case_id}
        )
        self.runtime.store.set_state(self._case_key(case.case_id), {"user_custom_id": user})

    # staff replies --------------------------------------------------------------------------
    def verify(self, request: Request) -> Response | None:
        """403 unless the URL carries the secret (nothing is parsed then)."""
        return None if url_secret_ok(request, self._secret) else forbidden()

    def parse(self, request: Request) -> Sequence[Delivery] | Response:
        """The staff reply in the body, as one delivery keyed by its ``message_id``.

        400 naming the field for a malformed body; notes (unless ``include_notes``) and rule
        messages (with ``include_rule_messages=False``) are answered 200 and not stored.
        """
        try:
            reply = parse_staff_reply(request.body, request.headers.get("Content-Type"))
        except PayloadError as exc:
            log.info("omnidesk: rejected custom-channel webhook: %s", exc)
            return Response.error(400, f"Malformed staff reply: {exc}")
        except UnsupportedEvent as exc:
            log.info("omnidesk: ignored custom-channel webhook: %s", exc)
            return []
        if reply.note and not self.include_notes:
            log.info("omnidesk: case %s: note %s skipped", reply.case_id, reply.message_id)
            return Response.json(200, {"result": "ok", "skipped": "note"})
        if reply.sent_via_rule and not self.include_rule_messages:
            return Response.json(200, {"result": "ok", "skipped": "rule"})
        return [
            Delivery(
                chat=f"case:{reply.case_id}",
                key=f"{self.destination}:message:{reply.message_id}",
                payload={"reply": dict(reply.raw)},
            )
        ]

    def process(self, payload: Mapping[str, Any]) -> None:
        """Hand one stored staff reply to the ``on_reply`` handlers (in a worker)."""
        reply = self._complete(parse_staff_reply(payload["reply"]))
        if not self._handlers:
            log.warning("omnidesk: staff reply %s has no handler", reply.message_id)
        for handler in self._handlers:
            try:
                handler(reply)
            except Exception:
                log.exception(
                    "omnidesk: reply handler %s raised", getattr(handler, "__qualname__", handler)
                )

    def _complete(self, reply: StaffReply) -> StaffReply:
        """Fill ``custom_user_id`` from the store and learn the user's ids from the reply."""
        custom = reply.custom_user_id or self.user_for_case(reply.case_id)
        if custom is not None and reply.user_id is not None and self.conversation(custom) is None:
            # a case started by staff: the user's next message continues it (unless a case of
            # the user was remembered meanwhile)
            learned = {"user_id": reply.user_id, "case_id": reply.case_id}
            stored = update_state(
                self.runtime.store, self._user_key(custom), lambda current: current or learned
            )
            if stored == learned:
                self.runtime.store.set_state(
                    self._case_key(reply.case_id), {"user_custom_id": custom}
                )
        return (
            reply if custom == reply.custom_user_id else attrs.evolve(reply, custom_user_id=custom)
        )
