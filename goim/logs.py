"""Log output: twistd's text lines, or one JSON object per line (``--log-format json``)."""

import sys
from typing import Any, TextIO

from twisted.application.service import MultiService
from twisted.logger import ILogObserver, jsonFileLogObserver


def json_observer(stream: TextIO | None = None) -> Any:
    """A log observer writing one JSON object per event (``twisted.logger`` format)."""
    return jsonFileLogObserver(stream or sys.stdout, recordSeparator="")


class LoggingService(MultiService):
    """A top-level service that chooses the log format of the twistd application it joins.

    twistd asks the application for an ``ILogObserver`` component before it starts
    logging, after ``makeService``; joining the application is the moment to set it.
    """

    def __init__(self, log_format: str) -> None:
        super().__init__()
        self.log_format = log_format

    def setServiceParent(self, parent: Any) -> None:
        if self.log_format == "json" and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, json_observer())
        super().setServiceParent(parent)


