"""Outbound HTTP: one retry policy (timeouts, capped exponential backoff with jitter,
``Retry-After``) and typed failures that never show a secret.

The SDK's clients send through :class:`~omnichannel.runtime.pool.PooledSession` by default:
keep-alive connections per destination host on the standard library's ``http.client``, proxy
variables ignored, nothing re-read from the environment per call. A ``requests.Session`` given
to a client (proxies, custom TLS, auth; :func:`new_session` makes a pooled one) is used as it
is. ``requests`` (about 60 ms to import) is imported only when such a session is made.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload
from urllib.parse import urlsplit

import attrs

from omnichannel.errors import DeliveryError
from omnichannel.runtime.pool import PooledSession, TransportError

if TYPE_CHECKING:
    from typing import TypeAlias

    import requests

    from omnichannel.runtime.pool import PooledResponse

    Session: TypeAlias = "requests.Session | PooledSession"
    """What a client sends with: the SDK's pooled transport or a ``requests.Session``."""
    HTTPResponse: TypeAlias = "requests.Response | PooledResponse"

__all__ = [
    "LazySession",
    "PooledSession",
    "RetryPolicy",
    "TransportError",
    "default_session",
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
    """A pooled keep-alive ``requests.Session`` for one destination, to give a client that
    needs what the default transport (:class:`~omnichannel.runtime.pool.PooledSession`) does
    not do: proxies, client certificates, custom auth.

    ``trust_env`` is off by default: with it on, ``requests`` re-reads proxy variables and
    ``.netrc`` on every call (about half the cost of a local call). Pass ``trust_env=True`` to
    use ``HTTP(S)_PROXY`` / ``NO_PROXY`` from the environment (the SDK's clients ignore them
    otherwise).
    """
    import requests
    import requests.adapters

    session = requests.Session()
    session.trust_env = trust_env
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


_MAKING = threading.Lock()
T = TypeVar("T")


def default_session() -> Session:
    """The session a client of the SDK sends with when given none: a
    :class:`~omnichannel.runtime.pool.PooledSession` (keep-alive connections per host, proxy
    variables ignored)."""
    return PooledSession()


class LazySession(Generic[T]):
    """A ``session`` attribute whose default is made on first use.

    A client declares ``session = LazySession(default_session)`` in its class and assigns
    ``self.session = session`` (``None`` for the default) in ``__init__``; the session is made
    when the client first sends. Assign a session to replace it. Without a factory the default
    is :func:`new_session` (a ``requests.Session``, importing ``requests`` then).
    """

    @overload
    def __init__(self: LazySession[requests.Session]) -> None: ...

    @overload
    def __init__(self, factory: Callable[[], T]) -> None: ...

    def __init__(self, factory: Callable[[], Any] | None = None) -> None:
        self._factory: Callable[[], Any] = factory or new_session

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = f"_{name}_made"

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> LazySession[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        found = instance.__dict__.get(self._slot)
        if found is None:
            with _MAKING:  # two threads sending first share one session
                found = instance.__dict__.get(self._slot)
                if found is None:
                    found = instance.__dict__[self._slot] = self._factory()
        return found

    def __set__(self, instance: object, value: T | None) -> None:
        instance.__dict__[self._slot] = value

    def made(self, instance: object) -> bool:
        """Whether ``instance`` has a session yet (given, or made by a first use)."""
        return instance.__dict__.get(self._slot) is not None


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


def _text_of(response: HTTPResponse, limit: int = 500) -> str:
    try:
        return response.text[:limit]
    except Exception:  # pragma: no cover - undecodable body
        return ""


def request_with_retries(
    session: Session,
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
    is_retryable: Callable[[Any], bool | None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> HTTPResponse:
    """Send one HTTP request, retrying per ``policy``; return the 2xx response.

    ``session`` is a :class:`~omnichannel.runtime.pool.PooledSession` or a
    ``requests.Session``. ``attempts`` overrides the policy's count (``1`` = no retry: the outbox
    schedules its own). ``is_retryable`` may classify a non-2xx response (``None`` = use the
    policy's statuses). ``secrets`` are scrubbed from any text that goes into an error; the URL
    appears in errors and logs only as :func:`redact_url` shows it.

    Raises:
        DeliveryError: the last failure, with ``status``, ``response_text``, ``retryable`` and
            ``retry_after``.
    """
    failures: tuple[type[BaseException], ...]
    if type(session) is PooledSession:
        failures = (TransportError,)
    else:
        import requests  # loaded already: ``session`` is one of its sessions

        failures = (requests.RequestException, TransportError)
    total = attempts if attempts is not None else policy.attempts
    error: DeliveryError | None = None
    for attempt in range(1, total + 1):
        try:
            response: HTTPResponse = session.request(
                method,
                url,
                json=json,
                data=data,
                params=params,
                headers=dict(headers) if headers else None,
                auth=auth,
                timeout=policy.timeout,
            )
        except failures as exc:
            kind = exc.kind if isinstance(exc, TransportError) else type(exc).__name__
            error = DeliveryError(
                f"{method} {redact_url(url)} failed: {kind}",
                attempts=attempt,
                retryable=True,
            )
        else:
            status = response.status_code
            if 200 <= status < 300:
                return response
            text = _scrub(_text_of(response), secrets)
            verdict = is_retryable(response) if is_retryable else None
            retryable = verdict if verdict is not None else status in policy.retry_statuses
            retry_after = parse_retry_after(response.headers)
            error = DeliveryError(
                f"{method} {redact_url(url)} answered {status}: {text[:200]}",
                status=status,
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
