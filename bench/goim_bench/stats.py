"""Pure helpers of the benchmark suite: percentiles, summaries, message-set digests."""

from __future__ import annotations

import hashlib
import math
import random
from typing import Iterable, Sequence

#: the percentiles every latency summary reports
PERCENTILES = (50.0, 90.0, 99.0)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of already sorted values.

    Args:
        sorted_values: values in ascending order, at least one.
        p: 0 < p <= 100.

    Returns:
        The smallest value such that at least ``p`` percent of the values are <= it.

    Raises:
        ValueError: for an empty sequence or ``p`` outside (0, 100].
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is outside (0, 100]")
    rank = math.ceil(p / 100.0 * len(sorted_values))
    return float(sorted_values[max(rank, 1) - 1])


def summarize(values: Iterable[float], digits: int = 3) -> dict[str, float | int]:
    """Count, mean, p50, p90, p99 and max of ``values`` (empty: count 0 only).

    Args:
        values: samples (e.g. latencies in ms).
        digits: rounding of the reported numbers.

    Returns:
        ``{"count", "mean", "p50", "p90", "p99", "max", "min"}``.
    """
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    summary: dict[str, float | int] = {
        "count": len(ordered),
        "mean": round(sum(ordered) / len(ordered), digits),
        "min": round(ordered[0], digits),
    }
    for p in PERCENTILES:
        summary[f"p{p:g}"] = round(percentile(ordered, p), digits)
    summary["max"] = round(ordered[-1], digits)
    return summary


class Reservoir:
    """A uniform random sample of at most ``capacity`` values of a stream (algorithm R).

    Loads with millions of latency samples keep a bounded, unbiased subset.
    """

    def __init__(self, capacity: int, seed: int | None = None) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.seen = 0
        self.values: list[float] = []
        self._random = random.Random(seed)

    def add(self, value: float) -> None:
        """Offer one value."""
        self.seen += 1
        if len(self.values) < self.capacity:
            self.values.append(value)
            return
        slot = self._random.randrange(self.seen)
        if slot < self.capacity:
            self.values[slot] = value


def digest(message_ids: Iterable[int]) -> str:
    """An order-independent fingerprint of a set of message ids (duplicates collapse).

    Loaders report fingerprints instead of whole id lists; two sets are equal when
    their counts and fingerprints are.
    """
    text = ",".join(str(i) for i in sorted(set(message_ids)))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def rate(count: float, seconds: float) -> float:
    """``count / seconds``, 0 for a non-positive duration."""
    return count / seconds if seconds > 0 else 0.0
