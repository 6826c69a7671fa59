"""The structure plans one attribute change at a time, most urgent first, and lets Prepare wait."""

from __future__ import annotations

import threading

from tango_oet.device.structure import MAX_STALE, RETRY_AFTER_S, Change, Structure


def _make_all(structure: Structure) -> list[Change]:
    made = []
    while (change := structure.next_change()) is not None:
        structure.done(change)
        made.append(change)
    return made


def test_history_first_oldest_first_then_removals_then_spares() -> None:
    s = Structure()
    s.want([1, 2], spares=[3])
    assert [(c.procedure_id, c.kind, c.add) for c in _make_all(s)] == [
        (1, "State", True),
        (1, "Summary", True),
        (2, "State", True),
        (2, "Summary", True),
        (3, "State", True),
        (3, "Summary", True),
    ]
    s.want([2, 3, 4], spares=[5])
    assert [(c.procedure_id, c.kind, c.add) for c in _make_all(s)] == [
        (4, "State", True),
        (4, "Summary", True),
        (1, "State", False),
        (1, "Summary", False),
        (5, "State", True),
        (5, "Summary", True),
    ]
    assert s.existing() == [f"procedure{i}{k}" for i in (2, 3, 4, 5) for k in ("State", "Summary")]
    assert not s.pending()


def test_one_change_at_a_time_the_same_one_until_it_is_reported() -> None:
    s = Structure()
    s.want([7])
    first = s.next_change()
    assert first == Change(7, "State", add=True)
    assert s.next_change() == first  # not done yet: still the most urgent
    s.done(first)
    assert s.next_change() == Change(7, "Summary", add=True)


def test_a_failed_change_waits_for_its_retry_and_is_reported() -> None:
    now = [100.0]
    s = Structure(clock=lambda: now[0])
    s.want([1])
    change = s.next_change()
    assert change is not None
    s.failed(change, "API_Boom: no")
    assert s.failures() == {"procedure1State": "API_Boom: no"}
    assert s.next_change() == Change(1, "Summary", add=True)  # the others go on
    s.done(Change(1, "Summary", add=True))
    assert s.next_change() is None and s.pending()
    now[0] += RETRY_AFTER_S
    assert s.next_change() == change
    s.done(change)
    assert s.failures() == {} and not s.pending()


def test_wait_exists_returns_when_made_or_no_longer_wanted() -> None:
    s = Structure()
    s.want([1])
    made = threading.Event()

    def publisher() -> None:
        made.wait(5)
        s.done(Change(1, "State", add=True))

    t = threading.Thread(target=publisher)
    t.start()
    made.set()
    assert s.wait_exists(1, "State", timeout=5)
    t.join()
    # A procedure pruned before its attribute was made: the waiter is not left hanging.
    s.want([2])
    assert not s.wait_exists(1, "Summary", timeout=5)
    assert not s.wait_exists(2, "State", timeout=0.01)  # wanted, not made: times out


def test_release_frees_waiters_and_restart_accepts_them_again() -> None:
    s = Structure()
    s.want([1])
    s.release()
    assert not s.wait_exists(1, "State", timeout=5)
    s.restart()
    assert not s.wait_exists(1, "State", timeout=0.01)


def test_many_leftovers_are_removed_before_new_attributes_are_made() -> None:
    s = Structure()
    old = list(range(1, MAX_STALE + 2))
    s.want(old)
    _make_all(s)
    s.want([100])
    changes = _make_all(s)
    first = 2 * len(old) - MAX_STALE  # removed until only MAX_STALE are left over
    assert [c.add for c in changes] == [False] * first + [True, True] + [False] * MAX_STALE
    assert [c.procedure_id for c in changes if c.add] == [100, 100]
