"""The one clock every goim component takes instead of the reactor.

``Clock`` wraps an ``IReactorTime`` provider: the reactor in a process,
``twisted.internet.task.Clock`` in a unit test (then time moves only when the test
says so). Code asks it for the time, for delayed calls, for sleeps and for looping
calls, and never reaches for the global reactor; in the image of Synapse's
``synapse.util.Clock``.
"""

import random
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall


class DelayedCall(Protocol):
    """What ``call_later`` returns (``IDelayedCall``), as a structural type."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class ReactorTime(Protocol):
    """The part of ``IReactorTime`` a ``Clock`` wraps, as a structural type for mypy:
    the reactor and ``twisted.internet.task.Clock`` both satisfy it."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> DelayedCall: ...


class Clock:
    """Time, delays and repetition over one ``IReactorTime`` provider.

    ``seconds`` and ``callLater`` keep Twisted's spelling so that a ``Clock`` can be
    handed to Twisted APIs that want an ``IReactorTime`` (``LoopingCall.clock``,
    ``Deferred.addTimeout``, ``deferLater``).
    """

    def __init__(self, reactor: ReactorTime, *, seed: int | None = None) -> None:
        """
        Args:
            reactor: the time source: the reactor, or ``task.Clock()`` in tests.
            seed: seeds ``jitter`` (None: seeded from the system), so that a test
                or a soak run is repeatable.
        """
        self._reactor = reactor
        self._random = random.Random(seed)

    def seconds(self) -> float:
        """Now, in seconds since the epoch (the reactor's notion of it)."""
        return self._reactor.seconds()

    def time_msec(self) -> int:
        """Now, in whole milliseconds since the epoch."""
        return int(self._reactor.seconds() * 1000)

    def call_later(self, delay: float, f: Callable[..., Any], *args: Any, **kwargs: Any) -> DelayedCall:
        """Call ``f(*args, **kwargs)`` after ``delay`` seconds; cancel with ``.cancel()``."""
        return self._reactor.callLater(delay, f, *args, **kwargs)

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> DelayedCall:
        """``call_later`` in Twisted's spelling, for Twisted APIs (and ``goim.util.Clock``
        users) that take an ``IReactorTime``."""
        return self.call_later(delay, callable, *args, **kw)

    def sleep(self, seconds: float) -> "Deferred[None]":
        """A Deferred that fires after ``seconds``; cancelling it cancels the timer."""
        def cancel(_: "Deferred[None]") -> None:
            call.cancel()

        d: Deferred[None] = Deferred(cancel)
        call = self._reactor.callLater(seconds, d.callback, None)
        return d

    def looping_call(self, f: Callable[[], Any], interval: float, *, now: bool = False) -> LoopingCall:
        """Call ``f`` every ``interval`` seconds from now on (at once too when ``now``).

        Returns the started ``LoopingCall``; ``stop()`` it when done. A failure of
        ``f`` stops the loop (as ``LoopingCall`` does): wrap ``f`` when it may fail.
        """
        loop = LoopingCall(f)
        loop.clock = self._reactor  # type: ignore[assignment]  # structurally an IReactorTime
        loop.start(interval, now=now)
        return loop

    def jitter(self, base: float, fraction: float = 0.1) -> float:
        """``base`` moved by up to ``fraction`` of itself either way, at random.

        Spreads timers that would otherwise fire together (reconnects, beats).
        """
        return base * (1 + self._random.uniform(-fraction, fraction))

    def random(self) -> random.Random:
        """The clock's seeded random source (for back-off and other jitter)."""
        return self._random
