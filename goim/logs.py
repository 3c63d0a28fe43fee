"""Log output: twistd's text lines, or one JSON object per line (``--log-format json``),
and the level below which goim's own events are dropped (``--log-level``).

goim's loggers are created with ``Logger(observer=goim_observer)``: events pass a
level filter before they reach twistd's observers, so debug events (one per
message on hot paths) cost nothing unless asked for.
"""

import sys
from typing import TYPE_CHECKING, Any, Sequence, TextIO, cast

from twisted.application.service import MultiService, Service
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
    jsonFileLogObserver,
    Logger,
)

if TYPE_CHECKING:
    from goim.types import StoredMessage

LEVELS = ("debug", "info", "warn", "error")

_level_filter = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)

#: the observer every goim ``Logger`` emits to
# cast: mypy cannot match zope interfaces (no mypy-zope here)
goim_observer: Any = FilteringLogObserver(cast(Any, globalLogPublisher), [cast(Any, _level_filter)])


_debug = False


def set_level(name: str) -> None:
    """Drop goim events below ``name`` (one of ``LEVELS``)."""
    global _debug
    _level_filter.setLogLevelForNamespace("", LogLevel.levelWithName(name))
    _debug = name == "debug"


def debug_enabled() -> bool:
    """Whether debug events pass the filter: hot paths check this before building
    a debug event at all (a filtered event still costs its creation)."""
    return _debug


def json_observer(stream: TextIO | None = None) -> Any:
    """A log observer writing one JSON object per event (``twisted.logger`` format)."""
    return jsonFileLogObserver(stream or sys.stdout, recordSeparator="")


class LoggingService(MultiService):
    """A top-level service that chooses the log format of the twistd application it joins.

    twistd asks the application for an ``ILogObserver`` component before it starts
    logging, after ``makeService``; joining the application is the moment to set it.
    """

    def __init__(self, log_format: str, log_level: str = "info") -> None:
        super().__init__()
        self.log_format = log_format
        set_level(log_level)

    def setServiceParent(self, parent: Any) -> None:
        if self.log_format == "json" and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, json_observer())
        super().setServiceParent(parent)




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
    if not _debug:
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
