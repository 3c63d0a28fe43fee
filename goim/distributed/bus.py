"""The delivery bus: logic publishes NodeEvents on connect nodes' Redis channels.

Delivery is best effort: a push that is lost (Redis down, a node restarting) is
made good by sync, and after any interruption of a node's subscription the node
itself brings its connections up to date (``goim.connect.subscriber``).
"""

from typing import Sequence

from twisted.logger import Logger

from goim.batching import Batcher, FifoQueue, shared
from goim.distributed.presence import RedisPresence
from goim.distributed.redis import Keys, Redis
from goim.logs import goim_observer
from goim.pb import internal_pb2
from goim.protocols.changes import items_by_user
from goim.types import StoredCopies
from goim.util import run_in_background

log = Logger(observer=goim_observer)


#: the most copies one publish round covers (what one NodeEvent per node carries)
PUBLISH_MAX_COPIES = 2000


def _copies(batch: Sequence[StoredCopies]) -> int:
    return sum(len(copies) for copies in batch)


class RedisDelivery:
    """``DeliveryPort`` and ``SessionPort`` of a logic node: locate the recipients'
    devices, publish per node.

    Batches are published in the order they were committed, one round at a time:
    the batches committed while a round is out go together in the next one (one
    locate, one event per node), up to ``max_copies`` copies.
    """

    def __init__(self, presence: RedisPresence, *, max_copies: int = PUBLISH_MAX_COPIES) -> None:
        self.presence = presence
        self.redis: Redis = presence.redis
        self.keys: Keys = presence.keys
        self._publisher: Batcher[None, Sequence[StoredCopies], None] = Batcher(
            "delivery publisher", None, self._publish_batch,
            queue=lambda: FifoQueue(cost=_copies, max_cost=max_copies),
        )  # fmt: skip

    def deliver(self, batch: Sequence[StoredCopies]) -> None:
        """Queue stored copies for publishing. Never raises."""
        # the publisher answers every batch (a failure is logged there)
        self._publisher.add(list(batch), key=None)

    async def drain(self) -> None:
        """Wait until every delivery queued so far is published (or given up)."""
        await self._publisher.drain()

    async def _publish_batch(self, _: None, batches: list[Sequence[StoredCopies]]) -> list[None]:
        # in commit order: each user's copies stay in seq order within the round
        batch = [copies for b in batches for copies in b]
        try:
            await self._publish(batch)
        except Exception as e:
            log.warn(
                "could not publish {count} deliveries ({error!r}); devices catch up by sync",
                count=_copies(batch),
                error=e,
            )
        return shared(None, batches)

    async def _publish(self, batch: Sequence[StoredCopies]) -> None:
        located = await self.presence.locate(sorted({u for copies in batch for u in copies.users}))
        by_user = items_by_user(batch, {user_id for user_id, devices in located.items() if devices})
        events: dict[str, internal_pb2.NodeEvent] = {}
        for user_id, (seqs, items, audiences) in by_user.items():
            by_node: dict[str, list[int]] = {}
            for device_id, node in located[user_id].items():
                by_node.setdefault(node, []).append(device_id)
            for node, device_ids in by_node.items():
                event = events.setdefault(node, internal_pb2.NodeEvent())
                # add() then extend(): half the cost of add() with keyword arguments,
                # and a group message adds a delivery per member
                delivery = event.deliveries.add()
                delivery.user_id = user_id
                delivery.device_ids.extend(sorted(device_ids))
                delivery.items.extend(items)
                delivery.seqs.extend(seqs)
                delivery.audiences.extend(audiences)
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
