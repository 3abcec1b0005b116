"""Redis specifics beyond the store contract: encoding, key layout, idempotent retries after an
outage, recovery from flushed scripts and deleted keys, lease bookkeeping (the sweep, renewal,
nothing kept per worker), retries coming due, version check, persistence."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from omnichannel.errors import ConfigurationError
from omnichannel.runtime.stores import INBOX, OUTBOX, QueueItem
from omnichannel.runtime.stores.redis import RedisStore, _Script
from tests import redis_support
from tests.redis_support import unique_prefix

redis_url = redis_support.redis_url  # the fixture

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    opened = RedisStore(redis_url, prefix=unique_prefix("extra"))
    yield opened
    opened.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def item(chat: str, n: int, **fields: Any) -> QueueItem:
    return QueueItem(destination="test", chat_key=chat, payload={"n": n}, **fields)


def claim(store: RedisStore, queue: Any = OUTBOX, owner: str = "w", lease: float = 30) -> list[Any]:
    return store.claim(queue, owner, time.time(), 10, lease)


def wait_for(fetch: Any, timeout: float = 5.0) -> list[Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got: list[Any] = fetch()
        if got:
            return got
        time.sleep(0.02)
    pytest.fail(f"nothing within {timeout}s")


def sweep_now(store: RedisStore, queue: Any = OUTBOX) -> None:
    """Let the next claim through ``store`` sweep ``queue``'s leases (whoever swept last)."""
    store.client.delete(f"{store.prefix}{queue}:sweep")
    store._next_sweep[queue] = 0.0


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_lone_surrogates_round_trip(store: RedisStore) -> None:
    text = "broken emoji \ud83d and \udc4b"
    turn = QueueItem(
        destination="test",
        chat_key="chat \ud83d",
        payload={"text": text, "nested": ["\ud83d"]},
        queue=INBOX,
    )
    assert store.inbox_admit(turn, "delivery \ud83d", 60)
    assert not store.mark_seen("delivery \ud83d", 60)
    (got,) = claim(store, INBOX)
    assert got == turn
    got.last_error = f"HTTP 400: {text}"
    store.bury(got)
    (dead,) = store.dead_letters()
    assert dead.payload == turn.payload
    assert dead.last_error == got.last_error
    assert dead.chat_key == "chat \ud83d"
    store.set_state("state \ud83d", {"text": text})
    assert store.get_state("state \ud83d") == {"text": text}
    store.add(item("chat \ud83d", 1, id="id \ud83d"))
    (reply,) = claim(store)
    assert reply.id == "id \ud83d"
    store.ack(reply)
    assert store.pending(OUTBOX) == 0


def test_each_queue_has_its_own_keys_and_any_prefix_works(redis_url: str, raw: Any) -> None:
    prefix = unique_prefix('it\'s \\ a "quoted" {tag} ü') + "$P:"
    store = RedisStore(redis_url, prefix=prefix)
    try:
        store.add(item("a", 0))
        store.inbox_admit(item("a", 1, queue=INBOX), "k", 60)
        for queue in ("outbox", "inbox"):
            (record,) = raw.lrange(f"{prefix}{queue}:chat:a", 0, -1)
            assert raw.lrange(f"{prefix}{queue}:ready", 0, -1) == ["a"]
            # the queued ids, and the empty id that keeps the set when the queue drains
            assert raw.smembers(f"{prefix}{queue}:items") == {"", record.split("\n")[0]}
        assert 0 < raw.pttl(prefix + "seen:k") <= 60_000
        (out,) = claim(store, OUTBOX, "w1")
        (turn,) = claim(store, INBOX, "w2")
        assert (out.payload, turn.payload) == ({"n": 0}, {"n": 1})
        # a lease heads its chat's list: since (0 until a sweep stamps it), span in ms, owner
        assert raw.lindex(prefix + "outbox:chat:a", 0) == "\n0 30000\nw1"
        assert raw.lindex(prefix + "inbox:chat:a", 0) == "\n0 30000\nw2"
        assert raw.lrange(prefix + "outbox:leased", 0, -1) == ["a"]
        assert store.lease_owners() == {"w1", "w2"}
        store.ack(out)
        assert store.inbox_complete(turn, [])
        assert not raw.exists(prefix + "outbox:chat:a", prefix + "inbox:chat:a")
        assert not raw.exists(prefix + "outbox:ready", prefix + "inbox:ready")
        assert (store.pending(OUTBOX), store.pending(INBOX)) == (0, 0)
        assert store.lease_owners() == set()
    finally:
        store.close()


def test_nothing_is_kept_per_worker(store: RedisStore, raw: Any) -> None:
    store.add(item("a", 0))
    store.add(item("b", 0))
    (held,) = store.claim(OUTBOX, "holder", time.time(), 1, 30)
    (done,) = store.claim(OUTBOX, "stopped", time.time(), 1, 30)
    store.ack(done)  # "stopped" delivered its item, then its process ended
    sweep_now(store)
    assert claim(store, owner="live") == []
    # the sweep forgot the released chat: no key names the stopped worker any more
    assert raw.lrange(store.prefix + "outbox:leased", 0, -1) == [held.chat_key]
    assert not raw.exists(store.prefix + "outbox:chat:" + done.chat_key)
    assert store.lease_owners() == {"holder"}
    store.ack(held)


def test_adding_a_queued_id_again_changes_nothing(store: RedisStore) -> None:
    first = item("a", 0)
    store.add(first)
    store.add(first)  # a retry whose first attempt did reach Redis
    assert store.pending(OUTBOX) == 1
    (got,) = claim(store)
    store.ack(got)
    store.ack(got)  # repeated: harmless
    assert store.pending(OUTBOX) == 0
    store.add(first)  # no longer queued: a new item
    assert store.pending(OUTBOX) == 1


def test_an_ack_that_failed_in_an_outage_can_be_repeated(store: RedisStore) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    store.add(item("a", 0))
    store.add(item("a", 1))
    (held,) = claim(store, owner="w1")
    alive = store.client
    store.client = redis.Redis(port=closed_port(), retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(redis.ConnectionError):
            store.ack(held)
        with pytest.raises(redis.ConnectionError):
            store.inbox_admit(item("b", 0, queue=INBOX), "during-outage", 60)
    finally:
        store.client.close()
        store.client = alive
    assert store.pending(INBOX) == 0
    assert store.mark_seen("during-outage", 60)  # the mark was not stored either
    assert claim(store, owner="w2") == []  # still leased to w1
    store.ack(held)  # the retry after the outage
    assert [i.payload for i in claim(store, owner="w2")] == [{"n": 1}]


def test_a_late_worker_changes_the_item_but_never_the_new_owners_lease(store: RedisStore) -> None:
    store.add(item("a", 0))
    store.add(item("a", 1))
    (late,) = claim(store, owner="slow", lease=0.2)
    (fresh,) = wait_for(lambda: claim(store, owner="fast"))
    late.attempts, late.next_attempt_at, late.last_error = 1, time.time() + 60, "timeout"
    store.reschedule(late)  # slow's lease was taken over: the chat stays with fast
    assert claim(store, owner="third") == []
    store.ack(late)  # slow finally gets through: the item goes, fast keeps the chat
    assert claim(store, owner="third") == []
    store.ack(fresh)  # fast's ack of the gone item releases the chat it holds
    assert [i.payload for i in claim(store, owner="third")] == [{"n": 1}]


def test_state_versions_never_repeat_after_a_delete(store: RedisStore) -> None:
    store.set_state("s", {"n": 1})
    old = store.load_state("s")
    store.set_state("s", None)
    store.set_state("s", {"n": 2})
    assert store.load_state("s").version != old.version
    assert not store.save_state("s", {"n": 3}, old.version)
    assert store.get_state("s") == {"n": 2}


def test_recovers_from_flushed_scripts_and_deleted_keys(store: RedisStore, raw: Any) -> None:
    store.add(item("a", 0))
    claim(store, owner="gone", lease=0.2)
    raw.script_flush()  # as after a restart of Redis
    # the leased chat comes back once its lease ran out (a sweep stamps it, a later one ends it)
    (got,) = wait_for(lambda: claim(store, owner="heir"))
    assert got.payload == {"n": 0}
    store.ack(got)
    for key in raw.scan_iter(match=store.prefix + "*"):  # as FLUSHDB would
        raw.delete(key)
    assert store.pending(OUTBOX) == 0
    store.add(item("b", 0))
    assert store.pending(OUTBOX) == 1
    assert [i.chat_key for i in claim(store)] == ["b"]


def test_a_lease_that_ran_out_goes_to_the_front(store: RedisStore, raw: Any) -> None:
    store.add(item("a", 0))
    (lost,) = store.claim(OUTBOX, "dead", time.time(), 1, 0.05)
    store.add(item("b", 0))
    store.add(item("c", 0))
    sweep_now(store)  # stamps the lease on "a"
    assert [i.chat_key for i in store.claim(OUTBOX, "w", time.time(), 1, 30)] == ["b"]
    time.sleep(0.1)
    sweep_now(store)  # ends it: "a" goes before "c", which has waited less
    assert [i.chat_key for i in claim(store, owner="heir")] == ["a", "c"]
    assert raw.lindex(store.prefix + "outbox:chat:a", 0) == "\n0 30000\nheir"
    store.ack(lost)  # the dead owner's late ack: the item goes, the heir keeps the chat
    assert raw.lrange(store.prefix + "outbox:chat:a", 0, -1) == ["\n0 30000\nheir"]
    assert store.pending(OUTBOX) == 2


def test_renewing_keeps_the_lease_with_its_owner(redis_url: str, raw: Any) -> None:
    prefix = unique_prefix("renew")
    owner, other = RedisStore(redis_url, prefix=prefix), RedisStore(redis_url, prefix=prefix)
    try:
        owner.inbox_admit(item("a", 0, queue=INBOX), None, 60)
        owner.inbox_admit(item("a", 1, queue=INBOX), None, 60)
        (turn,) = claim(owner, INBOX, "w1", lease=0.05)
        owner.renew_leases(INBOX, "w1", ["a"], 30)
        other.renew_leases(INBOX, "w2", ["a"], 0.05)  # not w2's lease: left alone
        assert raw.lindex(prefix + "inbox:chat:a", 0) == "\n0 30000\nw1"
        sweep_now(other, INBOX)
        assert claim(other, INBOX, "w2") == []
        time.sleep(0.1)
        sweep_now(other, INBOX)
        assert claim(other, INBOX, "w2") == []  # stamped by the first sweep, 30 s to go
        assert raw.lindex(prefix + "inbox:chat:a", 0).endswith(" 30000\nw1")
        assert owner.inbox_complete(turn, [])
        assert [t.payload for t in claim(other, INBOX, "w2")] == [{"n": 1}]
    finally:
        owner.close()
        other.close()


def test_retries_come_due_without_a_jump_of_the_callers_clock(store: RedisStore) -> None:
    store.add(item("a", 0))
    (got,) = claim(store)
    got.attempts, got.next_attempt_at = 1, time.time() + 0.3
    store.reschedule(got)
    assert claim(store) == []
    (again,) = wait_for(lambda: claim(store), timeout=2)
    assert again.attempts == 1
    assert time.time() >= got.next_attempt_at


def test_an_owners_ack_below_the_head_keeps_the_rest_in_order(store: RedisStore, raw: Any) -> None:
    for n in range(3):
        store.add(item("a", n))
    (head,) = claim(store, owner="w1")
    before = raw.lrange(store.prefix + "outbox:chat:a", 0, -1)
    second = item("a", 1, id=before[2].split("\n")[0])
    second.owner = "w1"
    store.ack(second)  # not the one-pop case: undone, then done item by item (and released)
    assert raw.lrange(store.prefix + "outbox:chat:a", 0, -1) == [before[1], before[3]]
    store.ack(head)
    assert [i.payload for i in claim(store)] == [{"n": 2}]


def test_dead_letters_of_both_queues_go_back_to_their_own_queue(store: RedisStore) -> None:
    store.add(item("a", 0, created_at=200.0))
    store.inbox_admit(item("a", 1, queue=INBOX, created_at=100.0), None, 60)
    for queue in (OUTBOX, INBOX):
        (got,) = claim(store, queue)
        got.last_error = f"{queue} failed"
        store.bury(got)
    assert [(d.queue, d.last_error) for d in store.dead_letters()] == [
        (INBOX, "inbox failed"),
        (OUTBOX, "outbox failed"),
    ]
    for dead in store.dead_letters():
        assert store.dead_letter_retry(dead.id)
        assert not store.dead_letter_retry(dead.id)
    assert (store.pending(INBOX), store.pending(OUTBOX)) == (1, 1)
    (turn,) = claim(store, INBOX)
    assert (turn.attempts, turn.next_attempt_at, turn.deadline) == (0, 0.0, 0.0)
    assert store.dead_letters() == []


def test_a_client_that_decodes_responses_works(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisStore(client, prefix=unique_prefix("decoded"))
    try:
        store.add(item("a", 0))
        (got,) = claim(store, owner="w")
        assert store.lease_owners() == {"w"}
        store.bury(got)
        assert [d.payload for d in store.dead_letters()] == [{"n": 0}]
        store.set_state("s", {"ok": True})
        assert store.load_state("s").value == {"ok": True}
    finally:
        store.close()
        client.close()


def test_ids_with_line_breaks_are_refused(store: RedisStore) -> None:
    with pytest.raises(ValueError, match="line break"):
        store.add(item("a", 0, id="two\nlines"))
    with pytest.raises(ValueError, match="queue"):
        store.claim("outbox2", "w", time.time(), 1, 30)  # type: ignore[arg-type]


def test_old_servers_are_refused_and_cluster_calls_name_a_key(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store.client, "info", lambda section: {"redis_version": "6.0.16"})
    with pytest.raises(ConfigurationError, match="6.2 or later"):
        store._check_version()
    plain, routed, keyed = _Script("return 1"), _Script("return 1", b"k"), _Script("", keyed=True)
    assert plain.head == (b"EVALSHA", plain.sha, b"0")
    assert routed.head == ("EVALSHA", routed.sha, b"1", b"k")  # for Redis Cluster
    assert keyed.head == ("EVALSHA", keyed.sha, b"1")


def test_has_persistence(store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    assert isinstance(store.has_persistence(), bool)
    config: dict[str, str] = {}
    monkeypatch.setattr(store.client, "config_get", lambda name: {name: config.get(name, "")})
    config.update(appendonly="no", save="")
    assert not store.has_persistence()
    config.update(save="3600 1 300 100")
    assert store.has_persistence()
    config.update(appendonly="yes", save="")
    assert store.has_persistence()

    def refused(name: str) -> dict[str, str]:
        raise redis.ResponseError("unknown command 'CONFIG'")

    info = {"aof_enabled": 0, "rdb_saves": 0, "rdb_last_bgsave_time_sec": -1}
    monkeypatch.setattr(store.client, "config_get", refused)
    monkeypatch.setattr(store.client, "info", lambda section: info)
    assert not store.has_persistence()
    info["aof_enabled"] = 1
    assert store.has_persistence()
