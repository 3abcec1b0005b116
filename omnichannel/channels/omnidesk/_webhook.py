"""What both Omnidesk webhooks share: the secret in the URL and the body decoding.

Omnidesk signs neither its rule requests nor its custom-channel webhooks: a secret in the URL
(its last path segment, or ``?secret=``) tells its requests from anyone else's. Bodies are JSON
or form-encoded with PHP-style keys (``object[attachments][0][url]=…``), decoded by
:func:`omnichannel.decoding.decode_body`.
"""

from __future__ import annotations

import hmac

from omnichannel.runtime.http import Request, Response

__all__ = ["forbidden", "url_secret_ok"]


def url_secret_ok(request: Request, secret: bytes) -> bool:
    """The URL's last path segment or its ``secret`` query parameter equals ``secret``."""
    last = request.path.rstrip("/").rsplit("/", 1)[-1].encode()
    ok = hmac.compare_digest(last, secret)
    query = request.query_params.get("secret")
    if query is not None:
        ok = hmac.compare_digest(query.encode(), secret) or ok
    return ok


def forbidden() -> Response:
    """The answer to a wrong or missing secret (403; the secret is never echoed)."""
    return Response.error(403, "Forbidden: wrong or missing webhook secret.")
