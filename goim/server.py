"""What every goim process shares: the lifecycle of its top service.

``ServerService`` prepares (opens the database, migrating it; connects to Redis
and peers) before any listener starts, and on stop closes the listeners first,
then drains, then releases resources. The components themselves come from the
process's container (``goim.container``).
"""

import atexit
import json
import os
import sys
from typing import Any, Callable

from twisted.application.service import MultiService
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from goim.clock import Clock
from goim.heap import FullCollections, freeze_heap
from goim.limits import Limits, with_backlog
from goim.logs import LoggingService, goim_observer
from goim.metrics import Metrics
from goim.startup import explain

log = Logger(observer=goim_observer)


class ServerService(LoggingService):
    """A process's top service: prepare, listen, and stop in order.

    Subclasses fill ``listeners`` with ``(endpoint string, factory)`` pairs and
    override ``prepare`` (runs before listening; failing stops the process) and
    ``shutdown`` (runs after the listeners closed).
    """

    #: exit status of a process whose start failed (supervisors read 0 as a clean stop)
    FAILED_START_STATUS = 1

    def __init__(self, reactor: Any, log_format: str, log_level: str = "info") -> None:
        super().__init__(log_format, log_level)
        self.reactor = reactor
        self.listeners: list[tuple[str, Factory[Any]]] = []
        self._ports: list[Any] = []  # IListeningPort providers
        self._started: Deferred[None] | None = None
        #: the database and Redis this process uses (passwords redacted), for start errors
        self.database_url = ""
        self.redis_url = ""
        #: set when the start failed: the line that explains why
        self.start_failure: str | None = None
        #: called with the exit status when the start failed; the default makes the
        #: process exit with it once twistd has shut down (tests replace it)
        self.exit_process: Callable[[int], None] = exit_after_shutdown
        #: listen backlog added to every listener's endpoint string that takes one
        self.backlog = Limits.backlog
        #: once serving, freeze what start-up built and pace full collections
        #: (``goim.heap``); the twistd entry points turn it on (a test process is
        #: left alone)
        self.manage_gc = False
        #: the process's metrics; subclasses set it (full collections are observed there)
        self.metrics: Metrics | None = None
        self._full_collections: FullCollections | None = None

    async def prepare(self) -> None:
        """Open what the listeners need (database, Redis, peers)."""

    async def shutdown(self) -> None:
        """Drain and release what ``prepare`` opened; the listeners are closed already."""

    def describe(self) -> str:
        """One line for the log once the process serves."""
        return ", ".join(description for description, _ in self.listeners)

    def startService(self) -> None:
        super().startService()
        self._started = Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        try:
            await self.prepare()
        except Exception as e:
            self._fail(e)
            return
        for description, factory in self.listeners:
            try:
                port = await endpoints.serverFromString(self.reactor, with_backlog(description, self.backlog)).listen(
                    factory
                )
            except Exception as e:
                # a server that cannot take clients stops instead of staying half up
                self._fail(e, endpoint=description)
                return
            self._ports.append(port)
        log.info("serving: {what}", what=self.describe())
        if self.manage_gc:
            freeze_heap()
            self._full_collections = FullCollections(
                Clock(self.reactor),
                observe=self.metrics.gc_full_seconds.observe if self.metrics is not None else None,
            )
            self._full_collections.start()
        write_ports_file(os.environ.get("GOIM_PORTS_FILE"), self.listeners, self._ports)

    def _fail(self, error: Exception, *, endpoint: str = "") -> None:
        """Log why the start failed in one line, stop the reactor, exit non-zero."""
        line = explain(error, endpoint=endpoint, database=self.database_url, redis=self.redis_url)
        if line is None:
            # not an expected cause: the traceback is the explanation
            line = f"unexpected error {error!r}"
            log.failure("cannot start: {why}", why=line)
        else:
            log.critical("cannot start: {why}", why=line)
        self.start_failure = line
        self.exit_process(self.FAILED_START_STATUS)
        self.reactor.callWhenRunning(self.reactor.stop)

    def stopService(self) -> Deferred[None]:
        # the children (start-up warnings) stop at once; the log level stays in
        # force until the drain and the release finished
        MultiService.stopService(self)
        return Deferred.fromCoroutine(self._stop()).addBoth(self.release_level)

    async def _stop(self) -> None:
        if self._started is not None:
            await self._started
        if self._full_collections is not None:
            self._full_collections.stop()
        for port in self._ports:
            await maybeDeferred(port.stopListening)
        self._ports = []
        await self.shutdown()
        log.info("stopped")


def write_ports_file(path: str | None, listeners: list[tuple[str, Any]], ports: list[Any]) -> None:
    """Tell whoever started this process where it listens (``GOIM_PORTS_FILE``).

    Written once every listener is up, atomically (a temporary file renamed), as
    JSON ``{"pid": N, "listeners": [{"endpoint": "tcp:0:...", "host": H, "port": P}]}``
    in listener order, so a harness can pass ``tcp:0`` and read the bound ports back.
    """
    if not path:
        return
    bound = []
    for (description, _), port in zip(listeners, ports):
        host = port.getHost()
        bound.append({"endpoint": description, "host": getattr(host, "host", ""), "port": getattr(host, "port", 0)})
    try:
        with open(path + ".tmp", "w") as f:
            json.dump({"pid": os.getpid(), "listeners": bound}, f)
        os.replace(path + ".tmp", path)
    except OSError as e:
        log.error("cannot write the ports file {path}: {error}", path=path, error=e)


def exit_after_shutdown(status: int) -> None:
    """Make this process exit with ``status`` when the interpreter exits.

    twistd returns normally once the reactor stopped and its pid file is removed;
    the status is applied after that.
    """

    def exit_now() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(status)

    atexit.register(exit_now)


def redact(url: str) -> str:
    """A URL without its password, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else f"{scheme}://{user}@{host}"
    return url
