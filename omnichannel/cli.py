"""The command line: ``omnichannel serve``, ``worker``, ``check``, ``demo``, ``playground`` and
``outbox``.

``serve`` and ``worker`` host the channels of ``--config omnichannel.toml``
(:mod:`omnichannel.config`), or the one omnichannel connector the flags describe. Every flag can
also come from an ``OMNICHANNEL_*`` environment variable (``--channel-url`` ↔
``OMNICHANNEL_CHANNEL_URL``); a flag given on the command line wins. A misconfiguration is one
line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

import attrs

from omnichannel import __version__
from omnichannel.config import Config, Deployment, build, config_from_mapping, load_config
from omnichannel.errors import ConfigurationError
from omnichannel.integrations.server import LocalServer
from omnichannel.logs import configure_logging
from omnichannel.runtime.bot import Bot
from omnichannel.runtime.stores import Store, open_store

__all__ = ["load_bot", "load_object", "main"]

log = logging.getLogger("omnichannel.serve")

DEFAULT_STORE = "sqlite:///omnichannel.db"
# serve's HTTP handler threads: admission is mostly CPU under the GIL, so a few threads with a
# queue as short answer fastest (measured: python -m benchmarks serve); the rest is shed at once,
# as is a webhook that waited longer than _MAX_QUEUE_DELAY seconds for a thread
_HTTP_THREADS = 2
_MAX_QUEUE_DELAY = 0.01


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"OMNICHANNEL_{name}", default)


def load_bot(spec: str) -> Bot:
    """Load a bot from ``module:attribute`` or ``path/to/file.py:attribute``.

    The attribute may be a :class:`Bot` or a callable returning one. The current directory is
    on ``sys.path`` while importing (as for ``flask`` or ``uvicorn``), so ``mybot:bot`` works
    from the bot's directory.
    """
    value = load_object(spec, "--bot", default="bot")
    if not isinstance(value, Bot) and callable(value):
        value = value()
    if not isinstance(value, Bot):
        raise ConfigurationError(f"--bot: {spec} is not an omnichannel.Bot")
    return value


def load_object(spec: str, what: str, *, default: str | None = None) -> Any:
    """The attribute named by ``module:attribute`` or ``path/to/file.py:attribute``.

    Raises:
        ConfigurationError: one line naming ``what`` when the module or attribute is missing.
    """
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or (default or "")
    if not module_name or not attribute:
        raise ConfigurationError(f"{what}: expected module:attribute, got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ConfigurationError(f"{what}: no such file {module_name}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigurationError(f"{what}: cannot load {module_name}")
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise ConfigurationError(
                f"{what}: {module_name} raised {type(exc).__name__} while loading: {exc}"
            ) from exc
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigurationError(f"{what}: cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(f"{what}: {module_name} has no attribute {attribute!r}") from None


# serve and worker -----------------------------------------------------------------------------
def _number(kind: type[Any], flag: str, minimum: float | None = None) -> Any:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} expects a number, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"{flag} must be {minimum} or more, got {text}")
        return value

    return convert


def _env_number(name: str, kind: type[Any], flag: str, minimum: float | None = None) -> Any:
    text = _env(name)
    if text is None:
        return None
    try:
        return _number(kind, flag, minimum)(text)
    except argparse.ArgumentTypeError as exc:
        raise ConfigurationError(f"OMNICHANNEL_{name}: {exc}") from None


def _add_channel_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        default=_env("CONFIG"),
        help="an omnichannel.toml hosting any set of channels (OMNICHANNEL_CONFIG); the flags "
        "below override its values",
    )
    p.add_argument(
        "--token", default=_env("TOKEN"), help="the {token} of the webhook URL (OMNICHANNEL_TOKEN)"
    )
    p.add_argument(
        "--channel-url",
        default=_env("CHANNEL_URL"),
        help="the channel server's webhook URL (OMNICHANNEL_CHANNEL_URL)",
    )
    p.add_argument(
        "--channel-token",
        default=_env("CHANNEL_TOKEN"),
        help="sent as 'Authorization: Token …' (OMNICHANNEL_CHANNEL_TOKEN)",
    )
    p.add_argument(
        "--bot",
        default=_env("BOT"),
        help="module:attribute of a Bot (default: echo) (OMNICHANNEL_BOT)",
    )
    p.add_argument(
        "--store",
        default=_env("STORE"),
        help="memory://, sqlite:///path.db or redis://host:port/0 "
        f"(OMNICHANNEL_STORE; default {DEFAULT_STORE})",
    )
    p.add_argument(
        "--workers",
        type=_number(int, "--workers", 1),
        default=_env_number("WORKERS", int, "--workers", 1),
        help="turns run at once (OMNICHANNEL_WORKERS; default 8)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=_number(float, "--shutdown-timeout", 0),
        default=_env_number("SHUTDOWN_TIMEOUT", float, "--shutdown-timeout", 0),
        help="seconds to finish running turns and due replies on SIGTERM (default 30)",
    )
    p.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (OMNICHANNEL_LOG_LEVEL; default INFO)",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=_env("LOG_FORMAT", "text"),
        help="text, or json: one JSON object per line (OMNICHANNEL_LOG_FORMAT; default text)",
    )


def _add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve the channels' webhooks (and run the bot)")
    p.add_argument("--host", default=_env("HOST"), help="bind address (OMNICHANNEL_HOST)")
    p.add_argument(
        "--port",
        type=_number(int, "--port", 0),
        default=_env_number("PORT", int, "--port", 0),
        help="port (OMNICHANNEL_PORT; default 8080)",
    )
    p.add_argument(
        "--http-threads",
        type=_number(int, "--http-threads", 1),
        default=_env_number("HTTP_THREADS", int, "--http-threads", 1),
        help="threads storing webhooks (OMNICHANNEL_HTTP_THREADS; default 2: admission is CPU "
        "work under the GIL; more help a store far away over the network)",
    )
    p.add_argument(
        "--max-pending",
        type=_number(int, "--max-pending", 0),
        default=_env_number("MAX_PENDING", int, "--max-pending", 0),
        help="turns waiting in the inbox above which the webhook answers 503 + Retry-After "
        "(OMNICHANNEL_MAX_PENDING; default 10000)",
    )
    p.add_argument(
        "--max-ack-delay",
        type=_number(float, "--max-ack-delay", 0),
        default=_env_number("MAX_ACK_DELAY", float, "--max-ack-delay", 0),
        help="seconds an acknowledgement may wait while the bot is behind (0: never) "
        "(OMNICHANNEL_MAX_ACK_DELAY; default 0: off)",
    )
    p.add_argument(
        "--front-end",
        action="store_true",
        default=(_env("FRONT_END", "") or "").lower() in ("1", "true", "yes"),
        help="only store turns; 'omnichannel worker' processes run them (OMNICHANNEL_FRONT_END)",
    )
    _add_channel_options(p)
    p.set_defaults(func=_serve)


def _add_worker(sub: Any) -> None:
    p = sub.add_parser("worker", help="run the bot on turns stored by 'serve' front-ends (no HTTP)")
    _add_channel_options(p)
    p.set_defaults(func=_worker, front_end=False, max_pending=None, max_ack_delay=None)


def _add_check(sub: Any) -> None:
    p = sub.add_parser("check", help="validate a configuration without serving")
    _add_channel_options(p)
    p.set_defaults(func=_check, front_end=True, max_pending=None, max_ack_delay=None)


def _config(args: argparse.Namespace, command: str) -> Config | None:
    """The configuration: the file's (when ``--config``), with the flags over it."""
    runtime: dict[str, Any] = {}
    for key in ("workers", "max_pending", "max_ack_delay", "shutdown_timeout"):
        if getattr(args, key, None) is not None:
            runtime[key] = getattr(args, key)
    if args.config:
        config = load_config(args.config)
        given = [  # flags given on the command line (their OMNICHANNEL_* variables may be
            # what the file substitutes: those are not flags)
            value
            for value, name in (
                (args.token, "TOKEN"),
                (args.channel_url, "CHANNEL_URL"),
                (args.channel_token, "CHANNEL_TOKEN"),
            )
            if value and value != _env(name)
        ]
        if given:
            raise ConfigurationError(
                f"{args.config}: give the omnichannel channel in the file, not with --token / "
                "--channel-url / --channel-token"
            )
        return attrs.evolve(
            config,
            bot=args.bot or config.bot,
            store=args.store or config.store,
            runtime={**config.runtime, **runtime},
        )
    missing = [
        flag
        for flag, value in (("--token", args.token), ("--channel-url", args.channel_url))
        if not value
    ]
    if missing:
        print(
            f"omnichannel {command}: missing {' and '.join(missing)} (or OMNICHANNEL_* variables, "
            "or --config omnichannel.toml)",
            file=sys.stderr,
        )
        return None
    channel = {"kind": "omnichannel", "token": args.token, "channel_url": args.channel_url}
    if args.channel_token:
        channel["channel_token"] = args.channel_token
    data: dict[str, Any] = {
        "store": args.store or DEFAULT_STORE,
        "runtime": runtime,
        "channel": [channel],
    }
    if args.bot:
        data["bot"] = args.bot
    return config_from_mapping(data, source="the command line", environ={})


def _deployment(args: argparse.Namespace, command: str) -> Deployment | None:
    config = _config(args, command)
    if config is None:
        return None
    deployment = build(config, load_bot=load_bot, background=not args.front_end)
    _warn_without_persistence(deployment.runtime.store)
    return deployment


def _warn_without_persistence(store: Store) -> None:
    check = getattr(store, "has_persistence", None)
    if check is None:
        return
    try:
        persistent = bool(check())
    except Exception as exc:
        log.warning("could not read the Redis persistence settings: %s", type(exc).__name__)
        return
    if not persistent:
        log.warning(
            "Redis has no persistence (neither AOF nor RDB): a Redis restart loses the inbox "
            "and the outbox; enable appendonly (see docs/deployment.md)"
        )


def _on_stop_signals(stop: threading.Event, also: Any = None) -> None:
    def on_signal(signum: int, _frame: Any) -> None:
        if not stop.is_set():
            stop.set()
            log.info("received %s: finishing running turns", signal.Signals(signum).name)
            if also is not None:
                threading.Thread(target=also, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _shutdown_timeout(deployment: Deployment) -> float:
    return float(deployment.config.runtime.get("shutdown_timeout", 30.0))


def _stop(deployment: Deployment) -> int:
    runtime = deployment.runtime
    drained = runtime.close(timeout=_shutdown_timeout(deployment))
    log.info(
        "stopped (%s)",
        "all turns answered and replies delivered"
        if drained
        else "what is left resumes at the next start",
    )
    if runtime.turns.inflight:
        # a turn still running past the timeout: its lease makes it run again after restart;
        # don't let its thread hold the process (the pool's threads are joined at exit)
        logging.shutdown()
        os._exit(0)
    return 0


def _serve(args: argparse.Namespace) -> int:
    deployment = _deployment(args, "serve")
    if deployment is None:
        return 2
    server_options = deployment.config.server
    host = args.host or server_options.get("host", "127.0.0.1")
    port = args.port if args.port is not None else server_options.get("port", 8080)
    threads = args.http_threads or server_options.get("threads", _HTTP_THREADS)
    runtime = deployment.runtime
    try:
        server = LocalServer(
            deployment.router,
            host=host,
            port=port,
            threads=threads,
            max_queue_delay=_MAX_QUEUE_DELAY,
        )
    except OSError as exc:
        runtime.close(0)
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    stop = threading.Event()
    _on_stop_signals(stop, server.shutdown)
    runtime.start()
    for line in deployment.describe():
        log.info("channel %s", line)
    log.info(
        "serving on http://%s:%d (store %s; %d turn(s) and %d reply(ies) resumed)%s",
        host,
        server.port,
        deployment.config.store.split("://", 1)[0],
        runtime.store.pending("inbox"),
        runtime.store.pending("outbox"),
        "; front-end only: 'omnichannel worker' runs the bot" if args.front_end else "",
    )
    try:
        server.serve_forever()
    finally:
        server.stop()
    return _stop(deployment)


def _worker(args: argparse.Namespace) -> int:
    deployment = _deployment(args, "worker")
    if deployment is None:
        return 2
    stop = threading.Event()
    _on_stop_signals(stop)
    runtime = deployment.runtime
    runtime.start()
    for line in deployment.describe():
        log.info("channel %s", line)
    log.info(
        "worker running %d bot thread(s) on store %s (%d turn(s) waiting)",
        deployment.config.runtime.get("workers", 8),
        deployment.config.store.split("://", 1)[0],
        runtime.store.pending("inbox"),
    )
    stop.wait()
    return _stop(deployment)


def _check(args: argparse.Namespace) -> int:
    deployment = _deployment(args, "check")
    if deployment is None:
        return 2
    try:
        for line in deployment.describe():
            print(line)
        print(f"ok: {len(deployment.channels)} channel(s), store {deployment.config.store}")
    finally:
        deployment.runtime.store.close()
    return 0


# demo -----------------------------------------------------------------------------------------
def _add_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the echo bot against a simulated channel server and print the conversation",
    )
    p.add_argument(
        "--store",
        default=None,
        help="store URL (default: a fresh SQLite file in a temporary directory)",
    )
    p.add_argument("--log-level", default="WARNING")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from omnichannel.demo import run_demo

    return run_demo(args.store)


# playground -----------------------------------------------------------------------------------
def _add_playground(sub: Any) -> None:
    p = sub.add_parser(
        "playground",
        help="chat with your bot in a browser against fake platforms and see the wire "
        "(127.0.0.1 only)",
    )
    p.add_argument(
        "--bot",
        default=_env("BOT"),
        help="module:attribute of a Bot (default: echo) (OMNICHANNEL_BOT)",
    )
    p.add_argument(
        "--config",
        default=_env("CONFIG"),
        help="an omnichannel.toml: its channels, pointed at fake platforms (OMNICHANNEL_CONFIG)",
    )
    p.add_argument(
        "--store",
        default=None,
        help="store URL (default: a fresh SQLite file in a temporary directory)",
    )
    p.add_argument(
        "--port",
        type=_number(int, "--port", 0),
        default=None,
        help="the page's port on 127.0.0.1 (default 8765, or a free one when it is taken)",
    )
    p.add_argument("--open", action="store_true", help="open the page in the web browser")
    p.add_argument("--log-level", default="WARNING")
    p.set_defaults(func=_playground)


def _playground(args: argparse.Namespace) -> int:
    from omnichannel.playground import run_playground

    return run_playground(
        bot=args.bot,
        config=args.config,
        store=args.store,
        port=args.port,
        open_browser=args.open,
    )


# outbox ---------------------------------------------------------------------------------------
def _add_outbox(sub: Any) -> None:
    p = sub.add_parser("outbox", help="list, retry or drop dead-lettered replies")
    p.add_argument(
        "--store",
        default=_env("STORE", DEFAULT_STORE),
        help="the store serve uses (OMNICHANNEL_STORE)",
    )
    ops = p.add_subparsers(dest="op", required=True, parser_class=_Parser)
    ls = ops.add_parser("list", help="list dead letters (and the number of pending replies)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    retry = ops.add_parser("retry", help="send dead letters again")
    retry.add_argument("ids", nargs="*", help="item ids (see list)")
    retry.add_argument("--all", action="store_true", help="every dead letter")
    drop = ops.add_parser("drop", help="delete dead letters for good")
    drop.add_argument("ids", nargs="*")
    drop.add_argument("--all", action="store_true")
    for op in (ls, retry, drop):  # `outbox list --store X` as well as `outbox --store X list`
        op.add_argument("--store", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.set_defaults(func=_outbox)


def _outbox(args: argparse.Namespace) -> int:
    store: Store = open_store(args.store)
    try:
        dead = store.dead_letters()
        if args.op == "list":
            if args.json:
                for item in dead:
                    print(
                        json.dumps(
                            {
                                "id": item.id,
                                "destination": item.destination,
                                "chat": item.chat_key,
                                "attempts": item.attempts,
                                "error": item.last_error,
                                "created_at": item.created_at,
                                "payload": item.payload,
                            },
                            ensure_ascii=False,
                        )
                    )
                return 0
            print(
                f"{store.pending('inbox')} turns waiting, {store.pending('outbox')} replies "
                f"pending, {len(dead)} dead"
            )
            for item in dead:
                when = datetime.fromtimestamp(item.created_at, timezone.utc).strftime(
                    "%Y-%m-%d %H:%M:%SZ"
                )
                print(
                    f"{item.id}  {when}  {item.destination}  {item.chat_key}  "
                    f"attempts={item.attempts}  error={item.last_error}"
                )
            return 0
        ids = [i.id for i in dead] if args.all else list(args.ids)
        if not ids:
            print(f"outbox {args.op}: give item ids or --all", file=sys.stderr)
            return 2
        action = store.dead_letter_retry if args.op == "retry" else store.dead_letter_drop
        failed = [i for i in ids if not action(i)]
        done = len(ids) - len(failed)
        print(f"{'queued for retry' if args.op == 'retry' else 'dropped'}: {done}")
        for item_id in failed:
            print(f"no dead letter {item_id}", file=sys.stderr)
        return 1 if failed else 0
    finally:
        store.close()


# main -----------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``omnichannel serve: error: …``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``omnichannel`` command."""
    parser = _Parser(prog="omnichannel", description="Connect a bot to channels.")
    parser.add_argument("--version", action="version", version=f"omnichannel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_serve(sub)
    _add_worker(sub)
    _add_check(sub)
    _add_demo(sub)
    _add_outbox(sub)
    _add_playground(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(getattr(args, "log_level", "INFO"), getattr(args, "log_format", "text"))
    try:
        return int(args.func(args))
    except ConfigurationError as exc:
        print(f"omnichannel: {exc}", file=sys.stderr)
        return 2
