"""One batching primitive: queue values, run one background batch per key, fan out.

In the image of Synapse's ``BatchingQueue`` (synapse/util/batching_queue.py). A
caller ``add``s a value and gets a Deferred of its own result. The first value of
a key starts a background run for that key; the run takes a bounded batch from the
key's queue, hands it to the process function, fires every waiter of the batch
with its result (or the batch's error), and goes on while the queue holds values.
Values added while a batch is being processed (also from inside the process
function or from a waiter's callbacks) go in a later batch of the same run, so a
key never has two batches in flight.

The queue is pluggable: ``FifoQueue`` takes values in order, ``FairQueue`` takes
one value per lane (a sender) in turn under a count and a cost bound.
"""

from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, Hashable, Protocol, Sequence, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from goim.clock import Clock
from goim.logs import goim_observer
from goim.util import run_in_background

log = Logger(observer=goim_observer)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
R = TypeVar("R")


@dataclass
class Entry(Generic[V, R]):
    """A value waiting in a queue, and the Deferred its caller awaits."""

    value: V
    waiter: "Deferred[R]"


class BatchQueue(Protocol[V, R]):
    """The values of one key waiting for a batch, and how the next batch is chosen."""

    def push(self, entry: Entry[V, R]) -> None:
        """Queue one more value."""

    def take(self) -> list[Entry[V, R]]:
        """The next batch: at least one entry when the queue is not empty."""

    def __len__(self) -> int:
        """Entries waiting."""


class FifoQueue(Generic[V, R]):
    """Values in the order they were added, at most ``max_batch`` per batch, and
    with ``cost`` at most ``max_cost`` in all (a single value costlier than that
    goes alone).

    Args:
        max_batch: the most values one batch holds (None: no bound).
        cost: the cost of a value (e.g. the items a list value holds).
        max_cost: the most total cost one batch holds (with ``cost``).
    """

    def __init__(
        self, max_batch: int | None = None, *, cost: Callable[[V], int] | None = None, max_cost: int = 0
    ) -> None:
        if max_batch is not None and max_batch <= 0:
            raise ValueError(f"max_batch must be positive, not {max_batch}")
        if cost is not None and max_cost <= 0:
            raise ValueError(f"max_cost must be positive, not {max_cost}")
        self.max_batch = max_batch
        self._cost = cost
        self.max_cost = max_cost
        self._entries: deque[Entry[V, R]] = deque()

    def push(self, entry: Entry[V, R]) -> None:
        self._entries.append(entry)

    def take(self) -> list[Entry[V, R]]:
        entries = self._entries
        n = len(entries) if self.max_batch is None else min(self.max_batch, len(entries))
        if self._cost is None:
            return [entries.popleft() for _ in range(n)]
        batch: list[Entry[V, R]] = []
        total = 0
        while len(batch) < n:
            cost = self._cost(entries[0].value)
            if batch and total + cost > self.max_cost:
                break
            batch.append(entries.popleft())
            total += cost
        return batch

    def __len__(self) -> int:
        return len(self._entries)


class FairQueue(Generic[V, R]):
    """One FIFO per lane; a batch takes one value per lane in turn.

    Lanes that were idle are served first (in the order they arrived), busy ones
    round-robin, until the batch holds ``max_batch`` values or adding the next one
    would pass ``max_cost`` (a single value costlier than that goes alone). So one
    lane's backlog never delays another lane's value by more than one bounded batch.

    Args:
        lane: the lane of a value (e.g. its sender).
        cost: the cost of a value (e.g. the copies it stores).
        max_batch: the most values one batch holds.
        max_cost: the most total cost one batch holds.
    """

    def __init__(
        self,
        *,
        lane: Callable[[V], Hashable],
        cost: Callable[[V], int],
        max_batch: int,
        max_cost: int,
    ) -> None:
        if max_batch <= 0 or max_cost <= 0:
            raise ValueError("max_batch and max_cost must be positive")
        self._lane = lane
        self._cost = cost
        self.max_batch = max_batch
        self.max_cost = max_cost
        self._queues: dict[Hashable, deque[Entry[V, R]]] = {}
        self._fresh: deque[Hashable] = deque()
        self._ring: deque[Hashable] = deque()
        self._count = 0

    def push(self, entry: Entry[V, R]) -> None:
        lane = self._lane(entry.value)
        queue = self._queues.get(lane)
        if queue is None:
            self._queues[lane] = deque([entry])
            self._fresh.append(lane)
        else:
            queue.append(entry)
        self._count += 1

    def take(self) -> list[Entry[V, R]]:
        batch: list[Entry[V, R]] = []
        cost = 0
        while len(batch) < self.max_batch:
            source = self._fresh if self._fresh else self._ring
            if not source:
                break
            lane = source[0]
            queue = self._queues[lane]
            next_cost = self._cost(queue[0].value)
            if batch and cost + next_cost > self.max_cost:
                break
            source.popleft()
            batch.append(queue.popleft())
            cost += next_cost
            if queue:
                self._ring.append(lane)
            else:
                del self._queues[lane]
        self._count -= len(batch)
        return batch

    def __len__(self) -> int:
        return self._count


class Batcher(Generic[K, V, R]):
    """Batches values per key and runs one batch per key at a time.

    Args:
        name: names the batcher in log lines.
        clock: schedules delayed runs (needed only with ``delay``).
        process: ``process(key, values)`` handles one batch and returns one result
            per value, in order. If it raises (or returns the wrong number of
            results), every waiter of that batch gets the error; the run goes on
            with the next batch.
        queue: makes the queue of a key (default: ``FifoQueue(max_batch)``).
        max_batch: the bound of the default queue's batches.
        delay: None to start a key's run at once (a value added to an idle key is
            processed in the same reactor turn); a number of seconds (0: the next
            reactor turn) to wait first, so that values added meanwhile share the
            first batch.
        after: called with ``(key, values, results)`` after a batch's waiters were
            fired and before the next batch is taken (effects that must follow the
            answers, such as delivery after ACKs).
    """

    def __init__(
        self,
        name: str,
        clock: Clock | None,
        process: Callable[[K, list[V]], Awaitable[Sequence[R]]],
        *,
        queue: Callable[[], BatchQueue[V, R]] | None = None,
        max_batch: int | None = None,
        delay: float | None = None,
        after: Callable[[K, list[V], Sequence[R]], None] | None = None,
    ) -> None:
        if delay is not None and clock is None:
            raise ValueError("a Batcher with a delay needs a clock")
        self.name = name
        self._clock = clock
        self._process = process
        self._make_queue: Callable[[], BatchQueue[V, R]] = queue or (lambda: FifoQueue(max_batch))
        self._delay = delay
        self._after = after
        self._queues: dict[K, BatchQueue[V, R]] = {}
        # keys whose run is scheduled or going on
        self._running: set[K] = set()
        self._idle: list[Deferred[None]] = []

    def add(self, value: V, *, key: K) -> "Deferred[R]":
        """Queue ``value`` under ``key``.

        Returns:
            A Deferred that fires with the value's result once its batch is
            processed, or fails with the batch's error.
        """
        waiter: Deferred[R] = Deferred()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = self._make_queue()
        queue.push(Entry(value, waiter))
        if key not in self._running:
            self._running.add(key)
            if self._delay is None:
                self._start(key)
            else:
                assert self._clock is not None
                self._clock.call_later(self._delay, self._start, key)
        return waiter

    def queued(self) -> int:
        """Values waiting for a batch, under every key."""
        return sum(len(q) for q in self._queues.values())

    def running(self, key: K) -> bool:
        """Whether ``key`` has a run scheduled or going on."""
        return key in self._running

    @property
    def idle(self) -> bool:
        """No run is scheduled or going on (so nothing is queued either)."""
        return not self._running

    async def drain(self) -> None:
        """Wait until every value added so far (and any added meanwhile) is processed."""
        while self._running:
            waiter: Deferred[None] = Deferred()
            self._idle.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._idle:
                    self._idle.remove(waiter)

    def _start(self, key: K) -> None:
        run_in_background(self._run(key), f"{self.name} batcher")

    async def _run(self, key: K) -> None:
        try:
            while True:
                queue = self._queues.get(key)
                if not queue:
                    self._queues.pop(key, None)
                    return
                batch = queue.take()
                if not queue:
                    # values added from here on get a fresh queue (same run)
                    del self._queues[key]
                values = [entry.value for entry in batch]
                try:
                    results = await self._process(key, values)
                    if len(results) != len(batch):
                        raise ValueError(
                            f"{self.name}: {len(results)} results for a batch of {len(batch)} values"
                        )
                except Exception:
                    failure = Failure()
                    for entry in batch:
                        entry.waiter.errback(failure)
                    continue
                for entry, result in zip(batch, results):
                    entry.waiter.callback(result)
                if self._after is not None:
                    try:
                        self._after(key, values, results)
                    except Exception:
                        log.failure("{name}: handling a processed batch failed", name=self.name)
        finally:
            self._running.discard(key)
            if not self._running:
                idle, self._idle = self._idle, []
                for d in idle:
                    d.callback(None)


def shared(result: R, values: Sequence[Any]) -> list[R]:
    """One ``result`` for every value of a batch (for a process function whose
    batch has a single outcome)."""
    return [result] * len(values)
