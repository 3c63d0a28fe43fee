"""A real Redis for tests, under a key prefix of their own.

Tests that need Redis run only when ``GOIM_TEST_REDIS`` names a server, e.g.
``redis://127.0.0.1:6379/0`` (``scripts/test`` sets it). Each test gets its own
prefix (``goimtest<hex>:``) so tests never see each other's keys or channels, and
every key under that prefix is deleted when the test ends.
"""

import os
import secrets
from collections.abc import Callable
from typing import Any

import txredisapi
from twisted.internet import endpoints, protocol, reactor

from goim.distributed.redis import Keys, Redis, RedisURL

REDIS_ENV = "GOIM_TEST_REDIS"

#: seconds a test waits for something it expects to happen through Redis
WAIT_TIMEOUT = 5.0


def redis_test_url() -> str | None:
    """The Redis URL for tests, or None when ``GOIM_TEST_REDIS`` is unset."""
    url = os.environ.get(REDIS_ENV, "").strip()
    return url or None


def unique_prefix() -> str:
    """A key prefix no other test uses."""
    return f"goimtest{secrets.token_hex(6)}:"


# one wait_until for every test (re-exported here for the Redis tests)
from goim.testing.harness import wait_until  # noqa: E402,F401


async def delete_keys(redis: Redis, prefix: str) -> None:
    """Delete every key under ``prefix``."""
    names = await redis.call("keys", prefix + "*")
    if names:
        await redis.call("delete", list(names))


class _RecordingSubscriber(txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        if isinstance(channel, bytes):
            channel = channel.decode()
        self.factory.recorder.messages.append((channel, message))


class ChannelRecorder:
    """A pub/sub subscription that records ``(channel, payload bytes)`` in arrival order."""

    def __init__(self, url: RedisURL) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._factory = txredisapi.SubscriberFactory()
        self._factory.charset = None  # payloads are protobuf bytes
        self._factory.convertNumbers = False
        self._factory.password = url.password
        self._factory.protocol = _RecordingSubscriber
        self._factory.recorder = self  # type: ignore[attr-defined]
        self._factory.startConnecting(endpoints.HostnameEndpoint(reactor, url.host, url.port, timeout=3))

    async def subscribe(self, *channels: str) -> None:
        """Subscribe to ``channels``; returns once Redis confirmed it."""
        connection = await self._factory.getConnection(peek=True)
        await connection.subscribe(list(channels))

    def on(self, channel: str) -> list[bytes]:
        """The payloads received on ``channel`` so far."""
        return [payload for name, payload in self.messages if name == channel]

    async def close(self) -> None:
        """Disconnect and stop reconnecting."""
        await self._factory.disconnect()


class RedisTestMixin:
    """For trial ``TestCase`` s on the real reactor: Redis clients under a unique prefix."""

    if redis_test_url() is None:
        skip = f"set {REDIS_ENV}=redis://127.0.0.1:6379/0 to run the tests that need Redis"

    def redis_url(self) -> RedisURL:
        """The test server's URL."""
        url = redis_test_url()
        assert url is not None
        return RedisURL.parse(url)

    def open_redis(self: Any, prefix: str | None = None) -> tuple[Redis, Keys]:
        """A connected ``Redis`` and ``Keys`` under a fresh prefix (or ``prefix``).

        The prefix's keys are deleted and the pool closed when the test ends.
        """
        redis = Redis(self.redis_url(), reactor, timeout=WAIT_TIMEOUT)
        keys = Keys(prefix if prefix is not None else unique_prefix())
        # cleanups run last-in first-out: delete the keys, then close
        self.addCleanup(redis.close)
        self.addCleanup(delete_keys, redis, keys.prefix)
        return redis, keys

    async def open_recorder(self: Any, *channels: str) -> ChannelRecorder:
        """A subscription to ``channels``, closed when the test ends."""
        recorder = ChannelRecorder(self.redis_url())
        self.addCleanup(recorder.close)
        await recorder.subscribe(*channels)
        return recorder


#: how a scripted server answers: (connection number from 0, command) → reply, or None to hang up
Script = Callable[[int, list[bytes]], bytes | None]


class _ScriptedConnection(protocol.Protocol):
    """Reads RESP commands and answers them as the factory's script says."""

    factory: "ScriptedRedis"

    def connectionMade(self) -> None:
        self.number = len(self.factory.connections)
        self.factory.connections.append(self)
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while (command := self._command()) is not None:
            self.factory.commands.append((self.number, command))
            reply = self.factory.script(self.number, command)
            if reply is None:
                self.transport.loseConnection()
                return
            self.transport.write(reply)

    def _command(self) -> list[bytes] | None:
        # "*<n>\r\n" then n times "$<length>\r\n<bytes>\r\n", as clients send them
        lines = self.buffer.split(b"\r\n")
        if len(lines) < 2 or not lines[0].startswith(b"*"):
            return None
        count = int(lines[0][1:])
        if len(lines) < 2 + 2 * count:
            return None
        args = lines[2 : 2 + 2 * count : 2]
        self.buffer = b"\r\n".join(lines[1 + 2 * count :])
        return [a.upper() if i == 0 else a for i, a in enumerate(args)]


class ScriptedRedis(protocol.Factory):
    """A stand-in Redis on a real port that answers as a script says (for handshakes and failures)."""

    protocol = _ScriptedConnection

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections: list[_ScriptedConnection] = []
        self.commands: list[tuple[int, list[bytes]]] = []

    @classmethod
    async def listen(cls, test: Any, script: Script) -> tuple["ScriptedRedis", int]:
        """Listen on 127.0.0.1 until ``test`` ends; returns the server and its port."""
        factory = cls(script)
        port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        test.addCleanup(port.stopListening)
        return factory, port.getHost().port

    def names(self, connection: int) -> list[bytes]:
        """The commands connection number ``connection`` sent, by name."""
        return [c[0] for n, c in self.commands if n == connection]
