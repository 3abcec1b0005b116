"""``import omnichannel`` loads no heavy or optional dependency: every public name is imported on
first use (PEP 562), ``requests`` only when a ``requests.Session`` is made, ``sqlite3`` / ``redis`` when such
a store is opened. Structural checks (which modules get imported), never timings."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import omnichannel
from omnichannel.runtime.sending import LazySession

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("requests", "urllib3", "sqlite3", "redis")


def imported_by(code: str) -> set[str]:
    """The modules a fresh interpreter imports to run ``code`` (``-X importtime``)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", result.stderr, re.M))


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_import_omnichannel_imports_no_http_client_and_no_store_engine() -> None:
    modules = imported_by("import omnichannel")
    assert "omnichannel" in modules
    assert heavy(modules) == []
    # nor the rest of the SDK: the package's own module only
    assert sorted(m for m in modules if m.startswith("omnichannel.")) == []


def test_a_connector_sends_without_importing_requests() -> None:
    # its default session is the pooled http.client transport, made on first use
    code = (
        "import sys\n"
        "from omnichannel import Bot, Connector, Request, parse_event\n"
        "c = Connector(Bot(), token='t', channel_url='http://127.0.0.1:9/c', inline=True)\n"
        "c.runtime.outbox.register(c.destination, lambda payload: None)\n"
        'body = b\'{"event":"new_message","chat_id":1,"message":'
        '{"id":"m1","kind":"visitor","text":"hi"}}\'\n'
        "answer = c.handle(Request('POST', c.webhook_path, {}, body))\n"
        "assert answer.status == 200, answer\n"
        "assert 'requests' not in sys.modules\n"
        "assert not type(c.client).session.made(c.client)\n"
        "assert type(c.client.session).__name__ == 'PooledSession'\n"
        "c.close()\n"
    )
    modules = imported_by(code)
    assert "requests" not in modules
    assert "urllib3" not in modules
    assert "sqlite3" not in modules
    assert "redis" not in modules


def test_channel_packages_import_no_http_client() -> None:
    modules = imported_by(
        "import omnichannel.channels.omnidesk, omnichannel.channels.webex, "
        "omnichannel.channels.pagemessenger, omnichannel.channel_server"
    )
    assert heavy(modules) == []


def test_every_public_name_is_importable() -> None:
    namespace: dict[str, object] = {}
    exec("from omnichannel import *", namespace)
    missing = [name for name in omnichannel.__all__ if name not in namespace]
    assert missing == []
    assert set(omnichannel.__all__) <= set(dir(omnichannel))
    from omnichannel import Connector, MemoryStore, parse_event

    assert Connector.__module__ == "omnichannel.channels.omnichannel"
    assert MemoryStore.__module__ == "omnichannel.runtime.stores.memory"
    assert parse_event.__module__ == "omnichannel.protocol"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        _ = omnichannel.Nothing  # type: ignore[attr-defined]
    with pytest.raises(ImportError):
        exec("from omnichannel import Nothing")


# LazySession ----------------------------------------------------------------------------------
class Client:
    session = LazySession()

    def __init__(self, session: object = None) -> None:
        self.session = session  # type: ignore[assignment]


def test_lazy_session_is_made_once_on_first_use() -> None:
    client = Client()
    assert not Client.session.made(client)
    first = client.session
    assert Client.session.made(client)
    assert client.session is first
    assert first.trust_env is False  # new_session's default
    first.close()


def test_lazy_session_keeps_a_given_session_and_can_be_replaced() -> None:
    import requests

    given = requests.Session()
    client = Client(given)
    assert Client.session.made(client)
    assert client.session is given
    other = requests.Session()
    client.session = other
    assert client.session is other
    given.close()
    other.close()


def test_threads_using_a_new_client_share_one_session() -> None:
    client = Client()
    seen: list[object] = []
    barrier = threading.Barrier(8)

    def use() -> None:
        barrier.wait()
        seen.append(client.session)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(s) for s in seen}) == 1
    client.session.close()
