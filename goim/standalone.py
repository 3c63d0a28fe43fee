"""The standalone server: logic and connect in one process (``twistd -n goim``).

Client TCP listener, HTTP listener and storage (SQLite by default) with
in-process presence and delivery: the connection table is both.
"""

from dataclasses import dataclass
from typing import Any, Sequence

from twisted.logger import Logger

import goim
from goim.connect.container import ConnectContainer
from goim.connect.table import ConnectionTable
from goim.container import component
from goim.limits import Limits
from goim.logic.container import LogicContainer
from goim.logic.messages import DEFAULT_MAX_CONTENT, DEFAULT_SEND_BURST, DEFAULT_SEND_RATE
from goim.logs import goim_observer
from goim.protocols.websocket import GoimWebSocketFactory, GoimWebSocketResource, OriginPolicy
from goim.logic.webhook import OnlineCheck
from goim.resources.api import GoimAPI
from goim.resources.push import PushAPI
from goim.resources.http import GuardedSite
from goim.resources.web import WebRoot
from goim.server import ServerService, redact

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
    recall_window: float = 120.0
    edit_window: float = 900.0
    write_grace: float = 60.0
    send_rate: float = DEFAULT_SEND_RATE
    send_burst: float = DEFAULT_SEND_BURST
    sqlite_synchronous: str = "full"
    log_format: str = "text"
    log_level: str = "info"
    limits: Limits = Limits()
    # business push, offline webhook, retention (goim.chat_settings)
    push_key: bytes = b""
    webhook_url: str = ""
    webhook_secret: bytes = b""
    retention_days: float = 0.0
    dedupe_days: float = 30.0
    #: the first part of every connection id
    node_id: str = "standalone"


class StandaloneContainer(LogicContainer, ConnectContainer):
    """The logic and connect sides in one process: the connection table is the
    delivery and session port, in-process logic (``LogicContainer.get_logic``, first
    in the method order) the connections' logic port."""

    config: StandaloneConfig

    @component
    def get_delivery(self) -> ConnectionTable:
        return self.get_connection_table()

    @component
    def get_sessions(self) -> ConnectionTable:
        return self.get_connection_table()

    @component
    def get_online_check(self) -> OnlineCheck:
        table = self.get_connection_table()

        async def online(user_ids: Sequence[int]) -> set[int]:
            return {u for u in user_ids if table.connections_of(u)}

        return online


class StandaloneService(ServerService):
    """Every part of a goim server in one process."""

    def __init__(self, config: StandaloneConfig, reactor: Any, *, container: StandaloneContainer | None = None) -> None:
        """
        Args:
            config: what the operator chose.
            reactor: for the listeners and the database pool.
            container: the components (default: built from ``config`` on ``reactor``).
        """
        super().__init__(reactor, config.log_format, config.log_level)
        self.database_url = redact(config.database)
        self.config = config
        self.container = container or StandaloneContainer(config, reactor)
        c = self.container
        self.metrics = c.get_metrics()
        self.table = c.get_connection_table()
        self.backlog = config.limits.backlog
        self.client_factory = c.get_client_factory()
        self.logic = c.get_logic()
        self.api = GoimAPI(
            c.get_accounts(),
            c.get_social(),
            receipts=c.get_receipts(),
            metrics=self.metrics.render,
            health=self.health,
            push=PushAPI(c.get_push(), config.push_key or None),
        )
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
            "database": self.container.get_database().dialect.name,
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
        await self.container.open_database()
        self.container.start_background()

    async def shutdown(self) -> None:
        # stop reading from clients, let the sends already taken finish and be ACKed,
        # then say goodbye to every client and release the database
        for conn in self.table.connections():
            conn.pauseProducing()
        await self.container.stop_background()
        await self.container.get_messages().drain()
        await self.table.close_all()
        self.container.get_database().close()
