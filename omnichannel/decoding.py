"""The one decoding layer every platform's parser uses: bodies (JSON or forms) and lenient scalars.

- :func:`decode_body` turns a request body into JSON values: JSON, or a form with PHP-style
  nested keys (``object[attachments][0][url]=…``) where the platform sends forms; by content
  type, sniffed when it is absent or unusual. Errors have one wording for every endpoint.
- Lone UTF-16 surrogates (``"\\ud83d"``: what a JavaScript sender leaves when it cuts a string
  inside an emoji) are replaced by U+FFFD while decoding: such a string can be neither stored
  nor sent on, so it must never get past the acknowledgement.
- The ``read_*`` functions read one scalar the way platforms send them (ids as numbers or
  strings, booleans as ``"yes"``, ``1``, ``"true"``, timestamps in several forms) and raise a
  :class:`~omnichannel.errors.PayloadError` whose ``path`` names the field.
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, NoReturn
from urllib.parse import parse_qsl

from omnichannel.errors import PayloadError

__all__ = [
    "decode_body",
    "decode_json",
    "decode_object",
    "form_to_nested",
    "json_type",
    "missing",
    "read_bool",
    "read_id",
    "read_int",
    "read_text",
    "read_timestamp",
    "shallow_json",
    "show",
    "without_lone_surrogates",
    "wrong",
]

# ---------------------------------------------------------------------------------------------
# errors


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type (for error messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def show(value: object) -> str:
    """A short quotation of a value for an error message (at most 40 characters)."""
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def missing(path: str) -> NoReturn:
    """Raise the error for a required field that is absent."""
    raise PayloadError(path, "required field is missing", missing=True)


def wrong(path: str, expected: str, value: object) -> NoReturn:
    """Raise the error for a field of the wrong type: ``expected a string, got number``."""
    raise PayloadError(path, f"expected {expected}, got {json_type(value)}")


# ---------------------------------------------------------------------------------------------
# bodies

_LONE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _fix(value: Any) -> Any:
    if type(value) is str:
        return _SURROGATE.sub("\ufffd", value)
    if type(value) is dict:
        return {_fix(k): _fix(v) for k, v in value.items()}
    if type(value) is list:
        return [_fix(v) for v in value]
    return value


def without_lone_surrogates(value: Any) -> Any:
    """``value`` with every lone UTF-16 surrogate in its strings (and keys) replaced by U+FFFD."""
    return _fix(value)


def decode_json(body: bytes | bytearray | memoryview | str) -> Any:
    """Decode a JSON body; anything that is not JSON (or not UTF-8) is a :class:`PayloadError`.

    ``NaN`` and ``Infinity`` are refused (they are not JSON); lone surrogate escapes become
    U+FFFD.
    """
    try:
        if type(body) is bytes:
            text = body.decode("utf-8") if body[:1] != b"\xef" else body.decode("utf-8-sig")
        elif type(body) is str:
            text = body
        else:
            text = bytes(body).decode("utf-8")  # type: ignore[arg-type]
        value = _NOT_QUICK
        if text[:1] == "{" and (len(text) <= 2 * _MAX_QUICK_DEPTH or shallow_json(text)):
            # an object, through the C scanner directly: JSONDecoder.decode adds two regular
            # expression matches and two frames; an error (raised again by _decode, with its
            # message) or extra data goes the usual way
            try:
                value, end = _scan(text, 0)
            except Exception:
                value = _NOT_QUICK
            else:
                if end != len(text) and text[end:].strip(" \t\n\r"):
                    value = _NOT_QUICK
        if value is _NOT_QUICK:
            value = _decode(text)
    except RecursionError:
        raise PayloadError("", "body is not valid JSON: nested too deeply") from None
    except UnicodeDecodeError:
        raise PayloadError("", "body is not valid JSON: not UTF-8") from None
    except ValueError as exc:  # JSONDecodeError, int digit limits, NaN / Infinity
        problem = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise PayloadError("", f"body is not valid JSON: {problem}") from None
    if ("\\u" in text and _LONE_ESCAPE.search(text) is not None) or (
        type(body) is str and _SURROGATE.search(text) is not None
    ):
        try:
            return _fix(value)
        except RecursionError:
            raise PayloadError("", "body is not valid JSON: nested too deeply") from None
    return value


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


_decoder = json.JSONDecoder(parse_constant=_no_constant)
_decode = _decoder.decode  # built once: json.loads(**kw) would build a decoder per call
_scan = _decoder.scan_once  # type: ignore[attr-defined]  # the C scanner decode() calls
_NOT_QUICK: Any = object()
_MAX_QUICK_DEPTH = 256


def shallow_json(body: bytes | str) -> bool:
    """True when ``body`` cannot nest deeper than 256 levels (too few brackets to): a decoder
    that uses a frame or two less of the recursion limit than ``json``'s then decodes it alike.
    Cheap for small bodies (their length tells), a count of brackets for larger ones."""
    if len(body) <= 2 * _MAX_QUICK_DEPTH:
        return True
    if type(body) is bytes:
        return body.count(b"{") + body.count(b"[") <= _MAX_QUICK_DEPTH
    return body.count("{") + body.count("[") <= _MAX_QUICK_DEPTH  # type: ignore[arg-type]


_FORM_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_FORM_PART = re.compile(r"\[([^\[\]]*)\]")
_MAX_FORM_DEPTH = 32


def form_to_nested(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """PHP-style form keys to nested objects: ``object[attachments][0][url]=…`` becomes
    ``{"object": {"attachments": [{"url": …}]}}`` (objects with only numeric keys are lists).

    A key seen twice keeps its last value; a key that is both a value and an object
    (``a=1&a[b]=2``) keeps the object.
    """
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _FORM_KEY.match(key)
        parts = [key] if match is None else [match[1], *_FORM_PART.findall(match[2])]
        if len(parts) > _MAX_FORM_DEPTH:
            raise PayloadError(key[:40], "form key nested too deeply")
        node = root
        for part in parts[:-1]:
            name = part if part else str(len(node))
            child = node.get(name)
            if not isinstance(child, dict):
                child = node[name] = {}
            node = child
        last = parts[-1] if parts[-1] else str(len(node))
        if not isinstance(node.get(last), dict):
            node[last] = value
    return _numbered_to_lists(root)  # type: ignore[no-any-return]


def _numbered_to_lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _numbered_to_lists(v) for k, v in node.items()}
    if converted and all(k.isascii() and k.isdigit() and len(k) < 7 for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def decode_body(
    body: bytes | bytearray | memoryview | str, content_type: str | None = None, *, forms: bool
) -> Any:
    """Decode a request body into JSON values.

    ``forms``: the platform may send ``application/x-www-form-urlencoded`` (PHP-style keys);
    otherwise every body is read as JSON. With a JSON content type the body is JSON; with the
    form type a form; without one (or another) a body starting with ``{`` or ``[`` is JSON and
    anything else a form. ``multipart/form-data`` is refused.

    Raises:
        PayloadError: not UTF-8, not JSON, a refused content type (``path`` ``""``).
    """
    if not forms:
        return decode_json(body)
    if isinstance(body, str):
        text = body
    else:
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("", "body is not valid UTF-8 text") from None
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media.startswith("multipart/"):
        raise PayloadError("", "multipart bodies are not supported; send JSON or a form")
    as_json = media == "application/json" or media.endswith("+json")
    if media != "application/x-www-form-urlencoded" and not as_json:
        as_json = text.lstrip().startswith(("{", "["))
    if as_json:
        return decode_json(text)
    pairs = parse_qsl(text, keep_blank_values=True)
    return form_to_nested((_fix(k), _fix(v)) for k, v in pairs)


def decode_object(
    body: bytes | bytearray | memoryview | str, content_type: str | None = None, *, forms: bool
) -> dict[str, Any]:
    """:func:`decode_body`, refusing anything but an object (``null``, ``[]``, ``1``, ``"x"``)."""
    value = decode_body(body, content_type, forms=forms)
    if not isinstance(value, dict):
        raise PayloadError("", f"body must be an object, got {json_type(value)}")
    return value


# ---------------------------------------------------------------------------------------------
# scalars

_TRUE = frozenset({"true", "yes", "1", "y", "t", "on", "да"})
_FALSE = frozenset({"false", "no", "0", "n", "f", "off", "", "null", "none", "нет"})


def read_id(value: object, path: str, *, required: bool = False) -> str | None:
    """An identifier: a string (trimmed; empty means absent) or an integral number, as text."""
    if type(value) is str:
        text = value.strip()
        if text:
            return text
        value = None
    elif type(value) is int:
        return str(value)
    elif type(value) is float and value.is_integer():
        return str(int(value))
    if value is None:
        if required:
            missing(path)
        return None
    wrong(path, "a string or an integer id", value)


def read_int(value: object, path: str, *, required: bool = False) -> int | None:
    """An integer: a number without fraction, or a string of digits (``""`` means absent)."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is str:
        text = value.strip()
        digits = text[1:] if text.startswith("-") else text
        if digits.isascii() and digits.isdigit() and len(digits) < 20:
            return int(text)
        if not text:
            value = None
    if value is None:
        if required:
            missing(path)
        return None
    raise PayloadError(path, f"expected an integer, got {show(value)}")


def read_bool(value: object, path: str, *, default: bool = False) -> bool:
    """A boolean in any of its wire forms: ``true``/``false``, ``"yes"``/``"no"``, ``1``/``0``,
    ``"on"``, …; ``null`` and ``""`` are ``default``."""
    if type(value) is bool:
        return value
    if value is None:
        return default
    if type(value) is int and value in (0, 1):
        return bool(value)
    if type(value) is str:
        folded = value.strip().lower()
        if folded in _TRUE:
            return True
        if folded in _FALSE:
            return default if not folded else False
    raise PayloadError(path, f"expected a boolean (true/false, yes/no, 1/0), got {show(value)}")


def read_text(value: object, path: str, *, required: bool = False) -> str | None:
    """Text: a string as sent, a number as its text."""
    if type(value) is str:
        return value
    if value is None:
        if required:
            missing(path)
        return None
    if type(value) in (int, float):
        return str(value)
    wrong(path, "a string", value)


_ISO_LIKE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
    r"\s*(Z|[+-]\d{2}:?\d{2}|GMT|UTC)?",
    re.IGNORECASE,
)


def read_timestamp(value: object, path: str) -> datetime | None:
    """A point in time as an aware datetime: ISO 8601 (``T`` or space, any fraction, ``Z`` or an
    offset; none means UTC), RFC 2822 (``Thu, 26 Apr 2018 20:17:10 +0300``) or Unix seconds;
    ``null`` and ``""`` are ``None``."""
    if value is None or value == "":
        return None
    if type(value) in (int, float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), timezone.utc)  # type: ignore[arg-type]
        except (OverflowError, OSError, ValueError):
            raise PayloadError(path, f"{show(value)} is not a time") from None
    if type(value) is not str:
        wrong(path, "a date and time", value)
    text = value.strip()
    match = _ISO_LIKE.fullmatch(text)
    if match is not None:
        year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
        fraction = (match.group(7) or "")[:6]
        zone = (match.group(8) or "Z").upper()
        try:
            when = datetime(year, month, day, hour, minute, second, int(fraction.ljust(6, "0")))
            if zone in ("Z", "GMT", "UTC"):
                return when.replace(tzinfo=timezone.utc)
            return datetime.fromisoformat(f"{when.isoformat()}{zone[:3]}:{zone[-2:]}")
        except ValueError as exc:
            raise PayloadError(path, f"{show(value)} is not a valid date and time: {exc}") from None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        raise PayloadError(
            path, f"expected a date and time (ISO 8601 or RFC 2822), got {show(value)}"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)
