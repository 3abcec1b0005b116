"""``omnichannel playground``: chat with your bot in a browser and see the wire.

The real pipeline (webhooks, the durable inbox and outbox, the bot's workers) runs with fake
platforms on 127.0.0.1; a local page (static files shipped in the package: no CDN, no build
step, no network) plays the visitor on each channel and shows, for each turn, the webhook and
its answer, the bot's outbound calls with their retries and timings, the channel variables,
``turn.state`` and the history, and the inbox and outbox with their pending and dead items.
It is a development tool: ``omnichannel serve`` never starts it.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import webbrowser
from typing import Any, TextIO

from omnichannel.playground.app import HOST, Playground

__all__ = ["DEFAULT_PORT", "HOST", "Playground", "run_playground"]

DEFAULT_PORT = 8765
"""The page's port when none is given (another free one when it is taken)."""


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def run_playground(
    *,
    bot: str | None = None,
    config: str | None = None,
    store: str | None = None,
    port: int | None = None,
    open_browser: bool = False,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run the playground until Ctrl-C or SIGTERM (or ``stop`` is set); return 0.

    ``port`` ``None`` means :data:`DEFAULT_PORT`, or any free port when it is taken.

    Raises:
        ConfigurationError: a bot, file or store that cannot be loaded, a port in use.
    """
    out = out or sys.stdout
    if port is None:
        port = DEFAULT_PORT if _free(DEFAULT_PORT) else 0
    playground = Playground(bot=bot, config=config, store=store, port=port)
    stop = stop or threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    playground.start()
    try:
        info = playground.info()
        print(f"omnichannel playground: {playground.url}/", file=out)
        print(f"  bound to {HOST} only (this machine); Ctrl-C stops it", file=out)
        print(f"  bot    {info['bot']}", file=out)
        print(f"  store  {info['store']}", file=out)
        for player in playground.players:
            fakes = ", ".join(f"fake {what} at {fake.url}" for what, fake in player.fakes())
            print(f"  {player.kind} {player.name!r}: {fakes}", file=out)
        for note in playground.notes:
            print(f"  note: {note}", file=out)
        out.flush()
        if open_browser:
            webbrowser.open(f"{playground.url}/")
        stop.wait()
    finally:
        playground.stop()
        for number, handler in previous.items():
            signal.signal(number, handler)
    print("omnichannel playground: stopped", file=out)
    return 0
