"""Ids: monotonic per kind, durable before they are handed out, never reused across restarts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tango_oet.store import Store, StoreOptions
from tests.store.conftest import Child, make_summary

OpenStore = Callable[..., Store]


def test_ids_start_at_one_and_increase_per_kind(open_store: OpenStore) -> None:
    store = open_store()
    assert [store.allocate_id() for _ in range(3)] == [1, 2, 3]
    assert [store.allocate_id("queue_item") for _ in range(2)] == [1, 2]


def test_after_a_clean_close_ids_continue_without_a_gap(open_store: OpenStore) -> None:
    store = open_store()
    assert [store.allocate_id() for _ in range(3)] == [1, 2, 3]
    store.allocate_id("queue_item")
    store.close()
    reopened = open_store()
    assert reopened.allocate_id() == 4
    assert reopened.allocate_id("queue_item") == 2
    assert reopened.load(0).next_id == 5


@pytest.mark.parametrize("block", [64, 1])
def test_after_kill_9_no_id_is_given_twice(
    child: Callable[..., Child], open_store: OpenStore, path: Path, block: int
) -> None:
    owner = child("ids", str(path), "5", str(block))
    given = owner.message()
    owner.kill()

    store = open_store()
    later = [store.allocate_id() for _ in range(5)]
    assert min(later) > max(given["ids"])
    assert store.allocate_id("queue_item") > max(given["items"])
    if block == 1:  # every id its own commit: the ids continue right after the last given
        assert later == [6, 7, 8, 9, 10]
    assert [p.id for p in store.load(10).procedures] == given["ids"]


def test_ids_continue_after_the_highest_stored_procedure(open_store: OpenStore) -> None:
    store = open_store()
    store.record_summary(make_summary(500))
    store.close()
    assert open_store().allocate_id() == 501


def test_an_unknown_id_kind_is_refused(open_store: OpenStore) -> None:
    with pytest.raises(ValueError, match="id kind"):
        open_store().allocate_id("prompt")  # type: ignore[arg-type]


def test_ids_given_while_open_are_unique_across_threads(open_store: OpenStore) -> None:
    import concurrent.futures

    store = open_store(options=StoreOptions(commit_interval=0.0, id_block=7))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda _: store.allocate_id(), range(200)))
    assert sorted(ids) == list(range(1, 201))


# ---- peek_ids: the device creates the attributes of the next ids ahead of Prepare -----------
def test_peek_ids_are_the_ids_allocate_id_hands_out_next(open_store: OpenStore) -> None:
    # A block of 2: the peeked ids run across several reservations, as the allocated ones do.
    store = open_store(options=StoreOptions(commit_interval=0.0, id_block=2))
    assert store.peek_ids(5) == [1, 2, 3, 4, 5]
    assert store.peek_ids(5) == [1, 2, 3, 4, 5]  # peeking took nothing
    assert [store.allocate_id() for _ in range(3)] == [1, 2, 3]
    assert store.peek_ids(3) == [4, 5, 6]
    assert store.peek_ids(0) == []
    assert store.peek_ids(2, kind="queue_item") == [1, 2]


def test_peek_ids_reserve_nothing_durably(open_store: OpenStore) -> None:
    store = open_store()
    store.allocate_id()
    commits = store.stats().commits
    assert store.peek_ids(1000)[-1] == 1001
    assert store.stats().commits == commits  # not a write, not even a wait for the writer
    store.close()
    assert open_store().allocate_id() == 2  # a clean close gives back the block, not 1001


def test_after_kill_9_peek_ids_are_the_ids_given_next_not_the_highest_stored_plus_one(
    child: Callable[..., Child], open_store: OpenStore, path: Path
) -> None:
    owner = child("ids", str(path), "3")
    given = owner.message()
    owner.kill()

    store = open_store()
    peeked = store.peek_ids(3)
    assert peeked[0] > max(given["ids"]) + 1  # the rest of the killed owner's block is skipped
    assert [store.allocate_id() for _ in range(3)] == peeked


def test_peek_ids_refuse_a_negative_count_and_an_unknown_kind(open_store: OpenStore) -> None:
    store = open_store()
    with pytest.raises(ValueError, match="count"):
        store.peek_ids(-1)
    with pytest.raises(ValueError, match="id kind"):
        store.peek_ids(1, kind="prompt")  # type: ignore[arg-type]
