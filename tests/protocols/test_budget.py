"""The frame budget of a connection: a token bucket, tested without a clock."""

from twisted.trial.unittest import SynchronousTestCase

from goim.protocols.budget import TokenBucket


class TokenBucketTests(SynchronousTestCase):
    def test_full_at_the_start_then_empty(self) -> None:
        """A new bucket allows ``burst`` frames at once and refuses the next."""
        bucket = TokenBucket(rate=10, burst=3, now=100.0)
        self.assertEqual([bucket.take(100.0) for _ in range(4)], [True, True, True, False])

    def test_refills_at_rate(self) -> None:
        """Tokens come back at ``rate`` a second: 0.1 s at 10/s buys one frame."""
        bucket = TokenBucket(rate=10, burst=1, now=0.0)
        self.assertTrue(bucket.take(0.0))
        self.assertFalse(bucket.take(0.05))
        self.assertTrue(bucket.take(0.1 + 1e-9))

    def test_never_holds_more_than_burst(self) -> None:
        """A long silence saves up at most ``burst`` tokens."""
        bucket = TokenBucket(rate=1000, burst=2, now=0.0)
        self.assertEqual([bucket.take(60.0) for _ in range(3)], [True, True, False])

    def test_refused_take_keeps_the_fraction(self) -> None:
        """A refused frame takes nothing: the partial token still counts toward the next."""
        bucket = TokenBucket(rate=10, burst=1, now=0.0)
        bucket.take(0.0)
        self.assertFalse(bucket.take(0.06))
        self.assertAlmostEqual(bucket.tokens, 0.6)
        self.assertTrue(bucket.take(0.1))

    def test_restart_counts_refills_from_then(self) -> None:
        """``restart`` moves the refill origin (a connection made later than the bucket)."""
        bucket = TokenBucket(rate=10, burst=1)
        bucket.take(0.0)
        bucket.restart(1000.0)
        self.assertFalse(bucket.take(1000.05))
