"""Many connections' idle checks on one timer.

A ``DelayedCall`` per connection costs an idle connection about 600 bytes (the call,
its dicts and the bound methods it holds); an entry of this heap about a hundred.
The checks run at exactly the times asked, as the per-connection timers did.
"""

from __future__ import annotations

import heapq
from typing import Protocol

from twisted.logger import Logger

from goim.logs import goim_observer
from goim.util import Clock, DelayedCall

log = Logger(observer=goim_observer)


class Checked(Protocol):
    """What a ``Deadlines`` holds: the key of its live entry (None when it has none;
    set by ``Deadlines`` only), and the check to run."""

    deadline_key: int | None

    def deadline_reached(self) -> None: ...


class Deadlines:
    """A heap of ``(deadline, key, item)`` and one timer for its earliest entry.

    ``check(item, when)`` calls ``item.deadline_reached()`` at ``when`` (an item has at
    most one deadline: a new one replaces the old); ``forget(item)`` drops it. A
    replaced or forgotten entry stays in the heap until it comes up, or until such
    entries are half of the heap, when they are dropped all at once (as Twisted's
    reactor does with cancelled calls): the heap never holds more than twice the
    live entries.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Checked]] = []
        self._next_key = 0
        self._stale = 0
        self._timer: DelayedCall | None = None
        self._timer_at = 0.0
        self._firing = False

    def __len__(self) -> int:
        """Live deadlines."""
        return len(self._heap) - self._stale

    def check(self, item: Checked, when: float) -> None:
        """Call ``item.deadline_reached()`` at ``when`` (instead of any earlier deadline)."""
        self.forget(item)
        self._next_key += 1
        item.deadline_key = self._next_key
        heapq.heappush(self._heap, (when, self._next_key, item))
        if not self._firing and (self._timer is None or when < self._timer_at):
            self._schedule()

    def forget(self, item: Checked) -> None:
        """Drop ``item``'s deadline, if it has one."""
        if item.deadline_key is None:
            return
        item.deadline_key = None
        self._stale += 1
        if self._stale * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if entry[2].deadline_key == entry[1]]
            heapq.heapify(self._heap)
            self._stale = 0
            if not self._heap and not self._firing:
                self._schedule()

    def _schedule(self) -> None:
        """The timer, for the earliest entry (none for an empty heap)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._heap:
            self._timer_at = self._heap[0][0]
            self._timer = self._clock.callLater(max(0.0, self._timer_at - self._clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._firing = True
        try:
            now = self._clock.seconds()
            while self._heap and self._heap[0][0] <= now:
                _, key, item = heapq.heappop(self._heap)
                if item.deadline_key != key:
                    self._stale -= 1
                    continue
                item.deadline_key = None
                try:
                    item.deadline_reached()
                except Exception:
                    log.failure("a deadline check failed")
        finally:
            self._firing = False
            self._schedule()
