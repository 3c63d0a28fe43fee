"""goim.heap: full garbage collections paced on a timer instead of by CPython."""

from twisted.internet.task import Clock as FakeReactor
from twisted.trial.unittest import SynchronousTestCase

from goim.clock import Clock
from goim.heap import CHECK_INTERVAL, NEVER, FullCollections


class FakeCollector:
    """The ``gc`` calls FullCollections makes, recorded; counts set by the test."""

    def __init__(self) -> None:
        self.threshold = (700, 10, 10)
        self.count = (0, 0, 0)
        self.collected: list[int] = []
        self.fail = False

    def get_threshold(self) -> tuple[int, int, int]:
        return self.threshold

    def set_threshold(self, threshold0: int, threshold1: int = 10, threshold2: int = 10) -> None:
        self.threshold = (threshold0, threshold1, threshold2)

    def get_count(self) -> tuple[int, int, int]:
        return self.count

    def collect(self, generation: int = 2) -> int:
        if self.fail:
            raise RuntimeError("a finalizer raised")
        self.collected.append(generation)
        self.count = (0, 0, 0)
        return 3


class FullCollectionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.gc = FakeCollector()
        self.pauses: list[float] = []
        self.now = [0.0]
        self.pacer = FullCollections(
            Clock(self.reactor),
            observe=self.pauses.append,
            min_interval=30.0,
            collector=self.gc,
            timer=lambda: self.now[0],
        )

    def advance(self, seconds: float) -> None:
        for _ in range(int(seconds / CHECK_INTERVAL)):
            self.reactor.advance(CHECK_INTERVAL)

    def test_start_takes_full_collections_from_cpython(self) -> None:
        """Started, the oldest generation's threshold is out of reach; stopped, CPython's is back."""
        self.pacer.start()
        self.assertEqual(self.gc.threshold, (700, 10, NEVER))
        self.assertTrue(self.pacer.running)
        self.pacer.stop()
        self.assertEqual(self.gc.threshold, (700, 10, 10))
        self.assertFalse(self.pacer.running)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_at_most_one_full_collection_per_interval(self) -> None:
        """However much is promoted, a full collection runs at most every min_interval seconds."""
        self.pacer.start()
        self.gc.count = (0, 0, 50)
        self.advance(29)
        self.assertEqual(self.gc.collected, [], "not before the interval")
        self.advance(1)
        self.assertEqual(self.gc.collected, [2])
        self.gc.count = (0, 0, 50)
        self.advance(29)
        self.assertEqual(self.gc.collected, [2])
        self.advance(1)
        self.assertEqual(self.gc.collected, [2, 2])
        self.assertEqual(self.pacer.collections, 2)

    def test_no_full_collection_without_promotions(self) -> None:
        """Below CPython's own threshold of middle-generation collections, nothing is collected."""
        self.pacer.start()
        self.gc.count = (0, 0, 9)
        self.advance(120)
        self.assertEqual(self.gc.collected, [])
        self.gc.count = (0, 0, 10)
        self.advance(1)
        self.assertEqual(self.gc.collected, [2], "due since long: collected at the next check")

    def test_pause_observed(self) -> None:
        """Each full collection's pause goes to the metric."""
        self.pacer.start()
        self.gc.count = (0, 0, 10)

        def collect(generation: int = 2) -> int:
            self.now[0] += 0.25
            return 0

        self.gc.collect = collect  # type: ignore[method-assign]
        self.advance(30)
        self.assertEqual(self.pauses, [0.25])

    def test_failing_collection_keeps_pacing(self) -> None:
        """A collection that raises (a finalizer) is logged; the pacer goes on."""
        self.pacer.start()
        self.gc.count = (0, 0, 10)
        self.gc.fail = True
        self.advance(30)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(self.pacer.running)
        self.gc.fail = False
        self.advance(30)
        self.assertEqual(self.gc.collected, [2])

    def test_start_twice_and_stop_twice(self) -> None:
        """start and stop are idempotent: the saved threshold is CPython's, not NEVER."""
        self.pacer.start()
        self.pacer.start()
        self.pacer.stop()
        self.pacer.stop()
        self.assertEqual(self.gc.threshold, (700, 10, 10))

    def test_interval_must_be_positive(self) -> None:
        with self.assertRaises(ValueError):
            FullCollections(Clock(self.reactor), min_interval=0, collector=self.gc)
