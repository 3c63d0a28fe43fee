"""Redis access for distributed mode: URLs, key names, and commands with a deadline."""

from typing import Any

import txredisapi
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from goim.logs import goim_observer
from goim.metrics import Metrics
from goim.urls import RedisURL, RedisURLError
from goim.util import Clock

log = Logger(observer=goim_observer)


class Keys:
    """Every Redis key and channel goim uses, under one prefix (tests use their own)."""

    def __init__(self, prefix: str = "goim:") -> None:
        self.prefix = prefix

    def presence(self, user_id: int) -> str:
        """Hash: device id → connect node id, for the user's signed-in devices."""
        return f"{self.prefix}presence:{user_id}"

    def node_devices(self, node: str) -> str:
        """Set of ``user_id:device_id`` signed in through a connect node."""
        return f"{self.prefix}node:{node}:devices"

    def node_alive(self, node: str) -> str:
        """Present while the connect node lives (it refreshes the TTL)."""
        return f"{self.prefix}node:{node}:alive"

    def channel(self, node: str) -> str:
        """The pub/sub channel of a connect node."""
        return f"{self.prefix}node:{node}"


class RetryingHandshake(txredisapi.RedisProtocol):
    """txredisapi's connection handshake (AUTH, then SELECT), minus its give-up.

    txredisapi stops a whole pool from ever reconnecting when one new
    connection's handshake fails, even when that connection was only lost
    during it: Redis restarting at that moment, or the pool being closed while
    it connects (and it then leaves an unhandled error behind). Here a failed
    handshake closes that one connection and nothing else. Its pool slot
    reconnects with backoff, counting a connection lost before it was usable as
    a failed attempt, so a Redis that comes back is used again, and a wrong
    password is logged at each attempt until it is fixed.
    """

    def connectionMade(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._handshake())

    async def _handshake(self) -> None:
        try:
            if self.password is not None:
                _raise_error_reply(await self.auth(self.password, self.username))
            if self.dbid is not None:
                _raise_error_reply(await self.select(self.dbid))
        except Exception as e:
            if not self.factory.stopped:
                peer = self.transport.getPeer()
                log.warn(
                    "Redis at {host}:{port}: connection handshake failed, reconnecting: {error}",
                    host=peer.host,
                    port=peer.port,
                    error=str(e),
                )
            self.transport.loseConnection()
            return
        self.connected = 1
        self._ready = True
        waiting, self._waiting_for_connect = self._waiting_for_connect, []
        for d in waiting:
            d.callback(self)


def _raise_error_reply(reply: Any) -> None:
    if isinstance(reply, txredisapi.ResponseError):
        raise reply


class RedisUnavailable(Exception):
    """A Redis command failed or timed out."""


class Redis:
    """A lazily connected, self-reconnecting pool; every command has a deadline.

    An outage is logged once when it starts and once when it ends; callers get
    ``RedisUnavailable`` in between and decide what to serve without Redis.
    """

    def __init__(
        self, url: RedisURL, clock: Clock, *, timeout: float = 3.0, poolsize: int = 4, metrics: Metrics | None = None
    ) -> None:
        self.url = url
        self.clock = clock
        self._timeout = timeout
        self._metrics = metrics
        self._down = False
        factory = txredisapi.RedisFactory(
            f"{url.host}:{url.port}",
            # a new connection is on database 0 already: no SELECT to wait for
            url.db or None,
            poolsize,
            isLazy=True,
            password=url.password,
            replyTimeout=timeout,
            # node ids such as "01" must come back as the strings they are
            convertNumbers=False,
        )
        factory.protocol = RetryingHandshake
        factory.startConnecting(endpoints.HostnameEndpoint(clock, url.host, url.port, timeout=timeout))
        self._conn = factory.handler

    async def call(self, command: str, *args: Any) -> Any:
        """Run one command, e.g. ``await redis.call("hget", key, field)``.

        Raises:
            RedisUnavailable: no answer within the deadline, or a connection error.
        """
        started = self.clock.seconds()
        d = getattr(self._conn, command)(*args)
        d.addTimeout(self._timeout, self.clock)
        try:
            result = await d
        except Exception as e:
            if not self._down:
                self._down = True
                log.error("Redis at {host}:{port} unavailable: {error!r}", host=self.url.host, port=self.url.port, error=e)
            raise RedisUnavailable(f"redis {command}: {e!r}") from e
        if self._down:
            self._down = False
            log.info("Redis at {host}:{port} is back", host=self.url.host, port=self.url.port)
        if self._metrics is not None:
            self._metrics.redis_seconds.labels(command).observe(self.clock.seconds() - started)
        return result

    async def close(self) -> None:
        """Close every connection of the pool."""
        try:
            await self._conn.disconnect()
        except Exception:
            log.failure("closing the Redis pool failed")
