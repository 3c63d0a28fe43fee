"""goim.protocols.deadlines: many items' deadlines on one timer."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from goim.protocols.deadlines import Deadlines


class Item:
    def __init__(self, name: str, log: list[tuple[str, float]], clock: Clock) -> None:
        self.name = name
        self.deadline_key: int | None = None
        self._log = log
        self._clock = clock
        self.again: float | None = None  # check again this long after a deadline
        self.deadlines: Deadlines | None = None

    def deadline_reached(self) -> None:
        self._log.append((self.name, self._clock.seconds()))
        if self.again is not None:
            assert self.deadlines is not None
            self.deadlines.check(self, self._clock.seconds() + self.again)


class DeadlinesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.fired: list[tuple[str, float]] = []
        self.deadlines = Deadlines(self.clock)

    def item(self, name: str) -> Item:
        item = Item(name, self.fired, self.clock)
        item.deadlines = self.deadlines
        return item

    def test_each_deadline_at_its_time_on_one_timer(self) -> None:
        """Items' checks run at exactly their deadlines, in order, from one pending timer."""
        for name, when in (("b", 20.0), ("a", 10.0), ("c", 30.0), ("a2", 10.0)):
            self.deadlines.check(self.item(name), when)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(9.999)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.001)
        self.assertEqual(self.fired, [("a", 10.0), ("a2", 10.0)])
        self.clock.pump([10.0, 10.0])
        self.assertEqual(self.fired[2:], [("b", 20.0), ("c", 30.0)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.deadlines), 0)

    def test_a_new_deadline_replaces_the_old(self) -> None:
        """Checking an item again moves its deadline, earlier or later; only the last one runs."""
        item = self.item("x")
        self.deadlines.check(item, 10.0)
        self.deadlines.check(item, 5.0)
        self.deadlines.check(item, 15.0)
        self.clock.pump([5.0, 5.0, 5.0])
        self.assertEqual(self.fired, [("x", 15.0)])
        self.assertEqual(len(self.deadlines), 0)

    def test_a_check_can_set_the_next_deadline(self) -> None:
        """An item checked from its own check runs again then (an idle connection re-arming)."""
        item = self.item("x")
        item.again = 7.0
        self.deadlines.check(item, 3.0)
        self.clock.pump([3.0, 7.0, 7.0])
        self.assertEqual(self.fired, [("x", 3.0), ("x", 10.0), ("x", 17.0)])
        item.again = None
        self.clock.advance(7.0)
        self.assertEqual(self.fired[-1], ("x", 24.0))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_forgotten_items_do_not_run_and_do_not_pile_up(self) -> None:
        """Forgotten deadlines never run; the heap holds at most twice the live ones, and
        no timer is left once every item is forgotten."""
        items = [self.item(str(i)) for i in range(100)]
        for i, item in enumerate(items):
            self.deadlines.check(item, 100.0 + i)
        for item in items[:90]:
            self.deadlines.forget(item)
            self.assertLessEqual(len(self.deadlines._heap), 2 * max(1, len(self.deadlines)))
        self.assertEqual(len(self.deadlines), 10)
        self.clock.advance(300.0)
        self.assertEqual([name for name, _ in self.fired], [str(i) for i in range(90, 100)])
        for item in items:
            self.deadlines.forget(item)  # done or forgotten already: nothing happens
        self.deadlines.check(items[0], 500.0)
        self.deadlines.forget(items[0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_failing_check_does_not_stop_the_others(self) -> None:
        """A check that raises is logged; the checks due with it still run."""
        broken = self.item("broken")

        def fail() -> None:
            raise RuntimeError("boom")

        broken.deadline_reached = fail  # type: ignore[method-assign]
        self.deadlines.check(broken, 1.0)
        self.deadlines.check(self.item("ok"), 1.0)
        self.clock.advance(1.0)
        self.assertEqual(self.fired, [("ok", 1.0)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
