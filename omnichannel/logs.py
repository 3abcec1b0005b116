"""Log set-up for the command line (and any script): text or JSON lines on stderr, safe to
ship whatever visitors send and whatever the level.

:func:`configure_logging` installs one handler on the root logger:

- ``text``: ``2024-05-01 12:00:00,123 INFO omnichannel.runtime.pipeline: message`` (UTC), the
  format ``omnichannel serve`` always had; a traceback follows on lines indented by two spaces.
- ``json``: one JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
  ``message``, the fields the runtime knows (``channel``, ``chat``, ``message_id``, ``turn``,
  ``reply``) and any other ``extra=``; for an exception ``exc_type`` and ``exc``, and its
  ``traceback`` only when the level is ``DEBUG``.

Two safety rules hold in both formats:

- **One record, one line.** Control characters (CR, LF, tab, the rest of C0, DEL, C1, U+2028,
  U+2029) in a message or a field are written escaped (``\\n``, ``\\r``, ``\\t``, ``\\x1b``, …),
  so a visitor-controlled chat or message id can never start a line that looks like a record.
  (A text traceback's own lines are indented, so they cannot either.)
- **No URL secret from urllib3.** ``urllib3`` (under ``requests``) logs request paths and
  queries (``"POST /path?query HTTP/1.1" 200``) at ``DEBUG`` and in retry warnings; a channel
  URL may carry a secret in both. Every record of the ``urllib3`` and ``requests`` loggers has
  the path and query of each URL and request line replaced by ``/***`` (the host and port
  stay: ``Starting new HTTP connection (1): host:443`` is kept as is), at every level.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
from datetime import datetime, timezone
from typing import IO, Any, Literal

__all__ = [
    "LOG_FIELDS",
    "TEXT_FORMAT",
    "JsonFormatter",
    "RedactURLs",
    "TextFormatter",
    "configure_logging",
    "escape_controls",
    "redact_paths",
]

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The text format (times in UTC)."""

LOG_FIELDS = ("channel", "chat", "message_id", "turn", "reply")
"""The fields the runtime passes with its main lines (admission, repeated delivery, turn
failed or dead-lettered, delivery failed or dead-lettered)."""

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029]")  # what json.dumps leaves raw
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``, …)."""
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_escape_one, text)


def _utc(seconds: float | None) -> time.struct_time:
    return time.gmtime(seconds)


class TextFormatter(logging.Formatter):
    """``%(asctime)s %(levelname)s %(name)s: %(message)s`` in UTC, on one line whatever the
    message holds; an exception's traceback follows on lines indented by two spaces."""

    def __init__(self, fmt: str = TEXT_FORMAT, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)
        self.converter = _utc

    def format(self, record: logging.LogRecord) -> str:
        """The record on one line, then its indented traceback (if any)."""
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = escape_controls(self.formatMessage(record))
        more: list[str] = []
        if record.exc_info:
            more.append(self.formatException(record.exc_info))
        elif record.exc_text:
            more.append(record.exc_text)
        if record.stack_info:
            more.append(self.formatStack(record.stack_info))
        if not more:
            return line
        text = _CONTROL_BUT_NEWLINE.sub(_escape_one, "\n".join(more).rstrip("\n"))
        return line + "".join(f"\n  {part}" for part in text.split("\n"))


_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)))
_RECORD_ATTRIBUTES |= {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    Args:
        traceback: add the ``traceback`` (and ``stack``) of a record that has one (the
            ``DEBUG`` level); ``exc_type`` and ``exc`` are always there.
    """

    def __init__(self, *, traceback: bool = False) -> None:
        super().__init__()
        self.traceback = traceback

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        moment = datetime.fromtimestamp(record.created, timezone.utc)
        data: dict[str, Any] = {
            "time": f"{moment:%Y-%m-%dT%H:%M:%S}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if (
                value is not None
                and key not in _RECORD_ATTRIBUTES
                and key not in data
                and not key.startswith("_")
            ):
                data[key] = value
        exc_info = record.exc_info
        if exc_info and exc_info[1] is not None:
            data["exc_type"] = type(exc_info[1]).__name__
            data["exc"] = str(exc_info[1])
            if self.traceback:
                data["traceback"] = "".join(traceback.format_exception(*exc_info))
        if record.stack_info and self.traceback:
            data["stack"] = record.stack_info
        try:
            text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
        except (TypeError, ValueError):  # an extra that JSON cannot hold (non-str keys, …)
            text = json.dumps(
                {
                    k: v if isinstance(v, (str, int, float, bool)) else str(v)
                    for k, v in data.items()
                },
                ensure_ascii=False,
                separators=(",", ":"),
            )
        if _JSON_UNSAFE.search(text) is not None:  # inside strings only: escapes keep it JSON
            text = _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
        return text


_URL = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)"
    r"(?P<userinfo>[^\s/?#'\"@]*@)?"
    r"(?P<host>[^\s/?#'\"]*)"
    r"(?P<rest>[/?#][^\s'\"]*)?"
)
_PATH = re.compile(r"(?<![\w/.:%\-\]])/[^\s'\"]*")


def _redact_url(match: re.Match[str]) -> str:
    userinfo = "***@" if match.group("userinfo") else ""
    rest = "/***" if match.group("rest") else ""
    return f"{match.group('scheme')}{userinfo}{match.group('host')}{rest}"


def redact_paths(text: str) -> str:
    """``text`` with the path and query of every URL and request line replaced by ``/***``
    (and a URL's user info by ``***@``)."""
    if "/" not in text:
        return text
    return _PATH.sub("/***", _URL.sub(_redact_url, text))


_HTTP_LOGGERS = (
    "urllib3",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
    "requests",
)


class RedactURLs(logging.Filter):
    """Replaces URL paths and queries in the records of the ``urllib3`` and ``requests``
    loggers (and their children) by ``/***``; other records pass untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact a urllib3 / requests record in place (always lets it through)."""
        name = record.name
        if name not in ("urllib3", "requests") and not name.startswith(("urllib3.", "requests.")):
            return True
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: keep nothing of what it would have said
            text = str(record.msg)
        record.msg, record.args = redact_paths(text), None
        return True


_REDACT = RedactURLs()
_OWN_HANDLER = "_omnichannel_handler"


def _numeric_level(level: str | int) -> int | None:
    if isinstance(level, int):
        return level
    name = str(level).strip().upper()
    if name.isdigit():
        return int(name)
    value = logging.getLevelName(name)
    return value if isinstance(value, int) else None


def configure_logging(
    level: str | int = "INFO", fmt: LogFormat | str = "text", *, stream: IO[str] | None = None
) -> logging.Handler:
    """Log ``level`` and above to ``stream`` (stderr) in ``fmt`` (``"text"`` or ``"json"``).

    Replaces the root logger's handlers (like ``logging.basicConfig(force=True)``) with one
    that escapes control characters and redacts urllib3's URLs (see the module's docs); the
    redaction is also installed on the ``urllib3`` and ``requests`` loggers themselves, so it
    applies to handlers added later. An unknown level logs a warning and uses ``INFO``.
    Returns the installed handler.

    Raises:
        ValueError: ``fmt`` is neither ``"text"`` nor ``"json"``.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', got {fmt!r}")
    numeric = _numeric_level(level)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter(traceback=(numeric or logging.INFO) <= logging.DEBUG)
    else:
        formatter = TextFormatter()
    handler.setFormatter(formatter)
    handler.addFilter(_REDACT)
    setattr(handler, _OWN_HANDLER, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if getattr(old, _OWN_HANDLER, False):
            old.close()
    root.addHandler(handler)
    root.setLevel(numeric if numeric is not None else logging.INFO)
    for name in _HTTP_LOGGERS:
        logging.getLogger(name).addFilter(_REDACT)
    if numeric is None:
        logging.getLogger("omnichannel").warning("unknown log level %r: using INFO", level)
    return handler
