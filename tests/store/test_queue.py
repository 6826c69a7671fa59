"""The queue's record: items in run order, finished ones newest last, atomic changes, no secrets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from tango_oet.store import QueueItemRecord, Store, StoreOptions

OpenStore = Callable[..., Store]


def _item(store: Store, name: str, position: int | None, state: str = "PENDING") -> QueueItemRecord:
    return QueueItemRecord(
        id=store.allocate_id("queue_item"),
        name=name,
        state=state,
        request={"prepare": {"script": f"file:///scripts/{name}.py"}, "calls": []},
        added="2026-12-02T18:00:00.000000Z",
        position=position,
    )


def test_live_items_come_back_in_run_order_with_the_queue_state(open_store: OpenStore) -> None:
    store = open_store()
    a, b, c = (_item(store, n, p) for n, p in (("a", 2), ("b", 0), ("c", 1)))
    store.record_queue(state="RUNNING", items=[a, b, c])
    store.close()
    queue = open_store().load(0).queue
    assert queue.state == "RUNNING"
    assert [i.name for i in queue.items] == ["b", "c", "a"]
    assert queue.items[0] == b


def test_a_move_is_one_atomic_change_of_several_items(open_store: OpenStore) -> None:
    store = open_store()
    a, b = _item(store, "a", 0), _item(store, "b", 1)
    store.record_queue(items=[a, b])
    store.record_queue(items=[replace(a, position=1), replace(b, position=0)])
    assert [i.name for i in store.load(0).queue.items] == ["b", "a"]


def test_a_dequeued_item_is_gone_and_its_id_never_comes_back(open_store: OpenStore) -> None:
    store = open_store()
    a, b = _item(store, "a", 0), _item(store, "b", 1)
    store.record_queue(items=[a, b])
    store.record_queue(removed=[a.id], items=[replace(b, position=0)])
    restored = store.load(0)
    assert [i.id for i in restored.queue.items] == [b.id]
    assert restored.next_queue_item_id == b.id + 1
    store.close()
    assert open_store().allocate_id("queue_item") == b.id + 1


def test_finished_items_come_back_newest_last_and_are_bounded(open_store: OpenStore) -> None:
    store = open_store(options=StoreOptions(commit_interval=0.0, finished_queue_items=2))
    for n in range(3):
        item = _item(store, f"done{n}", None, "COMPLETE")
        store.record_queue(items=[replace(item, ended=f"2026-12-02T19:0{n}:00.000000Z")])
        store.flush()
    finished = store.load(0, finished_items=10).queue.finished
    assert [i.name for i in finished] == ["done1", "done2"]


def test_credentials_in_a_request_never_reach_the_file(open_store: OpenStore) -> None:
    store = open_store()
    item = replace(
        _item(store, "git", 0),
        request={"prepare": {"git": {"repo": "https://alice:s3cret@example.org/obs.git"}}},
    )
    store.record_queue(items=[item])
    store.flush()
    assert (
        b"s3cret"
        not in store.path.read_bytes() + store.path.with_name(store.path.name + "-wal").read_bytes()
    )
    (restored,) = store.load(0).queue.items
    assert "s3cret" not in str(restored.request)


def test_an_item_as_the_queue_attribute_shows_it(open_store: OpenStore) -> None:
    store = open_store()
    item = replace(_item(store, "a", 0), note="started late", extra={"late_by_s": 3.5})
    assert item.to_json() == {
        "id": item.id,
        "name": "a",
        "state": "PENDING",
        "procedure": None,
        "at": None,
        "request": dict(item.request),
        "added": item.added,
        "started": None,
        "ended": None,
        "continue_on_failure": False,
        "note": "started late",
        "late_by_s": 3.5,
    }


def test_an_unknown_state_is_refused_and_nothing_is_recorded(open_store: OpenStore) -> None:
    store = open_store()
    with pytest.raises(ValueError, match="queue state"):
        store.record_queue(state="PAUSED")
    with pytest.raises(ValueError, match="unknown state"):
        store.record_queue(items=[_item(store, "a", 0, "SLEEPING")])
    assert store.load(0).queue.items == ()
