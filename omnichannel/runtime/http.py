"""Framework-free HTTP request and response: what every framework shim converts to and from."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["Headers", "Request", "Response"]


class Headers(MutableMapping[str, str]):
    """Case-insensitive HTTP headers that keep the spelling they were given."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] | None = None) -> None:
        if items is None:
            self._items: dict[str, tuple[str, str]] = {}
        else:
            pairs = items.items() if type(items) is dict or isinstance(items, Mapping) else items
            self._items = {key.lower(): (key, value) for key, value in pairs}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()][1]

    def __setitem__(self, key: str, value: str) -> None:
        self._items[key.lower()] = (key, value)

    def __delitem__(self, key: str) -> None:
        del self._items[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"

    def pairs(self) -> list[tuple[str, str]]:
        """``(name, value)`` pairs, names spelled as given (faster than ``items()``)."""
        return list(self._items.values())

    @classmethod
    def from_lowered(cls, items: dict[str, tuple[str, str]]) -> Headers:
        """Headers over ``{lower-cased name: (name as given, value)}``, taken as is (no copy)."""
        new = cls.__new__(cls)
        new._items = items
        return new

    def copy(self) -> Headers:
        """A copy (changing one does not change the other)."""
        new = Headers.__new__(Headers)
        new._items = dict(self._items)
        return new


class Request:
    """An inbound HTTP request, independent of any web framework.

    ``body`` is the raw bytes (signatures and secrets cover them); ``query`` the raw query string.
    ``path`` is relative to where the handler is mounted (WSGI ``PATH_INFO``, ASGI ``path``
    without ``root_path``). ``routed``: a framework's URL rule already chose the request for this
    handler (Flask, Django), so the handler checks only the parts it owns (a token, a secret);
    otherwise everything is routed to it and anything but its exact path is a 404.
    """

    __slots__ = ("body", "headers", "method", "path", "query", "routed")

    def __init__(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
        query: str = "",
        *,
        routed: bool = False,
    ) -> None:
        self.method = method.upper()
        self.path = path
        self.routed = routed
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = bytes(body)
        self.query = query

    @property
    def content_type(self) -> str:
        """The media type of the body, lower-cased, without parameters (``""`` when absent)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    @property
    def query_params(self) -> dict[str, str]:
        """The query string as a dict (the last value wins for repeated keys)."""
        return dict(parse_qsl(self.query, keep_blank_values=True))

    def __repr__(self) -> str:
        # never print the path in full: it may carry a secret token
        return f"Request({self.method} {len(self.body)} bytes)"


class Response:
    """An HTTP response, independent of any web framework."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes | str = b"",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)

    @classmethod
    def json(cls, status: int, payload: Any) -> Response:
        """A JSON response (UTF-8, non-ASCII kept)."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        return cls(status, body, {"Content-Type": "application/json"})

    @classmethod
    def error(cls, status: int, message: str) -> Response:
        """A JSON error body ``{"error": message}``."""
        return cls.json(status, {"error": message})

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.body[:80]!r})"
