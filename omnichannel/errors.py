"""Exceptions of the SDK: payload errors that name the field, and typed delivery failures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ConfigurationError",
    "DeliveryError",
    "NotSupported",
    "OmnichannelError",
    "PayloadError",
    "UnsupportedEvent",
]


class OmnichannelError(Exception):
    """Base class of every error the SDK raises on purpose."""


class PayloadError(OmnichannelError, ValueError):
    """An inbound payload is not valid: a field is missing, has the wrong type, or is not JSON.

    ``path`` names the offending field in dotted form (``message.data.button``); it is ``""``
    when the whole body is the problem (not JSON, not an object). ``missing`` tells a missing
    required field (the protocol answers 400) from a value of the wrong type (500 per the seed).
    """

    def __init__(self, path: str, problem: str, *, missing: bool = False) -> None:
        self.path = path
        self.problem = problem
        self.missing = missing
        super().__init__(f"{path}: {problem}" if path else problem)


class UnsupportedEvent(OmnichannelError):
    """The payload is valid JSON but its ``event`` or message ``kind`` is not one the SDK handles.

    The protocol acknowledges such deliveries with 200 and ignores them, so this is deliberately
    *not* a :class:`PayloadError`. ``payload`` is the decoded body, ``field`` the field whose
    ``value`` is unknown.
    """

    def __init__(self, field: str, value: object, payload: Mapping[str, Any]) -> None:
        self.field = field
        self.value = value
        self.payload = payload
        super().__init__(f"unsupported {field} {value!r}")


class DeliveryError(OmnichannelError):
    """An outbound call failed for good (after retries, or with a status that is not retried).

    ``status`` is the last HTTP status (``None`` when the server was never reached) and
    ``response_text`` the start of the last response body. ``retryable`` tells whether a later
    attempt may succeed (429, 5xx, connection errors), ``retry_after`` the server's requested
    wait in seconds. Neither the URL's secret nor the token is part of the message.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        response_text: str = "",
        attempts: int = 1,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        self.response_text = response_text
        self.attempts = attempts
        self.retryable = retryable
        super().__init__(message)


class NotSupported(OmnichannelError):
    """The channel cannot do what was asked (a handover on a channel without one, say)."""


class ConfigurationError(OmnichannelError, ValueError):
    """The SDK was set up with values that cannot work (an empty token, a bad store URL)."""
