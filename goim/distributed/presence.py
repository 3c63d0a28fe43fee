"""Presence in Redis: which connection (and so which connect node) each device is
signed in on.

Logic writes it (sign-in, offline) and reads it (delivery, kicks); every change
compares the connection id first, so a late event about an old connection never
touches a newer one. Connect nodes keep
their liveness key fresh and, when they start, clear entries an earlier run of
theirs left behind. An entry counts only while its node's liveness key exists,
so the devices of a crashed node stop counting as online after the key's TTL.
"""

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from goim.container import Container, component
from goim.distributed.redis import Keys, Redis, RedisURL
from goim.logs import goim_observer
from goim.types import connection_node
from goim.util import Clock

log = Logger(observer=goim_observer)

# An entry is "<connection id>|<send epoch>"; a connection id is
# "<node>/<boot>/<serial>" (goim.types.connection_id).
#
# Set the device's entry to a new connection and return the previous entry. A
# connection older than the entry's on the same node boot (its sign-in finished
# late) does not overwrite it: the reply is then {"superseded", entry}.
_ONLINE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local prefix, serial = string.match(old, '^(.*/)(%d+)|')
  if prefix ~= nil and prefix == ARGV[4] and tonumber(serial) > tonumber(ARGV[5]) then
    return {'superseded', old}
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if old then return {'replaced', old} end
return {'new', ''}
"""

# Remove the device's entry only if it still names this connection: a late offline
# from an old connection must not erase a newer sign-in, on this node or another.
# The node's set keeps the device while its entry names some connection of the node.
_OFFLINE = """
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if entry and string.sub(entry, 1, #ARGV[2] + 1) == ARGV[2] .. '|' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  entry = false
end
if (not entry) or string.sub(entry, 1, #ARGV[4]) ~= ARGV[4] then
  redis.call('SREM', KEYS[2], ARGV[3])
end
return 1
"""

# Remove the device's entry if it names any connection of the node (ARGV[2] is
# "<node>/"): a node starting or stopping forgets its connections, never others'.
_CLEAR = """
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if entry and string.sub(entry, 1, #ARGV[2]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"""

# Every field and value of each of KEYS (the presence hashes of several users): one
# command for a whole delivery batch instead of an HGETALL per user.
_LOCATE = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HGETALL', key)
end
return out
"""
#: presence hashes read by one _LOCATE (bounds the time Redis spends in one script)
LOCATE_CHUNK = 500

# Write back a connection's entry after Redis lost its data (ARGV: device, entry,
# "user:device", "<node>/<boot>/", serial, connection id). Written when absent or
# naming an older connection of the same node boot; kept when it names this
# connection; otherwise another connection signed in meanwhile and this one lost:
# returns 'lost' (its node closes it), 'restored' or 'kept'.
_RESTORE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  if string.sub(old, 1, #ARGV[6] + 1) == ARGV[6] .. '|' then
    redis.call('SADD', KEYS[2], ARGV[3])
    return 'kept'
  end
  local prefix, serial = string.match(old, '^(.*/)(%d+)|')
  if prefix == nil or prefix ~= ARGV[4] or tonumber(serial) > tonumber(ARGV[5]) then
    return 'lost'
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 'restored'
"""

# Mark a node alive for ARGV[1] seconds; return whether it was alive already.
_BEAT = """
local was = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return was
"""


@dataclass(frozen=True)
class Entry:
    """A presence entry: the device's connection and its send epoch at sign-in."""

    conn: str
    epoch: int

    @property
    def node(self) -> str:
        return connection_node(self.conn)

    def encode(self) -> str:
        return f"{self.conn}|{self.epoch}"

    @classmethod
    def decode(cls, value: Any) -> "Entry | None":
        """The entry a stored value holds, or None for a value in no known format."""
        text = value.decode() if isinstance(value, bytes) else str(value)
        conn, sep, epoch = text.rpartition("|")
        if not sep or conn.count("/") != 2 or not epoch.isdigit():
            return None
        return cls(conn, int(epoch))


class RedisPresence:
    """Presence entries and node liveness."""

    #: seconds for which ``locate`` takes a node it found alive as alive without
    #: asking Redis again: one command less per delivery batch, at the price of
    #: counting a node that stopped beating up to this long past its key's expiry
    #: (``node_ttl``). A node not known to be alive is asked about every time.
    ALIVE_REUSE = 1.0

    def __init__(self, redis: Redis, keys: Keys, *, node_ttl: int = 15, clock: Clock | None = None) -> None:
        """
        Args:
            node_ttl: seconds a connect node counts as alive after its last beat.
            clock: for ``ALIVE_REUSE`` (default: the Redis connection's).
        """
        self.redis = redis
        self.keys = keys
        self.node_ttl = node_ttl
        self.clock = clock or redis.clock
        #: node -> until when locate takes it as alive
        self._alive_until: dict[str, float] = {}

    async def online(self, *, device_id: int, user_id: int, conn: str, epoch: int) -> tuple[bool, Entry | None]:
        """Record that the device signed in on connection ``conn``.

        Returns:
            ``(taken, previous)``: ``taken`` is False when a newer connection of the
            device on the same node boot holds the entry (this sign-in finished
            late and must not count); ``previous`` is the entry it replaced or kept.
        """
        prefix, _, serial = conn.rpartition("/")
        status, old = await self.redis.call(
            "eval",
            _ONLINE,
            [self.keys.presence(user_id), self.keys.node_devices(connection_node(conn))],
            [str(device_id), Entry(conn, epoch).encode(), f"{user_id}:{device_id}", prefix + "/", serial],
        )
        status = status.decode() if isinstance(status, bytes) else str(status)
        previous = Entry.decode(old) if old else None
        return status != "superseded", previous

    async def offline(self, *, device_id: int, user_id: int, conn: str) -> None:
        """Forget the device's entry if it still names connection ``conn``."""
        node = connection_node(conn)
        await self.redis.call(
            "eval",
            _OFFLINE,
            [self.keys.presence(user_id), self.keys.node_devices(node)],
            [str(device_id), conn, f"{user_id}:{device_id}", node + "/"],
        )

    async def entry(self, *, device_id: int, user_id: int) -> Entry | None:
        """The device's presence entry, if it has one."""
        value = await self.redis.call("hget", self.keys.presence(user_id), str(device_id))
        return None if value is None else Entry.decode(value)

    async def locate(self, user_ids: Sequence[int]) -> dict[int, dict[int, str]]:
        """``{user_id: {device_id: node}}`` of the users' devices on live nodes."""
        users = sorted(set(user_ids))
        chunks = [users[i : i + LOCATE_CHUNK] for i in range(0, len(users), LOCATE_CHUNK)]
        replies = await gatherResults(
            [
                Deferred.fromCoroutine(self.redis.call("eval", _LOCATE, [self.keys.presence(u) for u in chunk], []))
                for chunk in chunks
            ],
            consumeErrors=True,
        )
        located: dict[int, dict[int, str]] = {}
        for u, fields in zip(users, (f for reply in replies for f in reply)):
            devices = located[u] = {}
            for d, value in zip(fields[::2], fields[1::2]):
                entry = Entry.decode(value)
                if entry is not None:
                    devices[int(d)] = entry.node
        alive = await self._live({n for devices in located.values() for n in devices.values()})
        return {
            u: {d: n for d, n in devices.items() if n in alive} for u, devices in located.items()
        }

    async def _live(self, nodes: set[str]) -> set[str]:
        """The nodes among ``nodes`` that are alive, asking Redis about those not
        found alive in the last ``ALIVE_REUSE`` seconds."""
        now = self.clock.seconds()
        live = {n for n in nodes if self._alive_until.get(n, 0.0) > now}
        unknown = sorted(nodes - live)
        if unknown:
            found = await self.alive(unknown)
            until = self.clock.seconds() + self.ALIVE_REUSE
            # keep only answers still valid, so the map holds no node for long that stopped beating
            self._alive_until = {n: t for n, t in self._alive_until.items() if t > now}
            self._alive_until.update(dict.fromkeys(found, until))
            live |= found
        return live

    async def alive(self, nodes: Sequence[str]) -> set[str]:
        """The nodes among ``nodes`` whose liveness key exists."""
        if not nodes:
            return set()
        values = await self.redis.call("mget", [self.keys.node_alive(n) for n in nodes])
        return {n for n, v in zip(nodes, values) if v is not None}

    async def restore(
        self, node: str, connections: Sequence[tuple[int, int, str, int]]
    ) -> tuple[int, list[tuple[int, str]]]:
        """Write back the entries of ``(user_id, device_id, conn, epoch)`` signed in
        through ``node``, for a Redis that lost its data (restarted without persistence).

        An entry that names another connection of the device (a sign-in elsewhere
        while the entries were gone) is left alone, and that connection of ours has
        lost: the caller closes it, so that a device never keeps two connections.

        Returns:
            ``(restored, lost)``: how many entries were written back, and the
            ``(device_id, conn)`` of the connections that lost.
        """
        restored = 0
        lost: list[tuple[int, str]] = []
        for user_id, device_id, conn, epoch in connections:
            prefix, _, serial = conn.rpartition("/")
            outcome = await self.redis.call(
                "eval",
                _RESTORE,
                [self.keys.presence(user_id), self.keys.node_devices(node)],
                [str(device_id), Entry(conn, epoch).encode(), f"{user_id}:{device_id}", prefix + "/", serial, conn],
            )
            outcome = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
            if outcome == "restored":
                restored += 1
            elif outcome == "lost":
                lost.append((device_id, conn))
        return restored, lost

    async def beat(self, node: str) -> bool:
        """Mark ``node`` alive for another ``node_ttl`` seconds.

        Returns:
            Whether it counted as alive until now (False: its key had expired, or
            Redis lost it, and deliveries skipped the node's devices meanwhile).
        """
        return bool(await self.redis.call("eval", _BEAT, [self.keys.node_alive(node)], [str(self.node_ttl)]))

    async def clear_node(self, node: str) -> int:
        """Remove every entry that names ``node`` (a node starting, or stopping).

        Returns:
            How many entries were removed.
        """
        members = await self.redis.call("smembers", self.keys.node_devices(node))
        removed = 0
        for member in members or ():
            user_id, device_id = (int(x) for x in str(member).split(":"))
            removed += await self.redis.call("eval", _CLEAR, [self.keys.presence(user_id)], [str(device_id), node + "/"])
        await self.redis.call("delete", self.keys.node_devices(node))
        if removed:
            log.info("cleared {count} presence entries of node {node}", count=removed, node=node)
        return removed


class RedisSettings(Protocol):
    """What the Redis components read from a node's config."""

    @property
    def redis(self) -> str: ...

    @property
    def redis_prefix(self) -> str: ...


class RedisComponents(Container):
    """The Redis connection and presence of a logic or connect node's container."""

    config: RedisSettings

    @component
    def get_redis(self) -> Redis:
        return Redis(RedisURL.parse(self.config.redis), self.reactor, metrics=self.get_metrics())

    @component
    def get_presence(self) -> RedisPresence:
        return RedisPresence(self.get_redis(), Keys(self.config.redis_prefix), clock=self.get_clock())
