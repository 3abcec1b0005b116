"""The memory store's cheap copies keep the semantics of the JSON round trip and of
``attrs.evolve`` they replace (issue 16: the hot path)."""

from __future__ import annotations

import json
import math
from typing import Any

import attrs
import pytest

from omnichannel.runtime.stores import MemoryStore, QueueItem
from omnichannel.runtime.stores.base import json_copy
from omnichannel.runtime.stores.memory import _copy


def test_an_item_copy_keeps_every_field() -> None:
    item = QueueItem(destination="d", chat_key="d:1", payload={"a": 1}, deadline=5.0,
                     attempts=2, next_attempt_at=3.0, last_error="x", queue="inbox",
                     owner="me")  # fmt: skip
    copied = _copy(item, owner="other")
    assert copied == attrs.evolve(item, owner="other")
    for field in attrs.fields(QueueItem):  # a field added to QueueItem must be copied too
        expected = "other" if field.name == "owner" else getattr(item, field.name)
        assert getattr(copied, field.name) == expected, field.name
    assert _copy(item, queue="outbox").queue == "outbox"


@pytest.mark.parametrize(
    "value",
    [
        {"state": {"n": 1, "cart": [1, [2, 3]], "ok": True, "none": None}},
        {"history": [["user", "hi", 1.5], ["bot", "ho", 2.5]], "keep": 20},
        {"tuple": (1, 2), "nested": {"t": ((1,), [2])}},
        {"keys": {1: "a", 2.5: "b", False: "c", None: "d"}},
        {"big": 10**30, "text": "ünï\ud800", "list": [[{"x": [1]}]]},
    ],
)
def test_a_state_copy_is_what_json_gives_back(value: dict[str, Any]) -> None:
    copied = json_copy(value)
    assert copied == json.loads(json.dumps(value))
    assert json.dumps(copied) == json.dumps(json.loads(json.dumps(value)))


def test_a_state_copy_refuses_what_json_refuses() -> None:
    with pytest.raises(TypeError):
        json_copy({"x": object()})
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(ValueError):
        json_copy({"x": looped})
    assert math.isnan(json_copy({"x": math.nan})["x"])


def test_stored_state_is_a_copy_both_ways() -> None:
    store = MemoryStore()
    value: dict[str, Any] = {"state": {"cart": ["a"]}, "history": [["user", "hi", 1.0]]}
    store.set_state("k", value)
    value["state"]["cart"].append("b")
    value["history"][0][1] = "changed"
    loaded = store.load_state("k")
    assert loaded.value == {"state": {"cart": ["a"]}, "history": [["user", "hi", 1.0]]}
    assert loaded.value is not None
    loaded.value["state"]["cart"].append("c")
    loaded.value["history"][0].append("x")
    assert store.get_state("k") == {"state": {"cart": ["a"]}, "history": [["user", "hi", 1.0]]}
    with pytest.raises(TypeError):
        store.set_state("bad", {"x": {1, 2}})
    assert store.get_state("bad") is None
