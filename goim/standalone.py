"""The standalone server: logic and connect in one process (``twistd -n goim``).

Client TCP listener, HTTP listener and storage (SQLite by default) with
in-process presence and delivery: the connection table is both. Nothing here is
business logic; it only wires the services to the listeners and runs the
lifecycle (migrate before listening; on stop, stop accepting, let in-flight sends
finish, then close client connections and the database).
"""

from dataclasses import dataclass
from typing import Any

from twisted.internet import endpoints
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.web.server import Site

import goim
from goim.logic.accounts import AccountService
from goim.logic.ids import SegmentAllocator
from goim.logic.local import InProcessLogic
from goim.logic.messages import DEFAULT_MAX_CONTENT, MessageService
from goim.logic.social import SocialService
from goim.logs import LoggingService
from goim.metrics import Metrics
from goim.protocols.client import ClientFactory, ConnectionTable
from goim.resources.api import GoimAPI
from goim.storage.accounts import AccountStore
from goim.storage.database import Database
from goim.storage.messages import MessageStore
from goim.storage.schema import migrate_txn
from goim.storage.social import SocialStore

log = Logger()


@dataclass(frozen=True)
class StandaloneConfig:
    """What ``twistd goim`` is told (see ``goim.tap``)."""

    tcp: str = "tcp:50000"
    http: str = "tcp:8080"
    database: str = "sqlite:goim.db"
    signin_timeout: float = 10.0
    idle_timeout: float = 600.0
    max_content: int = DEFAULT_MAX_CONTENT
    log_format: str = "text"


class StandaloneService(LoggingService):
    """Every part of a goim server in one process."""

    def __init__(self, config: StandaloneConfig, reactor: Any) -> None:
        super().__init__(config.log_format)
        self.config = config
        self._reactor = reactor
        self.metrics = Metrics()
        self.db = Database(config.database, reactor, metrics=self.metrics)
        accounts = AccountStore(self.db)
        message_store = MessageStore(self.db)
        self.table = ConnectionTable()
        self.metrics.track_connections(lambda: len(self.table))
        self.accounts = AccountService(accounts, reactor)
        self.social = SocialService(accounts, SocialStore(self.db), reactor)
        self.messages = MessageService(
            message_store,
            accounts,
            SegmentAllocator(message_store),
            self.table,
            reactor,
            max_content=config.max_content,
            metrics=self.metrics,
        )
        self.logic = InProcessLogic(self.accounts, self.messages, metrics=self.metrics)
        self.client_factory = ClientFactory(
            logic=self.logic,
            clock=reactor,
            table=self.table,
            signin_timeout=config.signin_timeout,
            idle_timeout=config.idle_timeout,
        )
        self.api = GoimAPI(self.accounts, self.social, metrics=self.metrics.render, health=self.health)
        self._listeners: list[tuple[str, Any]] = [
            (config.tcp, self.client_factory),
            (config.http, Site(self.api.app.resource())),
        ]
        self._ports: list[Any] = []  # IListeningPort providers
        self._started: Deferred[None] | None = None

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` shows."""
        return {
            "mode": "standalone",
            "version": goim.__version__,
            "database": self.db.dialect.name,
            "connections": len(self.table),
        }

    def startService(self) -> None:
        # Listeners start only after the schema is in place.
        self.running = True
        self._started = Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        try:
            found, now = await self.db.run("migrate", migrate_txn)
        except Exception:
            log.failure("cannot open the database {url}; stopping", url=_redact(self.config.database))
            self._reactor.stop()
            return
        if found != now:
            log.info("database schema migrated from version {found} to {now}", found=found, now=now)
        if self.config.max_content > DEFAULT_MAX_CONTENT:
            log.warn(
                "max-content {max_content} exceeds {default}: goim 1.1 clients cannot receive "
                "messages over one 4,092-byte frame",
                max_content=self.config.max_content,
                default=DEFAULT_MAX_CONTENT,
            )
        for description, factory in self._listeners:
            try:
                port = await endpoints.serverFromString(self._reactor, description).listen(factory)
            except Exception:
                # a server that cannot take clients stops instead of staying half up
                log.failure("cannot listen on {endpoint}; stopping", endpoint=description)
                self._reactor.stop()
                return
            self._ports.append(port)
        log.info(
            "goim {version} standalone: clients on {tcp}, HTTP on {http}, database {database}",
            version=goim.__version__,
            tcp=self.config.tcp,
            http=self.config.http,
            database=_redact(self.config.database),
        )

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self.running = False
        if self._started is not None:
            await self._started
        # 1. stop accepting new clients and HTTP requests
        for port in self._ports:
            await maybeDeferred(port.stopListening)
        # 2. stop reading from clients, let the sends already taken finish and be ACKed
        for conn in self.table.connections():
            conn.pauseProducing()
        await self.messages.drain()
        # 3. say goodbye to every client and release the database
        await self.table.close_all()
        self.db.close()
        log.info("goim stopped")


def _redact(url: str) -> str:
    """The database URL without its password, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else f"{scheme}://{user}@{host}"
    return url
