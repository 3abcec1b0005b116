"""Page-messenger AI tasks (Selarti, seed 004): the API client, the AI's answer webhook, and a
bridge that lets an AI sales assistant talk to visitors on any channel of the SDK.

Visitor messages reach the AI with ``POST /wf/send_message_external``; the AI's answers come
back as a webhook (:class:`AIMessage`) and are delivered to the visitor on the channel they came
from. When the AI hands the dialog to a human (``operator``) or closes it (``close``), the bridge
stops forwarding and runs a handover hook.
"""

from __future__ import annotations

import enum
import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import attrs
import requests

from omnichannel.errors import ConfigurationError, DeliveryError, NotSupported, PayloadError
from omnichannel.models import ChatId, TextReply
from omnichannel.runtime.bot import Bot, Channel, Turn
from omnichannel.runtime.http import Request, Response
from omnichannel.runtime.pipeline import Runtime
from omnichannel.runtime.sending import RetryPolicy, redact_url, request_with_retries

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_HANDOVER_TEXT",
    "AIMessage",
    "AIMessageType",
    "HandoverRequest",
    "PageMessengerAuthError",
    "PageMessengerBridge",
    "PageMessengerClient",
    "PageMessengerError",
    "default_ai_chat_id",
    "parse_ai_webhook",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://selarti.com/api/1.1"
"""The platform's API root; workflow names are appended (``…/wf/auth``)."""

DEFAULT_HANDOVER_TEXT = "Thank you! A manager will continue this conversation shortly."
"""What the visitor reads when the AI hands over and the channel has no handover of its own."""


# ---------------------------------------------------------------------------------------------
# errors


class PageMessengerError(DeliveryError):
    """A Page-messenger API call failed (after retries, or with a status that is not retried).

    Carries what :class:`~omnichannel.DeliveryError` carries, plus ``workflow`` (``"auth"``,
    ``"send_message_external"``). Neither the API key nor the token is ever part of it.
    """

    def __init__(self, message: str, *, workflow: str = "", **details: Any) -> None:
        self.workflow = workflow
        super().__init__(message, **details)


class PageMessengerAuthError(PageMessengerError):
    """The platform refused the API key, or refused the token again after one re-authentication
    (or refused it and no API key is known to renew it). Never retried."""


# ---------------------------------------------------------------------------------------------
# the API client


def _bubble_problem(response_text: str) -> str:
    """The human part of a Bubble error body (``{"statusCode", "body": {"status", "message"}}``)."""
    try:
        decoded = json.loads(response_text)
    except ValueError:
        return response_text[:200]
    if isinstance(decoded, dict):
        body = decoded.get("body")
        if isinstance(body, dict):
            parts = [str(body[k]) for k in ("status", "message") if body.get(k)]
            if parts:
                return ": ".join(parts)[:200]
        for key in ("message", "error"):
            if decoded.get(key):
                return str(decoded[key])[:200]
    return response_text[:200]


class PageMessengerClient:
    """Calls the Page-messenger (Selarti) API: ``/wf/auth`` and ``/wf/send_message_external``.

    Every call sends ``Authorization: Bearer {token}``. Without a token the client authenticates
    first with ``api_key`` (``POST /wf/auth {"key": …}``, token at ``response.token``). When the
    platform answers 401 and an API key is known, the client authenticates again exactly once and
    repeats the call; a second 401 raises :class:`PageMessengerAuthError` (never a loop). An
    optional ``response.expires`` (seconds; the token's lifetime is not documented) renews the
    token a little before it runs out. Answers arrive in Bubble's envelope
    ``{"status": "success", "response": {...}}``: the methods return the inner ``response``.

    Args:
        api_key: the company's API key (needed to obtain and renew tokens).
        token: a ready bearer token (then ``api_key`` is only used to renew it).
        base_url: the API root, ``https://selarti.com/api/1.1`` by default.
        session: a ``requests.Session`` (the test seam; one is created otherwise).
        retry: timeouts and retries of every call (429 / 5xx / connection errors).

    Raises:
        ConfigurationError: neither ``api_key`` nor ``token`` given, or a bad ``base_url``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        token: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        session: requests.Session | None = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not api_key and not token:
            raise ConfigurationError("give api_key (or a ready token) for the Page-messenger API")
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ConfigurationError("base_url must be an http(s) URL")
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.retry = retry or RetryPolicy()
        self._api_key = api_key or None
        self._token = token or None
        self._token_expires_at: float | None = None
        self._old_tokens: list[str] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        token = "set" if self._token else "none"
        return (
            f"PageMessengerClient(base_url={redact_url(self.base_url)!r}, "
            f"api_key={key}, token={token})"
        )

    @property
    def has_token(self) -> bool:
        """True when a bearer token is held (it may still turn out to be expired)."""
        return self._token is not None

    # calls ----------------------------------------------------------------------------------
    def authenticate(self, *, attempts: int | None = None) -> str:
        """Obtain a fresh token with the API key (``POST /wf/auth``); keep and return it.

        Raises:
            ConfigurationError: no API key was given.
            PageMessengerAuthError: the key was refused (401 / 403).
            PageMessengerError: any other failure, or an answer without ``response.token``.
        """
        if not self._api_key:
            raise ConfigurationError("authenticate() needs the api_key")
        try:
            answer = self._post("auth", {"key": self._api_key}, None, attempts)
        except PageMessengerError as exc:
            if exc.status in (401, 403):
                raise PageMessengerAuthError(
                    f"Page messenger refused the API key ({exc.status})",
                    workflow="auth",
                    status=exc.status,
                    response_text=exc.response_text,
                    attempts=exc.attempts,
                ) from None
            raise
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise PageMessengerError(
                "Page messenger auth answered without response.token", workflow="auth"
            )
        expires = answer.get("expires")
        expires_at = None
        if isinstance(expires, (int, float)) and not isinstance(expires, bool) and expires > 0:
            expires_at = time.monotonic() + expires - min(60.0, expires / 10)
        with self._lock:
            if self._token and self._token != token:
                self._old_tokens = [*self._old_tokens[-3:], self._token]
            self._token = token
            self._token_expires_at = expires_at
        log.info("pagemessenger: authenticated")
        return token

    def send_message_external(
        self, task_id: str, chat_id: str, message: str, *, attempts: int | None = None
    ) -> dict[str, Any]:
        """Send a visitor's message to the AI of task ``task_id``; ``chat_id`` is the visitor's
        id in *your* system (the platform joins the dialog's context on it).

        ``attempts`` overrides the retry policy's count (``1`` = one attempt, as the outbox
        wants). Returns the inner ``response`` of the answer (often empty).

        Raises:
            PageMessengerAuthError: the token was refused and could not be renewed.
            PageMessengerError: the call failed (``retryable`` tells whether to try later).
        """
        body = {"task_id": str(task_id), "chat_id": str(chat_id), "message": message}
        return self.call("send_message_external", body, attempts=attempts)

    def call(
        self, workflow: str, body: Mapping[str, Any], *, attempts: int | None = None
    ) -> dict[str, Any]:
        """POST ``body`` to ``{base_url}/wf/{workflow}`` with the bearer token; return the
        unwrapped ``response``. Renews the token once on 401 when an API key is known."""
        token = self._valid_token(attempts)
        try:
            return self._post(workflow, body, token, attempts)
        except PageMessengerError as exc:
            if exc.status != 401:
                raise
            if not self._api_key:
                raise PageMessengerAuthError(
                    f"Page messenger refused the token for {workflow} (401) and no api_key "
                    "is known to renew it",
                    workflow=workflow,
                    status=401,
                    response_text=exc.response_text,
                    attempts=exc.attempts,
                ) from None
            log.info("pagemessenger: token refused by %s; authenticating again", workflow)
        token = self._renew(token, attempts)
        try:
            return self._post(workflow, body, token, attempts)
        except PageMessengerError as exc:
            if exc.status != 401:
                raise
            raise PageMessengerAuthError(
                f"Page messenger refused a fresh token for {workflow} (401 after "
                "re-authenticating once)",
                workflow=workflow,
                status=401,
                response_text=exc.response_text,
                attempts=exc.attempts,
            ) from None

    # machinery ------------------------------------------------------------------------------
    def _valid_token(self, attempts: int | None) -> str:
        with self._lock:
            token = self._token
            expired = (
                self._token_expires_at is not None and time.monotonic() >= self._token_expires_at
            )
        if token is not None and not (expired and self._api_key):
            return token
        return self.authenticate(attempts=attempts)

    def _renew(self, refused: str, attempts: int | None) -> str:
        with self._lock:
            current = self._token
        if current is not None and current != refused:
            return current  # another thread renewed it meanwhile
        return self.authenticate(attempts=attempts)

    def _secrets(self) -> tuple[str, ...]:
        with self._lock:
            values = (self._api_key, self._token, *self._old_tokens)
        return tuple(v for v in values if v)

    def _post(
        self, workflow: str, body: Mapping[str, Any], token: str | None, attempts: int | None
    ) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        url = f"{self.base_url}/wf/{workflow}"
        secrets = self._secrets()
        try:
            response = request_with_retries(
                self.session,
                "POST",
                url,
                json=dict(body),
                headers=headers,
                policy=self.retry,
                attempts=attempts,
                secrets=secrets,
            )
        except DeliveryError as exc:
            if exc.status is None:
                message = str(exc)
            else:
                problem = _bubble_problem(exc.response_text)
                message = f"Page messenger {workflow} answered {exc.status}: {problem}"
            raise PageMessengerError(
                _scrub(message, secrets),
                workflow=workflow,
                status=exc.status,
                response_text=exc.response_text,
                attempts=exc.attempts,
                retryable=exc.retryable,
                retry_after=exc.retry_after,
            ) from None
        return self._unwrap(workflow, response, secrets)

    @staticmethod
    def _unwrap(
        workflow: str, response: requests.Response, secrets: tuple[str, ...]
    ) -> dict[str, Any]:
        text = _scrub(response.text[:500], secrets)
        if not response.content.strip():
            return {}
        try:
            decoded = response.json()
        except ValueError:
            # the call may well have been accepted: do not retry (the AI would read it twice)
            raise PageMessengerError(
                f"Page messenger {workflow} answered {response.status_code} with a body that "
                "is not JSON",
                workflow=workflow,
                status=response.status_code,
                response_text=text,
            ) from None
        if not isinstance(decoded, dict):
            raise PageMessengerError(
                f"Page messenger {workflow} answered with JSON that is not an object",
                workflow=workflow,
                status=response.status_code,
                response_text=text,
            )
        status = decoded.get("status")
        if status is not None and status != "success":
            raise PageMessengerError(
                f"Page messenger {workflow} answered status {str(status)[:40]!r}: "
                f"{_bubble_problem(text)}",
                workflow=workflow,
                status=response.status_code,
                response_text=text,
            )
        inner = decoded.get("response")
        return dict(inner) if isinstance(inner, dict) else {}


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


# ---------------------------------------------------------------------------------------------
# the AI's answer webhook


class AIMessageType(str, enum.Enum):
    """Who wrote a message of the AI webhook (``message_type``)."""

    BOT = "bot"
    """The AI."""
    OPERATOR = "operator"
    """A human manager (for example answering from the platform's panel)."""
    USER = "user"
    """The visitor (the "All messages" webhook reports their messages too)."""
    UNKNOWN = "unknown"
    """A value the SDK does not know; the wire value is in ``AIMessage.message_type_raw``."""


# the seed describes the values in Russian ("бот/оператор/пользователь"); the wire form is not
# documented, so both spellings are understood
_MESSAGE_TYPES = {
    "bot": AIMessageType.BOT,
    "ai": AIMessageType.BOT,
    "бот": AIMessageType.BOT,
    "operator": AIMessageType.OPERATOR,
    "manager": AIMessageType.OPERATOR,
    "оператор": AIMessageType.OPERATOR,
    "user": AIMessageType.USER,
    "client": AIMessageType.USER,
    "пользователь": AIMessageType.USER,
}

_TRUE = frozenset({"true", "yes", "1", "да", "y", "t", "on"})
_FALSE = frozenset({"false", "no", "0", "нет", "n", "f", "off", "", "null", "none"})

_BOOLEAN_FIELDS = ("close", "get_contact", "interest", "is_bot", "operator", "success")
_ID_FIELDS = (
    "channel_id",
    "company_id",
    "external_chat_id",
    "manager_id",
    "message_id",
    "task_id",
    "thread_id",
)
_TEXT_FIELDS = ("message_text", "panel_url", "share_url", "title", "wh_type")
_KNOWN_FIELDS = frozenset(
    (*_BOOLEAN_FIELDS, *_ID_FIELDS, *_TEXT_FIELDS, "contacts", "message_type")
)

_EMPTY: Mapping[str, Any] = {}


def _show(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _boolean(payload: Mapping[str, Any], field: str) -> bool:
    value = payload.get(field)
    if value is None or type(value) is bool:
        return bool(value)
    if type(value) is int and value in (0, 1):
        return bool(value)
    if type(value) is str:
        folded = value.strip().lower()
        if folded in _TRUE:
            return True
        if folded in _FALSE:
            return False
    raise PayloadError(
        field,
        f"expected a boolean (true/false, yes/no, 1/0, empty or null), got {_show(value)}",
    )


def _identifier(payload: Mapping[str, Any], field: str) -> str | None:
    value = payload.get(field)
    if value is None:
        return None
    if type(value) is str:
        return value.strip() or None
    if type(value) is int:
        return str(value)
    if type(value) is float and value.is_integer():
        return str(int(value))
    raise PayloadError(field, f"expected a string or a number id, got {_show(value)}")


def _text(payload: Mapping[str, Any], field: str) -> str | None:
    value = payload.get(field)
    if value is None or type(value) is str:
        return value
    if type(value) in (int, float):
        return str(value)
    raise PayloadError(field, f"expected a string, got {_show(value)}")


def _contacts(payload: Mapping[str, Any]) -> str | Mapping[str, Any] | list[Any] | None:
    value = payload.get("contacts")
    if value is None or isinstance(value, (str, Mapping, list)):
        return value
    if type(value) in (int, float):
        return str(value)  # a phone number sent as a number
    raise PayloadError("contacts", f"expected a string or an object, got {_show(value)}")


@attrs.frozen(kw_only=True)
class AIMessage:
    """One webhook of the AI task: a message in a dialog and the dialog's state flags.

    Booleans arrive as ``true/false``, ``"true"/"false"``, ``"yes"/"no"``, ``1/0``,
    ``"1"/"0"`` (also ``"да"/"нет"``); an empty string, ``null`` or an absent field is
    ``False`` (the flags say that something *happened*). Ids are strings (numbers are converted:
    Bubble ids overflow JavaScript numbers). ``message_type`` is an :class:`AIMessageType`
    (``None`` when absent; ``UNKNOWN`` for a value the SDK does not know, kept in
    ``message_type_raw``). ``raw`` is the decoded payload as received, unknown fields included.

    Attributes:
        external_chat_id: the ``chat_id`` your side sent with ``send_message_external``.
        message_text: the text of the message.
        operator: the dialog was handed to a human operator.
        close: the dialog is closed.
        get_contact: the visitor gave a contact (phone, e-mail, …).
        interest: the visitor showed interest.
        is_bot: the platform thinks the visitor is a bot.
        success: the dialog counts as a success.
        contacts: the contact data (a string, or the structure as sent).
        panel_url: a link to the dialog in the platform's panel (needs a login; can answer).
        share_url: a read-only link to the dialog.
        title: the visitor's full name.
        wh_type: the webhook's type.
    """

    external_chat_id: str
    message_id: str | None = None
    message_text: str | None = None
    message_type: AIMessageType | None = None
    message_type_raw: str | None = None
    operator: bool = False
    close: bool = False
    get_contact: bool = False
    interest: bool = False
    is_bot: bool = False
    success: bool = False
    task_id: str | None = None
    thread_id: str | None = None
    channel_id: str | None = None
    company_id: str | None = None
    manager_id: str | None = None
    contacts: str | Mapping[str, Any] | list[Any] | None = None
    panel_url: str | None = None
    share_url: str | None = None
    title: str | None = None
    wh_type: str | None = None
    raw: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False, hash=False, repr=False)

    @property
    def handover_reason(self) -> str | None:
        """``"operator"`` or ``"close"`` when the AI stopped answering, else ``None``."""
        if self.operator:
            return "operator"
        if self.close:
            return "close"
        return None

    @property
    def extra(self) -> dict[str, Any]:
        """The payload's fields the SDK does not know, as received."""
        return {k: v for k, v in self.raw.items() if k not in _KNOWN_FIELDS}

    @classmethod
    def from_mapping(cls, payload: Mapping[str, Any]) -> AIMessage:
        """Type a decoded webhook payload (see :func:`parse_ai_webhook`).

        Raises:
            PayloadError: a field has a value that cannot be typed, or ``external_chat_id``
                is missing; the message and ``.path`` name the field.
        """
        chat_id = _identifier(payload, "external_chat_id")
        if chat_id is None:
            raise PayloadError("external_chat_id", "required field is missing", missing=True)
        raw_type = _text(payload, "message_type")
        message_type = None
        if raw_type is not None and raw_type.strip():
            message_type = _MESSAGE_TYPES.get(raw_type.strip().lower(), AIMessageType.UNKNOWN)
        return cls(
            external_chat_id=chat_id,
            message_id=_identifier(payload, "message_id"),
            message_text=_text(payload, "message_text"),
            message_type=message_type,
            message_type_raw=raw_type,
            operator=_boolean(payload, "operator"),
            close=_boolean(payload, "close"),
            get_contact=_boolean(payload, "get_contact"),
            interest=_boolean(payload, "interest"),
            is_bot=_boolean(payload, "is_bot"),
            success=_boolean(payload, "success"),
            task_id=_identifier(payload, "task_id"),
            thread_id=_identifier(payload, "thread_id"),
            channel_id=_identifier(payload, "channel_id"),
            company_id=_identifier(payload, "company_id"),
            manager_id=_identifier(payload, "manager_id"),
            contacts=_contacts(payload),
            panel_url=_text(payload, "panel_url"),
            share_url=_text(payload, "share_url"),
            title=_text(payload, "title"),
            wh_type=_text(payload, "wh_type"),
            raw=payload,
        )


_FORM = "application/x-www-form-urlencoded"


def parse_ai_webhook(
    body: bytes | str | Mapping[str, Any], content_type: str | None = None
) -> AIMessage:
    """Parse the AI task's webhook into an :class:`AIMessage`.

    ``body`` is the raw bytes, a ``str``, or an already decoded mapping. ``content_type`` picks
    the decoding: JSON (``application/json``) or a form (``application/x-www-form-urlencoded``;
    the last of repeated keys wins). Without one (or with another type) a body starting with
    ``{`` is read as JSON, anything else as a form.

    Raises:
        PayloadError: the body can't be decoded, is not an object, a field has a value that
            can't be typed, or ``external_chat_id`` is missing; ``.path`` names the field.
    """
    if isinstance(body, Mapping):
        return AIMessage.from_mapping(body)
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("", "body is not UTF-8 text") from None
    else:
        text = body
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media.startswith("multipart/"):
        raise PayloadError("", "multipart bodies are not supported; send JSON or a form")
    as_json = media == "application/json" or media.endswith("+json")
    if media != _FORM and not as_json:
        as_json = text.lstrip().startswith(("{", "["))
    if as_json:
        try:
            decoded = json.loads(text)
        except RecursionError:
            raise PayloadError("", "body is not valid JSON: nested too deeply") from None
        except ValueError as exc:
            problem = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise PayloadError("", f"body is not valid JSON: {problem}") from None
        if not isinstance(decoded, dict):
            raise PayloadError("", "expected a JSON object")
        return AIMessage.from_mapping(decoded)
    return AIMessage.from_mapping(dict(parse_qsl(text, keep_blank_values=True)))


# ---------------------------------------------------------------------------------------------
# the bridge


def default_ai_chat_id(channel_name: str, chat_id: ChatId) -> str:
    """The AI's ``chat_id`` for a visitor: ``"{channel name}:{chat id}"`` (``omnichannel:42``).

    Stable for as long as the channel keeps its chat id, and unique across channels.
    """
    return f"{channel_name}:{chat_id}"


@attrs.frozen(kw_only=True)
class HandoverRequest:
    """What a handover hook receives when the AI stops answering a visitor.

    Attributes:
        channel: the channel the visitor writes on.
        chat_id: the visitor's chat on that channel.
        ai_chat_id: the ``chat_id`` the AI knows the visitor by.
        reason: ``"operator"`` (handed to a human) or ``"close"`` (dialog closed).
        message: the webhook that said so.
        turn: the visitor's last turn when this process still has it, else ``None`` (after a
            restart, or once the in-memory window of recent turns forgot it).
    """

    channel: Channel
    chat_id: ChatId
    ai_chat_id: str
    reason: str
    message: AIMessage
    turn: Turn | None


HandoverHook = Callable[[HandoverRequest], None]


class PageMessengerBridge:
    """Connects an AI task of Page messenger to the visitors of any channel of the SDK.

    Plug :attr:`bot` into a channel (``Connector(bridge.bot, …)`` or ``connector.bot =
    bridge.bot``): every visitor message (text; a button's label; a file as
    ``file:{type}|{id}|{url}``) is queued in the runtime's outbox and sent to the AI with
    ``send_message_external(task_id, chat_id=…, message=…)``, durably and in order per visitor.
    The AI's ``chat_id`` is ``chat_id_for(channel.name, chat_id)``
    (:func:`default_ai_chat_id`: ``"omnichannel:42"``).

    Serve :meth:`handle` at ``…/{secret}`` (:attr:`webhook_path`) and give that URL to the
    platform's integration. The AI's messages (``message_type`` in ``deliver_types``: bot and
    operator by default) are sent to the visitor on the channel they wrote from, with the
    channel's ``send`` (durable). When a webhook says ``operator`` or ``close``, the bridge stops
    forwarding that visitor to the AI (a flag in ``runtime.store``) and calls the handover hook
    once (:meth:`default_handover` unless ``handover`` is given).

    Routing survives a restart: chat → channel is kept in ``runtime.store`` (use a SQLite or
    Redis store for that), and channels are found by name in a registry (``channel``,
    ``channels``, :meth:`add_channel`; a channel that delivers a turn is added by itself).

    Args:
        client: the :class:`PageMessengerClient`.
        task_id: the id of the platform's task of type "Web".
        channel: the channel the bot is plugged into (its ``runtime`` is shared when it has one).
        channels: more channels (Omnidesk, Webex, other connectors) by their ``name``.
        secret: the secret last segment of the webhook URL (compared in constant time).
        runtime: the store/outbox/runner to use; else the channel's, else a new one made from
            ``store``, ``inline`` and ``runtime_options``.
        handover: ``hook(request: HandoverRequest)`` run when the AI stops answering.
        handover_text: the message :meth:`default_handover` sends when the channel has no
            handover (``None``: send nothing).
        handover_params: keyword arguments for the channel's ``handover(turn, **params)``.
        deliver_types: which ``message_type`` values reach the visitor.
        chat_id_for: ``(channel_name, chat_id) -> str``, the AI's chat id of a visitor.
        path_prefix: where :attr:`webhook_path` lives (``/pagemessenger/{secret}``); only the
            last path segment is checked, so the bridge can be mounted anywhere.
        max_body: webhook bodies over this many bytes get 413.
        recent_turns: how many visitors' last turns are kept in memory for handovers.
        name: distinguishes several bridges sharing one runtime.
    """

    def __init__(
        self,
        client: PageMessengerClient,
        task_id: str,
        channel: Channel | None = None,
        *,
        secret: str,
        channels: Iterable[Channel] = (),
        runtime: Runtime | None = None,
        store: Any = None,
        inline: bool = False,
        handover: HandoverHook | None = None,
        handover_text: str | None = DEFAULT_HANDOVER_TEXT,
        handover_params: Mapping[str, Any] | None = None,
        deliver_types: Iterable[AIMessageType] = (AIMessageType.BOT, AIMessageType.OPERATOR),
        chat_id_for: Callable[[str, ChatId], str] = default_ai_chat_id,
        path_prefix: str = "/pagemessenger",
        max_body: int = 1 << 20,
        recent_turns: int = 10_000,
        name: str = "pagemessenger",
        **runtime_options: Any,
    ) -> None:
        if not task_id:
            raise ConfigurationError("task_id must be the id of the platform's task of type Web")
        if not secret or "/" in secret:
            raise ConfigurationError("secret must be a non-empty URL path segment")
        if runtime is None:
            shared = getattr(channel, "runtime", None)
            runtime = (
                shared
                if isinstance(shared, Runtime)
                else Runtime(store=store, inline=inline, **runtime_options)
            )
        self.client = client
        self.task_id = str(task_id)
        self.runtime = runtime
        self.name = name
        self.destination = f"pagemessenger:{name}"
        self.handover_text = handover_text
        self.handover_params = dict(handover_params or {})
        self.deliver_types = frozenset(deliver_types)
        self.chat_id_for = chat_id_for
        self.path_prefix = "/" + path_prefix.strip("/") if path_prefix.strip("/") else ""
        self.max_body = max_body
        self.recent_turns = recent_turns
        self._secret = secret.encode()
        self._handover = handover or self.default_handover
        self._channels: dict[str, Channel] = {}
        self._turns: OrderedDict[str, Turn] = OrderedDict()
        self._lock = threading.Lock()
        for each in (channel, *channels):
            if each is not None:
                self.add_channel(each)
        self.bot = Bot()
        """The bot to plug into a channel: it forwards every visitor message to the AI."""
        self.bot.on_message(self.forward)
        self.runtime.outbox.register(self.destination, self._deliver)

    def __repr__(self) -> str:
        return (
            f"PageMessengerBridge(name={self.name!r}, task_id={self.task_id!r}, "
            f"channels={sorted(self._channels)!r})"
        )

    @property
    def webhook_path(self) -> str:
        """The path to give the platform's integration (it contains the secret)."""
        return f"{self.path_prefix}/{self._secret.decode()}"

    @property
    def channels(self) -> dict[str, Channel]:
        """The registered channels by name."""
        with self._lock:
            return dict(self._channels)

    def add_channel(self, channel: Channel) -> None:
        """Register a channel by its ``name`` so the AI's answers can be routed to it."""
        with self._lock:
            known = self._channels.get(channel.name)
            if known is not None and known is not channel:
                log.warning("pagemessenger: channel %r replaced by another object", channel.name)
            self._channels[channel.name] = channel

    # state ----------------------------------------------------------------------------------
    def _route_key(self, ai_chat_id: str) -> str:
        return f"{self.destination}:route:{ai_chat_id}"

    def _stop_key(self, ai_chat_id: str) -> str:
        return f"{self.destination}:stopped:{ai_chat_id}"

    def ai_chat_id(self, channel_name: str, chat_id: ChatId) -> str:
        """The ``chat_id`` the AI knows the visitor of ``chat_id`` on ``channel_name`` by."""
        return self.chat_id_for(channel_name, chat_id)

    def is_forwarding(self, channel_name: str, chat_id: ChatId) -> bool:
        """False once the AI handed this visitor over (``operator``) or closed the dialog."""
        key = self._stop_key(self.ai_chat_id(channel_name, chat_id))
        return self.runtime.store.get_state(key) is None

    def resume(self, channel_name: str, chat_id: ChatId) -> None:
        """Forward this visitor to the AI again (after the human is done).

        A later webhook that still says ``operator`` or ``close`` stops it again.
        """
        self.runtime.store.set_state(self._stop_key(self.ai_chat_id(channel_name, chat_id)), None)

    def route(self, ai_chat_id: str) -> tuple[str, ChatId] | None:
        """The channel name and chat id of the visitor the AI knows as ``ai_chat_id``."""
        state = self.runtime.store.get_state(self._route_key(ai_chat_id))
        if state is None:
            return None
        channel_name, chat_id = state.get("channel"), state.get("chat_id")
        if not isinstance(channel_name, str) or not isinstance(chat_id, (int, str)):
            return None
        return channel_name, chat_id

    # visitor → AI ---------------------------------------------------------------------------
    def forward(self, turn: Turn) -> None:
        """Queue the turn's text for the AI (the handler of :attr:`bot`; usable in your own).

        Nothing is sent when the turn has no text (a file that is not ready) or when the AI
        handed this visitor over.
        """
        channel = turn.channel
        if channel.name not in self._channels:
            self.add_channel(channel)
        ai_chat_id = self.ai_chat_id(channel.name, turn.chat_id)
        with self._lock:
            self._turns[ai_chat_id] = turn
            self._turns.move_to_end(ai_chat_id)
            while len(self._turns) > self.recent_turns:
                self._turns.popitem(last=False)
        route = {"channel": channel.name, "chat_id": turn.chat_id}
        if self.runtime.store.get_state(self._route_key(ai_chat_id)) != route:
            self.runtime.store.set_state(self._route_key(ai_chat_id), route)
        if turn.text is None:
            return
        if self.runtime.store.get_state(self._stop_key(ai_chat_id)) is not None:
            log.info("pagemessenger: chat %s is with a human; not forwarded", ai_chat_id)
            return
        self.runtime.outbox.put(
            self.destination,
            f"{self.destination}:{ai_chat_id}",
            {"task_id": self.task_id, "chat_id": ai_chat_id, "message": turn.text},
        )

    def _deliver(self, payload: Mapping[str, Any]) -> None:
        self.client.send_message_external(
            str(payload["task_id"]), str(payload["chat_id"]), str(payload["message"]), attempts=1
        )

    # AI → visitor ---------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        """Answer one AI webhook: 405 for a method other than POST, 403 for a wrong secret,
        413 for a body over ``max_body``, 400 naming the field for a malformed body, 503 when
        the visitor's channel is not registered here, else 200 ``{"result": "ok"}``."""
        if request.method != "POST":
            return Response(
                405,
                b'{"error":"Method not allowed; use POST."}',
                {"Allow": "POST", "Content-Type": "application/json"},
            )
        given = request.path.rstrip("/").rsplit("/", 1)[-1].encode()
        if not hmac.compare_digest(given, self._secret):
            return Response.error(403, "Forbidden: the webhook URL's secret does not match.")
        if len(request.body) > self.max_body:
            return Response.error(413, f"Request body is larger than {self.max_body} bytes.")
        try:
            message = parse_ai_webhook(request.body, request.content_type or None)
        except PayloadError as exc:
            log.info("pagemessenger: rejected webhook: %s", exc)
            return Response.error(400, f"Malformed webhook: {exc}")
        try:
            return self.accept(message)
        except Exception:
            log.exception("pagemessenger: internal error while accepting a webhook")
            return Response.error(500, "Internal server error.")

    def accept(self, message: AIMessage) -> Response:
        """Route a parsed webhook (what :meth:`handle` does after checking the request)."""
        ok = Response.json(200, {"result": "ok"})
        ai_chat_id = message.external_chat_id
        if message.task_id is not None and message.task_id != self.task_id:
            log.warning(
                "pagemessenger: webhook for task %s reached the bridge of task %s",
                message.task_id,
                self.task_id,
            )
        route = self.route(ai_chat_id)
        if route is None:
            log.warning("pagemessenger: webhook for unknown chat %s ignored", ai_chat_id)
            return ok
        channel_name, chat_id = route
        channel = self.channels.get(channel_name)
        if channel is None:
            log.error(
                "pagemessenger: chat %s belongs to channel %r, which is not registered",
                ai_chat_id,
                channel_name,
            )
            return Response.error(503, f"Channel {channel_name!r} is not registered.")
        key = None
        if message.message_id is not None:
            key = f"{self.destination}:webhook:{message.message_id}"
        if not self.runtime.accept(key):
            log.info("pagemessenger: repeated webhook %s ignored", message.message_id)
            return ok
        self.runtime.run(
            f"{self.destination}:{ai_chat_id}",
            lambda: self._apply(message, channel, chat_id),
            key,
        )
        return ok

    def _apply(self, message: AIMessage, channel: Channel, chat_id: ChatId) -> None:
        text = message.message_text
        if message.message_type in self.deliver_types and text and text.strip():
            channel.send(chat_id, [TextReply(text=text)])
        reason = message.handover_reason
        if reason is None:
            return
        ai_chat_id = message.external_chat_id
        stop_key = self._stop_key(ai_chat_id)
        if self.runtime.store.get_state(stop_key) is not None:
            return
        self.runtime.store.set_state(
            stop_key, {"reason": reason, "at": time.time(), "message_id": message.message_id}
        )
        log.info("pagemessenger: chat %s handed over (%s)", ai_chat_id, reason)
        with self._lock:
            turn = self._turns.get(ai_chat_id)
        request = HandoverRequest(
            channel=channel,
            chat_id=chat_id,
            ai_chat_id=ai_chat_id,
            reason=reason,
            message=message,
            turn=turn,
        )
        try:
            self._handover(request)
        except Exception:
            log.exception("pagemessenger: handover hook raised for chat %s", ai_chat_id)

    def default_handover(self, request: HandoverRequest) -> None:
        """Hand the visitor to a human the way their channel does it.

        With the visitor's last turn in memory: ``channel.handover(turn, **handover_params)``
        (the omnichannel ``Connector`` sends its ``handover_text``; Omnidesk and Webex adapters
        do their own handover). When the channel has no handover (``NotSupported``), or after a
        restart (no turn), a plain message is sent instead: the channel's ``handover_text``
        attribute when it has one, else the bridge's ``handover_text``.
        """
        if request.turn is not None:
            try:
                request.turn.handover(**self.handover_params)
                return
            except NotSupported:
                log.info(
                    "pagemessenger: channel %r has no handover; sending a message",
                    request.channel.name,
                )
        else:
            log.info(
                "pagemessenger: no turn in memory for chat %s; sending a message instead of "
                "the channel's handover",
                request.ai_chat_id,
            )
        text = getattr(request.channel, "handover_text", None) or self.handover_text
        if isinstance(text, str) and text:
            request.channel.send(request.chat_id, [TextReply(text=text)])

    # lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start background delivery (resuming messages stored by an earlier run)."""
        self.runtime.start()

    def drain(self, timeout: float | None = 10.0) -> bool:
        """Wait until queued work and outbound messages are done."""
        return self.runtime.drain(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Finish queued work and messages, then stop (the runtime is shared with the channel
        when it came from there: close only once)."""
        return self.runtime.close(timeout)
