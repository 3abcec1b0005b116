"""Outbound HTTP: one retry policy (timeouts, capped exponential backoff with jitter,
``Retry-After``) and typed failures that never show a secret."""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs
import requests
import requests.adapters

from omnichannel.errors import DeliveryError

__all__ = [
    "RetryPolicy",
    "new_session",
    "parse_retry_after",
    "redact_url",
    "request_with_retries",
]

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How an outbound call is timed out and retried.

    ``attempts`` counts the first try. The wait before attempt *n+1* is
    ``min(cap, backoff * 2**(n-1))`` scaled by a random factor in ``[0.5, 1]`` (jitter), or the
    server's ``Retry-After`` when it asks for longer (never more than ``max_retry_after``).
    """

    attempts: int = 4
    backoff: float = 0.5
    cap: float = 30.0
    timeout: float | tuple[float, float] = (3.05, 15.0)
    max_retry_after: float = 120.0
    retry_statuses: frozenset[int] = RETRY_STATUSES

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.cap, self.backoff * (2 ** max(0, attempt - 1)))
        wait = base * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not crypto
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return float(wait)


def new_session(*, trust_env: bool = False, pool_size: int = 16) -> requests.Session:
    """A pooled keep-alive session for one destination.

    ``trust_env`` is off by default: with it on, ``requests`` re-reads proxy variables and
    ``.netrc`` on every call (about half the cost of a local call). Pass ``trust_env=True`` to
    use ``HTTP(S)_PROXY`` / ``NO_PROXY`` from the environment.
    """
    session = requests.Session()
    session.trust_env = trust_env
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``Retry-After`` (seconds or an HTTP date) or Omnidesk's ``retry_after``."""
    value = headers.get("Retry-After") or headers.get("retry_after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def redact_url(url: str) -> str:
    """A URL safe for logs: scheme, host and the last path segment only.

    Secrets live in webhook URLs (the omnichannel "unique URL" auth, Webex ``/events/{ID}``),
    so the rest of the path, the query and any user info are elided.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    last = parts.path.rstrip("/").rsplit("/", 1)[-1]
    middle = "/…/" if parts.path.count("/") > 1 else "/"
    return f"{parts.scheme}://{host}{middle}{last}"


def _text_of(response: requests.Response, limit: int = 500) -> str:
    try:
        return response.text[:limit]
    except Exception:  # pragma: no cover - undecodable body
        return ""


def request_with_retries(
    session: requests.Session,
    method: str,
    url: str,
    *,
    policy: RetryPolicy,
    json: Any = None,
    data: Any = None,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    auth: Any = None,
    attempts: int | None = None,
    secrets: tuple[str, ...] = (),
    is_retryable: Callable[[requests.Response], bool | None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> requests.Response:
    """Send one HTTP request, retrying per ``policy``; return the 2xx response.

    ``attempts`` overrides the policy's count (``1`` = no retry: the outbox schedules its own).
    ``is_retryable`` may classify a non-2xx response (``None`` = use the policy's statuses).
    ``secrets`` are scrubbed from any text that goes into an error.

    Raises:
        DeliveryError: the last failure, with ``status``, ``response_text``, ``retryable`` and
            ``retry_after``.
    """
    total = attempts if attempts is not None else policy.attempts
    where = f"{method} {redact_url(url)}"
    error: DeliveryError | None = None
    for attempt in range(1, total + 1):
        try:
            response = session.request(
                method,
                url,
                json=json,
                data=data,
                params=params,
                headers=dict(headers) if headers else None,
                auth=auth,
                timeout=policy.timeout,
            )
        except requests.RequestException as exc:
            error = DeliveryError(
                f"{where} failed: {type(exc).__name__}",
                attempts=attempt,
                retryable=True,
            )
        else:
            if 200 <= response.status_code < 300:
                return response
            text = _scrub(_text_of(response), secrets)
            verdict = is_retryable(response) if is_retryable else None
            retryable = (
                verdict if verdict is not None else response.status_code in policy.retry_statuses
            )
            retry_after = parse_retry_after(response.headers)
            error = DeliveryError(
                f"{where} answered {response.status_code}: {text[:200]}",
                status=response.status_code,
                response_text=text,
                attempts=attempt,
                retryable=retryable,
                retry_after=retry_after,
            )
        if not error.retryable or attempt == total:
            break
        wait = policy.delay(attempt, error.retry_after)
        log.info("%s; retry %d/%d in %.2fs", error, attempt, total - 1, wait)
        sleep(wait)
    assert error is not None
    raise error


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
