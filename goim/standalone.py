"""The standalone server: logic and connect in one process (``twistd -n goim``).

Client TCP listener, HTTP listener and storage (SQLite by default) with
in-process presence and delivery: the connection table is both.
"""

from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

import goim
from goim.limits import Limits
from goim.logic.messages import DEFAULT_MAX_CONTENT, DEFAULT_SEND_BURST, DEFAULT_SEND_RATE
from goim.logs import goim_observer
from goim.metrics import Metrics
from goim.protocols.client import ClientFactory, ConnectionTable
from goim.protocols.websocket import GoimWebSocketFactory, GoimWebSocketResource, OriginPolicy
from goim.resources.api import GoimAPI
from goim.resources.http import GuardedSite
from goim.resources.web import WebRoot
from goim.server import LogicStack, ServerService, redact

log = Logger(observer=goim_observer)


@dataclass(frozen=True)
class StandaloneConfig:
    """What ``twistd goim`` is told (see ``goim.tap``)."""

    tcp: str = "tcp:50000"
    http: str = "tcp:8080"
    #: an extra WebSocket listener (``/ws`` of the HTTP listener always serves one)
    ws: str = ""
    #: page origins allowed to open a WebSocket besides the same origin ("*": any)
    ws_origins: tuple[str, ...] = ()
    database: str = "sqlite:goim.db"
    signin_timeout: float = 10.0
    idle_timeout: float = 600.0
    max_content: int = DEFAULT_MAX_CONTENT
    write_grace: float = 60.0
    send_rate: float = DEFAULT_SEND_RATE
    send_burst: float = DEFAULT_SEND_BURST
    sqlite_synchronous: str = "full"
    log_format: str = "text"
    log_level: str = "info"
    limits: Limits = Limits()


class StandaloneService(ServerService):
    """Every part of a goim server in one process."""

    def __init__(self, config: StandaloneConfig, reactor: Any) -> None:
        super().__init__(reactor, config.log_format, config.log_level)
        self.database_url = redact(config.database)
        self.config = config
        self.metrics = Metrics()
        self.table = ConnectionTable()
        self.metrics.track_connections(lambda: len(self.table))
        self.stack = LogicStack(
            database=config.database,
            reactor=reactor,
            delivery=self.table,
            sessions=self.table,
            metrics=self.metrics,
            max_content=config.max_content,
            limits=config.limits,
            send_rate=config.send_rate,
            send_burst=config.send_burst,
            sqlite_synchronous=config.sqlite_synchronous,
        )
        self.backlog = config.limits.backlog
        self.client_factory = ClientFactory(
            logic=self.stack.logic,
            clock=reactor,
            table=self.table,
            signin_timeout=config.signin_timeout,
            idle_timeout=config.idle_timeout,
            write_grace=config.write_grace,
        )
        self.api = GoimAPI(self.stack.accounts, self.stack.social, metrics=self.metrics.render, health=self.health)
        origins = OriginPolicy(config.ws_origins)
        ws_resource = GoimWebSocketResource(
            GoimWebSocketFactory(self.client_factory, origins=origins, path=None, reactor=reactor)
        )
        root = WebRoot(self.api.app.resource(), ws=ws_resource)
        self.site = GuardedSite(root, clock=reactor, limits=config.limits.http, metrics=self.metrics)
        self.listeners = [(config.tcp, self.client_factory), (config.http, self.site)]
        if config.ws:
            self.listeners.append(
                (config.ws, GoimWebSocketFactory(self.client_factory, origins=origins, reactor=reactor))
            )

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` shows."""
        return {
            "mode": "standalone",
            "version": goim.__version__,
            "database": self.stack.db.dialect.name,
            "connections": len(self.table),
        }

    def describe(self) -> str:
        return (
            f"goim {goim.__version__} standalone: clients on {self.config.tcp}"
            + (f" and WebSocket {self.config.ws}" if self.config.ws else "")
            + f", HTTP, web page and /ws on {self.config.http}, "
            f"database {redact(self.config.database)}"
        )

    async def prepare(self) -> None:
        await self.stack.open()

    async def shutdown(self) -> None:
        # stop reading from clients, let the sends already taken finish and be ACKed,
        # then say goodbye to every client and release the database
        for conn in self.table.connections():
            conn.pauseProducing()
        await self.stack.messages.drain()
        await self.table.close_all()
        self.stack.db.close()
