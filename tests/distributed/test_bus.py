"""The delivery bus: apply_event (pure), RedisDelivery and NodeSubscriber against a real Redis."""

from dataclasses import replace
from typing import Any, Sequence

from google.protobuf.message import DecodeError
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import provider  # type: ignore[import-untyped]

from goim.connect.subscriber import NodeSubscriber, apply_event
from goim.distributed.bus import RedisDelivery
from goim.distributed.presence import Entry, RedisPresence
from goim.distributed.redis import Redis, RedisURL
from goim.pb import goim_pb2 as pb
from goim.pb import internal_pb2
from goim.protocols import codec
from goim.connect.table import ConnectionTable
from goim.protocols.connection import ClientConnection, ClientConnectionFactory
from goim.features import Feature
from goim.protocols.changes import AUDIENCE_ALL, AUDIENCE_EVENTS, AUDIENCE_STATE, audience
from goim.protocols.codec import encode_item
from goim.types import KIND_READ, copies_of
from goim.types import SignInResult, StoredMessage, connection_id
from tests.protocols.fakes import FakeLogic, frame, frames_of, make_message
from tests.support.redis import RedisTestMixin, ScriptedRedis, wait_until
from tests.support.server import free_port


def written_to(transport: StringTransport) -> list[tuple[int, Any]]:
    """``(code, decoded value)`` of every frame written to ``transport``."""
    out: list[tuple[int, Any]] = []
    for f in frames_of(transport.value()):
        if f.type == codec.MESSAGE:
            value: Any = pb.Message()
        elif f.type == codec.KICKED:
            value = pb.Kicked()
        else:
            value = None
        if value is not None:
            value.ParseFromString(f.value)
        out.append((f.type, value))
    return out


class Node:
    """A connect node's table with real ClientProtocols signed in over StringTransports."""

    def __init__(self, logic: FakeLogic | None = None, node_id: str = "c1") -> None:
        self.clock = Clock()
        self.logic = logic if logic is not None else FakeLogic(auto_sign_in=True)
        self.table = ConnectionTable()
        self.factory = ClientConnectionFactory(logic=self.logic, clock=self.clock, table=self.table, node_id=node_id)
        self.transports: dict[int, StringTransport] = {}

    def connect(self) -> ClientConnection:
        """A new connection, not signed in yet (its ``conn_id`` is set)."""
        proto = self.factory.buildProtocol(None)
        proto.makeConnection(StringTransport())
        return proto

    def start_sign_in(self, proto: ClientConnection, *, device_id: int, user_id: int) -> None:
        """Send the connection's SignIn frame."""
        signin = pb.SignIn(device_id=device_id, user_id=user_id, token="t")
        proto.dataReceived(frame(codec.SIGN_IN, signin.SerializeToString()))

    def sign_in(self, *, device_id: int, user_id: int) -> ClientConnection:
        """A connection of ``device_id`` signed in as ``user_id``, its SignInACK taken."""
        proto = self.connect()
        self.start_sign_in(proto, device_id=device_id, user_id=user_id)
        assert proto.signed_in, "sign-in did not complete"
        self.clock.advance(0)  # the end of the reactor turn writes the connection's frames
        transport = proto.transport
        assert isinstance(transport, StringTransport)
        assert [f.type for f in frames_of(transport.value())] == [codec.SIGN_IN_ACK]
        transport.clear()
        self.transports[device_id] = transport
        return proto

    def written(self, device_id: int) -> list[tuple[int, Any]]:
        """``(code, decoded value)`` of every frame written to the device's latest connection since sign-in."""
        self.clock.advance(0)  # the end of the reactor turn writes the connection's frames
        return written_to(self.transports[device_id])

    def pushed(self, device_id: int) -> list[tuple[int, int]]:
        """``(message_id, seq)`` of every item live-pushed to the device."""
        items: list[tuple[int, int]] = []
        for code, value in self.written(device_id):
            assert code == codec.MESSAGE, code
            assert value.type == codec.MESSAGE_PUSH
            items.extend((i.message_id, i.sync_sequence) for i in value.messages)
        return items

    def closed(self, device_id: int) -> bool:
        """Whether the device's connection is being closed."""
        return bool(self.transports[device_id].disconnecting)


def node_event(
    deliveries: Sequence[tuple[int, list[int], list[StoredMessage]]] = (),
    kicks: Sequence[tuple[int, str, str]] = (),
    *,
    forwarded: bool = False,
) -> bytes:
    """A serialized NodeEvent of ``(user_id, device_ids, messages)`` deliveries and ``(device_id, conn, reason)``
    kicks; ``forwarded``: with each item's seq and audience (what logic nodes send since issue 12), else
    items only (older logic nodes)."""
    event = internal_pb2.NodeEvent()
    for user_id, device_ids, messages in deliveries:
        delivery = event.deliveries.add(user_id=user_id, device_ids=device_ids, items=[encode_item(m) for m in messages])
        if forwarded:
            delivery.seqs.extend(m.seq for m in messages)
            delivery.audiences.extend(audience(m) for m in messages)
    for device_id, conn, reason in kicks:
        event.kicks.add(device_id=device_id, conn=conn, reason=reason, new_node="other")
    return event.SerializeToString()


class ApplyEventTests(SynchronousTestCase):
    def test_delivery_reaches_only_the_listed_devices(self) -> None:
        """A delivery is pushed to the listed devices of its user and to no sibling it omits."""
        node = Node()
        for device_id in (1, 2, 3):
            node.sign_in(device_id=device_id, user_id=10)
        node.sign_in(device_id=4, user_id=20)
        messages = [make_message(10, 1), make_message(10, 2)]
        apply_event(node.table, node_event(deliveries=[(10, [1, 2], messages)]))
        expected = [(m.message_id, m.seq) for m in messages]
        self.assertEqual(node.pushed(1), expected)
        self.assertEqual(node.pushed(2), expected)
        self.assertEqual(node.pushed(3), [])
        self.assertEqual(node.pushed(4), [])

    def test_items_keep_every_field(self) -> None:
        """A pushed item carries the stored copy's fields unchanged."""
        node = Node()
        node.sign_in(device_id=1, user_id=10)
        message = make_message(10, 7, content="héllo")
        apply_event(node.table, node_event(deliveries=[(10, [1], [message])]))
        [(_, value)] = node.written(1)
        [item] = value.messages
        self.assertEqual(codec.stored_from_item(item, user_id=10), message)

    def test_delivery_for_a_device_of_another_user_is_not_pushed(self) -> None:
        """A delivery naming a device whose connection here belongs to another user pushes nothing."""
        node = Node()
        node.sign_in(device_id=1, user_id=10)
        node.sign_in(device_id=2, user_id=20)
        apply_event(node.table, node_event(deliveries=[(10, [1, 2], [make_message(10, 1)])]))
        self.assertEqual(len(node.pushed(1)), 1)
        self.assertEqual(node.pushed(2), [])

    def test_delivery_for_an_absent_device_is_ignored(self) -> None:
        """A delivery naming a device with no connection here is dropped silently."""
        node = Node()
        node.sign_in(device_id=1, user_id=10)
        apply_event(node.table, node_event(deliveries=[(10, [99], [make_message(10, 1)])]))
        self.assertEqual(node.pushed(1), [])

    def test_several_deliveries_in_one_event(self) -> None:
        """Each delivery of an event reaches its own user's devices."""
        node = Node()
        node.sign_in(device_id=1, user_id=10)
        node.sign_in(device_id=2, user_id=20)
        apply_event(
            node.table,
            node_event(deliveries=[(10, [1], [make_message(10, 5)]), (20, [2], [make_message(20, 8)])]),
        )
        self.assertEqual([seq for _, seq in node.pushed(1)], [5])
        self.assertEqual([seq for _, seq in node.pushed(2)], [8])

    def test_kick_closes_with_the_reason(self) -> None:
        """A kick writes Kicked with its reason to the connection it names, closes it, and leaves others open."""
        node = Node()
        one = node.sign_in(device_id=1, user_id=10)
        node.sign_in(device_id=2, user_id=10)
        apply_event(node.table, node_event(kicks=[(1, one.conn_id, "signed in on your tablet")]))
        [(code, kicked)] = node.written(1)
        self.assertEqual(code, codec.KICKED)
        self.assertEqual(kicked.reason, "signed in on your tablet")
        self.assertTrue(node.closed(1))
        self.assertFalse(node.closed(2))
        self.assertEqual(node.written(2), [])

    def test_kick_without_reason_gets_a_default(self) -> None:
        """A kick with an empty reason tells the client it signed in elsewhere."""
        node = Node()
        one = node.sign_in(device_id=1, user_id=10)
        apply_event(node.table, node_event(kicks=[(1, one.conn_id, "")]))
        [(_, kicked)] = node.written(1)
        self.assertEqual(kicked.reason, "signed in elsewhere")

    def test_kick_of_an_absent_device_is_ignored(self) -> None:
        """A kick naming a device with no connection here changes nothing."""
        node = Node()
        node.sign_in(device_id=1, user_id=10)
        apply_event(node.table, node_event(kicks=[(2, "c1/boot/99", "x")]))
        self.assertFalse(node.closed(1))

    def test_kick_of_another_connection_of_the_device_is_ignored(self) -> None:
        """A kick naming a connection id the device's connection does not have leaves it open."""
        node = Node()
        one = node.sign_in(device_id=1, user_id=10)
        apply_event(node.table, node_event(kicks=[(1, one.conn_id + "0", "x")]))
        self.assertFalse(node.closed(1))
        self.assertEqual(node.written(1), [])

    def test_kick_without_a_connection_id_names_the_device(self) -> None:
        """A kick from a logic node older than connection ids (no conn) closes the device's connection."""
        node = Node()
        node.sign_in(device_id=1, user_id=10)
        apply_event(node.table, node_event(kicks=[(1, "", "x")]))
        self.assertTrue(node.closed(1))

    def test_kick_of_an_old_connection_leaves_the_newer_one_open(self) -> None:
        """A late kick naming the device's old connection leaves its newer connection on this node open."""
        node = Node()
        old = node.sign_in(device_id=1, user_id=10)
        old_transport = old.transport
        assert isinstance(old_transport, StringTransport)
        new = node.sign_in(device_id=1, user_id=10)
        # the table replaced the old connection itself
        self.assertTrue(old_transport.disconnecting)
        apply_event(node.table, node_event(kicks=[(1, old.conn_id, "signed in elsewhere")]))
        self.assertFalse(node.closed(1))
        self.assertEqual(node.written(1), [])
        self.assertIs(node.table.get(1), new)

    def test_early_kick_is_applied_when_its_connection_registers(self) -> None:
        """A kick that arrives before its connection's sign-in finished kicks it as soon as it registers, and no other."""
        node = Node(FakeLogic())
        early = node.connect()
        other = node.connect()
        node.start_sign_in(early, device_id=1, user_id=10)
        node.start_sign_in(other, device_id=2, user_id=10)
        apply_event(node.table, node_event(kicks=[(1, early.conn_id, "signed in on your tablet")]))
        early_transport, other_transport = early.transport, other.transport
        assert isinstance(early_transport, StringTransport) and isinstance(other_transport, StringTransport)
        self.assertFalse(early_transport.disconnecting)
        for call in node.logic.sign_ins:
            call.deferred.callback(SignInResult(ok=True))
        node.clock.advance(0)
        [(ack, _), (code, kicked)] = written_to(early_transport)
        self.assertEqual((ack, code), (codec.SIGN_IN_ACK, codec.KICKED))
        self.assertEqual(kicked.reason, "signed in on your tablet")
        self.assertTrue(early_transport.disconnecting)
        self.assertEqual([code for code, _ in written_to(other_transport)], [codec.SIGN_IN_ACK])
        self.assertFalse(other_transport.disconnecting)
        # applied once: the device's next connection is not kicked
        node.logic.auto_sign_in = True
        node.sign_in(device_id=1, user_id=10)
        self.assertFalse(node.closed(1))

    def test_malformed_payload_is_logged_and_ignored(self) -> None:
        """Bytes that are no NodeEvent are logged and change nothing."""
        node = Node()
        node.sign_in(device_id=1, user_id=10)
        apply_event(node.table, b"\x0a\xff\xff\xff")
        self.assertEqual(len(self.flushLoggedErrors(DecodeError)), 1)
        self.assertEqual(node.written(1), [])
        self.assertFalse(node.closed(1))

    def test_malformed_item_drops_the_whole_event(self) -> None:
        """An event with one bad item pushes nothing and kicks nobody (all or nothing)."""
        node = Node()
        one = node.sign_in(device_id=1, user_id=10)
        node.sign_in(device_id=2, user_id=20)
        event = internal_pb2.NodeEvent()
        event.deliveries.add(user_id=10, device_ids=[1], items=[encode_item(make_message(10, 1))])
        event.deliveries.add(user_id=20, device_ids=[2], items=[b"\x12\x05ab"])  # truncated content
        event.kicks.add(device_id=1, conn=one.conn_id, reason="x")
        apply_event(node.table, event.SerializeToString())
        self.assertEqual(len(self.flushLoggedErrors(DecodeError)), 1)
        self.assertEqual(node.written(1), [])
        self.assertEqual(node.written(2), [])
        self.assertFalse(node.closed(1))

    def test_forwarded_items_are_written_as_they_came(self) -> None:
        """Items with their seqs and audiences are written byte for byte without being decoded: bytes
        no logic node would send (an unknown field 99) arrive unchanged."""
        node = Node()
        node.sign_in(device_id=1, user_id=10)
        odd = encode_item(make_message(10, 4)) + b"\x98\x06\x01"  # field 99 = 1
        event = internal_pb2.NodeEvent()
        event.deliveries.add(user_id=10, device_ids=[1], items=[odd], seqs=[4], audiences=[AUDIENCE_ALL])
        apply_event(node.table, event.SerializeToString())
        [(_, value)] = node.written(1)
        self.assertEqual([i.SerializeToString() for i in value.messages], [odd])

    def test_forwarded_event_rows_and_state_reach_only_connections_that_opted_in(self) -> None:
        """An event row goes only to an EVENTS connection; a changed copy reaches the others without its
        state fields, exactly as the items a standalone server pushes."""
        node = Node()
        plain = node.sign_in(device_id=1, user_id=10)
        rich = node.sign_in(device_id=2, user_id=10)
        rich.features = Feature.EVENTS
        edited = replace(make_message(10, 1), edited_at=77)
        read = replace(make_message(10, 2), kind=KIND_READ, ref_seq=1)
        self.assertEqual([audience(edited), audience(read)], [AUDIENCE_STATE, AUDIENCE_EVENTS])
        apply_event(node.table, node_event(deliveries=[(10, [1, 2], [edited, read])], forwarded=True))
        self.assertEqual(
            [i.SerializeToString() for _, v in node.written(1) for i in v.messages],
            [encode_item(replace(edited, edited_at=0))],
        )
        self.assertEqual(
            [i.SerializeToString() for _, v in node.written(2) for i in v.messages],
            [encode_item(edited), encode_item(read)],
        )
        self.assertFalse(plain.features & Feature.EVENTS)

    def test_empty_event_does_nothing(self) -> None:
        """An empty NodeEvent is valid and changes nothing."""
        node = Node()
        node.sign_in(device_id=1, user_id=10)
        apply_event(node.table, b"")
        self.assertEqual(node.written(1), [])
        self.assertEqual(self.flushLoggedErrors(), [])


def parse_event(payload: bytes) -> internal_pb2.NodeEvent:
    event = internal_pb2.NodeEvent()
    event.ParseFromString(payload)
    return event


def deliveries_of(payload: bytes) -> dict[int, tuple[list[int], list[tuple[int, int]]]]:
    """``{user_id: (device_ids, [(message_id, seq)])}`` of a published NodeEvent."""
    out = {}
    for delivery in parse_event(payload).deliveries:
        items = []
        for raw in delivery.items:
            item = pb.MessageItem()
            item.ParseFromString(raw)
            items.append((item.message_id, item.sync_sequence))
        out[delivery.user_id] = (list(delivery.device_ids), items)
    return out


def ids(*messages: StoredMessage) -> list[tuple[int, int]]:
    return [(m.message_id, m.seq) for m in messages]


def conn(node: str, serial: int = 1) -> str:
    """A connection id of ``node``."""
    return connection_id(node, "boot", serial)


class RedisDeliveryTests(RedisTestMixin, TestCase):
    async def setup(self, *live: str) -> tuple[RedisPresence, RedisDelivery]:
        redis, keys = self.open_redis()
        presence = RedisPresence(redis, keys)
        for node in live:
            await presence.beat(node)
        return presence, RedisDelivery(presence)

    async def test_one_event_per_node(self) -> None:
        """deliver publishes one NodeEvent per live node with its devices and the users' items."""
        presence, delivery = await self.setup("c1", "c2")
        await presence.online(device_id=10, user_id=1, conn=conn("c1", 1), epoch=0)
        await presence.online(device_id=11, user_id=1, conn=conn("c1", 2), epoch=0)
        await presence.online(device_id=12, user_id=1, conn=conn("c2", 1), epoch=0)
        await presence.online(device_id=20, user_id=2, conn=conn("c2", 2), epoch=0)
        channels = presence.keys.channel("c1"), presence.keys.channel("c2")
        recorder = await self.open_recorder(*channels)
        a1, b1, a2 = make_message(1, 1), make_message(2, 1), make_message(1, 2)
        delivery.deliver(copies_of([a1, b1, a2]))
        await wait_until(lambda: all(recorder.on(c) for c in channels), "an event on each node")
        [c1] = recorder.on(channels[0])
        [c2] = recorder.on(channels[1])
        self.assertEqual(deliveries_of(c1), {1: ([10, 11], ids(a1, a2))})
        self.assertEqual(deliveries_of(c2), {1: ([12], ids(a1, a2)), 2: ([20], ids(b1))})
        self.assertEqual(list(parse_event(c1).kicks), [])
        # each item with its seq and audience: the connect node forwards the bytes
        [d] = parse_event(c1).deliveries
        self.assertEqual((list(d.seqs), list(d.audiences)), ([1, 2], [AUDIENCE_ALL, AUDIENCE_ALL]))

    async def test_node_without_liveness_gets_nothing(self) -> None:
        """Devices on a node whose liveness key is missing receive nothing."""
        presence, delivery = await self.setup("live")
        await presence.online(device_id=10, user_id=1, conn=conn("live"), epoch=0)
        await presence.online(device_id=11, user_id=1, conn=conn("dead", 1), epoch=0)
        await presence.online(device_id=20, user_id=2, conn=conn("dead", 2), epoch=0)
        live, dead = presence.keys.channel("live"), presence.keys.channel("dead")
        recorder = await self.open_recorder(live, dead)
        delivery.deliver(copies_of([make_message(1, 1), make_message(2, 1)]))
        # a second batch for the live node only: once it arrives, everything the
        # first batch published has arrived too (one connection, publish order)
        marker = make_message(1, 2)
        delivery.deliver(copies_of([marker]))
        await wait_until(lambda: len(recorder.on(live)) == 2, "both events on the live node")
        self.assertEqual(recorder.on(dead), [])
        self.assertEqual(deliveries_of(recorder.on(live)[0]), {1: ([10], ids(make_message(1, 1)))})

    async def test_nobody_online_publishes_nothing(self) -> None:
        """Copies for users with no device online are not published anywhere."""
        presence, delivery = await self.setup("c1")
        await presence.online(device_id=10, user_id=1, conn=conn("c1"), epoch=0)
        recorder = await self.open_recorder(presence.keys.channel("c1"))
        delivery.deliver(copies_of([make_message(5, 1)]))
        delivery.deliver(copies_of([make_message(1, 1)]))
        await wait_until(lambda: recorder.messages, "the event for user 1")
        [(_, payload)] = recorder.messages
        self.assertEqual(list(deliveries_of(payload)), [1])

    async def received_seqs(self, recorder: Any, channel: str, count: int) -> list[list[int]]:
        """The seqs of user 1's items in each event on ``channel``, once ``count`` arrived."""

        def seqs() -> list[list[int]]:
            return [[seq for _, seq in deliveries_of(p)[1][1]] for p in recorder.on(channel)]

        await wait_until(lambda: sum(map(len, seqs())) == count, f"{count} items")
        return seqs()

    async def test_batches_are_published_in_commit_order(self) -> None:
        """Batches handed to deliver one after the other arrive in that order; those
        queued while a round is out go together in the next one."""
        presence, delivery = await self.setup("c1")
        await presence.online(device_id=10, user_id=1, conn=conn("c1"), epoch=0)
        channel = presence.keys.channel("c1")
        recorder = await self.open_recorder(channel)
        for seq in range(1, 21):
            delivery.deliver(copies_of([make_message(1, seq)]))
        # the first batch went out alone, at once; the other 19 waited for it
        self.assertEqual(await self.received_seqs(recorder, channel, 20), [[1], list(range(2, 21))])

    async def test_a_round_is_bounded_by_copies(self) -> None:
        """A publish round takes queued batches up to max_copies copies (a batch of
        more goes alone), so one NodeEvent stays bounded."""
        redis, keys = self.open_redis()
        presence = RedisPresence(redis, keys)
        await presence.beat("c1")
        delivery = RedisDelivery(presence, max_copies=3)
        await presence.online(device_id=10, user_id=1, conn=conn("c1"), epoch=0)
        channel = presence.keys.channel("c1")
        recorder = await self.open_recorder(channel)
        for seqs in [[1], [2], [3, 4], [5], [6, 7, 8, 9], [10]]:
            delivery.deliver(copies_of([make_message(1, seq) for seq in seqs]))
        self.assertEqual(
            await self.received_seqs(recorder, channel, 10), [[1], [2, 3, 4], [5], [6, 7, 8, 9], [10]]
        )

    async def test_kick_is_published_to_the_old_node(self) -> None:
        """kick publishes, on the node it names, a Kick for the device naming the connection."""
        presence, delivery = await self.setup()
        channel = presence.keys.channel("old")
        recorder = await self.open_recorder(channel)
        await delivery.kick(node="old", device_id=10, conn=conn("old", 3), reason="signed in elsewhere", new_node="new")
        await wait_until(lambda: recorder.messages, "the kick")
        [kick] = parse_event(recorder.on(channel)[0]).kicks
        self.assertEqual(
            (kick.device_id, kick.conn, kick.reason, kick.new_node), (10, conn("old", 3), "signed in elsewhere", "new")
        )

    async def test_end_session_kicks_the_connection_presence_names(self) -> None:
        """end_session publishes, on the node of the device's presence entry, a kick naming that entry's connection."""
        presence, delivery = await self.setup()
        await presence.online(device_id=10, user_id=1, conn=conn("c1", 4), epoch=0)
        await presence.online(device_id=10, user_id=1, conn=conn("c2", 7), epoch=0)
        c1, c2 = presence.keys.channel("c1"), presence.keys.channel("c2")
        recorder = await self.open_recorder(c1, c2)
        delivery.end_session(device_id=10, user_id=1, reason="password changed")
        await wait_until(lambda: recorder.on(c2), "the kick")
        [payload] = recorder.on(c2)
        [kick] = parse_event(payload).kicks
        self.assertEqual((kick.device_id, kick.conn, kick.reason), (10, conn("c2", 7), "password changed"))
        self.assertEqual(recorder.on(c1), [])

    async def test_redis_down_is_logged_not_raised(self) -> None:
        """With Redis unreachable, deliver returns at once and the failure is only logged."""
        events: list[LogEvent] = []

        @provider(ILogObserver)
        def observe(event: LogEvent) -> None:
            events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        redis = Redis(RedisURL("127.0.0.1", free_port()), reactor, timeout=0.2)
        self.addCleanup(redis.close)
        _, keys = self.open_redis()
        delivery = RedisDelivery(RedisPresence(redis, keys))
        # neither call raises, though Redis is unreachable
        delivery.deliver(copies_of([make_message(1, 1)]))
        delivery.deliver(copies_of([make_message(1, 2)]))

        def warned() -> list[str]:
            return [t for t in map(formatEvent, events) if t.startswith("could not publish")]

        await wait_until(lambda: len(warned()) == 2, "both batches to be given up")
        self.assertIn("catch up by sync", warned()[0])


class NodeSubscriberTests(RedisTestMixin, TestCase):
    async def start(self, node_id: str = "c1") -> tuple[Node, RedisPresence, NodeSubscriber]:
        redis, keys = self.open_redis()
        presence = RedisPresence(redis, keys)
        node = Node(FakeLogic(auto_sign_in=True, auto_sync=True))
        subscriber = NodeSubscriber(self.redis_url(), keys, node_id, node.table, presence, reactor)
        subscriber.start()
        self.addCleanup(subscriber.stop)
        await wait_until(lambda: subscriber.subscribed, "the subscription")
        return node, presence, subscriber

    async def test_signs_in_with_the_password_and_retries_a_refusal(self) -> None:
        """The subscription authenticates with the URL's password; a refused AUTH is retried, not given up."""

        def script(n: int, command: list[bytes]) -> bytes | None:
            if command[0] == b"AUTH":
                return b"-WRONGPASS invalid password\r\n" if n == 0 else b"+OK\r\n"
            channel = command[1]
            return b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n" % (len(channel), channel)

        server, port = await ScriptedRedis.listen(self, script)
        redis, keys = self.open_redis()
        node = Node(FakeLogic())
        url = RedisURL("127.0.0.1", port, password="s3cret")
        subscriber = NodeSubscriber(url, keys, "c1", node.table, RedisPresence(redis, keys), reactor)
        subscriber.start()
        self.addCleanup(subscriber.stop)
        await wait_until(lambda: subscriber.subscribed, "the subscription")
        self.assertEqual(server.names(0), [b"AUTH"])
        second = [c for n, c in server.commands if n == 1]
        self.assertEqual(second, [[b"AUTH", b"s3cret"], [b"SUBSCRIBE", keys.channel("c1").encode()]])

    async def test_published_deliveries_reach_connections(self) -> None:
        """An event RedisDelivery publishes on the node's channel is pushed to its connection."""
        node, presence, _ = await self.start()
        proto = node.sign_in(device_id=10, user_id=1)
        await presence.online(device_id=10, user_id=1, conn=proto.conn_id, epoch=proto.epoch)
        await presence.beat("c1")
        message = make_message(1, 1)
        RedisDelivery(presence).deliver(copies_of([message]))
        await wait_until(lambda: node.written(10), "the push")
        self.assertEqual(node.pushed(10), ids(message))

    async def test_resubscribing_closes_a_connection_that_signed_in_elsewhere_meanwhile(self) -> None:
        """A device that signed in on another node while Redis had lost presence finds its old connection
        here kicked when this node writes its presence back (one connection per device)."""
        node, presence, subscriber = await self.start()
        proto = node.sign_in(device_id=10, user_id=1)
        stays = node.sign_in(device_id=11, user_id=1)
        # Redis lost its data, then the device signed in on node c2 (nobody could kick this one)
        await presence.online(device_id=10, user_id=1, conn=connection_id("c2", "boot", 1), epoch=0)
        factory: Any = subscriber._factory
        [connection] = factory.pool
        connection.transport.abortConnection()
        await wait_until(lambda: node.closed(10), "the kick of the connection that lost")
        kicks = [value.reason for code, value in node.written(10) if code == codec.KICKED]
        self.assertEqual(kicks, ["signed in elsewhere"])
        self.assertFalse(node.closed(11))
        self.assertEqual(await presence.entry(device_id=10, user_id=1), Entry(connection_id("c2", "boot", 1), 0))
        self.assertEqual((await presence.entry(device_id=11, user_id=1)).conn, stays.conn_id)  # type: ignore[union-attr]
        del proto

    async def test_resubscribing_restores_presence_and_catches_up(self) -> None:
        """After its subscription drops, the node writes back lost presence and syncs every connection."""
        node, presence, subscriber = await self.start()
        proto = node.sign_in(device_id=10, user_id=1)
        proto.acked_seq = 4
        proto.epoch = 3
        node.logic.store(1, 6)
        # Redis "lost its data": no presence entry, no liveness key
        self.assertIsNone(await presence.entry(device_id=10, user_id=1))
        factory: Any = subscriber._factory
        [connection] = factory.pool
        connection.transport.abortConnection()
        await wait_until(lambda: node.logic.sync_pages, "a catch-up sync")
        self.assertEqual(node.logic.sync_pages[0].args["after_seq"], 4)
        await wait_until(lambda: subscriber.subscribed, "the new subscription")
        self.assertEqual(await presence.entry(device_id=10, user_id=1), Entry(proto.conn_id, 3))
        self.assertEqual(await presence.alive(["c1"]), {"c1"})
        synced = [
            (i.message_id, i.sync_sequence)
            for code, value in node.written(10)
            if code == codec.MESSAGE and value.type == codec.MESSAGE_SYNC
            for i in value.messages
        ]
        self.assertEqual([seq for _, seq in synced], [5, 6])
