"""A real Redis for the tests: the ``redis_url`` fixture (import it into a test module).

Order of preference:

1. ``OMNICHANNEL_TEST_REDIS_URL`` (say ``redis://127.0.0.1:6379/15``): that database is flushed
   once, when the first test asks for it.
2. A private ``redis-server`` started from ``PATH`` on a free port of 127.0.0.1 (no persistence,
   files in a temporary directory), shared by every test module of the run and stopped at exit.
3. Otherwise the test is skipped, except under ``CI=true`` where it fails: CI must run them.

Tests using Redis are marked ``@pytest.mark.redis`` and should use their own key prefix
(see :func:`unique_prefix`).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

__all__ = ["redis_url", "unique_prefix"]

_url: str | None = None
_server: subprocess.Popen[bytes] | None = None
_server_dir: str | None = None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Redis is required under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def _ping(url: str, timeout: float) -> str | None:
    """``None`` when ``url`` answers PING within ``timeout``, else the last error."""
    import redis

    end = time.monotonic() + timeout
    error = "no answer"
    while True:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        try:
            client.ping()
            return None
        except redis.RedisError as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            client.close()
        if time.monotonic() >= end:
            return error
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _stop_server() -> None:
    global _server, _server_dir
    if _server is not None:
        _server.terminate()
        try:
            _server.wait(10)
        except subprocess.TimeoutExpired:
            _server.kill()
            _server.wait(10)
        _server = None
    if _server_dir is not None:
        shutil.rmtree(_server_dir, ignore_errors=True)
        _server_dir = None


def _start_server(binary: str) -> str:
    global _server, _server_dir
    _server_dir = tempfile.mkdtemp(prefix="omnichannel-redis-")
    port = _free_port()
    _server = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            _server_dir,
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(_stop_server)
    url = f"redis://127.0.0.1:{port}/0"
    error = _ping(url, timeout=10)
    if error is not None:
        _stop_server()
        pytest.fail(f"the private redis-server did not answer on port {port}: {error}")
    return url


def _session_url() -> str:
    """The Redis URL of this test run (started or flushed on first use)."""
    global _url
    if _url is not None:
        return _url
    try:
        import redis
    except ImportError:
        _unavailable('redis-py is not installed (pip install "omnichannel[redis]")')
        raise  # pragma: no cover - _unavailable raised already
    configured = os.environ.get("OMNICHANNEL_TEST_REDIS_URL")
    if configured:
        error = _ping(configured, timeout=5)
        if error is not None:
            pytest.fail(f"OMNICHANNEL_TEST_REDIS_URL does not answer: {error}", pytrace=False)
        client = redis.Redis.from_url(configured)
        try:
            client.flushdb()
        finally:
            client.close()
        _url = configured
        return _url
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable("no Redis: set OMNICHANNEL_TEST_REDIS_URL or put redis-server on PATH")
    assert binary is not None
    _url = _start_server(binary)
    return _url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A URL of a Redis server reserved for the tests (see the module docstring)."""
    yield _session_url()


def unique_prefix(name: str = "test") -> str:
    """A key prefix no other test uses (``omnichannel-test:{name}:{random}:``)."""
    return f"omnichannel-test:{name}:{uuid.uuid4().hex[:12]}:"
