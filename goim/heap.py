"""The garbage collector of a serving process: start-up frozen, full collections paced.

CPython collects its oldest generation when the objects promoted into it since the
last full collection pass a quarter of those already there. A full collection
visits every tracked object, so its pause grows with the heap. Under a backlog
(thousands of queued sends, each a coroutine, Deferreds and frames that live long
enough to be promoted) promotions come fast, full collections follow each other
every second or two, each longer than the last, and a saturated server spends its
time collecting instead of working through the backlog: measured on standalone
SQLite, the sends a paced overload got through fell from about 11,400/s to
6,800–8,500/s (docs/benchmarks.md, "Issue 12, fourth pass").

So a serving process (the twistd entry points turn this on; a test process is left
alone):

* freezes what start-up built once every listener is up (:func:`freeze_heap`):
  modules, containers and pools live as long as the process, and no collection
  visits them again;
* leaves the young generations to CPython (their collections visit at most a few
  thousand objects);
* takes full collections out of CPython's hands (:class:`FullCollections`) and
  runs one at most every ``min_interval`` seconds, and only after the young
  generations were collected often enough to have promoted something, in the
  image of Synapse's ``synapse.metrics._gc``. Each one's pause is observed in
  ``goim_gc_full_seconds``; garbage in reference cycles that reached the oldest
  generation lives that much longer (reference counting frees the rest at once).
"""

import gc
import time
from typing import Callable, Protocol

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from goim.clock import Clock
from goim.logs import goim_observer

log = Logger(observer=goim_observer)

#: the fewest seconds between two full collections
FULL_COLLECTION_INTERVAL = 30.0
#: how often the pacer looks whether a full collection is due
CHECK_INTERVAL = 1.0
#: the oldest generation's threshold while paced: never reached, so CPython
#: itself no longer starts full collections
NEVER = 1 << 30
#: a full collection that pauses the process longer than this is logged as a warning
SLOW_COLLECTION = 0.1


class Collector(Protocol):
    """The part of the ``gc`` module :class:`FullCollections` uses (a fake in tests)."""

    def get_threshold(self) -> tuple[int, int, int]: ...

    def set_threshold(self, threshold0: int, threshold1: int = ..., threshold2: int = ...) -> None: ...

    def get_count(self) -> tuple[int, int, int]: ...

    def collect(self, generation: int = ...) -> int: ...


def freeze_heap() -> int:
    """Collect once, then freeze every object alive (``gc.freeze``).

    Returns:
        How many objects are frozen.
    """
    gc.collect()
    gc.freeze()
    count = gc.get_freeze_count()
    log.debug("froze {count} start-up objects out of the garbage collector's reach", count=count)
    return count


class FullCollections:
    """Runs the oldest generation's collections on a timer instead of CPython.

    Args:
        clock: schedules the checks.
        observe: called with each full collection's pause in seconds (a metric).
        min_interval: the fewest seconds between two full collections.
        collector: the ``gc`` module (a fake in tests).
        timer: a monotonic time source for the pause (``time.perf_counter``).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        observe: Callable[[float], None] | None = None,
        min_interval: float = FULL_COLLECTION_INTERVAL,
        collector: Collector = gc,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        if min_interval <= 0:
            raise ValueError(f"min_interval must be positive, not {min_interval}")
        self._clock = clock
        self._observe = observe
        self.min_interval = min_interval
        self._gc = collector
        self._timer = timer
        self._loop: LoopingCall | None = None
        self._saved: tuple[int, int, int] | None = None
        self._last = 0.0
        #: full collections run so far
        self.collections = 0

    @property
    def running(self) -> bool:
        """Whether full collections are paced (between ``start`` and ``stop``)."""
        return self._loop is not None

    def start(self) -> None:
        """Take full collections over from CPython (does nothing when started)."""
        if self._loop is not None:
            return
        self._saved = self._gc.get_threshold()
        young, middle, _ = self._saved
        self._gc.set_threshold(young, middle, NEVER)
        self._last = self._clock.seconds()
        self._loop = self._clock.looping_call(self._check, CHECK_INTERVAL)

    def stop(self) -> None:
        """Hand full collections back to CPython, with its earlier threshold."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if loop.running:
            loop.stop()
        if self._saved is not None:
            self._gc.set_threshold(*self._saved)
            self._saved = None

    def _check(self) -> None:
        assert self._saved is not None
        now = self._clock.seconds()
        # the count of the oldest generation is the middle one's collections since
        # the last full one: below CPython's own threshold nothing much was promoted
        if now - self._last < self.min_interval or self._gc.get_count()[2] < self._saved[2]:
            return
        self._last = now
        started = self._timer()
        try:
            found = self._gc.collect(2)
        except Exception:  # a finalizer that raised: keep pacing
            log.failure("a full garbage collection failed")
            return
        pause = self._timer() - started
        self.collections += 1
        if self._observe is not None:
            self._observe(pause)
        if pause >= SLOW_COLLECTION:
            log.warn("a full garbage collection paused the process for {ms:.0f} ms ({found} unreachable objects)",
                     ms=pause * 1000, found=found)  # fmt: skip
