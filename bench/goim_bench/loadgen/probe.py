"""How late a load generator's own reactor runs: its share of a measured tail."""

from __future__ import annotations

from typing import Any

#: seconds between the probe's timers: short next to the latencies it accounts for
LAG_INTERVAL = 0.005


class LagProbe:
    """A timer every ``interval`` seconds that records how late it fires.

    A push waits unread in the socket while the process that receives it is busy
    elsewhere (a long reactor turn, a collection, the process waiting for its share
    of the load core), and that wait reads as send→push latency. The probe keeps,
    per quarter second (keys ``int(time * 4)``, the keys of a phase's ``worst_ms``),
    the longest delay of a timer due in it, in ms.
    """

    def __init__(self, clock: Any, interval: float = LAG_INTERVAL) -> None:
        self.clock = clock
        self.interval = interval
        self.late_ms: dict[int, float] = {}
        self._call: Any = None

    def start(self) -> None:
        if self._call is None:
            self._schedule(self.clock.seconds())

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def take(self) -> dict[int, float]:
        """The delays recorded since the last call, and forget them."""
        late, self.late_ms = self.late_ms, {}
        return late

    def _schedule(self, now: float) -> None:
        self._call = self.clock.callLater(self.interval, self._fire, now + self.interval)

    def _fire(self, due: float) -> None:
        now = self.clock.seconds()
        late = max(0.0, (now - due) * 1000.0)
        key = int(due * 4)
        if late > self.late_ms.get(key, -1.0):
            self.late_ms[key] = late
        self._schedule(now)
