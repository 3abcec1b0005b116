"""What both Omnidesk webhooks share: the secret in the URL and the body decoding.

Omnidesk signs neither its rule requests nor its custom-channel webhooks: a secret in the URL
(its last path segment, or ``?secret=``) tells its requests from anyone else's. Bodies are JSON
or form-encoded with PHP-style keys (``object[attachments][0][url]=…``).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from omnichannel.codec import decode_json
from omnichannel.errors import PayloadError
from omnichannel.runtime.http import Request, Response

__all__ = ["decode_body", "forbidden", "form_to_nested", "url_secret_ok"]


def url_secret_ok(request: Request, secret: bytes) -> bool:
    """The URL's last path segment or its ``secret`` query parameter equals ``secret``."""
    last = request.path.rstrip("/").rsplit("/", 1)[-1].encode()
    ok = hmac.compare_digest(last, secret)
    query = request.query_params.get("secret")
    if query is not None:
        ok = hmac.compare_digest(query.encode(), secret) or ok
    return ok


_FORM_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def form_to_nested(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """PHP-style form keys to nested objects: ``object[attachments][0][url]=…`` becomes
    ``{"object": {"attachments": [{"url": …}]}}`` (objects with only numeric keys are lists)."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _FORM_KEY.match(key)
        parts = [key] if match is None else [match[1], *re.findall(r"\[([^\[\]]*)\]", match[2])]
        node = root
        for part in parts[:-1]:
            name = part if part else str(len(node))
            child = node.get(name)
            if not isinstance(child, dict):
                child = node[name] = {}
            node = child
        last = parts[-1] if parts[-1] else str(len(node))
        node[last] = value
    return _numbered_to_lists(root)  # type: ignore[no-any-return]


def _numbered_to_lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _numbered_to_lists(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def decode_body(body: bytes | str, content_type: str | None) -> Any:
    """JSON or form-encoded, by content type (sniffed when absent or unusual)."""
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("", "body is not valid UTF-8") from None
    else:
        text = body
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return decode_json(text)
    if media == "multipart/form-data":
        raise PayloadError(
            "", "multipart/form-data bodies are not supported; expected form-encoded or JSON"
        )
    if media == "application/x-www-form-urlencoded":
        return form_to_nested(parse_qsl(text, keep_blank_values=True))
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return decode_json(text)
    return form_to_nested(parse_qsl(text, keep_blank_values=True))


def forbidden() -> Response:
    """The answer to a wrong or missing secret (403; the secret is never echoed)."""
    return Response.error(403, "Forbidden: wrong or missing webhook secret.")
