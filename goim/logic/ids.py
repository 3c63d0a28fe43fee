"""Message ids from a segment allocator (DESIGN section 5).

Each process reserves ``step`` ids per database round trip and fetches the next
segment in the background once the current one runs low, so a send never waits on
the database for an id. Ids are unique across processes and restarts; they grow
within a process but, across processes, only roughly follow time.
"""

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from goim.logs import goim_observer
from goim.storage.messages import MessageStore
from goim.util import run_in_background

log = Logger(observer=goim_observer)


class SegmentAllocator:
    """Hands out ids of one id space, reserving them from the database in segments."""

    def __init__(self, store: MessageStore, name: str = "message", *, step: int = 1000) -> None:
        """
        Args:
            store: where segments are reserved.
            name: the id space.
            step: ids per segment; the next one is fetched when fewer than a fifth remain.
        """
        self._store = store
        self._name = name
        self._step = step
        self._low_water = max(1, step // 5)
        self._segments: list[range] = []
        self._fetching = False
        self._waiters: list[Deferred[None]] = []

    def _available(self) -> int:
        return sum(len(s) for s in self._segments)

    async def take(self, count: int) -> list[int]:
        """``count`` fresh ids, ascending."""
        while self._available() < count:
            waiter: Deferred[None] = Deferred()
            self._waiters.append(waiter)
            self._start_fetch()
            await waiter
        ids: list[int] = []
        while len(ids) < count:
            segment = self._segments[0]
            n = min(count - len(ids), len(segment))
            ids.extend(segment[:n])
            if n == len(segment):
                self._segments.pop(0)
            else:
                self._segments[0] = segment[n:]
        if self._available() < self._low_water:
            self._start_fetch()
        return ids

    def _start_fetch(self) -> None:
        if not self._fetching:
            self._fetching = True
            run_in_background(self._fetch(), "message id segment refill")

    async def _fetch(self) -> None:
        waiters: list[Deferred[None]] = []
        try:
            segment = await self._store.reserve_ids(self._name, self._step)
            self._segments.append(segment)
            log.debug("reserved ids {first}..{last}", first=segment[0], last=segment[-1])
        except Exception as e:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.errback(e)
            raise
        finally:
            self._fetching = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)
