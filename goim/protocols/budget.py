"""The frame budget of one client connection: a token bucket.

A connection may send ``rate`` frames a second on average and ``burst`` at once;
a frame that finds the bucket empty closes the connection (the caller decides).
Pure: the caller passes the time, so tests need no clock.
"""


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; full at the start."""

    def __init__(self, *, rate: float, burst: float, now: float = 0.0) -> None:
        """
        Args:
            rate: tokens added per second.
            burst: the bucket's size (and its content at ``now``).
            now: the time the bucket starts filling from.
        """
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    def restart(self, now: float) -> None:
        """Count refills from ``now`` on (the tokens saved so far stay)."""
        self._at = now

    def take(self, now: float) -> bool:
        """Take one token at time ``now``; False (and nothing taken) when there is none."""
        tokens = self._tokens + (now - self._at) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self._at = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True

    @property
    def tokens(self) -> float:
        """The tokens left after the last ``take``."""
        return self._tokens
