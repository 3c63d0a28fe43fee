"""Log output: twistd's text lines, or one JSON object per line (``--log-format json``),
and the level below which goim's own events are dropped (``--log-level``).

goim's loggers are created with ``Logger(observer=goim_observer)``: events pass the
level filter of the process's running ``LoggingService`` before they reach twistd's
observers, so debug events (one per message on hot paths) cost nothing unless asked
for. The level belongs to that service: it takes effect when the service starts and
ends when it stops; constructing one changes nothing (tests build many).
"""

import sys
from typing import TYPE_CHECKING, Any, Sequence, TextIO, TypeVar

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import (
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    globalLogPublisher,
    jsonFileLogObserver,
    Logger,
)
from zope.interface import implementer  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from goim.types import StoredMessage

LEVELS = ("debug", "info", "warn", "error")

T = TypeVar("T")


class LevelFilter:
    """Drops goim events below one level (a ``LoggingService`` owns one)."""

    def __init__(self, level: str = "info") -> None:
        """
        Args:
            level: one of ``LEVELS``.
        """
        self.level = LogLevel.levelWithName(level)
        self._predicate = LogLevelFilterPredicate(defaultLogLevel=self.level)

    @property
    def debug(self) -> bool:
        """Whether debug events pass."""
        return self.level == LogLevel.debug

    def passes(self, event: LogEvent) -> bool:
        """Whether ``event`` reaches the observers."""
        return self._predicate(event) != PredicateResult.no


#: the level of a process whose logging service has not started (or of a test)
DEFAULT_FILTER = LevelFilter("info")


@implementer(ILogObserver)
class GoimObserver:
    """Where every goim ``Logger`` emits: the global publisher, through the level
    filter of the logging service that runs (``DEFAULT_FILTER`` while none does)."""

    def __init__(self) -> None:
        self._filters: list[LevelFilter] = []

    @property
    def filter(self) -> LevelFilter:
        """The filter in force."""
        return self._filters[-1] if self._filters else DEFAULT_FILTER

    def install(self, level_filter: LevelFilter) -> None:
        """Put ``level_filter`` in force (until ``remove``)."""
        self._filters.append(level_filter)

    def remove(self, level_filter: LevelFilter) -> None:
        """Take ``level_filter`` out of force (the one before it applies again)."""
        if level_filter in self._filters:
            self._filters.remove(level_filter)

    def __call__(self, event: LogEvent) -> None:
        if self.filter.passes(event):
            globalLogPublisher(event)


#: the observer every goim ``Logger`` emits to
goim_observer: Any = GoimObserver()


def debug_enabled() -> bool:
    """Whether debug events pass the filter in force: hot paths check this before
    building a debug event at all (a filtered event still costs its creation)."""
    return bool(goim_observer.filter.debug)


def json_observer(stream: TextIO | None = None) -> Any:
    """A log observer writing one JSON object per event (``twisted.logger`` format)."""
    return jsonFileLogObserver(stream or sys.stdout, recordSeparator="")


class LoggingService(MultiService):
    """A process's top service: it chooses the log format of the twistd application
    it joins and owns the level filter of goim's events while it runs.

    twistd asks the application for an ``ILogObserver`` component before it starts
    logging, after ``makeService``; joining the application is the moment to set it.
    """

    def __init__(self, log_format: str, log_level: str = "info") -> None:
        super().__init__()
        self.log_format = log_format
        self.level_filter = LevelFilter(log_level)

    def setServiceParent(self, parent: Any) -> None:
        if self.log_format == "json" and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, json_observer())
        super().setServiceParent(parent)

    def startService(self) -> None:
        # before the children start, so that their first events are filtered too
        goim_observer.install(self.level_filter)
        super().startService()

    def stopService(self) -> "Deferred[None]":
        return maybeDeferred(super().stopService).addBoth(self.release_level)

    def release_level(self, result: T) -> T:
        """Take this service's level filter out of force (once it stopped); passes
        ``result`` through, for use as a callback."""
        goim_observer.remove(self.level_filter)
        return result


class StartupWarning(Service):
    """Logs one warning when the process starts (a child of the top service, so the
    line goes through the log format the operator chose)."""

    log = Logger(observer=goim_observer)

    def __init__(self, text: str) -> None:
        self.text = text

    def startService(self) -> None:
        super().startService()
        self.log.warn("{text}", text=self.text)


def trace_pushed(log: Logger, messages: "Sequence[StoredMessage]", *, device_id: int, peer: str) -> None:
    """One debug event per message written to a connection as a live push, so that
    a message id can be followed from send to store to every device (docs/operations.md).

    Costs nothing unless ``--log-level debug``.
    """
    if not debug_enabled():
        return
    for m in messages:
        log.debug(
            "pushed message {message_id} (seq {seq} of user {user_id}) to device {device_id} at {peer}",
            message_id=m.message_id,
            seq=m.seq,
            user_id=m.user_id,
            device_id=device_id,
            peer=peer,
        )
