"""What every goim process that serves storage shares: the logic stack and the lifecycle.

``LogicStack`` builds the database, stores and services once; the standalone
server and logic nodes differ only in the delivery port they plug in.
``ServerService`` opens the database (migrating it) before any listener starts,
and on stop closes the listeners first, then drains, then releases resources.
"""

from typing import Any

from twisted.internet import endpoints
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from goim.logic.accounts import AccountService
from goim.logic.ids import SegmentAllocator
from goim.logic.local import InProcessLogic
from goim.logic.messages import DEFAULT_MAX_CONTENT, DEFAULT_SEND_BURST, DEFAULT_SEND_RATE, MessageService
from goim.logic.social import SocialService
from goim.logs import LoggingService, goim_observer
from goim.metrics import Metrics
from goim.ports import DeliveryPort, SessionPort
from goim.storage.accounts import AccountStore
from goim.storage.database import Database
from goim.storage.messages import MessageStore
from goim.storage.schema import migrate_txn
from goim.storage.social import SocialStore

log = Logger(observer=goim_observer)


class LogicStack:
    """Database, stores and services of one process."""

    def __init__(
        self,
        *,
        database: str,
        reactor: Any,
        delivery: DeliveryPort,
        sessions: SessionPort,
        metrics: Metrics,
        max_content: int,
        send_rate: float = DEFAULT_SEND_RATE,
        send_burst: float = DEFAULT_SEND_BURST,
        sqlite_synchronous: str = "full",
    ) -> None:
        self.db = Database(database, reactor, metrics=metrics, sqlite_synchronous=sqlite_synchronous)
        account_store = AccountStore(self.db)
        message_store = MessageStore(self.db)
        self.accounts = AccountService(account_store, reactor, sessions=sessions)
        self.social = SocialService(account_store, SocialStore(self.db), reactor)
        self.messages = MessageService(
            message_store,
            account_store,
            SegmentAllocator(message_store),
            delivery,
            reactor,
            max_content=max_content,
            send_rate=send_rate,
            send_burst=send_burst,
            metrics=metrics,
        )
        self.logic = InProcessLogic(self.accounts, self.messages, metrics=metrics)
        if max_content > DEFAULT_MAX_CONTENT:
            log.warn(
                "max-content {max_content} exceeds {default}: goim 1.1 clients cannot receive "
                "messages over one 4,092-byte frame",
                max_content=max_content,
                default=DEFAULT_MAX_CONTENT,
            )

    async def open(self) -> None:
        """Migrate the schema (refuses a schema newer than this code)."""
        found, now = await self.db.run("migrate", migrate_txn)
        if found != now:
            log.info("database schema migrated from version {found} to {now}", found=found, now=now)
        for warning in await self.db.durability_warnings():
            log.warn("durability: {warning}", warning=warning)


class ServerService(LoggingService):
    """A process's top service: prepare, listen, and stop in order.

    Subclasses fill ``listeners`` with ``(endpoint string, factory)`` pairs and
    override ``prepare`` (runs before listening; failing stops the process) and
    ``shutdown`` (runs after the listeners closed).
    """

    def __init__(self, reactor: Any, log_format: str, log_level: str = "info") -> None:
        super().__init__(log_format, log_level)
        self.reactor = reactor
        self.listeners: list[tuple[str, Factory[Any]]] = []
        self._ports: list[Any] = []  # IListeningPort providers
        self._started: Deferred[None] | None = None

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
        except Exception:
            log.failure("cannot start; stopping")
            self.reactor.stop()
            return
        for description, factory in self.listeners:
            try:
                port = await endpoints.serverFromString(self.reactor, description).listen(factory)
            except Exception:
                # a server that cannot take clients stops instead of staying half up
                log.failure("cannot listen on {endpoint}; stopping", endpoint=description)
                self.reactor.stop()
                return
            self._ports.append(port)
        log.info("serving: {what}", what=self.describe())

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._started is not None:
            await self._started
        for port in self._ports:
            await maybeDeferred(port.stopListening)
        self._ports = []
        await self.shutdown()
        log.info("stopped")


def redact(url: str) -> str:
    """A URL without its password, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else f"{scheme}://{user}@{host}"
    return url
