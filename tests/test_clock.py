"""goim.clock.Clock over a task.Clock: time, delays, sleeps, loops and jitter."""

from twisted.internet import task
from twisted.internet.defer import CancelledError
from twisted.trial.unittest import TestCase

from goim.clock import Clock


class ClockTests(TestCase):
    def setUp(self) -> None:
        self.reactor = task.Clock()
        self.reactor.advance(1700000000.25)
        self.clock = Clock(self.reactor, seed=1)

    def test_time(self) -> None:
        self.assertEqual(self.clock.seconds(), 1700000000.25)
        self.assertEqual(self.clock.time_msec(), 1700000000250)

    def test_call_later(self) -> None:
        calls: list[int] = []
        call = self.clock.call_later(2, calls.append, 7)
        self.reactor.advance(1.9)
        self.assertEqual(calls, [])
        self.reactor.advance(0.1)
        self.assertEqual(calls, [7])
        self.assertFalse(call.active())

    def test_sleep_fires_after_the_delay(self) -> None:
        d = self.clock.sleep(3)
        self.reactor.advance(2.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.assertIsNone(self.successResultOf(d))

    def test_cancelled_sleep_cancels_its_timer(self) -> None:
        d = self.clock.sleep(3)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_looping_call(self) -> None:
        ticks: list[float] = []
        loop = self.clock.looping_call(lambda: ticks.append(self.clock.seconds()), 5, now=True)
        self.reactor.advance(5)
        self.reactor.advance(5)
        loop.stop()
        self.reactor.advance(5)
        self.assertEqual(len(ticks), 3)

    def test_jitter_is_seeded_and_bounded(self) -> None:
        values = [self.clock.jitter(10, 0.2) for _ in range(100)]
        self.assertTrue(all(8 <= v <= 12 for v in values))
        again = Clock(task.Clock(), seed=1)
        self.assertEqual(values, [again.jitter(10, 0.2) for _ in range(100)])
