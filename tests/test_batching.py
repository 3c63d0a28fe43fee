"""goim.batching: one run per key, bounded batches, fan-out of results and errors, drain."""

from typing import Any, Sequence

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from goim.batching import Batcher, FairQueue, FifoQueue, shared
from goim.clock import Clock


class Recorder:
    """A process function whose batches finish when the test says so."""

    def __init__(self) -> None:
        self.batches: list[tuple[Any, list[Any]]] = []
        self.pending: list[Deferred[Sequence[Any]]] = []

    async def __call__(self, key: Any, values: list[Any]) -> Sequence[Any]:
        self.batches.append((key, values))
        d: Deferred[Sequence[Any]] = Deferred()
        self.pending.append(d)
        return await d

    def finish(self, results: Sequence[Any] | None = None) -> None:
        d = self.pending.pop(0)
        key, values = self.batches[len(self.batches) - len(self.pending) - 1]
        d.callback([v * 10 for v in values] if results is None else results)


class BatcherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = task.Clock()
        self.clock = Clock(self.reactor)
        self.process = Recorder()

    def batcher(self, **kwargs: Any) -> Batcher[Any, Any, Any]:
        return Batcher("test", self.clock, self.process, **kwargs)

    def test_first_value_is_processed_at_once(self) -> None:
        """A value added to an idle key starts its batch in the same reactor turn."""
        b = self.batcher()
        d = b.add(1, key="k")
        self.assertEqual(self.process.batches, [("k", [1])])
        self.assertNoResult(d)
        self.process.finish()
        self.assertEqual(self.successResultOf(d), 10)
        self.assertTrue(b.idle)

    def test_values_added_during_a_batch_go_in_the_next_one_in_order(self) -> None:
        """One run per key: values added while a batch runs wait and form the next batch, in order."""
        b = self.batcher()
        first = b.add(1, key="k")
        later = [b.add(v, key="k") for v in (2, 3, 4)]
        self.assertEqual(len(self.process.batches), 1)
        self.assertEqual(b.queued(), 3)
        self.process.finish()
        self.assertEqual(self.successResultOf(first), 10)
        self.assertEqual(self.process.batches[1], ("k", [2, 3, 4]))
        self.process.finish()
        self.assertEqual([self.successResultOf(d) for d in later], [20, 30, 40])
        self.assertTrue(b.idle)

    def test_keys_run_independently(self) -> None:
        """Different keys each get their own run, concurrently."""
        b = self.batcher()
        da = b.add(1, key="a")
        db = b.add(2, key="b")
        self.assertEqual(self.process.batches, [("a", [1]), ("b", [2])])
        self.assertTrue(b.running("a") and b.running("b"))
        self.process.finish()
        self.assertEqual(self.successResultOf(da), 10)
        self.assertFalse(b.running("a"))
        self.assertTrue(b.running("b"))
        self.process.finish()
        self.assertEqual(self.successResultOf(db), 20)

    def test_batches_are_bounded(self) -> None:
        """The default queue takes at most max_batch values per batch."""
        b = self.batcher(max_batch=2)
        b.add(0, key=None)
        ds = [b.add(v, key=None) for v in range(1, 6)]
        self.process.finish()
        self.assertEqual(self.process.batches[1][1], [1, 2])
        self.process.finish()
        self.assertEqual(self.process.batches[2][1], [3, 4])
        self.process.finish()
        self.assertEqual(self.process.batches[3][1], [5])
        self.process.finish()
        self.assertEqual([self.successResultOf(d) for d in ds], [10, 20, 30, 40, 50])

    def test_error_is_fanned_out_to_every_waiter_of_the_batch(self) -> None:
        """A failed batch fails each of its waiters; the next batch still runs."""
        b = self.batcher()
        first = b.add(1, key="k")
        failing = [b.add(v, key="k") for v in (2, 3)]
        self.process.finish()
        after = b.add(4, key="k")
        self.process.pending.pop(0).errback(KeyError("boom"))
        for d in failing:
            self.assertEqual(str(self.failureResultOf(d, KeyError).value), "'boom'")
        self.assertEqual(self.successResultOf(first), 10)
        self.assertEqual(self.process.batches[-1], ("k", [4]))
        self.process.finish()
        self.assertEqual(self.successResultOf(after), 40)

    def test_wrong_number_of_results_fails_the_batch(self) -> None:
        """A process function returning too few results fails its batch instead of losing waiters."""
        b = self.batcher()
        d = b.add(1, key="k")
        self.process.finish([])
        self.failureResultOf(d, ValueError)
        self.assertTrue(b.idle)

    def test_shared_result(self) -> None:
        """shared() gives every value of a batch the one result."""
        async def process(key: Any, values: list[int]) -> Sequence[str]:
            return shared("done", values)

        b: Batcher[Any, int, str] = Batcher("t", self.clock, process)
        self.assertEqual(self.successResultOf(b.add(1, key=None)), "done")

    def test_delay_gathers_a_reactor_turn(self) -> None:
        """With delay=0, values added in the same turn share the first batch."""
        b = self.batcher(delay=0)
        ds = [b.add(v, key="k") for v in (1, 2, 3)]
        self.assertEqual(self.process.batches, [])
        self.assertFalse(b.idle)
        self.reactor.advance(0)
        self.assertEqual(self.process.batches, [("k", [1, 2, 3])])
        self.process.finish()
        self.assertEqual([self.successResultOf(d) for d in ds], [10, 20, 30])

    def test_add_from_within_process_goes_in_the_next_batch(self) -> None:
        """Reentrancy: a value added by the process function itself forms the next batch."""
        seen: list[list[int]] = []
        inner: list[Deferred[int]] = []

        async def process(key: Any, values: list[int]) -> Sequence[int]:
            seen.append(values)
            if values == [1]:
                inner.append(b.add(2, key=key))
            return values

        b: Batcher[Any, int, int] = Batcher("t", self.clock, process)
        self.assertEqual(self.successResultOf(b.add(1, key="k")), 1)
        self.assertEqual(seen, [[1], [2]])
        self.assertEqual(self.successResultOf(inner[0]), 2)
        self.assertTrue(b.idle)

    def test_add_from_a_waiter_callback_goes_in_the_next_batch(self) -> None:
        """Reentrancy: a waiter that adds again when answered is served by the same run."""
        seen: list[list[int]] = []

        async def process(key: Any, values: list[int]) -> Sequence[int]:
            seen.append(values)
            return values

        b: Batcher[Any, int, int] = Batcher("t", self.clock, process)
        again: list[Deferred[int]] = []
        b.add(1, key="k").addCallback(lambda _: again.append(b.add(2, key="k")))
        self.assertEqual(seen, [[1], [2]])
        self.assertEqual(self.successResultOf(again[0]), 2)

    def test_after_runs_once_the_waiters_were_answered(self) -> None:
        """The after hook sees the batch and its results, after every waiter fired."""
        order: list[str] = []
        b = self.batcher(after=lambda key, values, results: order.append(f"after {values} {list(results)}"))
        b.add(1, key="k").addCallback(lambda r: order.append(f"answer {r}"))
        self.process.finish()
        self.assertEqual(order, ["answer 10", "after [1] [10]"])

    def test_drain_waits_for_every_key(self) -> None:
        """drain() fires once no key has a batch queued or running, values added meanwhile included."""
        b = self.batcher()
        b.add(1, key="a")
        b.add(2, key="b")
        drained = Deferred.fromCoroutine(b.drain())
        self.process.finish()
        b.add(3, key="b")
        self.assertNoResult(drained)
        self.process.finish()
        self.assertNoResult(drained)
        self.process.finish()
        self.assertIsNone(self.successResultOf(drained))
        self.assertIsNone(self.successResultOf(Deferred.fromCoroutine(b.drain())))

    def test_cancelled_drain_is_forgotten(self) -> None:
        """A drain cancelled (e.g. by a timeout) leaves nothing behind to fire later."""
        b = self.batcher()
        b.add(1, key="k")
        drained = Deferred.fromCoroutine(b.drain())
        drained.cancel()
        self.failureResultOf(drained)
        self.assertEqual(b._idle, [])
        self.process.finish()
        self.assertTrue(b.idle)


class FairQueueTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = task.Clock()
        self.clock = Clock(self.reactor)
        self.batches: list[list[tuple[str, int]]] = []
        self.gate: list[Deferred[None]] = []

    async def process(self, key: Any, values: list[tuple[str, int]]) -> Sequence[None]:
        self.batches.append(values)
        d: Deferred[None] = Deferred()
        self.gate.append(d)
        await d
        return shared(None, values)

    def test_one_value_per_lane_in_turn(self) -> None:
        """Idle lanes first, then busy ones round-robin; each lane in its own order."""
        queue: FairQueue[tuple[str, int], None] = FairQueue(
            lane=lambda v: v[0], cost=lambda v: v[1], max_batch=3, max_cost=100
        )
        b: Batcher[Any, tuple[str, int], None] = Batcher("t", self.clock, self.process, queue=lambda: queue)
        b.add(("x", 1), key=None)
        for v in [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1), ("a", 4)]:
            b.add(v, key=None)
        self.gate.pop(0).callback(None)
        self.assertEqual(self.batches[1], [("a", 1), ("b", 1), ("c", 1)])
        self.gate.pop(0).callback(None)
        # only lane "a" is left: its values fill the next batch, in order
        self.assertEqual(self.batches[2], [("a", 2), ("a", 3), ("a", 4)])
        self.gate.pop(0).callback(None)
        self.assertTrue(b.idle)

    def test_cost_bound(self) -> None:
        """A batch stops before passing max_cost; a value costlier than it goes alone."""
        queue: FairQueue[tuple[str, int], None] = FairQueue(
            lane=lambda v: v[0], cost=lambda v: v[1], max_batch=10, max_cost=5
        )
        for v in [("a", 3), ("b", 3), ("c", 9), ("d", 1)]:
            queue.push(_entry(v))
        self.assertEqual([e.value for e in queue.take()], [("a", 3)])
        self.assertEqual([e.value for e in queue.take()], [("b", 3)])
        self.assertEqual([e.value for e in queue.take()], [("c", 9)])
        self.assertEqual([e.value for e in queue.take()], [("d", 1)])
        self.assertEqual(len(queue), 0)
        self.assertEqual(queue.take(), [])

    def test_fifo_without_bound_takes_everything(self) -> None:
        """FifoQueue(None) takes every waiting value at once, in order."""
        queue: FifoQueue[int, None] = FifoQueue()
        for v in range(5):
            queue.push(_entry(v))
        self.assertEqual([e.value for e in queue.take()], [0, 1, 2, 3, 4])
        self.assertRaises(ValueError, FifoQueue, 0)

    def test_fifo_with_a_cost_bound(self) -> None:
        """With ``cost``, a batch takes values in order while their total cost stays within max_cost
        (and max_batch); a value costlier than max_cost alone still goes, alone."""
        queue: FifoQueue[list[int], None] = FifoQueue(3, cost=len, max_cost=4)
        for value in ([1, 2], [3], [4, 5], [6], [7, 8, 9, 10, 11], [12], [13], [14], [15]):
            queue.push(_entry(value))
        self.assertEqual([e.value for e in queue.take()], [[1, 2], [3]])
        self.assertEqual([e.value for e in queue.take()], [[4, 5], [6]])
        self.assertEqual([e.value for e in queue.take()], [[7, 8, 9, 10, 11]])
        self.assertEqual([e.value for e in queue.take()], [[12], [13], [14]], "max_batch still bounds it")
        self.assertEqual([e.value for e in queue.take()], [[15]])
        self.assertEqual(queue.take(), [])
        self.assertRaises(ValueError, FifoQueue, 10, cost=len, max_cost=0)


def _entry(value: Any) -> Any:
    from goim.batching import Entry

    return Entry(value, Deferred())
