"""The logic node of distributed mode (``twistd goim-logic``); the connect node is
``goim.connect.node``."""

from dataclasses import dataclass
from typing import Any, Coroutine, Sequence

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, gatherResults
from twisted.logger import Logger

import goim
from goim.distributed.bus import RedisDelivery
from goim.distributed.pb_server import LogicRealm, pb_factory
from goim.distributed.presence import RedisComponents
from goim.container import component
from goim.limits import Limits
from goim.logic.container import LogicContainer
from goim.logic.messages import DEFAULT_MAX_CONTENT, DEFAULT_SEND_BURST, DEFAULT_SEND_RATE
from goim.logs import goim_observer
from goim.logic.webhook import OnlineCheck
from goim.resources.api import GoimAPI
from goim.resources.push import PushAPI
from goim.resources.http import GuardedSite
from goim.resources.web import WebRoot
from goim.server import ServerService, redact

log = Logger(observer=goim_observer)


@dataclass(frozen=True)
class LogicNodeConfig:
    """What ``twistd goim-logic`` is told."""

    database: str
    secret: bytes
    node_id: str
    http: str = "tcp:8080"
    pb: str = "tcp:50100"
    redis: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "goim:"
    max_content: int = DEFAULT_MAX_CONTENT
    recall_window: float = 120.0
    edit_window: float = 900.0
    #: where the web page served at / opens its WebSocket (a connect node's --ws)
    web_ws_url: str = "/ws"
    send_rate: float = DEFAULT_SEND_RATE
    send_burst: float = DEFAULT_SEND_BURST
    log_format: str = "text"
    log_level: str = "info"
    limits: Limits = Limits()
    # business push, offline webhook, retention (goim.chat_settings)
    push_key: bytes = b""
    webhook_url: str = ""
    webhook_secret: bytes = b""
    retention_days: float = 0.0
    dedupe_days: float = 30.0
    sqlite_synchronous: str = "full"


class LogicNodeContainer(LogicContainer, RedisComponents):
    """A logic node's components: delivery and sessions go through Redis."""

    config: LogicNodeConfig

    def __init__(self, config: LogicNodeConfig, reactor: Any, **components: Any) -> None:
        super().__init__(config, reactor, metrics_role="logic", **components)

    @component
    def get_redis_delivery(self) -> RedisDelivery:
        return RedisDelivery(self.get_presence())

    @component
    def get_delivery(self) -> RedisDelivery:
        return self.get_redis_delivery()

    @component
    def get_online_check(self) -> OnlineCheck:
        presence = self.get_presence()

        async def online(user_ids: Sequence[int]) -> set[int]:
            located = await presence.locate(user_ids)
            return {u for u, devices in located.items() if devices}

        return online

    @component
    def get_sessions(self) -> RedisDelivery:
        return self.get_redis_delivery()


class LogicNodeService(ServerService):
    """A stateless logic node: HTTP API, PB root for connect nodes, storage, Redis delivery."""

    def __init__(self, config: LogicNodeConfig, reactor: Any, *, container: LogicNodeContainer | None = None) -> None:
        """
        Args:
            config: what the operator chose.
            reactor: for the listeners, the database pool and Redis.
            container: the components (default: built from ``config`` on ``reactor``).
        """
        super().__init__(reactor, config.log_format, config.log_level)
        self.config = config
        self.database_url = redact(config.database)
        self.redis_url = redact(config.redis)
        self.container = c = container or LogicNodeContainer(config, reactor)
        self.metrics = c.get_metrics()
        self.redis = c.get_redis()
        self.presence = c.get_presence()
        self.delivery = c.get_redis_delivery()
        self.backlog = config.limits.backlog
        api = GoimAPI(
            c.get_accounts(),
            c.get_social(),
            receipts=c.get_receipts(),
            metrics=self.metrics.render,
            health=self.health,
            push=PushAPI(c.get_push(), config.push_key or None),
        )
        realm = LogicRealm(c.get_logic(), self.presence, self.delivery, reactor)
        root = WebRoot(api.app.resource(), ws_url=config.web_ws_url)
        site = GuardedSite(root, clock=reactor, limits=config.limits.http, metrics=self.metrics)
        self.listeners = [(config.http, site), (config.pb, pb_factory(config.secret, realm))]

    #: seconds /healthz waits for the database and for Redis
    HEALTH_TIMEOUT = 3.0

    async def health(self) -> dict[str, Any]:
        """What ``/healthz`` shows: the node, and whether the database and Redis
        answer right now (``SELECT 1`` and ``PING``, each within HEALTH_TIMEOUT)."""
        database, redis = await gatherResults(
            [
                Deferred.fromCoroutine(self._probe(self.container.get_database().run("healthz", lambda txn: txn.query("SELECT 1")))),
                Deferred.fromCoroutine(self._probe(self.redis.call("ping"))),
            ]
        )
        data: dict[str, Any] = {"mode": "logic", "node": self.config.node_id, "version": goim.__version__}
        data.update(database="mysql", database_ok=database is None, redis_ok=redis is None)
        if database is not None:
            data["database_error"] = database
        if redis is not None:
            data["redis_error"] = redis
        return data

    async def _probe(self, work: Coroutine[Any, Any, Any]) -> str | None:
        """None when ``work`` finishes within HEALTH_TIMEOUT, else why not."""
        d = Deferred.fromCoroutine(work)
        d.addTimeout(self.HEALTH_TIMEOUT, self.reactor)
        try:
            await d
        except TimeoutError:
            return f"no answer within {self.HEALTH_TIMEOUT:g} s"
        except CancelledError:
            raise
        except Exception as e:
            return repr(e)[:200]
        return None

    def describe(self) -> str:
        return (
            f"goim {goim.__version__} logic node {self.config.node_id}: HTTP on {self.config.http}, "
            f"PB on {self.config.pb}, database {redact(self.config.database)}, Redis {redact(self.config.redis)}"
        )

    async def prepare(self) -> None:
        # Redis carries every delivery: a node that cannot reach it does not start
        await self.redis.call("ping")
        await self.container.open_database()
        self.container.start_background()

    async def shutdown(self) -> None:
        await self.container.stop_background()
        await self.container.get_messages().drain()
        # publish what the writer handed to delivery before Redis closes
        await self.delivery.drain()
        await self.redis.close()
        self.container.get_database().close()
