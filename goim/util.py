"""Small helpers shared by every layer."""

from typing import Any, Callable, Coroutine, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from goim.logs import goim_observer

T = TypeVar("T")

log = Logger(observer=goim_observer)


class DelayedCall(Protocol):
    """What ``callLater`` returns (``IDelayedCall``), as a structural type."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class Clock(Protocol):
    """The part of ``IReactorTime`` goim uses, as a structural type for mypy.

    The reactor and ``twisted.internet.task.Clock`` both satisfy it; code takes
    one in its constructor instead of reaching for the global reactor.
    """

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> DelayedCall: ...


def now_ms(clock: Clock) -> int:
    """The clock's time in whole milliseconds."""
    return int(clock.seconds() * 1000)


def run_in_background(coroutine: Coroutine[Any, Any, T], description: str) -> "Deferred[T | None]":
    """Start a coroutine whose caller does not wait for it; log it if it fails.

    The one place where work is started without being awaited: its failures are
    logged under ``description`` instead of vanishing.
    """
    d: Deferred[T] = Deferred.fromCoroutine(coroutine)

    def failed(failure: Any) -> None:
        log.failure("{description} failed", failure, description=description)
        return None

    return d.addErrback(failed)
