"""The playground: the real pipeline with fake platforms on 127.0.0.1, and a page to watch it.

:class:`Playground` builds the channels (the built-in ones with ``bot`` only, or a
configuration file's channels pointed at fakes), one :class:`~omnichannel.Runtime` on a
watched store (:class:`~omnichannel.playground.watch.WatchedStore`), the webhook server, the
fake platforms and the page server; it keeps the model the page shows (chats, the exchange on
the wire of each turn, the queues, the state) and pushes every change to the page as a
server-sent event. What watches the bot and the store for that model is its mixin
:class:`~omnichannel.playground.panel.PipelinePanel`.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

import attrs
import requests

from omnichannel.config import Config, Deployment, build, config_from_mapping, load_config
from omnichannel.errors import ConfigurationError
from omnichannel.integrations.server import LocalServer
from omnichannel.playground.hub import Hub
from omnichannel.playground.panel import PipelinePanel
from omnichannel.playground.players import PAGE, PLAYERS, Player, bridged_player
from omnichannel.playground.watch import WatchedStore
from omnichannel.runtime.bot import Bot
from omnichannel.runtime.http import Request, Response
from omnichannel.runtime.stores import open_store

if TYPE_CHECKING:
    from omnichannel.channels.pagemessenger import PageMessengerBridge

__all__ = ["HOST", "Exchange", "Playground", "Upload"]

HOST = "127.0.0.1"
"""Every server of the playground binds this address only: nothing is reachable from outside."""

Exchange = dict[str, Any]
"""One visitor action and what followed on the wire (JSON for the page)."""

_SECRET_KEYS = (
    "token",
    "channel_token",
    "secret",
    "api_key",
    "verification_token",
    "access_token",
    "service_key",
)
_KEEP_EXCHANGES = 300
_KEEP_UPLOADS = 50
MAX_UPLOAD = 5 << 20
"""The largest file the page may send (bytes)."""

# runtime settings that make retries and dead letters visible within seconds
_RUNTIME = {"outbox_backoff": 0.5, "outbox_cap": 4.0, "outbox_deadline": 30.0}


@attrs.frozen
class Upload:
    """A file the visitor sent from the page, served back at :attr:`url` (the bot may fetch it)."""

    id: str
    name: str
    content_type: str
    data: bytes = attrs.field(repr=False)
    url: str


class _Placeholders(Mapping[str, str]):
    """The environment, with a placeholder for each variable that is not set: a configuration's
    ``${SECRET}`` need not be set to try it (the fakes accept whatever it becomes)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def __getitem__(self, key: str) -> str:
        return self.environ.get(key) or f"playground-{key.lower().replace('_', '-')}"

    def __iter__(self) -> Iterator[str]:
        return iter(self.environ)

    def __len__(self) -> int:
        return len(self.environ)


BUILTIN_BRIDGED = "pagemessenger-site"
"""The name of the connector whose bot is the Page-messenger bridge in ``--bot`` mode."""


def _builtin(bot: str | None, store: str) -> Config:
    """The channels of ``--bot`` mode: one of each kind the playground plays (the Page-messenger
    bridge on a connector of its own, whose bot is the bridge, not ``bot``)."""

    def token() -> str:  # a fresh one each call: two connectors need two webhook paths
        return os.urandom(8).hex()

    data: dict[str, Any] = {
        "store": store,
        "channel": [
            {
                "kind": "omnichannel",
                "token": token(),
                "channel_url": "http://127.0.0.1/replaced-by-the-fake",
                "channel_token": token(),
            },
            {
                "kind": "omnidesk",
                "base_url": "http://127.0.0.1/replaced-by-the-fake",
                "staff_email": "bot@example.com",
                "api_key": token(),
                "secret": token(),
                "bot_label": 1,
            },
            {
                "kind": "webex",
                "webhook_url": "http://127.0.0.1/replaced-by-the-fake",
                "verification_token": token(),
                "secret": token(),
            },
            {
                "kind": "omnichannel",
                "name": BUILTIN_BRIDGED,
                "token": token(),
                "channel_url": "http://127.0.0.1/replaced-by-the-fake",
                "channel_token": token(),
            },
            {
                "kind": "pagemessenger",
                "api_key": token(),
                "task_id": "1721129985149x478019552540622850",
                "secret": token(),
                "channel": BUILTIN_BRIDGED,
                "base_url": "http://127.0.0.1/replaced-by-the-fake",
            },
        ],
    }
    if bot:
        data["bot"] = bot
    return config_from_mapping(data, source="the playground", environ={})


def _make_fake(spec: dict[str, Any]) -> Any:
    """The fake platform of one channel, and ``spec`` pointed at it (in place)."""
    kind = spec["kind"]
    fake_class = PLAYERS[kind][1]
    if kind == "omnichannel":
        fake = fake_class(token=spec.get("channel_token") or None)
        spec["channel_url"] = fake.channel_url
    elif kind == "pagemessenger":
        fake = fake_class(api_key=str(spec["api_key"]))
        spec["base_url"] = fake.base_url
    elif kind == "omnidesk":
        fake = fake_class(email=str(spec["staff_email"]), api_key=str(spec["api_key"]))
        spec["base_url"] = fake.url
        if spec.get("bot_label") is not None:
            fake.labels[int(spec["bot_label"])] = "bot"
    else:
        fake = fake_class(str(spec["verification_token"]), service_key=spec.get("service_key"))
        spec["webhook_url"] = fake.webhook_url
    return fake


class Playground(PipelinePanel):
    """The real pipeline, fake platforms and the page (see the module's docstring).

    Args:
        bot: ``module:attribute`` of the bot (the echo bot when ``None``; with ``config``, it
            replaces the file's ``bot``).
        config: an ``omnichannel.toml``: its channels (of the kinds the playground plays),
            with every URL and key pointed at a fake platform.
        store: the store URL (default: a SQLite file in a temporary directory, removed on
            :meth:`stop`; a configuration's own store is never used).
        port: the page's port on 127.0.0.1 (``0``: any free one).
        load_bot: loads ``module:attribute`` (the command line's loader by default).
        environ: the variables ``${NAME}`` of the file reads (``os.environ`` by default).
    """

    def __init__(
        self,
        *,
        bot: str | None = None,
        config: str | None = None,
        store: str | None = None,
        port: int = 0,
        load_bot: Callable[[str], Bot] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if load_bot is None:
            from omnichannel.cli import load_bot as load_bot_spec

            load_bot = load_bot_spec
        super().__init__()  # the panel's queues, states and refresher
        self._lock = threading.RLock()
        self.hub = Hub()
        self.notes: list[str] = []
        self.exchanges: dict[str, Exchange] = {}
        self._xids = itertools.count(1)
        self._latest: dict[str, str] = {}  # chat key -> its last exchange
        # chat key -> the exchange whose webhook is posting, and the part of it (the exchange
        # itself, or one of its relays) that the turn it stores belongs to
        self._expect: dict[str, tuple[str, dict[str, Any]]] = {}
        self._turns: dict[str, tuple[str, dict[str, Any]]] = {}  # turn id -> the same
        self._uploads: dict[str, Upload] = {}
        self._tmp: str | None = None
        self.config_path = config
        self.bot_spec = bot
        if store is None:
            self._tmp = tempfile.mkdtemp(prefix="omnichannel-playground-")
            store = f"sqlite:///{os.path.join(self._tmp, 'playground.db')}"
        self.store_url = store
        self.players: list[Player] = []
        self.fakes: list[Any] = []
        try:
            self._build(bot, config, store, load_bot, environ)
        except BaseException:
            self._close_partial()
            raise
        from omnichannel.playground.server import PageServer

        try:
            self.page = PageServer(self, port)
        except OSError as exc:
            self._close_partial()
            raise ConfigurationError(f"cannot listen on {HOST}:{port}: {exc.strerror}") from None

    # set-up ---------------------------------------------------------------------------------
    def _build(
        self,
        bot: str | None,
        config_path: str | None,
        store: str,
        load_bot: Callable[[str], Bot],
        environ: Mapping[str, str] | None,
    ) -> None:
        if config_path:
            config = load_config(
                config_path, environ=_Placeholders(os.environ if environ is None else environ)
            )
            if bot:
                config = attrs.evolve(config, bot=bot)
        else:
            config = _builtin(bot, store)
        specs: list[dict[str, Any]] = []
        played = {
            str(s["name"]): str(s["kind"])
            for s in config.channels
            if s["kind"] in PLAYERS and s["kind"] != PAGE
        }
        bridged: dict[str, str] = {}  # a played channel -> the Page-messenger bridge on it
        for spec in config.channels:
            if spec["kind"] not in PLAYERS:
                self.notes.append(
                    f"{spec['kind']} {spec['name']!r} is left out: the playground plays "
                    f"{', '.join(PLAYERS)} (a channel it bridged talks to the bot directly)"
                )
                continue
            if spec["kind"] == PAGE:
                visitor = str(spec["channel"])
                if visitor not in played or visitor in bridged:
                    why = (
                        f"{visitor!r} is bridged by {bridged[visitor]!r} already"
                        if visitor in bridged
                        else f"it bridges {visitor!r}, which the playground does not play"
                    )
                    self.notes.append(f"{PAGE} {spec['name']!r} is left out: {why}")
                    continue
                bridged[visitor] = str(spec["name"])
                if config_path:
                    self.notes.append(
                        f"{played[visitor]} {visitor!r} is played in the Page messenger window: "
                        f"its bot is the bridge {spec['name']!r} (the AI answers, not the bot)"
                    )
            spec = dict(spec)
            self.fakes.append(_make_fake(spec))
            specs.append(spec)
        if not specs:
            raise ConfigurationError(
                f"{config.source}: no channel the playground can play ({', '.join(PLAYERS)})"
            )
        self._secrets = sorted(
            {str(s[k]) for s in specs for k in _SECRET_KEYS if len(str(s.get(k) or "")) >= 4},
            key=len,
            reverse=True,
        )
        self.store = WatchedStore(open_store(store), self)
        runtime = {**config.runtime, **_RUNTIME}
        runtime.setdefault("workers", 4)
        # build() hands config.store to Runtime, which takes a Store as well as a URL: the
        # runtime runs on the watched store
        config = attrs.evolve(
            config, channels=tuple(specs), store=cast(Any, self.store), runtime=runtime
        )
        self.deployment: Deployment = build(config, load_bot=load_bot)
        self.runtime = self.deployment.runtime
        made = list(zip(specs, self.deployment.channels, self.fakes, strict=True))
        bridges = {str(s["channel"]): (s, c, f) for s, c, f in made if s["kind"] == PAGE}
        self.webhooks = LocalServer(self.deployment.router, host=HOST)
        for spec, channel, fake in made:
            if spec["kind"] == PAGE:
                continue  # played in the window of the channel it bridges
            player_class = PLAYERS[spec["kind"]][0]
            bridge = bridges.get(str(spec["name"]))
            if bridge is None:
                self.players.append(player_class(self, channel, fake, spec))
                continue
            bridge_spec, bridge_channel, ai = bridge
            bridging = cast("PageMessengerBridge", bridge_channel)  # build() made one
            ai.webhook_url = self.webhooks.url + bridging.webhook_path
            self.players.append(
                bridged_player(player_class)(
                    self, channel, fake, spec, bridge=bridging, ai=ai, bridge_spec=bridge_spec
                )
            )
        # a Page-messenger window answers for the bridge's destination too
        self._by_destination = {d: p for p in self.players for d in p.destinations()}
        spied: list[Bot] = []
        for player in self.players:
            channel_bot = getattr(player.channel, "bot", None)
            if isinstance(channel_bot, Bot) and not any(b is channel_bot for b in spied):
                channel_bot.use(self._spy)
                spied.append(channel_bot)

    def _close_partial(self) -> None:
        for fake in self.fakes:
            fake.stop()
        deployment = getattr(self, "deployment", None)
        if deployment is not None:
            deployment.runtime.close(0)
        elif getattr(self, "store", None) is not None:
            self.store.close()
        webhooks = getattr(self, "webhooks", None)
        if webhooks is not None:
            webhooks.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    @property
    def url(self) -> str:
        """The page's address."""
        return self.page.url

    def info(self) -> dict[str, Any]:
        """What the page's header says."""
        from omnichannel import __version__

        return {
            "bot": self.bot_spec or self.deployment.config.bot or "the echo bot",
            "config": self.config_path,
            "store": self.store_url.split("://", 1)[0]
            + (" (a temporary file)" if self._tmp else ""),
            "host": HOST,
            "notes": self.notes,
            "version": __version__,
        }

    def start(self) -> Playground:
        """Start the fakes, the webhook server, the runtime and the page."""
        for fake in self.fakes:
            fake.start()
        self.webhooks.start()
        self.runtime.start()
        self.page.start()
        self._refresher = threading.Thread(
            target=self._refresh_loop, name="playground-refresh", daemon=True
        )
        self._refresher.start()
        return self

    def stop(self) -> None:
        """Stop everything and remove the temporary store."""
        self._stopping.set()
        self._wake.set()
        self.hub.close()
        self.page.stop()
        self.webhooks.stop()
        self.runtime.close(timeout=3)
        for fake in self.fakes:
            fake.stop()
        for player in self.players:
            player.close()
        if self._refresher is not None:
            self._refresher.join(2)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Playground:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # helpers --------------------------------------------------------------------------------
    def mask(self, text: str) -> str:
        """``text`` with every configured secret (and token a fake issued) replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        for player in self.players:
            for secret in player.secrets():
                text = text.replace(secret, "***")
        return text

    def _pretty(self, body: bytes | str) -> str:
        raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            text = json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
        except ValueError:
            text = raw
        return self.mask(text[:8000])

    def _headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        shown: dict[str, str] = {}
        for key, value in headers.items():
            lower = key.lower()
            if lower == "content-type":
                shown[key] = value
            elif lower == "authorization":
                shown[key] = value.split(" ", 1)[0] + " ***"
            elif lower in ("key", "x-access-token"):
                shown[key] = "***"
        return shown

    def player(self, channel: Any) -> Player:
        """The player of ``channel`` (its destination, ``kind:name``)."""
        found = self._by_destination.get(str(channel))
        if found is None:
            raise ValueError(f"channel: no channel {channel!r}")
        return found

    # the model (every change published under the lock, so a new page's snapshot and the
    # events after it neither overlap nor leave a gap) ---------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows."""
        with self._lock:
            return {
                "info": self.info(),
                "channels": [p.describe() for p in self.players],
                "chats": {p.destination: p.view() for p in self.players},
                "exchanges": list(self.exchanges.values())[-150:],
                "queues": self._queues,
                "states": self._states,
                "now": time.time(),
            }

    def _publish(self, kind: str, data: Any) -> None:
        with self._lock:
            self.hub.publish(kind, data)

    def begin(self, player: Player, action: dict[str, Any]) -> Exchange:
        """A new exchange for a visitor action on ``player``'s current conversation."""
        with self._lock:
            number = next(self._xids)
            exchange: Exchange = {
                "id": f"x{number}",
                "n": number,
                "channel": player.destination,
                "chat": player.chat_id,
                "chat_key": player.chat_key,
                "at": time.time(),
                "action": action,
                "inbound": None,
                "notes": [],
                "turn": None,
                "bot": None,
                "items": [],
                "calls": [],
                "relays": [],
            }
            self.exchanges[exchange["id"]] = exchange
            while len(self.exchanges) > _KEEP_EXCHANGES:
                oldest = self.exchanges.pop(next(iter(self.exchanges)))
                for part in (oldest, *oldest["relays"]):
                    turn = (part.get("turn") or {}).get("id")
                    if turn:
                        self._turns.pop(str(turn), None)
            self._latest[player.chat_key] = exchange["id"]
            self.hub.publish("exchange", exchange)
            return exchange

    def note(self, exchange: Exchange, text: str) -> None:
        """Add a line of explanation to an exchange."""
        with self._lock:
            exchange["notes"].append(text)
            self.hub.publish("exchange", exchange)

    def add_message(
        self,
        player: Player,
        role: str,
        text: str,
        *,
        exchange: Exchange | None = None,
        buttons: Any = None,
        file: dict[str, Any] | None = None,
        pressed: str | None = None,
    ) -> None:
        """Add a bubble to ``player``'s chat (``visitor``, ``bot`` or ``system``)."""
        with self._lock:
            player.messages.append(
                {
                    "id": len(player.messages) + 1,
                    "role": role,
                    "text": text,
                    "buttons": buttons,
                    "file": file,
                    "pressed": pressed,
                    "exchange": exchange["id"] if exchange is not None else None,
                    "at": time.time(),
                }
            )
            self.hub.publish("chat", player.view())

    def publish_chat(self, player: Player) -> None:
        """Send ``player``'s chat to the page again."""
        with self._lock:
            self.hub.publish("chat", player.view())

    def hand_over(self, player: Player, how: str) -> None:
        """The conversation left the bot for a person."""
        with self._lock:
            player.operator = how
            self.add_message(
                player,
                "system",
                f"Handed over to an operator: {how}. The bot no longer answers this conversation.",
            )
        self.state_dirty(player)

    # the visitor's webhooks and the bot's calls ---------------------------------------------
    def post_webhook(
        self,
        player: Player,
        exchange: Exchange,
        path: str,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str],
        *,
        relay: dict[str, Any] | None = None,
        chat_key: str | None = None,
        session: requests.Session | None = None,
    ) -> requests.Response | None:
        """Post a webhook as the platform does; record the request and the real answer.

        ``relay`` (from :meth:`relay`) records it as a webhook that followed the visitor's
        action (the AI's answer to the bridge), its turn stored under ``chat_key``; ``session``
        posts it (the player's by default). Returns the answer (``None``: no answer).
        """
        sent = {"Content-Type": content_type, **headers}
        inbound: dict[str, Any] = {
            "method": "POST",
            "path": self.mask(path),
            "headers": self._headers(sent),
            "body": self._pretty(body),
            "status": None,
            "response": None,
            "ms": None,
            "note": None,
        }
        part = exchange if relay is None else relay
        chat_key = chat_key or str(exchange["chat_key"])
        with self._lock:
            part["inbound"] = inbound
            self._expect[chat_key] = (exchange["id"], part)
            self.hub.publish("exchange", exchange)
        started = time.perf_counter()
        response: requests.Response | None = None
        try:
            response = (session or player.http).post(
                self.webhooks.url + path, data=body, headers=sent, timeout=15
            )
        except requests.RequestException as exc:
            inbound["response"] = f"{type(exc).__name__}: no answer"
        finally:
            with self._lock:
                self._expect.pop(chat_key, None)
        elapsed = (time.perf_counter() - started) * 1000
        with self._lock:
            inbound["ms"] = round(elapsed, 1)
            if response is not None:
                inbound["status"] = response.status_code
                inbound["response"] = self._pretty(response.content)
                inbound["note"] = player.ack_note(response)
                if response.status_code == 200 and part["turn"] is None:
                    part["notes"].append(
                        part.get("ignored")
                        or "Acknowledged, but nothing was stored for the bot: the channel "
                        "ignores this event (a file that is not ready, an unknown event)."
                    )
            self.hub.publish("exchange", exchange)
        self._dirty_queues = True
        self._wake.set()
        return response

    def relay(
        self, player: Player, exchange: Exchange | None, title: str, **fields: Any
    ) -> tuple[Exchange, dict[str, Any]]:
        """A webhook that follows a visitor action (the AI's answer posted to the bridge), as a
        part of ``exchange`` (a new exchange when ``None``: nothing the page did caused it),
        shown after the outbox items it follows; ``fields`` add ``badge`` (its label in the
        exchange's summary line), ``summary`` (its inbox item), ``then`` (the heading of the
        calls after it), ``ignored`` (said when nothing is stored) and ``notes``."""
        with self._lock:
            if exchange is None:
                exchange = self.begin(player, {"kind": "platform", "text": title})
            relay: dict[str, Any] = {
                "title": title,
                "after_items": len(exchange["items"]),
                "after_ms": round((time.time() - exchange["at"]) * 1000, 1),
                "inbound": None,
                "turn": None,
                "notes": [],
                **fields,
            }
            exchange["relays"].append(relay)
            self.hub.publish("exchange", exchange)
            return exchange, relay

    def exchange_of(self, player: Player, queue_key: str) -> Exchange | None:
        """The exchange of the outbox item in flight for ``queue_key`` (else the latest one of
        ``player``'s current conversation)."""
        with self._lock:
            item = self._items.get(self._inflight.get(queue_key, ""))
            xid = item["exchange"] if item is not None else self._latest.get(player.chat_key)
            return self.exchanges.get(xid or "")

    def record_call(
        self,
        player: Player,
        chat: Any,
        request: Request,
        response: Response,
        elapsed: float,
        *,
        queue_key: str | None = None,
    ) -> None:
        """Put a call the fake platform answered on the wire, under the turn it belongs to
        (the outbox item in flight for ``queue_key``, the chat's key by default)."""
        now = time.time()
        path = request.path + (f"?{request.query}" if request.query else "")
        call = {
            "method": request.method,
            "path": self.mask(path),
            "headers": self._headers(request.headers),
            "body": self._pretty(request.body),
            "status": response.status,
            "response": self._pretty(response.body),
            "ms": round(elapsed * 1000, 2),
            "after_ms": None,
        }
        # a call naming no chat (an Omnidesk knowledge-base search) is the current chat's
        chat_key = player.channel.chat_key(chat) if chat is not None else player.chat_key
        with self._lock:
            item = self._items.get(self._inflight.get(queue_key or chat_key, ""))
            xid = item["exchange"] if item is not None else self._latest.get(chat_key)
            exchange = self.exchanges.get(xid or "")
            if exchange is None:
                exchange = self.begin(player, {"kind": "bot", "text": "the bot called on its own"})
            call["after_ms"] = round((now - exchange["at"]) * 1000, 1)
            if item is not None and item["exchange"] == exchange["id"]:
                item["calls"].append(call)
            else:
                exchange["calls"].append(call)
            self.hub.publish("exchange", exchange)
        self.state_dirty(player)

    # the page's actions ---------------------------------------------------------------------
    def act(self, action: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Do what the page asked; the answer is small (the page learns the rest by events).

        Raises:
            ValueError: an unknown action or a missing or wrong field.
        """
        if action == "dead":
            item_id = str(data.get("id", ""))
            op = data.get("op")
            if op not in ("retry", "drop"):
                raise ValueError("op: expected retry or drop")
            done = (
                self.store.dead_letter_retry(item_id)
                if op == "retry"
                else self.store.dead_letter_drop(item_id)
            )
            if not done:
                raise ValueError(f"no dead letter {item_id}")
            self.runtime.outbox.notify()
            self.runtime.turns.wake()
            return {"ok": True}
        player = self.player(data.get("channel"))
        if action == "send":
            text = str(data.get("text") or "").strip()
            if not text:
                raise ValueError("text: required")
            return self._answer(player.send_text(text))
        if action == "press":
            button, label = str(data.get("id") or ""), str(data.get("text") or "")
            if not button or not label:
                raise ValueError("id and text: required")
            return self._answer(player.press(button, label))
        if action == "file-ready":
            upload = self._uploads.get(str(data.get("file")))
            if upload is None:
                raise ValueError("file: no such upload")
            return self._answer(player.file_ready(upload))
        if action == "new-chat":
            player.new_chat()
            return {"ok": True, "chat": player.chat_id}
        if action == "give-back":
            player.give_back()
            return {"ok": True}
        if action == "platform":
            player.set_mode(str(data.get("mode")))
            self.publish_chat(player)
            return {"ok": True, "mode": player.mode}
        raise ValueError(f"unknown action {action!r}")

    def upload(
        self, channel: str, name: str, content_type: str, state: str, data: bytes
    ) -> dict[str, Any]:
        """The visitor sends a file (``state``: ``ready`` or ``uploading``)."""
        player = self.player(channel)
        if state not in ("ready", "uploading"):
            raise ValueError("state: expected ready or uploading")
        name = os.path.basename(name.replace("\\", "/")).strip() or "file"
        file_id = f"file-{os.urandom(4).hex()}"
        upload = Upload(
            id=file_id,
            name=name,
            content_type=content_type or "application/octet-stream",
            data=data,
            url=f"{self.page.url}/files/{file_id}/{quote(name)}",
        )
        with self._lock:
            self._uploads[file_id] = upload
            while len(self._uploads) > _KEEP_UPLOADS:
                del self._uploads[next(iter(self._uploads))]
        answer = self._answer(player.send_file(upload, state))
        answer["file"] = file_id
        return answer

    def uploaded(self, file_id: str) -> Upload | None:
        """A file the page sent (``None``: unknown or forgotten)."""
        with self._lock:
            return self._uploads.get(file_id)

    @staticmethod
    def _answer(exchange: Exchange) -> dict[str, Any]:
        inbound = exchange.get("inbound") or {}
        return {"ok": True, "exchange": exchange["id"], "status": inbound.get("status")}
