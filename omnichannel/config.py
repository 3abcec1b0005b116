"""``omnichannel.toml``: any set of channels in one process, with one bot and one store.

::

    bot = "mybot:bot"                  # module:attribute or path/to/file.py:attribute
    store = "sqlite:///omnichannel.db"

    [server]                           # serve only
    host = "0.0.0.0"
    port = 8080
    threads = 2                        # webhooks stored at once (the rest is shed)

    [runtime]                          # see omnichannel.Runtime
    workers = 8

    [[channel]]
    kind = "omnichannel"
    token = "${OMNICHANNEL_TOKEN}"     # secrets come from the environment
    channel_url = "${CHANNEL_URL}"

    [[channel]]
    kind = "webex"
    webhook_url = "${WEBEX_WEBHOOK_URL}"
    verification_token = "${WEBEX_VERIFICATION_TOKEN}"

:func:`load_config` reads and checks a file (unknown keys, missing values and unset variables
are one-line :class:`~omnichannel.errors.ConfigurationError` s naming the key and the file);
:func:`build` makes the runtime and the channels; :class:`Router` serves them all on one
HTTP server, each at its own webhook path.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from omnichannel.errors import ConfigurationError
from omnichannel.runtime.bot import Bot
from omnichannel.runtime.http import Request, Response
from omnichannel.runtime.pipeline import Runtime, WebhookChannel

__all__ = ["KINDS", "Config", "Deployment", "Router", "build", "load_config"]

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

_RUNTIME_KEYS = {
    "workers": int,
    "max_pending": int,
    "max_ack_delay": float,
    "retry_after": int,
    "turn_lease": float,
    "max_turn_attempts": int,
    "dedupe_ttl": float,
    "outbox_workers": int,
    "outbox_deadline": float,
    "shutdown_timeout": float,
}
_SERVER_KEYS = {"host": str, "port": int, "threads": int}

# kind -> (required keys, optional keys); "secret" keys are masked when printed
KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "omnichannel": (
        ("token", "channel_url"),
        ("channel_token", "name", "malformed_status", "handover_text", "files_require_state"),
    ),
    "omnidesk": (
        ("base_url", "staff_email", "api_key", "secret"),
        ("name", "staff_id", "bot_label", "keyboard_footer", "max_message_length"),
    ),
    "omnidesk-custom": (
        ("base_url", "staff_email", "api_key", "channel", "secret"),
        ("name", "include_notes", "subject", "bridge", "handover_text"),
    ),
    "webex": (
        ("webhook_url", "verification_token"),
        ("name", "service_key", "access_token", "secret", "path", "handover_text"),
    ),
    "pagemessenger": (
        ("api_key", "task_id", "secret", "channel"),
        ("name", "base_url", "handover_text"),
    ),
    "channel-server": (
        ("on_reply",),
        ("name", "token", "secret", "path", "on_close", "on_redirect", "dedupe_window"),
    ),
}
_SECRET_KEYS = ("token", "secret", "api_key", "verification_token", "access_token")


@attrs.frozen
class Config:
    """A checked configuration: where it came from, and its values (variables substituted)."""

    source: str
    bot: str | None
    store: str
    server: Mapping[str, Any]
    runtime: Mapping[str, Any]
    channels: tuple[Mapping[str, Any], ...]


def _fail(source: str, where: str, problem: str) -> ConfigurationError:
    return ConfigurationError(f"{source}: {where}: {problem}" if where else f"{source}: {problem}")


def _substitute(value: Any, source: str, where: str, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def variable(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group(1)
            found = environ.get(name)
            if found is None or found == "":
                raise _fail(source, where, f"the environment variable {name} is not set")
            return found

        return _VARIABLE.sub(variable, value)
    if isinstance(value, list):
        return [_substitute(v, source, f"{where}[{i}]", environ) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {
            k: _substitute(v, source, f"{where}.{k}" if where else k, environ)
            for k, v in value.items()
        }
    return value


def _typed(
    table: Mapping[str, Any], types: Mapping[str, type], source: str, where: str
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        wanted = types.get(key)
        if wanted is None:
            raise _fail(source, f"{where}.{key}", f"unknown key (known: {', '.join(types)})")
        if wanted is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise _fail(source, f"{where}.{key}", f"expected {wanted.__name__}, got {value!r}")
        out[key] = value
    return out


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Read and check ``path`` (TOML); ``${NAME}`` in a string is the environment variable.

    Raises:
        ConfigurationError: the file is missing or not TOML, a key is unknown or missing, a value
            has the wrong type, or a variable is not set (one line naming the key and the file).
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

    source = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigurationError(f"{source}: no such file") from None
    except OSError as exc:
        raise ConfigurationError(f"{source}: cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{source}: not valid TOML: {exc}") from None
    return config_from_mapping(data, source=source, environ=environ)


def config_from_mapping(
    data: Mapping[str, Any], *, source: str = "config", environ: Mapping[str, str] | None = None
) -> Config:
    """Check a configuration given as a mapping (what :func:`load_config` reads)."""
    env = os.environ if environ is None else environ
    known = {"bot", "store", "server", "runtime", "channel"}
    for key in data:
        if key not in known:
            raise _fail(source, key, f"unknown key (known: {', '.join(sorted(known))})")
    data = _substitute(dict(data), source, "", env)
    bot = data.get("bot")
    if bot is not None and not isinstance(bot, str):
        raise _fail(source, "bot", "expected 'module:attribute'")
    store = data.get("store", "sqlite:///omnichannel.db")
    if not isinstance(store, str):
        raise _fail(source, "store", "expected a store URL")
    server = _typed(data.get("server", {}), _SERVER_KEYS, source, "server")
    if server.get("threads", 1) < 1:
        raise _fail(source, "server.threads", f"must be 1 or more, got {server['threads']}")
    runtime = _typed(data.get("runtime", {}), _RUNTIME_KEYS, source, "runtime")
    raw_channels = data.get("channel", [])
    if not isinstance(raw_channels, list) or not raw_channels:
        raise _fail(source, "channel", "give at least one [[channel]] table")
    channels = []
    names: set[str] = set()
    for index, channel in enumerate(raw_channels):
        where = f"channel[{index}]"
        if not isinstance(channel, dict):
            raise _fail(source, where, "expected a table")
        kind = channel.get("kind")
        if kind not in KINDS:
            raise _fail(
                source, f"{where}.kind", f"expected one of {', '.join(KINDS)}, got {kind!r}"
            )
        required, optional = KINDS[kind]
        for key in channel:
            if key != "kind" and key not in required and key not in optional:
                raise _fail(source, f"{where}.{key}", f"unknown key for a {kind} channel")
        for key in required:
            if channel.get(key) in (None, ""):
                raise _fail(source, f"{where}.{key}", "required")
        name = str(channel.get("name") or kind)
        if name in names:
            raise _fail(source, f"{where}.name", f"two channels are named {name!r}; name them")
        names.add(name)
        channels.append({**channel, "name": name})
    return Config(source, bot, store, server, runtime, tuple(channels))


@attrs.define
class Deployment:
    """What :func:`build` made: the runtime, the bot, the channels and the router serving them."""

    config: Config
    runtime: Runtime
    bot: Bot
    channels: list[WebhookChannel]
    router: Router

    def describe(self) -> list[str]:
        """One line per channel: its kind, name and webhook path, secrets masked."""
        lines = []
        for spec, channel in zip(self.config.channels, self.channels, strict=True):
            secrets = {spec.get(key) for key in _SECRET_KEYS} - {None, ""}
            segments = str(getattr(channel, "webhook_path", "") or "").split("/")
            path = "/".join("***" if part in secrets else part for part in segments)
            lines.append(f"{spec['kind']} {spec['name']!r} at {path}")
        return lines


def build(
    config: Config,
    *,
    load_bot: Callable[[str], Bot],
    background: bool = True,
) -> Deployment:
    """Make the runtime and every channel of ``config`` (nothing is started).

    ``load_bot(spec)`` loads ``module:attribute`` (the bot, and a channel server's handlers).
    """
    bot = load_bot(config.bot) if config.bot else Bot()
    options = {k: v for k, v in config.runtime.items() if k != "shutdown_timeout"}
    try:
        runtime = Runtime(store=config.store, background=background, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{config.source}: runtime: {exc}") from None
    channels: list[WebhookChannel] = []
    by_name: dict[str, Any] = {}
    later: list[tuple[Mapping[str, Any], int]] = []
    for index, spec in enumerate(config.channels):
        if spec["kind"] == "pagemessenger":
            later.append((spec, index))  # needs the channel it bridges
            channels.append(None)  # type: ignore[arg-type]
            continue
        made = _make(spec, bot, runtime, config.source, index, load_bot)
        channels[len(channels) :] = [made]
        by_name[spec["name"]] = made
    for spec, index in later:
        made = _page_messenger(spec, runtime, by_name, config.source, index)
        channels[index] = made
    for index, spec in enumerate(config.channels):
        if spec["kind"] == "omnidesk-custom" and spec.get("bridge"):
            _bridge(spec, channels[index], bot, by_name, config.source, index)
    return Deployment(config, runtime, bot, channels, Router(channels, runtime))


def _make(
    spec: Mapping[str, Any],
    bot: Bot,
    runtime: Runtime,
    source: str,
    index: int,
    load: Callable[[str], Any],
) -> Any:
    kind, name = spec["kind"], spec["name"]
    take = {k: v for k, v in spec.items() if k not in ("kind", "name")}
    try:
        if kind == "channel-server":
            from omnichannel.channel_server import ChannelServer
            from omnichannel.cli import load_object

            for key in ("on_reply", "on_close", "on_redirect"):
                if key in take:
                    take[key] = load_object(str(take[key]), f"channel[{index}].{key}")
            take.setdefault("path", "/channel")
            return ChannelServer(runtime=runtime, name=name, **take)
        if kind == "omnichannel":
            from omnichannel.channels.omnichannel import Connector

            return Connector(bot, runtime=runtime, name=name, **take)
        if kind == "omnidesk":
            from omnichannel.channels.omnidesk import OmnideskChannel

            client = _omnidesk_client(take)
            return OmnideskChannel(bot, client=client, runtime=runtime, name=name, **take)
        if kind == "omnidesk-custom":
            from omnichannel.channels.omnidesk import CustomChannel

            client = _omnidesk_client(take)
            take.pop("bridge", None)
            take.pop("handover_text", None)
            return CustomChannel(client, take.pop("channel"), runtime=runtime, name=name, **take)
        if kind == "webex":
            from omnichannel.channels.webex import WebexConnectBot

            return WebexConnectBot(
                bot,
                take.pop("webhook_url"),
                take.pop("verification_token"),
                take.pop("service_key", None),
                runtime=runtime,
                name=name,
                **take,
            )
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{source}: channel[{index}] ({kind}): {exc}") from None
    raise ConfigurationError(f"{source}: channel[{index}]: unknown kind {kind!r}")


def _omnidesk_client(take: dict[str, Any]) -> Any:
    from omnichannel.channels.omnidesk import OmnideskClient

    return OmnideskClient(take.pop("base_url"), take.pop("staff_email"), take.pop("api_key"))


def _page_messenger(
    spec: Mapping[str, Any], runtime: Runtime, by_name: Mapping[str, Any], source: str, index: int
) -> Any:
    from omnichannel.channels.pagemessenger import PageMessengerBridge, PageMessengerClient

    visitor = by_name.get(spec["channel"])
    if visitor is None:
        raise ConfigurationError(
            f"{source}: channel[{index}].channel: no channel named {spec['channel']!r} to bridge"
        )
    options: dict[str, Any] = {}
    if spec.get("base_url"):
        options["base_url"] = spec["base_url"]
    client = PageMessengerClient(api_key=spec["api_key"], **options)
    extra = {"handover_text": spec["handover_text"]} if "handover_text" in spec else {}
    bridge = PageMessengerBridge(
        client,
        str(spec["task_id"]),
        visitor,
        secret=spec["secret"],
        runtime=runtime,
        name=spec["name"],
        **extra,
    )
    visitor.bot = bridge.bot  # the visitor's messages go to the AI task
    return bridge


def _bridge(
    spec: Mapping[str, Any],
    desk: Any,
    bot: Bot,
    by_name: Mapping[str, Any],
    source: str,
    index: int,
) -> None:
    from omnichannel.channels.omnidesk import CustomChannelBridge

    names = spec["bridge"]
    if isinstance(names, str):
        names = [names]
    visitors = []
    for name in names:
        channel = by_name.get(name)
        if channel is None:
            raise ConfigurationError(
                f"{source}: channel[{index}].bridge: no channel named {name!r}"
            )
        visitors.append(channel)
    bridge = CustomChannelBridge(desk, channels=visitors, handover_text=spec.get("handover_text"))
    wrapped = bridge.wrap(bot)
    for channel in visitors:
        channel.bot = wrapped
        if hasattr(channel, "_handover"):
            channel._handover = bridge.handover  # the Connector's handover opens the case


class Router:
    """Serve several channels on one HTTP server: a request goes to the channel whose webhook
    path it is; a path under a channel's prefix with a wrong last segment (a token, a secret)
    goes to that channel too, which answers its own 400/403; anything else is 404.

    It is a handler like a channel (``handle``, ``start``, ``drain``, ``close``), for the
    built-in server and every framework shim.
    """

    def __init__(self, channels: Sequence[Any], runtime: Runtime) -> None:
        self.channels = list(channels)
        self.runtime = runtime
        self._exact: dict[str, Any] = {}
        self._prefixes: list[tuple[str, Any]] = []
        for channel in self.channels:
            path = str(getattr(channel, "webhook_path", "") or "").rstrip("/")
            if not path:
                continue
            self._exact[path] = channel
            # the path without its secret segment: the last one, or the omnichannel token
            # before "/bot_api_webhook"
            parts = path.rsplit("/", 2 if path.endswith("/bot_api_webhook") else 1)
            if parts[0]:
                self._prefixes.append((parts[0] + "/", channel))
        self._prefixes.sort(key=lambda item: -len(item[0]))
        self.max_body = max(
            (getattr(c, "max_body", 1 << 20) for c in self.channels), default=1 << 20
        )

    def route(self, request: Request) -> Any:
        """The channel serving ``request`` (``None``: no channel's path)."""
        path = request.path.rstrip("/")
        found = self._exact.get(path)
        if found is not None:
            return found
        for prefix, channel in self._prefixes:
            if path.startswith(prefix):
                return channel
        return None

    def handle(self, request: Request) -> Response:
        """Answer with the channel the path belongs to (``GET /metrics``: the runtime's
        metrics in the Prometheus text format), or 404."""
        if request.path == "/metrics" and request.method in ("GET", "HEAD"):
            from omnichannel.runtime.metrics import metrics_response

            return metrics_response(self.runtime)
        channel = self.route(request)
        if channel is None:
            return Response.error(404, "Not found.")
        return channel.handle(request)  # type: ignore[no-any-return]

    def shed(self, request: Request, *, busy: bool = False) -> Response | None:
        """The refusal to give at once when the runtime is overloaded or the server saturated
        (see :meth:`~omnichannel.runtime.pipeline.WebhookChannel.shed`); ``None``:
        :meth:`handle`."""
        channel = self.route(request)
        shed = getattr(channel, "shed", None)
        return shed(request, busy=busy) if shed is not None else None

    def start(self) -> None:
        """Start the runtime (every channel's workers and outbox)."""
        self.runtime.start()

    def drain(self, timeout: float | None = 10.0) -> bool:
        """Wait until every admitted turn ran and every reply went out."""
        return self.runtime.drain(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Finish running turns and due replies (up to ``timeout``), then stop."""
        return self.runtime.close(timeout)
