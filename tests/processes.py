"""Real ``omnichannel serve`` / ``omnichannel worker`` processes for the durability tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from omnichannel.runtime.stores import Store, open_store
from tests.helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "durability-token"
WEBHOOK = f"/connector/omnichannel/omnichannel_message/{TOKEN}/bot_api_webhook"


class Process:
    """One ``omnichannel serve`` (or ``worker``) process, its log in a file."""

    def __init__(
        self,
        store: str,
        channel_url: str,
        *extra: str,
        command: str = "serve",
        env: dict[str, str] | None = None,
        preexec: Any = None,
    ) -> None:
        self.command = command
        self.port = free_port() if command == "serve" else 0
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by kill()
        args = [sys.executable, "-m", "omnichannel", command]
        if command == "serve":
            args += ["--port", str(self.port)]
        args += ["--token", TOKEN, "--channel-url", channel_url, "--store", store, *extra]
        base = {k: v for k, v in os.environ.items() if not k.startswith("OMNICHANNEL_TEST_")}
        base = {k: v for k, v in base.items() if not k.startswith("OMNICHANNEL_")}
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**base, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=self._log,  # a file, not a pipe: a full pipe would block the server
            preexec_fn=preexec,
        )
        self.session = requests.Session()
        self.session.trust_env = False
        if command == "serve":
            started = wait_until(lambda: self._healthy() or self.process.poll() is not None, 20)
        else:
            started = wait_until(
                lambda: "worker running" in self.log() or self.process.poll() is not None, 20
            )
        if not started or self.process.poll() is not None:
            log = self.log()
            self.kill()
            pytest.fail(f"{command} did not start: {log}")

    def _healthy(self) -> bool:
        try:
            return self.session.get(self.url + "/healthz", timeout=0.5).status_code == 200
        except requests.RequestException:
            return False

    def post(self, payload: object, timeout: float = 10) -> requests.Response:
        return self.session.post(self.url + WEBHOOK, json=payload, timeout=timeout)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM; return the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.session.close()
        if not self._log.closed:
            self._log.close()

    def log(self) -> str:
        if self._log.closed:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")


@contextmanager
def running(store: str, channel_url: str, *extra: str, **options: Any) -> Iterator[Process]:
    process = Process(store, channel_url, *extra, **options)
    try:
        yield process
    finally:
        process.kill()


@contextmanager
def opened(url: str) -> Iterator[Store]:
    """A store opened on ``url`` for the length of the block."""
    store = open_store(url)
    try:
        yield store
    finally:
        store.close()


def bot_env(delay: float = 0.0, marks: Path | None = None) -> dict[str, str]:
    env = {"OMNICHANNEL_TEST_BOT_DELAY": str(delay)}
    if marks is not None:
        env["OMNICHANNEL_TEST_BOT_MARKS"] = str(marks)
    return env


BOT: Sequence[str] = ("--bot", "tests/bots.py:bot")
