"""The delivery bus: logic publishes NodeEvents on connect nodes' Redis channels.

Delivery is best effort: a push that is lost (Redis down, a node restarting) is
made good by sync, and after any interruption of a node's subscription the node
itself brings its connections up to date (``NodeSubscriber``).
"""

from typing import Any, Sequence

import txredisapi
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from goim.batching import Batcher, shared
from goim.distributed.presence import RedisPresence
from goim.distributed.redis import Keys, Redis, RedisURL
from goim.logs import goim_observer
from goim.pb import goim_pb2, internal_pb2
from goim.protocols.client import ConnectionTable
from goim.protocols.codec import encode_item, stored_from_item
from goim.types import StoredMessage
from goim.util import run_in_background

log = Logger(observer=goim_observer)


class RedisDelivery:
    """``DeliveryPort`` and ``SessionPort`` of a logic node: locate the recipients'
    devices, publish per node.

    Batches are published one after the other, in the order they were committed.
    """

    def __init__(self, presence: RedisPresence) -> None:
        self.presence = presence
        self.redis: Redis = presence.redis
        self.keys: Keys = presence.keys
        # one deliver() call per batch, published one after the other in order
        self._publisher: Batcher[None, list[StoredMessage], None] = Batcher(
            "delivery publisher", None, self._publish_batch, max_batch=1
        )

    def deliver(self, messages: Sequence[StoredMessage]) -> None:
        """Queue stored copies for publishing. Never raises."""
        # the publisher answers every batch (a failure is logged there)
        self._publisher.add(list(messages), key=None)

    async def drain(self) -> None:
        """Wait until every delivery queued so far is published (or given up)."""
        await self._publisher.drain()

    async def _publish_batch(self, _: None, batches: list[list[StoredMessage]]) -> list[None]:
        for batch in batches:
            try:
                await self._publish(batch)
            except Exception as e:
                log.warn(
                    "could not publish {count} deliveries ({error!r}); devices catch up by sync",
                    count=len(batch),
                    error=e,
                )
        return shared(None, batches)

    async def _publish(self, messages: Sequence[StoredMessage]) -> None:
        by_user: dict[int, list[StoredMessage]] = {}
        for m in messages:
            by_user.setdefault(m.user_id, []).append(m)
        located = await self.presence.locate(list(by_user))
        events: dict[str, internal_pb2.NodeEvent] = {}
        for user_id, devices in located.items():
            by_node: dict[str, list[int]] = {}
            for device_id, node in devices.items():
                by_node.setdefault(node, []).append(device_id)
            items = [encode_item(m) for m in by_user[user_id]]
            for node, device_ids in by_node.items():
                event = events.setdefault(node, internal_pb2.NodeEvent())
                event.deliveries.add(user_id=user_id, device_ids=sorted(device_ids), items=items)
        for node, event in events.items():
            await self.redis.call("publish", self.keys.channel(node), event.SerializeToString())

    def end_session(self, *, device_id: int, user_id: int, reason: str) -> None:
        """Kick the device's connection on whichever node holds it (``SessionPort``)."""
        run_in_background(self._end_session(device_id, user_id, reason), "ending a session")

    async def _end_session(self, device_id: int, user_id: int, reason: str) -> None:
        entry = await self.presence.entry(device_id=device_id, user_id=user_id)
        if entry is not None:
            await self.kick(node=entry.node, device_id=device_id, conn=entry.conn, reason=reason, new_node="")

    async def kick(self, *, node: str, device_id: int, conn: str, reason: str, new_node: str) -> None:
        """Ask ``node`` to close the device's connection ``conn`` there (never a newer one)."""
        event = internal_pb2.NodeEvent()
        event.kicks.add(device_id=device_id, conn=conn, reason=reason, new_node=new_node)
        await self.redis.call("publish", self.keys.channel(node), event.SerializeToString())


def apply_event(table: ConnectionTable, payload: bytes) -> None:
    """Hand a NodeEvent's deliveries and kicks to the node's connections.

    A delivery reaches a device only if its connection here belongs to the user
    the delivery names. Malformed payloads are logged and dropped.
    """
    event = internal_pb2.NodeEvent()
    try:
        event.ParseFromString(payload)
        deliveries = []
        for delivery in event.deliveries:
            messages = []
            for raw in delivery.items:
                item = goim_pb2.MessageItem()
                item.ParseFromString(raw)
                messages.append(stored_from_item(item, user_id=delivery.user_id))
            deliveries.append((delivery.user_id, list(delivery.device_ids), messages))
    except Exception:
        log.failure("dropping a malformed node event of {size} bytes", size=len(payload))
        return
    for user_id, device_ids, messages in deliveries:
        for device_id in device_ids:
            conn = table.get(device_id)
            if conn is not None and conn.user_id == user_id:
                conn.push(messages)
    for kick in event.kicks:
        reason = kick.reason or "signed in elsewhere"
        # a kick without a connection id comes from a logic node older than
        # connection ids (during an upgrade): it names the device
        kicked = table.kick_connection(kick.device_id, kick.conn, reason) if kick.conn else table.kick(kick.device_id, reason)
        if kicked:
            log.info(
                "kicked connection {conn} of device {device_id}: {reason} (node {node})",
                conn=kick.conn,
                device_id=kick.device_id,
                reason=reason,
                node=kick.new_node,
            )


class _SubscriberProtocol(txredisapi.SubscriberProtocol):
    def connectionMade(self) -> Deferred[Any]:
        d = super().connectionMade()
        self.whenConnected().addCallback(lambda _: self.factory.subscriber._connected(self))
        return d

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.factory.subscriber._received(message)

    def connectionLost(self, why: Any) -> None:
        super().connectionLost(why)
        self.factory.subscriber._lost(why)


class NodeSubscriber:
    """A connect node's subscription to its channel, reconnecting by itself.

    Every time the subscription is established again after a loss, each online
    connection is brought up to date from what its client acknowledged.
    """

    def __init__(
        self, url: RedisURL, keys: Keys, node: str, table: ConnectionTable, presence: RedisPresence, reactor: Any
    ) -> None:
        self.url = url
        self.node = node
        self.channel = keys.channel(node)
        self.table = table
        self.presence = presence
        self._reactor = reactor
        self._factory: txredisapi.SubscriberFactory | None = None
        self._subscriptions = 0
        self.subscribed = False

    def start(self) -> None:
        """Connect and subscribe (and keep doing so)."""
        factory = txredisapi.SubscriberFactory()
        factory.charset = None  # payloads are protobuf bytes
        factory.protocol = _SubscriberProtocol
        factory.initialDelay = 0.2
        factory.maxDelay = 5
        factory.subscriber = self  # type: ignore[attr-defined]
        self._factory = factory
        factory.startConnecting(endpoints.HostnameEndpoint(self._reactor, self.url.host, self.url.port, timeout=3))

    async def stop(self) -> None:
        """Unsubscribe and stop reconnecting."""
        if self._factory is not None:
            factory, self._factory = self._factory, None
            await factory.disconnect()

    def _connected(self, protocol: txredisapi.SubscriberProtocol) -> None:
        run_in_background(self._subscribe(protocol), "subscribing to " + self.channel)

    async def _subscribe(self, protocol: txredisapi.SubscriberProtocol) -> None:
        await protocol.subscribe(self.channel)
        self.subscribed = True
        self._subscriptions += 1
        if self._subscriptions == 1:
            log.info("subscribed to {channel}", channel=self.channel)
        else:
            log.info(
                "subscribed to {channel} again: bringing {count} connections up to date",
                channel=self.channel,
                count=len(self.table),
            )
            await self._restore_presence()
            self.table.catch_up_all()

    async def _restore_presence(self) -> None:
        # A Redis that restarted lost presence and liveness: write back ours first,
        # so that deliveries find this node's devices again.
        try:
            await self.presence.beat(self.node)
            connections = [(c.user_id, c.device_id, c.conn_id, c.epoch) for c in self.table.connections()]
            restored, lost = await self.presence.restore(self.node, connections)
        except Exception as e:
            log.warn("could not restore presence of node {node}: {error!r}", node=self.node, error=e)
            return
        if restored:
            log.info("restored {count} presence entries of node {node}", count=restored, node=self.node)
        # the device signed in elsewhere while presence was gone: nobody could kick
        # this connection then, so it goes now (one connection per device)
        for device_id, conn in lost:
            if self.table.kick_connection(device_id, conn, "signed in elsewhere"):
                log.info(
                    "kicked connection {conn} of device {device_id}: it signed in elsewhere while Redis was down",
                    conn=conn,
                    device_id=device_id,
                )

    def _received(self, message: Any) -> None:
        if isinstance(message, str):
            message = message.encode("latin-1")
        apply_event(self.table, message)

    def _lost(self, why: Any) -> None:
        if self.subscribed:
            self.subscribed = False
            if self._factory is not None:
                log.warn("lost the Redis subscription to {channel}; reconnecting", channel=self.channel)
