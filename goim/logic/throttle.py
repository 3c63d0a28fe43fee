"""Per-key throttles kept in memory: exponential back-off after failures, and a token bucket.

Both take the clock in their constructor and keep at most ``max_keys`` keys (the
least recently used go first), so an attacker with many addresses costs bounded
memory. State is per process: on several logic nodes each node throttles alone.
"""

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

from goim.util import Clock


def address_key(host: str) -> str:
    """The throttling key of a client address: the address, or its /64 for IPv6.

    One IPv6 host usually holds a whole /64, so counting single addresses would
    let it pick a fresh one for every attempt.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass
class _Failures:
    count: int
    blocked_until: float
    last: float


class Backoff:
    """Exponential back-off per key.

    The first ``free`` failures cost nothing; each further failure blocks the
    key for ``base * 2**(n - 1)`` seconds (n counting the failures past the free
    ones), at most ``cap``. Attempts while blocked are refused without counting,
    so the block never grows past ``cap``; a key quiet for ``forget`` seconds
    starts over.
    """

    def __init__(
        self, clock: Clock, *, free: int, base: float, cap: float, forget: float | None = None, max_keys: int = 100_000
    ) -> None:
        self._clock = clock
        self.free = free
        self.base = base
        self.cap = cap
        self.forget = forget if forget is not None else 4 * cap
        self.max_keys = max_keys
        self._keys: OrderedDict[str, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def _entry(self, key: str) -> _Failures | None:
        entry = self._keys.get(key)
        if entry is None:
            return None
        if self._clock.seconds() - entry.last >= self.forget:
            del self._keys[key]
            return None
        self._keys.move_to_end(key)
        return entry

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        entry = self._entry(key)
        if entry is None:
            return 0.0
        return max(0.0, entry.blocked_until - self._clock.seconds())

    def failed(self, key: str) -> float:
        """Count a failure; returns the seconds ``key`` is now blocked for (0 while free)."""
        now = self._clock.seconds()
        entry = self._entry(key)
        if entry is None:
            entry = self._keys[key] = _Failures(0, 0.0, now)
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        entry.count += 1
        entry.last = now
        over = entry.count - self.free
        if over <= 0:
            return 0.0
        delay = min(self.cap, self.base * 2 ** min(over - 1, 62))
        entry.blocked_until = now + delay
        return delay

    def succeeded(self, key: str) -> None:
        """Forget the key's failures."""
        self._keys.pop(key, None)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucket:
    """At most ``burst`` events at once per key, refilled at ``rate`` per second."""

    def __init__(self, clock: Clock, *, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self._clock = clock
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._keys: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str) -> float:
        """Take one token; returns 0 when there was one, else the seconds until there is."""
        now = self._clock.seconds()
        bucket = self._keys.get(key)
        if bucket is None:
            bucket = self._keys[key] = _Bucket(float(self.burst), now)
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate
