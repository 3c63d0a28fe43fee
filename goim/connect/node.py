"""The connect node of distributed mode (``twistd goim-connect``): client
connections, PB to the logic nodes, deliveries from its Redis channel."""

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

import goim
from goim.connect.container import ConnectContainer
from goim.connect.logic_client import PBLogicClient
from goim.connect.subscriber import NodeSubscriber
from goim.distributed.presence import RedisComponents
from goim.distributed.redis import Keys, RedisURL
from goim.container import component
from goim.limits import Limits
from goim.logs import goim_observer
from goim.protocols.websocket import GoimWebSocketFactory, OriginPolicy
from goim.resources.http import GuardedSite
from goim.resources.ops import OpsAPI
from goim.server import ServerService, redact
from goim.util import run_in_background

log = Logger(observer=goim_observer)


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
    #: seconds a client that does not read what it is sent keeps its connection
    write_grace: float = 60.0


class ConnectNodeContainer(ConnectContainer, RedisComponents):
    """A connect node's components: logic over PB, deliveries from its Redis channel."""

    config: ConnectNodeConfig

    def __init__(self, config: ConnectNodeConfig, reactor: Any, **components: Any) -> None:
        super().__init__(config, reactor, metrics_role="connect", **components)

    @component
    def get_logic_client(self) -> PBLogicClient:
        config = self.config
        return PBLogicClient(self.reactor, list(config.logic), node=config.node_id, secret=config.secret)

    @component
    def get_logic(self) -> PBLogicClient:
        return self.get_logic_client()

    @component
    def get_subscriber(self) -> NodeSubscriber:
        config = self.config
        return NodeSubscriber(
            RedisURL.parse(config.redis),
            Keys(config.redis_prefix),
            config.node_id,
            self.get_connection_table(),
            self.get_presence(),
            self.reactor,
        )


class ConnectNodeService(ServerService):
    """A stateful connect node: client connections, PB to logic, its Redis channel."""

    #: seconds between liveness beats (the key lives for RedisPresence.node_ttl)
    BEAT_INTERVAL = 5.0
    #: seconds a stopping node waits for in-flight sends to be ACKed
    DRAIN_TIMEOUT = 10.0

    def __init__(self, config: ConnectNodeConfig, reactor: Any, *, container: ConnectNodeContainer | None = None) -> None:
        """
        Args:
            config: what the operator chose.
            reactor: for the listeners, Redis and PB connections.
            container: the components (default: built from ``config`` on ``reactor``).
        """
        super().__init__(reactor, config.log_format, config.log_level)
        self.config = config
        self.redis_url = redact(config.redis)
        self.container = c = container or ConnectNodeContainer(config, reactor)
        self.clock = c.get_clock()
        self.metrics = c.get_metrics()
        self.table = c.get_connection_table()
        self.logic = c.get_logic_client()
        self.redis = c.get_redis()
        self.presence = c.get_presence()
        self.subscriber = c.get_subscriber()
        self.client_factory = c.get_client_factory()
        self._beats = 0
        self._beat: LoopingCall | None = None
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
        self._beat = self.clock.looping_call(self._beat_once, self.BEAT_INTERVAL, now=True)

    async def shutdown(self) -> None:
        # stop reading from clients and give the sends already taken time to be ACKed
        for conn in self.table.connections():
            conn.pauseProducing()
        # the sends already taken are ACKed once the logic client's batches are answered
        drained = Deferred.fromCoroutine(self.logic.drain())
        drained.addTimeout(self.DRAIN_TIMEOUT, self.clock)  # type: ignore[arg-type]  # a Clock is structurally an IReactorTime
        try:
            await drained
        except TimeoutError:
            log.warn("sends still unanswered after {timeout} s at shutdown; closing anyway", timeout=self.DRAIN_TIMEOUT)
        await self.table.close_all()
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        try:
            await self.presence.clear_node(self.config.node_id)
        except Exception as e:
            log.warn("could not clear presence entries at shutdown: {error!r}", error=e)
        await self.subscriber.stop()
        self.logic.stop()
        await self.redis.close()
