"""Exponential back-off with jitter, for reconnects and send retries."""

from __future__ import annotations

import random as _random
from typing import Callable


class Backoff:
    """Delays that double from ``initial`` up to ``maximum``, each shortened by jitter.

    The n-th delay is ``min(maximum, initial * factor**n) * (1 - jitter * r)`` with
    ``r`` uniform in [0, 1): clients that lost the server at the same moment spread
    their reconnects instead of arriving together. ``reset()`` starts over (call it
    once a connection has signed in).

    Args:
        initial: the first base delay in seconds.
        maximum: the largest base delay in seconds.
        factor: how much the base delay grows per attempt.
        jitter: the largest fraction taken off a delay, 0..1.
        random: a source of floats in [0, 1) (``random.random`` by default; tests pass
            a fixed one).
    """

    def __init__(
        self,
        *,
        initial: float = 1.0,
        maximum: float = 60.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        random: Callable[[], float] | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError(f"need 0 < initial <= maximum, not {initial} and {maximum}")
        if factor < 1:
            raise ValueError(f"factor must be at least 1, not {factor}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be within 0..1, not {jitter}")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._random = random or _random.random
        self._base = initial
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts as one attempt."""
        base = self._base
        self._base = min(self.maximum, self._base * self.factor)
        self.attempts += 1
        return base * (1.0 - self.jitter * self._random())

    def reset(self) -> None:
        """Start again from ``initial`` (after a success)."""
        self._base = self.initial
        self.attempts = 0
