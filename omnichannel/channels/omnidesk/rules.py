"""Variant 1 of seed 001: the bot behind Omnidesk rules, answering inside the case as staff.

An Omnidesk rule posts the omnichannel ``new_message`` JSON (``chat_id`` = the case id) to
:class:`OmnideskChannel`; the bot's replies are added to the case through the REST API; a
handover edits the case (:class:`CaseHandover`); the knowledge base can answer what the bot
cannot (:class:`KnowledgeBaseAnswers`). The webhook runs on the shared pipeline
(:class:`~omnichannel.runtime.pipeline.WebhookChannel`): a delivery is stored in the durable
inbox before Omnidesk gets its 200.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from omnichannel.channels.omnidesk._webhook import forbidden, url_secret_ok
from omnichannel.channels.omnidesk.client import OmnideskClient
from omnichannel.channels.omnidesk.models import OmnideskError, _to_int, html_to_text
from omnichannel.decoding import decode_object
from omnichannel.errors import (
    ConfigurationError,
    DeliveryError,
    NotSupported,
    PayloadError,
    UnsupportedEvent,
)
from omnichannel.models import (
    ButtonPress,
    ChatId,
    FileMessage,
    InboundMessage,
    Keyboard,
    NewMessageEvent,
    OutboundMessage,
    TextMessage,
)
from omnichannel.protocol import agent_text, parse_event
from omnichannel.rendering import (
    OMNIDESK,
    Capabilities,
    buttons_from_state,
    choice_from_text,
    keyboard_state,
    render_text,
)
from omnichannel.runtime.bot import Bot, Reply, Turn, to_outbound
from omnichannel.runtime.http import Request, Response
from omnichannel.runtime.pipeline import Delivery, Runtime, WebhookChannel
from omnichannel.runtime.stores import update_state

__all__ = ["RULE_WEBHOOK_PATH", "CaseHandover", "KnowledgeBaseAnswers", "OmnideskChannel"]

log = logging.getLogger(__name__)

RULE_WEBHOOK_PATH = "/omnidesk/rules/{secret}"
"""A suggested path for the rule webhook of :class:`OmnideskChannel` (the secret is its last
segment; any path whose last segment, or ``?secret=`` query parameter, is the secret works)."""

_SENT_KEPT = 20  # the bot's recent texts remembered per case (ignore_own_messages)


def _id_tuple(value: int | str | Iterable[int | str] | None) -> tuple[int, ...]:
    if value is None:
        return ()
    items: Iterable[int | str] = [value] if isinstance(value, (int, str)) else value
    out = []
    for item in items:
        parsed = _to_int(item)
        if parsed is None:
            raise ConfigurationError(f"label ids must be integers, got {item!r}")
        out.append(parsed)
    return tuple(out)


def _opt_int(value: int | str | None) -> int | None:
    if value is None:
        return None
    parsed = _to_int(value)
    if parsed is None:
        raise ConfigurationError(f"expected an integer id, got {value!r}")
    return parsed


@attrs.frozen(kw_only=True)
class CaseHandover:
    """What :meth:`OmnideskChannel.handover` does to the case: labels removed (the bot label by
    default) and added, group / assignee / status / priority set, and an optional ``text`` sent
    to the visitor first. Any field can be overridden per call:
    ``turn.handover(group_id=7, text="…")``."""

    remove_labels: tuple[int, ...] = attrs.field(default=(), converter=_id_tuple)
    add_labels: tuple[int, ...] = attrs.field(default=(), converter=_id_tuple)
    group_id: int | None = attrs.field(default=None, converter=_opt_int)
    staff_id: int | None = attrs.field(default=None, converter=_opt_int)
    status: str | None = None
    priority: str | None = None
    text: str | None = None

    def override(self, params: Mapping[str, Any]) -> CaseHandover:
        """These settings with the keys of ``params`` replaced.

        Raises:
            TypeError: a key that is not a field.
        """
        unknown = set(params) - {a.name for a in attrs.fields(CaseHandover)}
        if unknown:
            raise TypeError(f"unknown handover parameter(s): {', '.join(sorted(unknown))}")
        return attrs.evolve(self, **params)

    def changes(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`OmnideskClient.edit_case` (empty: nothing to do)."""
        out: dict[str, Any] = {}
        if self.remove_labels:
            out["remove_labels"] = list(self.remove_labels)
        if self.add_labels:
            out["add_labels"] = list(self.add_labels)
        for key in ("group_id", "staff_id", "status", "priority"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@attrs.frozen(kw_only=True)
class KnowledgeBaseAnswers:
    """Answer from the Omnidesk knowledge base when the bot had no answer of its own.

    After the bot handled a text and sent nothing (and did not hand over), the text is
    searched in the knowledge base and the best article is sent: ``template`` formatted with
    ``title`` and ``text`` (the article as plain text, cut to ``max_chars``). ``no_answer`` is
    sent when nothing is found (``None``: send nothing).
    """

    min_query_length: int = 3
    max_chars: int = 1500
    template: str = "{title}\n\n{text}"
    no_answer: str | None = None
    section_id: int | None = None
    language_id: str | None = None


_PLACEHOLDER = re.compile(r"^\[[a-z_]+\]$")
_WS = re.compile(r"\s+")


def _normal(text: str) -> str:
    # exact words and case: "ok" from the user is not the bot's "Ok"
    return _WS.sub(" ", html_to_text(text)).strip()


def _clean_rule_payload(payload: Any) -> Any:
    """Rule placeholders Omnidesk left unfilled (``"[user_phone]"``) become absent fields."""
    if not isinstance(payload, dict):
        return payload
    visitor = payload.get("visitor")
    if isinstance(visitor, dict):
        visitor = dict(visitor)
        if isinstance(visitor.get("id"), str) and _PLACEHOLDER.match(visitor["id"]):
            visitor.pop("id")
        fields = visitor.get("fields")
        if isinstance(fields, dict):
            visitor["fields"] = {
                k: v
                for k, v in fields.items()
                if not (isinstance(v, str) and (v == "" or _PLACEHOLDER.match(v)))
            }
        payload = {**payload, "visitor": visitor}
    return payload


class OmnideskChannel(WebhookChannel):
    """Variant 1 of seed 001: Omnidesk is the channel, the bot answers inside the case.

    An Omnidesk rule (on new cases with ``[case_description]``, on updated cases with
    ``[last_message]``; only cases carrying the bot label) posts the omnichannel ``new_message``
    JSON with ``chat_id`` = ``[case_id]`` to :meth:`handle`. The bot's replies are added to the
    case as staff through the runtime's outbox (stored first, delivered in order per case, rate
    limits waited out). Keyboards become numbered text; a typed number (or the exact label)
    comes back as a button press. ``turn.handover()`` edits the case (:class:`CaseHandover`).

    :meth:`handle` answers 403 for a wrong or missing secret, 400 naming the field for a body
    that is not the omnichannel JSON (or whose ``chat_id`` is not a case id), 200
    ``{"result": "ok"}`` once the delivery is stored in the runtime's durable inbox (and for
    repeats and events it ignores), 503 with ``Retry-After`` when the store cannot take it (or
    the inbox is over ``max_pending``), 405 for a method other than POST and 413 for a body over
    ``max_body``. The bot runs after the answer in a worker (before it with ``inline=True``).

    Repeated deliveries are dropped: by ``message.id`` when the rule body carries one, else by
    case id + the text's hash for ``repeat_window`` seconds (rules send no message id; this also
    folds the "new case" and "updated case" rules firing for the same first message). Rule
    deliveries of the bot's own recent messages are ignored (``ignore_own_messages``), in case a
    rule fires on the bot's replies; and for ``handover_grace`` seconds after a handover the case
    is left alone (a rule that fired before the label was removed).

    Args:
        bot: the :class:`~omnichannel.Bot` (an echo bot by default).
        client: the :class:`OmnideskClient`.
        secret: the secret in the webhook URL (its last path segment, or ``?secret=``),
            compared in constant time; a wrong one gets 403.
        staff_id: the staff member the bot writes as (``None``: Omnidesk's default for the key).
        bot_label: the label id marking cases for the bot; removed on handover by default.
        handover: what a handover changes (default: remove ``bot_label``).
        knowledge_base: answer from the knowledge base when the bot has no answer.
        max_message_length: longer texts are split into several messages (``None``: never).
        strip_markdown: send markdown as plain text.
        keyboard_footer: a line under numbered keyboards ("Reply with a number").
        repeat_window: seconds a delivery without a message id is remembered (by its text).
        ignore_own_messages: ignore deliveries whose text is one the bot recently sent.
        handover_grace: seconds after a handover during which the case is left alone.
        runtime, store, inline, runtime_options: as for :class:`~omnichannel.Connector`.
        max_body: bodies over this many bytes get 413.
        name: tells several Omnidesk channels sharing one store apart.
    """

    kind = "omnidesk"

    def __init__(
        self,
        bot: Bot | None = None,
        *,
        client: OmnideskClient,
        secret: str,
        staff_id: int | None = None,
        bot_label: int | None = None,
        handover: CaseHandover | None = None,
        knowledge_base: KnowledgeBaseAnswers | bool | None = None,
        max_message_length: int | None = None,
        strip_markdown: bool = True,
        keyboard_footer: str | None = None,
        repeat_window: float = 30.0,
        ignore_own_messages: bool = True,
        handover_grace: float = 60.0,
        runtime: Runtime | None = None,
        store: Any = None,
        inline: bool = False,
        max_body: int = 1 << 20,
        name: str = "omnidesk",
        **runtime_options: Any,
    ) -> None:
        if not secret:
            raise ConfigurationError("secret must be a non-empty string")
        self.bot = bot if bot is not None else Bot()
        self.client = client
        self.staff_id = staff_id
        self.bot_label = bot_label
        if handover is None:
            handover = CaseHandover(remove_labels=(bot_label,) if bot_label is not None else ())
        self.handover_settings = handover
        if knowledge_base is True:
            knowledge_base = KnowledgeBaseAnswers()
        self.knowledge_base = knowledge_base or None
        self.max_message_length = max_message_length
        self.strip_markdown = strip_markdown
        self.keyboard_footer = keyboard_footer
        self.repeat_window = repeat_window
        self.ignore_own_messages = ignore_own_messages
        self.handover_grace = handover_grace
        self.max_body = max_body
        self._secret = secret.encode()
        self._attach(runtime, name, store=store, inline=inline, **runtime_options)

    def __repr__(self) -> str:
        return f"OmnideskChannel(name={self.name!r}, client={self.client!r})"

    @property
    def webhook_path(self) -> str:
        """A path to give the rule (``/omnidesk/rules/{secret}``); it contains the secret."""
        return RULE_WEBHOOK_PATH.format(secret=self._secret.decode())

    # inbound --------------------------------------------------------------------------------
    def verify(self, request: Request) -> Response | None:
        """403 unless the URL carries the secret (last path segment or ``?secret=``)."""
        return None if url_secret_ok(request, self._secret) else forbidden()

    def parse(self, request: Request) -> Sequence[Delivery] | Response:
        """One delivery per message of the rule's body (JSON, or form-encoded ``message[text]``).

        The payload is the decoded body with unfilled placeholders dropped, and the message's
        index: the worker rebuilds the event from it.
        """
        try:
            body = _clean_rule_payload(
                decode_object(request.body, request.content_type, forms=True)
            )
            event = parse_event(body)
        except PayloadError as exc:
            log.info("omnidesk: rejected rule delivery: %s", exc)
            return Response.error(400, str(exc))
        except UnsupportedEvent as exc:
            log.info("omnidesk: ignored rule delivery: %s", exc)
            return []
        case_id = _to_int(event.chat_id)
        if case_id is None:
            return Response.error(
                400, f"chat_id: expected the case id (an integer), got {event.chat_id!r:.40}"
            )
        deliveries: list[Delivery] = []
        for index, message in enumerate(event.messages):
            if isinstance(message, FileMessage) and not message.ready:
                log.info(
                    "omnidesk: case %s: file in state %r not processed", case_id, message.file.state
                )
                continue
            if isinstance(message, TextMessage) and _PLACEHOLDER.match(message.text.strip()):
                # the rule's placeholder had nothing to fill in (a case created without a
                # description): nothing the customer wrote, so nothing for the bot to answer
                log.info("omnidesk: case %s: %s was not filled in; ignored", case_id, message.text)
                continue
            key, ttl = self._delivery_key(case_id, message)
            deliveries.append(
                Delivery(chat=str(case_id), key=key, payload={"event": body, "i": index}, ttl=ttl)
            )
        return deliveries

    def _delivery_key(
        self, case_id: int, message: InboundMessage
    ) -> tuple[str | None, float | None]:
        """The dedupe key of a rule delivery.

        With a message id: the id. Without one, only what really repeats is folded: the
        "new case" and the "updated case" rules both fire for a case's first message, so a
        delivery whose text is the case's first text, within ``repeat_window`` of it, is
        that repeat (once). Any other delivery is a new message, even when the customer
        writes the same words again.
        """
        if message.id is not None:
            return f"{self.destination}:{case_id}:id:{message.id}", None  # the runtime's TTL
        digest = hashlib.sha256(_normal(agent_text(message) or "").encode()).hexdigest()[:32]
        now = time.time()
        first: dict[str, Any] = {}

        def remember_first(current: dict[str, Any] | None) -> dict[str, Any]:
            state = dict(current or {})
            seen = state.get("first")
            if not isinstance(seen, list) or len(seen) != 2:
                state["first"] = [digest, now]  # this is the case's first delivery
                first["key"] = True
            elif seen[0] == digest and now - float(seen[1]) < self.repeat_window:
                first["key"] = True  # the other rule (or a retry) for the same first message
            return state

        try:
            update_state(self.runtime.store, self._state_key(case_id), remember_first)
        except Exception as exc:  # the store is down: fold by text, as the admission will fail
            log.warning("omnidesk: case %s: cannot read the case state (%s)", case_id, exc)
            first["key"] = True
        if first:
            return f"{self.destination}:{case_id}:first:{digest}", self.repeat_window
        return None, None

    def _state_key(self, case_id: ChatId) -> str:
        return f"{self.destination}:case:{case_id}"

    def case_state(self, case_id: ChatId) -> dict[str, Any]:
        """What the channel remembers about a case (last keyboard, recent texts, handover)."""
        return self.runtime.store.get_state(self._state_key(case_id)) or {}

    def process(self, payload: Mapping[str, Any]) -> None:
        """Run the bot on one stored rule delivery (in a worker)."""
        event = parse_event(payload["event"])
        message = event.messages[int(payload["i"])]
        case_id = _to_int(event.chat_id)
        if case_id is None:  # checked before it was stored
            raise PayloadError("chat_id", "expected the case id (an integer)")
        # keyed by the case id as an int (form bodies carry strings)
        self._run(
            NewMessageEvent(chat_id=case_id, visitor=event.visitor, message=message, raw=event.raw)
        )

    def _run(self, event: NewMessageEvent) -> None:
        case_id = event.chat_id
        key = self._state_key(case_id)
        state = self.runtime.store.get_state(key) or {}
        message = event.message
        text = message.text if isinstance(message, TextMessage) else None
        handed_over_at = state.get("handed_over_at")
        if (
            isinstance(handed_over_at, (int, float))
            and time.time() - handed_over_at < self.handover_grace
        ):
            log.info("omnidesk: case %s was just handed over; delivery ignored", case_id)
            return
        if self.ignore_own_messages and text is not None and _normal(text) in state.get("sent", []):
            log.info("omnidesk: case %s: the bot's own message came back; ignored", case_id)
            return
        keyboard: Any = None
        if "keyboard" in state or "handed_over_at" in state:
            taken: list[Any] = [None]

            def take(current: dict[str, Any] | None) -> dict[str, Any]:
                # any next message clears the keyboard (and an expired handover mark)
                new = dict(current or {})
                taken[0] = new.pop("keyboard", None)
                new.pop("handed_over_at", None)
                return new

            update_state(self.runtime.store, key, take)
            keyboard = taken[0]
        if text is not None and keyboard:
            pressed = choice_from_text(text, buttons_from_state(keyboard))
            if pressed is not None:
                message = ButtonPress(id=message.id, button=pressed)
                event = NewMessageEvent(
                    chat_id=case_id, visitor=event.visitor, message=message, raw=event.raw
                )
        turn = Turn(event, message, self)
        self.bot(turn)
        if (
            self.knowledge_base is not None
            and isinstance(message, TextMessage)
            and not turn.replies
            and not turn.handed_over
        ):
            answer = self.knowledge_base_answer(message.text)
            if answer is not None:
                turn.reply(answer)

    def knowledge_base_answer(self, query: str) -> str | None:
        """The knowledge base's answer to ``query`` as the text to send, or ``no_answer``."""
        kb = self.knowledge_base or KnowledgeBaseAnswers()
        query = query.strip()
        if len(query) < max(3, kb.min_query_length):
            return kb.no_answer
        try:
            found = self.client.search_kb_articles(
                query, section_id=kb.section_id, language_id=kb.language_id, max_items=1
            )
            if not found:
                return kb.no_answer
            article = found[0]
            if not article.content:
                article = self.client.get_kb_article(article.article_id, language_id=kb.language_id)
        except OmnideskError as exc:
            log.warning("omnidesk: knowledge-base search failed: %s", exc)
            return kb.no_answer
        text = article.text
        if len(text) > kb.max_chars:
            text = text[: kb.max_chars].rsplit(" ", 1)[0].rstrip() + "…"
        return kb.template.format(title=article.title, text=text).strip()

    # outbound -------------------------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        """What a case shows: :data:`~omnichannel.rendering.OMNIDESK` (text only) with this
        channel's ``strip_markdown``, ``max_message_length`` and ``keyboard_footer``."""
        return attrs.evolve(
            OMNIDESK,
            markdown=not self.strip_markdown,
            max_length=self.max_message_length or None,
            keyboard_footer=self.keyboard_footer or None,
        )

    def render(self, message: Reply) -> list[str]:
        """The texts one reply becomes in a case (keyboards numbered, files as links; see
        :func:`omnichannel.rendering.render`)."""
        return render_text(to_outbound(message), self.capabilities)

    def send(self, chat_id: ChatId, messages: Sequence[OutboundMessage]) -> None:
        """Queue replies for case ``chat_id`` (added as staff messages, in order).

        The texts are remembered for ``ignore_own_messages`` and the last keyboard for the
        next message, before they are queued (inside a turn they are stored with its end).
        """
        keyboard: list[list[str]] | None = None
        texts: list[str] = []
        for message in messages:
            if isinstance(message, Keyboard):
                keyboard = keyboard_state(message)
            texts.extend(self.render(message))
        if not texts and keyboard is None:
            return

        def remember(current: dict[str, Any] | None) -> dict[str, Any]:
            state = dict(current or {})
            if keyboard is not None:
                state["keyboard"] = keyboard
            sent = [*state.get("sent", []), *(_normal(t) for t in texts)]
            state["sent"] = sent[-_SENT_KEPT:]
            return state

        update_state(self.runtime.store, self._state_key(chat_id), remember)
        for text in texts:
            self.runtime.outbox.put(
                self.destination,
                self.chat_key(chat_id),
                {"op": "add_message", "case_id": chat_id, "content": text},
            )

    def reply(self, case_id: ChatId, *messages: Reply) -> None:
        """Write to a case outside a turn (the bot writing first)."""
        self.send(case_id, to_outbound(messages))

    def handover(self, turn: Turn, **params: Any) -> None:
        """Hand the case to operators: send ``text`` (if any), then edit the case as configured.

        Raises:
            NotSupported: nothing to change (configure ``bot_label`` or ``handover``).
            TypeError: an unknown parameter.
        """
        settings = self.handover_settings.override(params)
        changes = settings.changes()
        if not changes:
            raise NotSupported(
                "an Omnidesk handover needs something to change: give OmnideskChannel(bot_label=…) "
                "or handover=CaseHandover(group_id=…, …), or pass them to turn.handover()"
            )
        if settings.text:
            turn.reply(settings.text)
        self.runtime.outbox.put(
            self.destination,
            self.chat_key(turn.chat_id),
            {"op": "edit_case", "case_id": turn.chat_id, "changes": changes},
        )

        def handed_over(current: dict[str, Any] | None) -> dict[str, Any]:
            state = dict(current or {})
            state.pop("keyboard", None)
            state["handed_over_at"] = time.time()
            return state

        update_state(self.runtime.store, self._state_key(turn.chat_id), handed_over)
        log.info("omnidesk: case %s handed over (%s)", turn.chat_id, ", ".join(sorted(changes)))

    def deliver(self, payload: Mapping[str, Any]) -> None:
        """Make one stored call (one attempt; the outbox retries): a staff message or an edit."""
        op = payload.get("op")
        case_id = int(payload["case_id"])
        if op == "add_message":
            self.client.add_message(
                case_id, str(payload["content"]), staff_id=self.staff_id, attempts=1
            )
        elif op == "edit_case":
            self.client.edit_case(case_id, **dict(payload["changes"]), attempts=1)
        else:
            raise DeliveryError(f"unknown Omnidesk outbox operation {op!r}")
