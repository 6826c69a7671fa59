"""Waiting helpers for tests: block on a condition with a deadline, raise with what was seen."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Recorder(Generic[T]):
    """Collects items from any thread; `wait_for` blocks until a predicate over them holds."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._cond = threading.Condition()

    def __call__(self, item: T) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def snapshot(self) -> list[T]:
        with self._cond:
            return list(self.items)

    def wait_for(
        self, predicate: Callable[[list[T]], bool], timeout: float = 10.0, what: str = "condition"
    ) -> list[T]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.items), timeout):
                tail = self.items[-15:]
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; last observed: {tail!r}"
                )
            return list(self.items)
