"""Message ids from a segment allocator (DESIGN section 5).

Each process reserves ``step`` ids per database round trip and fetches the next
segment in the background once the current one runs low, so a send never waits on
the database for an id. Ids are unique across processes and restarts; they grow
within a process but, across processes, only roughly follow time.
"""

from typing import Any, Sequence

from twisted.logger import Logger

from goim.batching import Batcher, shared
from goim.logs import goim_observer
from goim.storage.messages import MessageStore

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
        # one segment per round trip; a value is the count of ids its taker needs
        # (0: a prefetch at low water)
        self._refill: Batcher[None, int, None] = Batcher("message id segment refill", None, self._fetch)

    def _available(self) -> int:
        return sum(len(s) for s in self._segments)

    async def take(self, count: int) -> list[int]:
        """``count`` fresh ids, ascending."""
        while self._available() < count:
            await self._refill.add(count, key=None)
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
            # while a segment is on its way this asks nothing more of the database
            self._refill.add(0, key=None).addErrback(self._prefetch_failed)
        return ids

    def _prefetch_failed(self, failure: Any) -> None:
        log.failure("message id segment refill failed", failure)

    async def _fetch(self, _: None, needs: list[int]) -> Sequence[None]:
        # takers that queued while the previous segment was on its way may be
        # served by it already: no second round trip for them
        if self._available() >= max(n if n > 0 else self._low_water for n in needs):
            return shared(None, needs)
        segment = await self._store.reserve_ids(self._name, self._step)
        self._segments.append(segment)
        log.debug("reserved ids {first}..{last}", first=segment[0], last=segment[-1])
        return shared(None, needs)
