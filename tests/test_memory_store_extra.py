"""MemoryStore's compact dedupe keys: bounded by ``max_keys`` as well as by the TTL, the oldest
evicted first; expiry rounded up by at most ``ttl / 1024``; a forgotten key marked again keeps
its new expiry. (The contract shared with SQLite and Redis is in ``test_stores.py``.)"""

from __future__ import annotations

import math
import time

import pytest

from omnichannel.runtime.stores import MemoryStore
from omnichannel.runtime.stores.memory import DEFAULT_MAX_KEYS, _step


def test_the_default_bound_is_a_million_keys() -> None:
    assert MemoryStore().max_keys == DEFAULT_MAX_KEYS == 1_000_000
    assert MemoryStore(max_keys=None).max_keys is None
    with pytest.raises(ValueError, match="max_keys"):
        MemoryStore(max_keys=0)


def test_past_max_keys_the_oldest_keys_are_evicted() -> None:
    store = MemoryStore(max_keys=100)
    for i in range(250):
        assert store.mark_seen(f"key-{i}", 3600)
    assert store.dedupe_keys() == 100
    for i in range(150, 250):  # the newest are still refused
        assert not store.mark_seen(f"key-{i}", 3600)
    # an evicted key is forgotten: a repeat that old is let through (and evicts the oldest)
    assert store.mark_seen("key-0", 3600)
    assert store.dedupe_keys() == 100
    assert store.mark_seen("key-150", 3600)  # the oldest of the 100 made room for key-0


def test_with_several_ttls_the_keys_closest_to_expiry_go_first() -> None:
    store = MemoryStore(max_keys=3)
    store.mark_seen("long", 3600)
    store.mark_seen("short", 60)
    store.mark_seen("medium", 600)
    store.mark_seen("new", 3600)
    assert store.mark_seen("short", 60)  # it was evicted
    assert not store.mark_seen("long", 3600)


def test_keys_expire_after_their_ttl_and_all_memory_of_them_goes() -> None:
    store = MemoryStore(max_keys=None)
    for i in range(5000):
        store.mark_seen(f"k-{i}", 0.2)
    assert store.dedupe_keys() == 5000
    table = store._seen
    time.sleep(0.35)
    assert store.mark_seen("after", 0.2)
    assert store.dedupe_keys() == 1
    assert store._seen is not table  # copied: a dict never shrinks by itself
    assert len(store._buckets) == 1
    assert store.mark_seen("k-0", 0.2)


def test_a_forgotten_key_marked_again_keeps_its_new_expiry() -> None:
    store = MemoryStore()
    assert store.mark_seen("k", 0.2)
    store.forget("k")
    assert store.mark_seen("k", 3600)  # a later bucket; the first still lists the key
    time.sleep(0.3)
    assert store.mark_seen("other", 0.2)  # evicts the first bucket
    assert not store.mark_seen("k", 3600)
    assert store._stale == {}  # the stale entry was passed over once


def test_a_forgotten_key_leaves_nothing_behind() -> None:
    store = MemoryStore()
    for _ in range(3):
        assert store.mark_seen("k", 0.2)
        store.forget("k")
    store.forget("never marked")
    assert list(store._stale.values()) == [3]
    time.sleep(0.3)
    assert store.mark_seen("other", 0.2)
    assert store._stale == {}
    assert store.dedupe_keys() == 1


def test_a_forgotten_key_is_not_counted_by_the_bound() -> None:
    store = MemoryStore(max_keys=2)
    store.mark_seen("a", 3600)
    store.forget("a")
    store.mark_seen("b", 3600)
    store.mark_seen("c", 3600)
    assert not store.mark_seen("b", 3600)
    assert not store.mark_seen("c", 3600)


def test_expiry_is_rounded_up_by_at_most_a_1024th_of_the_ttl() -> None:
    for ttl in (0.001, 0.3, 60.0, 3600.0, 86_400.0):
        step = _step(ttl)
        assert ttl / 2048 < step <= ttl / 1024
        assert math.log2(step).is_integer()  # exact multiples of it as floats
    assert _step(math.inf) == 0.0
    assert _step(0.0) == 0.0


def test_odd_ttls() -> None:
    store = MemoryStore()
    assert store.mark_seen("forever", math.inf)
    assert not store.mark_seen("forever", math.inf)
    assert store.mark_seen("gone", 0)
    assert store.mark_seen("gone", 0)  # a zero TTL remembers nothing
    for n in range(100):  # TTLs that vary from call to call
        assert store.mark_seen(f"v-{n}", 60 + n / 7)
    assert not store.mark_seen("v-0", 60)


def test_keys_are_compared_by_value() -> None:
    store = MemoryStore()
    key = "".join(["omnichannel:main:", "1:", "m-1"])
    assert store.mark_seen(key, 60)
    assert not store.mark_seen("omnichannel:main:1:m-1", 60)
    assert store.mark_seen("delivery \ud83d", 60)  # a lone surrogate is a key like any other
    assert not store.mark_seen("delivery \ud83d", 60)
