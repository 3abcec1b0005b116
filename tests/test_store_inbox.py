"""The store contract for the inbox, owned leases and compare-and-set state, run against memory,
SQLite and a real Redis (the fixtures of ``test_stores``)."""

from __future__ import annotations

import threading
import time

import pytest

from omnichannel.runtime.stores import INBOX, OUTBOX, QueueItem, StateConflict, StateWrite, Store
from tests import test_stores as contract
from tests.test_stores import Stores, item, numbers, wait_until

# the fixtures of the store contract (memory, SQLite, Redis), for the tests below
redis_url = contract.redis_url
stores = contract.stores
shared = contract.shared
store = contract.store


def turn(chat: str, n: int) -> QueueItem:
    return QueueItem(destination="test", chat_key=chat, payload={"n": n}, queue=INBOX)


def reply(of: QueueItem, index: int) -> QueueItem:
    return QueueItem(
        id=f"{of.id}.{index}", destination="test", chat_key=of.chat_key, payload={"r": index}
    )


def test_admit_records_the_mark_and_the_turn_together(store: Store) -> None:
    assert store.inbox_admit(turn("a", 0), "k0", 60)
    assert not store.inbox_admit(turn("a", 1), "k0", 60)  # a repeat stores nothing
    assert store.inbox_admit(turn("a", 2), None, 60)  # no delivery id: always admitted
    assert store.pending(INBOX) == 2
    assert store.pending(OUTBOX) == 0
    assert not store.mark_seen("k0", 60)  # the mark is the same as mark_seen's


def test_admitted_turns_are_claimed_per_chat_in_order(store: Store) -> None:
    for n in range(3):
        store.inbox_admit(turn("a", n), f"a{n}", 60)
    store.inbox_admit(turn("b", 0), "b0", 60)
    got = store.claim(INBOX, "w1", time.time(), 10, 30)
    assert sorted(numbers(got)) == [("a", 0), ("b", 0)]
    assert all(i.owner == "w1" and i.queue == INBOX for i in got)
    assert store.claim(INBOX, "w2", time.time(), 10, 30) == []  # both chats leased
    assert store.claim(OUTBOX, "w2", time.time(), 10, 30) == []  # the queues are apart


def test_complete_commits_replies_and_removes_the_turn_once(store: Store) -> None:
    store.inbox_admit(turn("a", 0), "a0", 60)
    store.inbox_admit(turn("a", 1), "a1", 60)
    (claimed,) = store.claim(INBOX, "w1", time.time(), 10, 30)
    replies = [reply(claimed, 0), reply(claimed, 1)]
    assert store.inbox_complete(claimed, replies)
    assert store.pending(INBOX) == 1
    assert store.pending(OUTBOX) == 2
    # completing again (a late worker) writes nothing
    assert not store.inbox_complete(claimed, replies)
    assert store.pending(OUTBOX) == 2
    out = store.claim(OUTBOX, "s", time.time(), 10, 30)
    assert [i.payload for i in out] == [{"r": 0}]  # one chat: its head only
    assert out[0].id == f"{claimed.id}.0"
    # the chat's inbox lease was released by its owner: the next turn is claimable
    assert numbers(store.claim(INBOX, "w2", time.time(), 10, 30)) == [("a", 1)]


def test_complete_never_adds_a_reply_id_twice(store: Store) -> None:
    store.inbox_admit(turn("a", 0), None, 60)
    store.inbox_admit(turn("a", 1), None, 60)
    (first,) = store.claim(INBOX, "w1", time.time(), 10, 30)
    assert store.inbox_complete(first, [reply(first, 0)])
    (second,) = store.claim(INBOX, "w1", time.time(), 10, 30)
    # a reply id already queued (or dead) is skipped, the rest is added
    assert store.inbox_complete(second, [reply(first, 0), reply(second, 0)])
    assert store.pending(OUTBOX) == 2


def test_only_the_owner_releases_a_lease(store: Store) -> None:
    store.add(item("a", 0))
    store.add(item("a", 1))
    (mine,) = store.claim(OUTBOX, "owner", time.time(), 10, 30)
    impostor = QueueItem(
        id="other",
        destination="test",
        chat_key="a",
        payload={},
        owner="impostor",
    )
    store.ack(impostor)  # not queued and not the owner: changes nothing
    assert store.claim(OUTBOX, "w2", time.time(), 10, 30) == []
    store.ack(mine)
    assert numbers(store.claim(OUTBOX, "w2", time.time(), 10, 30)) == [("a", 1)]


def test_a_late_ack_does_not_release_the_new_owners_lease(stores: Stores) -> None:
    one, two = stores.open(), stores.open()
    one.inbox_admit(turn("a", 0), None, 60)
    one.inbox_admit(turn("a", 1), None, 60)
    (late,) = one.claim(INBOX, "slow", time.time(), 10, 0.2)
    got: list[QueueItem] = []
    wait_until(lambda: bool(got.extend(two.claim(INBOX, "fast", time.time(), 10, 30)) or got))
    assert got[0].id == late.id and got[0].owner == "fast"
    # the slow worker finishes first: its turn is done, but "fast" keeps the chat's lease
    assert one.inbox_complete(late, [reply(late, 0)])
    assert two.claim(INBOX, "third", time.time(), 10, 30) == []
    # and the fast worker's completion of the same turn writes nothing
    assert not two.inbox_complete(got[0], [reply(got[0], 0)])
    assert one.pending(OUTBOX) == 1


def test_renewed_leases_outlive_their_first_term(store: Store) -> None:
    store.inbox_admit(turn("a", 0), None, 60)
    (held,) = store.claim(INBOX, "w1", time.time(), 10, 0.3)
    store.renew_leases(INBOX, "w1", ["a"], 30)
    store.renew_leases(INBOX, "someone-else", ["a"], 0.001)  # not theirs: no effect
    time.sleep(0.4)
    assert store.claim(INBOX, "w2", time.time(), 10, 30) == []
    store.ack(held)
    assert store.pending(INBOX) == 0


def test_release_owner_frees_a_dead_workers_chats_at_once(store: Store) -> None:
    store.inbox_admit(turn("a", 0), None, 60)
    store.add(item("b", 0))
    store.claim(INBOX, "dead/1/x", time.time(), 10, 300)
    store.claim(OUTBOX, "dead/1/x", time.time(), 10, 300)
    assert "dead/1/x" in store.lease_owners()
    assert store.release_owner("dead/1/x") == 2
    assert "dead/1/x" not in store.lease_owners()
    assert numbers(store.claim(INBOX, "new", time.time(), 10, 30)) == [("a", 0)]
    assert numbers(store.claim(OUTBOX, "new", time.time(), 10, 30)) == [("b", 0)]


def test_inbox_turns_reschedule_bury_and_retry(store: Store) -> None:
    store.inbox_admit(turn("a", 0), None, 60)
    (t,) = store.claim(INBOX, "w", time.time(), 10, 30)
    t.attempts, t.next_attempt_at, t.last_error = 1, time.time() + 0.2, "boom"
    store.reschedule(t)
    assert store.claim(INBOX, "w", time.time(), 10, 30) == []
    got: list[QueueItem] = []
    wait_until(lambda: bool(got.extend(store.claim(INBOX, "w", time.time(), 10, 30)) or got))
    assert got[0].attempts == 1 and got[0].last_error == "boom"
    store.bury(got[0])
    (dead,) = store.dead_letters()
    assert dead.queue == INBOX and dead.payload == {"n": 0}
    assert store.pending(INBOX) == 0
    assert store.dead_letter_retry(dead.id)
    assert numbers(store.claim(INBOX, "w", time.time(), 10, 30)) == [("a", 0)]
    assert store.pending(OUTBOX) == 0


def test_state_compare_and_set(store: Store) -> None:
    snap = store.load_state("s")
    assert snap.value is None and snap.version == 0
    assert store.save_state("s", {"n": 1}, 0)
    assert not store.save_state("s", {"n": 9}, 0)  # someone else created it first
    snap = store.load_state("s")
    assert snap.value == {"n": 1} and snap.version > 0
    assert store.save_state("s", {"n": 2}, snap.version)
    assert not store.save_state("s", {"n": 3}, snap.version)  # stale version
    store.set_state("s", {"n": 4})  # an unconditional write bumps the version too
    newer = store.load_state("s")
    assert newer.value == {"n": 4} and newer.version != snap.version
    assert store.save_state("s", None, newer.version)  # delete
    assert store.load_state("s").version == 0 and store.get_state("s") is None


def test_compare_and_set_loses_no_increment_across_threads(stores: Stores) -> None:
    handles = [stores.open() for _ in range(4)]

    def bump(s: Store) -> None:
        for _ in range(25):
            while True:
                snap = s.load_state("counter")
                n = (snap.value or {}).get("n", 0)
                if s.save_state("counter", {"n": n + 1}, snap.version):
                    break

    threads = [threading.Thread(target=bump, args=(h,)) for h in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert handles[0].get_state("counter") == {"n": 100}


def test_admit_has_one_winner_among_threads(stores: Stores) -> None:
    handles = [stores.open() for _ in range(4)]
    wins: list[bool] = []
    barrier = threading.Barrier(len(handles))

    def admit(s: Store) -> None:
        barrier.wait()
        wins.append(s.inbox_admit(turn("a", 0), "same", 60))

    threads = [threading.Thread(target=admit, args=(h,)) for h in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False, False, False, True]
    assert handles[0].pending(INBOX) == 1


def test_inbox_survives_reopening(shared: Stores) -> None:
    first = shared.open()
    first.inbox_admit(turn("a", 0), "a0", 60)
    first.close()
    again = shared.open()
    assert not again.inbox_admit(turn("a", 0), "a0", 60)
    assert numbers(again.claim(INBOX, "w", time.time(), 10, 30)) == [("a", 0)]


def test_complete_commits_state_writes_with_the_turn_or_nothing(store: Store) -> None:
    store.inbox_admit(turn("s", 0), None, 60)
    store.inbox_admit(turn("s", 1), None, 60)
    store.set_state("other", {"v": 1})
    (first,) = store.claim(INBOX, "w1", time.time(), 10, 30)
    ok = [
        StateWrite("conv", {"n": 1}, 0),
        StateWrite("other", None, store.load_state("other").version),
    ]
    assert store.inbox_complete(first, [reply(first, 0)], ok)
    assert store.get_state("conv") == {"n": 1} and store.get_state("other") is None
    assert store.pending(OUTBOX) == 1

    (second,) = store.claim(INBOX, "w1", time.time(), 10, 30)
    current = store.load_state("conv")
    store.save_state("conv", {"n": 5}, current.version)  # another writer got there first
    stale = [StateWrite("fresh", {"x": 1}, 0), StateWrite("conv", {"n": 2}, current.version)]
    with pytest.raises(StateConflict) as caught:
        store.inbox_complete(second, [reply(second, 0)], stale)
    assert caught.value.key == "conv"
    # nothing of it was written: the turn is still there, no reply, no state
    assert store.pending(INBOX) == 1 and store.pending(OUTBOX) == 1
    assert store.get_state("conv") == {"n": 5} and store.get_state("fresh") is None
    fresh = store.load_state("conv")
    assert store.inbox_complete(
        second, [reply(second, 0)], [StateWrite("conv", {"n": 6}, fresh.version)]
    )
    assert store.get_state("conv") == {"n": 6} and store.pending(INBOX) == 0
    # a turn already completed writes nothing, whatever its writes say
    assert not store.inbox_complete(second, [], [StateWrite("conv", {"n": 99}, 0)])
    assert store.get_state("conv") == {"n": 6}


def test_state_versions_are_not_reused_after_a_delete(store: Store) -> None:
    store.set_state("k", {"a": 1})
    old = store.load_state("k").version
    store.set_state("k", None)
    store.set_state("k", {"a": 2})  # made again
    assert store.load_state("k").version != old
    assert not store.save_state("k", {"a": 3}, old)  # a stale writer loses (no ABA)


def test_state_expires_after_its_ttl(store: Store) -> None:
    store.set_state("short", {"a": 1}, ttl=0.3)
    assert store.save_state("cas", {"b": 1}, 0, ttl=0.3)
    store.set_state("long", {"c": 1}, ttl=60)
    store.set_state("forever", {"d": 1})
    assert store.get_state("short") == {"a": 1}
    wait_until(lambda: store.get_state("short") is None and store.get_state("cas") is None)
    assert store.get_state("long") == {"c": 1} and store.get_state("forever") == {"d": 1}
    # what expired reads as absent, and a compare-and-set against that read works
    snap = store.load_state("cas")
    assert snap.value is None and store.save_state("cas", {"b": 2}, snap.version)
    assert store.get_state("cas") == {"b": 2}
