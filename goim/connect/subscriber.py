"""A connect node's side of the delivery bus: its Redis channel.

Logic nodes publish NodeEvents (deliveries and kicks) on each connect node's
channel (``goim.distributed.bus.RedisDelivery``); :class:`NodeSubscriber` receives
them and hands them to the node's connection table. Delivery is best effort: after
any interruption of the subscription the node brings its connections up to date.
"""

from typing import Any

import txredisapi
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from goim.connect.table import ConnectionTable
from goim.distributed.presence import RedisPresence
from goim.distributed.redis import Keys, RedisURL, RetryingHandshake
from goim.logs import goim_observer
from goim.pb import goim_pb2, internal_pb2
from goim.protocols.changes import audience
from goim.protocols.codec import stored_from_item
from goim.util import run_in_background

log = Logger(observer=goim_observer)


def apply_event(table: ConnectionTable, payload: bytes) -> None:
    """Hand a NodeEvent's deliveries and kicks to the node's connections.

    A delivery reaches a device only if its connection here belongs to the user
    the delivery names. Malformed payloads are logged and dropped.
    """
    event = internal_pb2.NodeEvent()
    try:
        event.ParseFromString(payload)
        deliveries = []
        # repeated fields are read by slicing: list() of one costs twice as much, and a
        # group message puts a delivery per member in one event
        for delivery in event.deliveries:
            items = delivery.items[:]
            seqs, audiences = delivery.seqs[:], delivery.audiences[:]
            if len(seqs) != len(items) or len(audiences) != len(items):
                # a logic node older than issue 12: read each item
                messages = [
                    stored_from_item(goim_pb2.MessageItem.FromString(raw), user_id=delivery.user_id) for raw in items
                ]
                seqs, audiences = [m.seq for m in messages], [audience(m) for m in messages]
            deliveries.append((delivery.user_id, delivery.device_ids[:], seqs, items, audiences))
    except Exception:
        log.failure("dropping a malformed node event of {size} bytes", size=len(payload))
        return
    for user_id, device_ids, seqs, items, audiences in deliveries:
        for device_id in device_ids:
            conn = table.get(device_id)
            if conn is not None and conn.user_id == user_id:
                conn.push_items(seqs, items, audiences)
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


class _SubscriberProtocol(RetryingHandshake, txredisapi.SubscriberProtocol):
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
        factory.password = self.url.password
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
