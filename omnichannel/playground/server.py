"""The playground's page server: the static page, ``/events`` (server-sent events) and the
page's actions, on 127.0.0.1 only.

A small server of its own (the standard library's threaded HTTP server): an ``/events``
stream holds its connection open and writes each event the moment it is published, which the
SDK's :class:`~omnichannel.integrations.server.LocalServer` (one response per request) is not
made for. Requests must name this server in ``Host`` (127.0.0.1 or localhost: no DNS
rebinding), and the actions want an ``X-Playground`` header, which a page of another origin
cannot send without a preflight this server never grants.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from omnichannel.errors import ConfigurationError

if TYPE_CHECKING:
    from omnichannel.playground.app import Playground

__all__ = ["STATIC_FILES", "PageServer"]

log = logging.getLogger(__name__)

STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
"""The page's files (shipped in the wheel under ``omnichannel/playground/static/``)."""

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEARTBEAT = 15.0


def static_file(name: str) -> bytes:
    """One of :data:`STATIC_FILES`, read from the installed package."""
    return resources.files("omnichannel.playground").joinpath("static").joinpath(name).read_bytes()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: Playground

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return
        log.error("playground: error while serving a request", exc_info=error)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "omnichannel-playground"
    sys_version = ""
    disable_nagle_algorithm = True  # each event leaves at once

    def log_message(self, format: str, *args: object) -> None:
        """No access log."""

    # answers --------------------------------------------------------------------------------
    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload, ensure_ascii=False, default=str).encode()
        self._send(status, body, "application/json; charset=utf-8")

    def _host_ok(self) -> bool:
        port = self.server.server_address[1]
        return self.headers.get("Host", "") in (f"127.0.0.1:{port}", f"localhost:{port}")

    # GET ------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        if not self._host_ok():
            self._json(421, {"error": "this server answers only as 127.0.0.1 or localhost"})
            return
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send(200, static_file("index.html"), STATIC_FILES["index.html"])
        elif path.startswith("/static/") and path[8:] in STATIC_FILES:
            self._send(200, static_file(path[8:]), STATIC_FILES[path[8:]])
        elif path == "/events":
            self._events()
        elif path == "/api/snapshot":
            self._json(200, self.server.app.snapshot())
        elif path.startswith("/files/"):
            parts = path.split("/")
            upload = self.server.app.uploaded(parts[2]) if len(parts) >= 3 else None
            if upload is None:
                self._json(404, {"error": "no such file"})
            else:
                name = unquote(upload.name).replace('"', "")
                self._send(
                    200,
                    upload.data,
                    upload.content_type,
                    {"Content-Disposition": f'inline; filename="{name}"'},
                )
        elif path == "/healthz":
            self._json(200, {"status": "ok"})
        else:
            self._json(404, {"error": "not found"})

    do_HEAD = do_GET

    def _events(self) -> None:
        app = self.server.app
        with app._lock:  # the snapshot and the events after it: no gap, no overlap
            subscriber = app.hub.subscribe()
            first = app.hub.encode("snapshot", app.snapshot())
        self.close_connection = True  # the stream ends when the connection does
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"retry: 1000\n\n" + first)
            self.wfile.flush()
            while True:
                try:
                    event = subscriber.get(timeout=_HEARTBEAT)
                except queue.Empty:
                    event = b": keep-alive\n\n"
                if event is None:
                    return
                self.wfile.write(event)
                self.wfile.flush()
        except (ConnectionError, OSError):
            return
        finally:
            app.hub.unsubscribe(subscriber)

    # POST -----------------------------------------------------------------------------------
    def do_POST(self) -> None:
        if not self._host_ok():
            self._json(421, {"error": "this server answers only as 127.0.0.1 or localhost"})
            return
        if self.headers.get("X-Playground") != "1":
            self._json(403, {"error": "the page's actions carry an X-Playground header"})
            return
        parts = urlsplit(self.path)
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        from omnichannel.playground.app import MAX_UPLOAD

        if length < 0 or length > MAX_UPLOAD:
            self.close_connection = True
            self._json(413, {"error": f"at most {MAX_UPLOAD} bytes"})
            return
        body = self.rfile.read(length) if length else b""
        app = self.server.app
        try:
            if parts.path == "/api/file":
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                answer = app.upload(
                    query.get("channel", ""),
                    query.get("name", "file"),
                    self.headers.get("Content-Type", ""),
                    query.get("state", "ready"),
                    body,
                )
            elif parts.path.startswith("/api/"):
                data = json.loads(body or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("expected a JSON object")
                answer = app.act(parts.path[5:], data)
            else:
                self._json(404, {"error": "not found"})
                return
        except (ValueError, KeyError) as exc:
            self._json(400, {"error": str(exc)})
            return
        except Exception as exc:
            log.exception("playground: %s failed", parts.path)
            self._json(500, {"error": f"{type(exc).__name__}: {exc}"})
            return
        self._json(200, answer)


class PageServer:
    """Serve the page of ``app`` on 127.0.0.1 (``port`` 0: any free one)."""

    def __init__(self, app: Playground, port: int = 0) -> None:
        from omnichannel.playground.app import HOST

        for name in STATIC_FILES:  # a broken install says so now, not in the browser
            try:
                static_file(name)
            except OSError as exc:
                raise ConfigurationError(
                    f"the playground's page is missing from the installation ({name}: {exc})"
                ) from None
        self._server = _Server((HOST, port), _Handler)
        self._server.app = app
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The page's address."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="playground-page",
                daemon=True,
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop serving (open event streams end)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()
