"""Presence in Redis: which device is signed in through which connect node.

Logic writes it (sign-in, offline) and reads it (delivery); connect nodes keep
their liveness key fresh and, when they start, clear entries an earlier run of
theirs left behind. An entry counts only while its node's liveness key exists,
so the devices of a crashed node stop counting as online after the key's TTL.
"""

from typing import Any, Sequence

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from goim.distributed.redis import Keys, Redis
from goim.logs import goim_observer

log = Logger(observer=goim_observer)

# Set the device's node and return the previous one, atomically.
_ONLINE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return old
"""

# Remove the device's entry only if it still names this node: a late offline
# from an old connection must not erase a newer sign-in on another node.
_OFFLINE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('SREM', KEYS[2], ARGV[3])
return 1
"""


class RedisPresence:
    """Presence entries and node liveness."""

    def __init__(self, redis: Redis, keys: Keys, *, node_ttl: int = 15) -> None:
        """
        Args:
            node_ttl: seconds a connect node counts as alive after its last beat.
        """
        self.redis = redis
        self.keys = keys
        self.node_ttl = node_ttl

    async def online(self, *, device_id: int, user_id: int, node: str) -> str | None:
        """Record that the device signed in through ``node``.

        Returns:
            The node the device was on before, if any.
        """
        previous = await self.redis.call(
            "eval",
            _ONLINE,
            [self.keys.presence(user_id), self.keys.node_devices(node)],
            [str(device_id), node, f"{user_id}:{device_id}"],
        )
        return None if previous is None else str(previous)

    async def offline(self, *, device_id: int, user_id: int, node: str) -> None:
        """Forget the device's entry if it still names ``node``."""
        await self.redis.call(
            "eval",
            _OFFLINE,
            [self.keys.presence(user_id), self.keys.node_devices(node)],
            [str(device_id), node, f"{user_id}:{device_id}"],
        )

    async def node_of(self, *, device_id: int, user_id: int) -> str | None:
        """The node the device is signed in through, if any."""
        node = await self.redis.call("hget", self.keys.presence(user_id), str(device_id))
        return None if node is None else str(node)

    async def locate(self, user_ids: Sequence[int]) -> dict[int, dict[int, str]]:
        """``{user_id: {device_id: node}}`` of the users' devices on live nodes."""
        users = sorted(set(user_ids))
        replies = await gatherResults(
            [self._hgetall(self.keys.presence(u)) for u in users], consumeErrors=True
        )
        located = {u: {int(d): str(n) for d, n in reply.items()} for u, reply in zip(users, replies)}
        nodes = sorted({n for devices in located.values() for n in devices.values()})
        alive = await self.alive(nodes)
        return {
            u: {d: n for d, n in devices.items() if n in alive} for u, devices in located.items()
        }

    def _hgetall(self, key: str) -> "Deferred[Any]":
        return Deferred.fromCoroutine(self.redis.call("hgetall", key))

    async def alive(self, nodes: Sequence[str]) -> set[str]:
        """The nodes among ``nodes`` whose liveness key exists."""
        if not nodes:
            return set()
        values = await self.redis.call("mget", [self.keys.node_alive(n) for n in nodes])
        return {n for n, v in zip(nodes, values) if v is not None}

    async def restore(self, node: str, devices: Sequence[tuple[int, int]]) -> int:
        """Write back the entries of ``(user_id, device_id)`` signed in through ``node``.

        For a Redis that lost its data (restarted without persistence): an entry
        that exists is left alone, since it may name a newer sign-in elsewhere.

        Returns:
            How many entries were written back.
        """
        restored = 0
        for user_id, device_id in devices:
            if await self.redis.call("hsetnx", self.keys.presence(user_id), str(device_id), node):
                restored += 1
            await self.redis.call("sadd", self.keys.node_devices(node), f"{user_id}:{device_id}")
        return restored

    async def beat(self, node: str) -> None:
        """Mark ``node`` alive for another ``node_ttl`` seconds."""
        await self.redis.call("set", self.keys.node_alive(node), "1", self.node_ttl)

    async def clear_node(self, node: str) -> int:
        """Remove every entry that names ``node`` (a node starting, or stopping).

        Returns:
            How many entries were removed.
        """
        members = await self.redis.call("smembers", self.keys.node_devices(node))
        removed = 0
        for member in members or ():
            user_id, device_id = (int(x) for x in str(member).split(":"))
            await self.offline(device_id=device_id, user_id=user_id, node=node)
            removed += 1
        await self.redis.call("delete", self.keys.node_devices(node))
        if removed:
            log.info("cleared {count} presence entries of node {node}", count=removed, node=node)
        return removed
