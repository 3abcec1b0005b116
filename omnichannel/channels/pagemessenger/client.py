"""The Page-messenger (Selarti) API client: ``/wf/auth`` and ``/wf/send_message_external`` with a
bearer token renewed once on 401, in Bubble's ``{"status", "response"}`` envelope, and its typed
errors (which never carry the API key or a token)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from omnichannel.errors import ConfigurationError, DeliveryError
from omnichannel.runtime.sending import (
    LazySession,
    RetryPolicy,
    default_session,
    redact_url,
    request_with_retries,
)

if TYPE_CHECKING:
    from omnichannel.runtime.sending import HTTPResponse, Session

__all__ = [
    "DEFAULT_BASE_URL",
    "PageMessengerAuthError",
    "PageMessengerClient",
    "PageMessengerError",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://selarti.com/api/1.1"
"""The platform's API root; workflow names are appended (``…/wf/auth``)."""


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
        session: by default the SDK's pooled keep-alive transport
            (:class:`~omnichannel.runtime.pool.PooledSession`), made on first use; it ignores
            proxy variables. Give a ``requests.Session`` for proxies, custom TLS or auth
            (``new_session(trust_env=True)`` of :mod:`omnichannel.runtime.sending` reads
            ``HTTP(S)_PROXY`` from the environment).
        retry: timeouts and retries of every call (429 / 5xx / connection errors).

    Raises:
        ConfigurationError: neither ``api_key`` nor ``token`` given, or a bad ``base_url``.
    """

    session: LazySession[Session] = LazySession(default_session)

    def __init__(
        self,
        api_key: str | None = None,
        token: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        session: Session | None = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not api_key and not token:
            raise ConfigurationError("give api_key (or a ready token) for the Page-messenger API")
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ConfigurationError("base_url must be an http(s) URL")
        self.base_url = base_url.rstrip("/")
        self.session = session or None  # made on first use
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
    def _unwrap(workflow: str, response: HTTPResponse, secrets: tuple[str, ...]) -> dict[str, Any]:
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
