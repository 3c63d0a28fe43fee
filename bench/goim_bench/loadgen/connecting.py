"""One ``connect`` command of a load generator: connect, sign in (and sync) every
device not connected, a bounded number of attempts at once, failed ones retried
with back-off, the whole run stopped at a deadline or when the server refuses too
many in a row."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred

from goim_bench.loadgen.connection import _Attempt, _websocket_attempt
from goim_bench.loadgen.device import Device
from goim_bench.loadgen.frames import _now

if TYPE_CHECKING:
    from goim_bench.loadgen.generator import LoadGenerator

reactor: Any = _reactor


class ConnectRun:
    """The state and the attempts of one ``connect`` command of ``gen``.

    The generator's connection events call :meth:`attempt_succeeded` and
    :meth:`attempt_failed` while this run is ``gen._connect``.
    """

    def __init__(self, gen: LoadGenerator, args: dict[str, Any], queue: list[Device]) -> None:
        self.gen = gen
        self.queue = queue
        self.concurrency = int(args.get("concurrency", 200))
        self.sync = bool(args.get("sync", False))
        self.attempt_timeout = float(args.get("attempt_timeout", 20.0))
        self.retries = int(args.get("retries", 0))
        self.max_fail_streak = int(args.get("max_fail_streak", 1000))
        self.expect: dict[int, int] = {int(k): v for k, v in (args.get("expect") or {}).items()}
        self.active: dict[int, Any] = {}  # device index -> attempt timer
        self.tries: dict[int, int] = {}
        self.started_at: dict[int, float] = {}
        self.t0 = _now()
        self.signed_in: list[float] = []
        self.up_to_date: list[float] = []
        self.failed: dict[str, int] = {}
        self.final_failures = 0
        self.fail_streak = 0
        self.stopped = False
        self.done: Deferred[None] = Deferred()

    def _current(self) -> bool:
        return self.gen._connect is self

    def fill(self) -> None:
        """Start attempts up to the concurrency bound."""
        while self.queue and len(self.active) < self.concurrency and not self.stopped:
            device = self.queue.pop()
            self.start_attempt(device)

    def start_attempt(self, device: Device) -> None:
        gen = self.gen
        self.active[device.index] = gen.clock.callLater(self.attempt_timeout, self.attempt_timed_out, device)
        self.started_at[device.index] = _now()
        bind = (gen.source, 0) if gen.source else None
        if gen.ws_url:
            factory: Any = _websocket_attempt(gen, device, gen.ws_url)
            host, port = factory.host, factory.port
        else:
            factory, host, port = _Attempt(gen, device), gen.host, gen.port_for(device)
        reactor.connectTCP(host, port, factory, timeout=self.attempt_timeout, bindAddress=bind)

    def attempt_timed_out(self, device: Device) -> None:
        if not self._current() or device.index not in self.active:
            return
        self.active[device.index] = None
        conn = device.conn
        self.attempt_failed(device, "timeout")
        if conn is not None and conn.transport is not None:
            conn.transport.abortConnection()

    def attempt_succeeded(self, device: Device) -> None:
        if not self._current():
            return
        timer = self.active.pop(device.index, None)
        if timer is not None and timer.active():
            timer.cancel()
        self.fail_streak = 0
        self._after_attempt()

    def attempt_failed(self, device: Device, reason: str) -> None:
        if not self._current() or device.index not in self.active:
            return
        timer = self.active.pop(device.index)
        if timer is not None and timer.active():
            timer.cancel()
        self.failed[reason] = self.failed.get(reason, 0) + 1
        conn = device.conn
        if conn is not None:
            device.conn = None
            device.signed_in = False
            if conn.transport is not None:
                conn.transport.abortConnection()
        tries = self.tries.get(device.index, 0) + 1
        self.tries[device.index] = tries
        if tries <= self.retries and not self.stopped:
            delay = min(8.0, 0.25 * 2**tries) * random.uniform(0.5, 1.5)
            self.active[device.index] = self.gen.clock.callLater(delay, self._retry, device)
            return
        self.final_failures += 1
        self.fail_streak += 1
        if self.fail_streak >= self.max_fail_streak:
            self.stopped = True  # the server takes no more: do not hammer it
        self._after_attempt()

    def _retry(self, device: Device) -> None:
        if self._current() and device.index in self.active and not self.stopped:
            self.start_attempt(device)
        elif self._current() and device.index in self.active:
            del self.active[device.index]
            self.final_failures += 1
            self._after_attempt()

    def _after_attempt(self) -> None:
        self.fill()
        if not self.active and (not self.queue or self.stopped) and not self.done.called:
            self.done.callback(None)

    def deadline(self) -> None:
        """The run's time is up: every attempt in progress fails."""
        self.stopped = True
        for index in list(self.active):
            self.attempt_failed(self.gen.devices[index], "deadline")
        if not self.done.called:
            self.done.callback(None)

    def report_progress(self) -> None:
        """Report the counts every 0.25 s while the run lasts."""
        if not self._current():
            return
        self.gen.progress(signed_in=len(self.signed_in), up_to_date=len(self.up_to_date), failed=self.final_failures)
        self.gen.clock.callLater(0.25, self.report_progress)
