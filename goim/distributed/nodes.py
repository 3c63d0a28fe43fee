"""The two processes of distributed mode: ``twistd goim-logic`` and ``twistd goim-connect``."""

from dataclasses import dataclass
from typing import Any, Coroutine

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, gatherResults
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

import goim
from goim.distributed.bus import NodeSubscriber, RedisDelivery
from goim.distributed.pb_client import PBLogicClient
from goim.distributed.pb_server import LogicRealm, pb_factory
from goim.distributed.presence import RedisPresence
from goim.distributed.redis import Keys, Redis, RedisURL
from goim.limits import Limits
from goim.logic.messages import DEFAULT_MAX_CONTENT, DEFAULT_SEND_BURST, DEFAULT_SEND_RATE
from goim.logs import goim_observer
from goim.metrics import Metrics
from goim.protocols.client import ClientFactory, ConnectionTable
from goim.protocols.websocket import GoimWebSocketFactory, OriginPolicy
from goim.resources.api import GoimAPI
from goim.resources.http import GuardedSite
from goim.resources.ops import OpsAPI
from goim.resources.web import WebRoot
from goim.server import LogicStack, ServerService, redact
from goim.util import run_in_background

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
    #: where the web page served at / opens its WebSocket (a connect node's --ws)
    web_ws_url: str = "/ws"
    send_rate: float = DEFAULT_SEND_RATE
    send_burst: float = DEFAULT_SEND_BURST
    log_format: str = "text"
    log_level: str = "info"
    limits: Limits = Limits()


class LogicNodeService(ServerService):
    """A stateless logic node: HTTP API, PB root for connect nodes, storage, Redis delivery."""

    def __init__(self, config: LogicNodeConfig, reactor: Any) -> None:
        super().__init__(reactor, config.log_format, config.log_level)
        self.config = config
        self.database_url = redact(config.database)
        self.redis_url = redact(config.redis)
        self.metrics = Metrics("logic")
        self.redis = Redis(RedisURL.parse(config.redis), reactor, metrics=self.metrics)
        self.presence = RedisPresence(self.redis, Keys(config.redis_prefix))
        self.delivery = RedisDelivery(self.presence)
        self.stack = LogicStack(
            database=config.database,
            reactor=reactor,
            delivery=self.delivery,
            sessions=self.delivery,
            metrics=self.metrics,
            max_content=config.max_content,
            limits=config.limits,
            send_rate=config.send_rate,
            send_burst=config.send_burst,
        )
        self.backlog = config.limits.backlog
        api = GoimAPI(self.stack.accounts, self.stack.social, metrics=self.metrics.render, health=self.health)
        realm = LogicRealm(self.stack.logic, self.presence, self.delivery, reactor)
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
                Deferred.fromCoroutine(self._probe(self.stack.db.run("healthz", lambda txn: txn.query("SELECT 1")))),
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
        await self.stack.open()

    async def shutdown(self) -> None:
        await self.stack.messages.drain()
        await self.redis.close()
        self.stack.db.close()


@dataclass(frozen=True)
class ConnectNodeConfig:
    """What ``twistd goim-connect`` is told."""

    node_id: str
    secret: bytes
    logic: tuple[str, ...] = ("127.0.0.1:50100",)
    tcp: str = "tcp:50000"
    #: client WebSocket listener (path /ws); empty: none
    ws: str = ""
    #: page origins allowed to open a WebSocket besides the same origin ("*": any)
    ws_origins: tuple[str, ...] = ()
    redis: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "goim:"
    signin_timeout: float = 10.0
    idle_timeout: float = 600.0
    #: endpoint of /healthz and /metrics; empty: no HTTP listener
    http: str = ""
    log_format: str = "text"
    log_level: str = "info"
    limits: Limits = Limits()


class ConnectNodeService(ServerService):
    """A stateful connect node: client connections, PB to logic, its Redis channel."""

    #: seconds between liveness beats (the key lives for RedisPresence.node_ttl)
    BEAT_INTERVAL = 5.0
    #: seconds a stopping node waits for in-flight sends to be ACKed
    DRAIN_TIMEOUT = 10.0

    def __init__(self, config: ConnectNodeConfig, reactor: Any) -> None:
        super().__init__(reactor, config.log_format, config.log_level)
        self.config = config
        self.redis_url = redact(config.redis)
        keys = Keys(config.redis_prefix)
        url = RedisURL.parse(config.redis)
        self.metrics = Metrics("connect")
        self.table = ConnectionTable()
        self.metrics.track_connections(lambda: len(self.table))
        self.logic = PBLogicClient(reactor, list(config.logic), node=config.node_id, secret=config.secret)
        self.redis = Redis(url, reactor, metrics=self.metrics)
        self.presence = RedisPresence(self.redis, keys)
        self.subscriber = NodeSubscriber(url, keys, config.node_id, self.table, self.presence, reactor)
        self.client_factory = ClientFactory(
            logic=self.logic,
            clock=reactor,
            table=self.table,
            signin_timeout=config.signin_timeout,
            idle_timeout=config.idle_timeout,
            node_id=config.node_id,
        )
        self._beats = 0
        self._beat = LoopingCall(self._beat_once)
        self._beat.clock = reactor
        self.backlog = config.limits.backlog
        self.listeners = [(config.tcp, self.client_factory)]
        if config.ws:
            ws_factory = GoimWebSocketFactory(
                self.client_factory, origins=OriginPolicy(config.ws_origins), reactor=reactor
            )
            self.listeners.append((config.ws, ws_factory))
        if config.http:
            ops = OpsAPI(health=self.health, metrics=self.metrics.render)
            site = GuardedSite(ops.app.resource(), clock=reactor, limits=config.limits.http, metrics=self.metrics)
            self.listeners.append((config.http, site))

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` shows."""
        return {
            "mode": "connect",
            "node": self.config.node_id,
            "version": goim.__version__,
            "connections": len(self.table),
            "logic_nodes_connected": self.logic.connected(),
            "redis_subscribed": self.subscriber.subscribed,
        }

    def describe(self) -> str:
        return (
            f"goim {goim.__version__} connect node {self.config.node_id}: clients on {self.config.tcp}"
            + (f" and WebSocket {self.config.ws}" if self.config.ws else "")
            + ", "
            f"logic at {', '.join(self.config.logic)}, Redis {redact(self.config.redis)}"
        )

    def _beat_once(self) -> None:
        run_in_background(self._beat_and_check(), "liveness beat")

    async def _beat_and_check(self) -> None:
        was_alive = await self.presence.beat(self.config.node_id)
        if not was_alive and self._beats:
            # The key expired (this process was paused, or Redis lost it): logic
            # skipped this node's devices meanwhile, so bring them up to date.
            log.warn(
                "node {node} counted as dead for a while: bringing {count} connections up to date",
                node=self.config.node_id,
                count=len(self.table),
            )
            self.table.catch_up_all()
        self._beats += 1

    async def prepare(self) -> None:
        # Redis carries presence and deliveries: a node that cannot reach it does not start
        await self.redis.call("ping")
        self.logic.start()
        self.subscriber.start()
        try:
            # entries an earlier run of this node left behind name connections that are gone
            await self.presence.clear_node(self.config.node_id)
        except Exception as e:
            log.warn("could not clear stale presence entries yet: {error!r}", error=e)
        self._beat.start(self.BEAT_INTERVAL, now=True)

    async def shutdown(self) -> None:
        # stop reading from clients and give the sends already taken time to be ACKed
        for conn in self.table.connections():
            conn.pauseProducing()
        deadline = self.reactor.seconds() + self.DRAIN_TIMEOUT
        while any(c.in_flight for c in self.table.connections()) and self.reactor.seconds() < deadline:
            await deferLater(self.reactor, 0.05, lambda: None)
        await self.table.close_all()
        if self._beat.running:
            self._beat.stop()
        try:
            await self.presence.clear_node(self.config.node_id)
        except Exception as e:
            log.warn("could not clear presence entries at shutdown: {error!r}", error=e)
        await self.subscriber.stop()
        self.logic.stop()
        await self.redis.close()
