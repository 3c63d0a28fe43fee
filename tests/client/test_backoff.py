"""Exponential back-off with jitter."""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from goim.client.backoff import Backoff


class BackoffTests(SynchronousTestCase):
    def test_base_delay_doubles_up_to_the_maximum(self) -> None:
        """Without jitter: 1, 2, 4, 8, then capped at the maximum."""
        b = Backoff(initial=1, maximum=10, jitter=0)
        self.assertEqual([b.next_delay() for _ in range(6)], [1, 2, 4, 8, 10, 10])

    def test_jitter_shortens_each_delay_within_bounds(self) -> None:
        """With jitter 0.5 each delay lies in [base/2, base] and they differ."""
        b = Backoff(initial=1, maximum=64, jitter=0.5, random=random.Random(7).random)
        delays = [b.next_delay() for _ in range(6)]
        for n, delay in enumerate(delays):
            base = 2.0**n
            self.assertTrue(base / 2 <= delay <= base, (n, delay))
        self.assertEqual(len(set(delays)), 6)

    def test_reset_starts_again_from_initial(self) -> None:
        """After reset() the next delay is the initial one again."""
        b = Backoff(initial=1, maximum=60, jitter=0)
        for _ in range(5):
            b.next_delay()
        b.reset()
        self.assertEqual(b.next_delay(), 1)
        self.assertEqual(b.attempts, 1)

    def test_many_attempts_do_not_overflow(self) -> None:
        """Thousands of attempts stay at the maximum (no float overflow)."""
        b = Backoff(initial=1, maximum=60, jitter=0)
        for _ in range(5000):
            delay = b.next_delay()
        self.assertEqual(delay, 60)

    def test_bad_parameters_are_refused(self) -> None:
        """Non-positive initial, maximum below initial, factor below 1, jitter outside 0..1."""
        for kwargs in ({"initial": 0}, {"initial": 5, "maximum": 1}, {"factor": 0.5}, {"jitter": 1.5}):
            self.assertRaises(ValueError, Backoff, **kwargs)
