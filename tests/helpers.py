"""Shared test helpers: serve a handler over real HTTP on 127.0.0.1, free ports, waiting."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from omnichannel.integrations.server import LocalServer


@contextmanager
def serve_handler(handler: Any) -> Iterator[str]:
    """Serve anything with ``handle(Request)`` over real HTTP on 127.0.0.1; yield its base URL."""
    with LocalServer(handler) as server:
        yield server.url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02
) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
