"""The logic node's PB side: ConnectNodePerspective on real services (SQLite) and a real
Redis presence, the shared-secret checker, and a real PB login over loopback TCP."""

from typing import Any

from twisted.cred import credentials
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer, provider  # type: ignore[import-untyped]

from goim.distributed.bus import RedisDelivery
from goim.distributed.pb_server import (
    MAX_ACK_BATCH,
    MAX_SEND_BATCH,
    BadArgument,
    ConnectNodePerspective,
    LogicRealm,
    NotSignedInHere,
    SharedSecretChecker,
    pb_factory,
)
from goim.connect.logic_client import PBLogicClient
from goim.distributed.presence import Entry, RedisPresence
from goim.pb import goim_pb2 as gpb
from goim.pb import internal_pb2
from goim.protocols.batch import BatchedAck, decode_send_results, encode_ack_batch
from goim.types import (
    SEND_INTERNAL_ERROR,
    SEND_INVALID,
    SEND_NO_SUCH_USER,
    SEND_NOT_FRIEND,
    SEND_OK,
    SendRequest,
    connection_id,
)
from tests.support.db import SQLiteBackend
from tests.support.redis import ChannelRecorder, RedisTestMixin, wait_until
from tests.support.services import Services

SECRET = b"a-shared-secret-of-32-characters"


def send_bytes(receiver_id: int, send_sequence: int, content: str = "hi", receiver_type: int = 1) -> bytes:
    return gpb.MessageSend(
        receiver_type=receiver_type,
        receiver_id=receiver_id,
        type=1,
        content=content,
        send_sequence=send_sequence,
        send_time=1_700_000_000_000,
    ).SerializeToString()


def capture_logs(testcase: SynchronousTestCase) -> list[LogEvent]:
    """Every log event emitted until the test ends."""
    events: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        events.append(event)

    globalLogPublisher.addObserver(observe)
    testcase.addCleanup(globalLogPublisher.removeObserver, observe)
    return events


async def outcome(d: "Deferred[Any]") -> Any:
    """What ``d`` fires with: its result, or its Failure (instead of raising)."""
    box: list[Any] = []
    await d.addCallbacks(box.append, box.append)
    return box[0]


class InProcessReference:
    """A RemoteReference stand-in that calls a perspective in this process."""

    class broker:
        disconnected = False

    def __init__(self, perspective: pb.Avatar) -> None:
        self._perspective = perspective

    def callRemote(self, method: str, *args: Any) -> "Deferred[Any]":
        return maybeDeferred(getattr(self._perspective, f"perspective_{method}"), *args)


class InProcessLink:
    """A connected LogicLink stand-in for PBLogicClient."""

    address = "in-process"

    def __init__(self, perspective: pb.Avatar) -> None:
        self.perspective = InProcessReference(perspective)
        self._waiters: list[Deferred[None]] = []

    def drop(self) -> None:
        raise AssertionError("an in-process call never times out")


def conn(node: str = "c1", serial: int = 1, boot: str = "boot") -> str:
    """A connection id of ``node``."""
    return connection_id(node, boot, serial)


class Fixture:
    """Services on a fresh SQLite database, presence under a fresh Redis prefix, two users."""

    services: Services
    presence: RedisPresence
    delivery: RedisDelivery
    alice: tuple[int, int, str]
    bob: tuple[int, int, str]


class PerspectiveTests(RedisTestMixin, SQLiteBackend, TestCase):
    async def fixture(self) -> Fixture:
        f = Fixture()
        f.services = Services(await self.make_database(), reactor)
        redis, keys = self.open_redis()
        f.presence = RedisPresence(redis, keys)
        f.delivery = RedisDelivery(f.presence)
        f.alice = await f.services.new_user("alice")
        f.bob = await f.services.new_user("bob")
        return f

    def node(self, f: Fixture, name: str = "c1") -> ConnectNodePerspective:
        return ConnectNodePerspective(name, f.services.logic, f.presence, f.delivery)

    async def signed_in(
        self, f: Fixture, who: tuple[int, int, str], node: str = "c1", *, serial: int = 1
    ) -> ConnectNodePerspective:
        """A perspective of ``node`` on which ``who`` signed in with connection ``conn(node, serial)``."""
        user_id, device_id, token = who
        p = self.node(f, node)
        ok, message, epoch = await p.perspective_sign_in(device_id, user_id, token, conn(node, serial))
        self.assertEqual((ok, message), (True, ""))
        device = await f.services.account_store.get_device(device_id)
        assert device is not None
        self.assertEqual(epoch, device.send_epoch)
        return p

    async def present(self, f: Fixture, who: tuple[int, int, str]) -> str | None:
        """The connection presence names for ``who``'s device, if any."""
        user_id, device_id, _ = who
        entry = await f.presence.entry(device_id=device_id, user_id=user_id)
        return None if entry is None else entry.conn

    async def no_kick_on(self, f: Fixture, recorder: ChannelRecorder, node: str) -> None:
        """Check that nothing was published on ``node``'s channel so far."""
        # a publish on the channel now: had a kick been published, it would come first
        await f.delivery.kick(node=node, device_id=1, conn=conn(node, 999), reason="marker", new_node="x")
        await wait_until(lambda: recorder.messages, "the marker")
        event = internal_pb2.NodeEvent()
        event.ParseFromString(recorder.messages[0][1])
        self.assertEqual(event.kicks[0].reason, "marker")

    # --- sign-in -----------------------------------------------------------------------

    async def test_sign_in_with_a_wrong_token(self) -> None:
        """A wrong token gets (False, message, 0) and writes no presence."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        ok, message, epoch = await self.node(f).perspective_sign_in(device_id, user_id, "not-the-token", conn())
        self.assertFalse(ok)
        self.assertTrue(message)
        self.assertEqual(epoch, 0)
        self.assertIsNone(await f.presence.entry(device_id=device_id, user_id=user_id))

    async def test_sign_in_as_another_user(self) -> None:
        """A device's valid token with another user's id is refused and writes no presence."""
        f = await self.fixture()
        _, device_id, token = f.alice
        bob_id = f.bob[0]
        ok, _, _ = await self.node(f).perspective_sign_in(device_id, bob_id, token, conn())
        self.assertFalse(ok)
        self.assertIsNone(await f.presence.entry(device_id=device_id, user_id=bob_id))

    async def test_sign_in_writes_presence(self) -> None:
        """A successful sign-in makes presence name this connection, with the epoch sign-in returned."""
        f = await self.fixture()
        user_id, device_id, token = f.alice
        ok, _, epoch = await self.node(f).perspective_sign_in(device_id, user_id, token, conn("c1", 3))
        self.assertTrue(ok)
        self.assertEqual(await f.presence.entry(device_id=device_id, user_id=user_id), Entry(conn("c1", 3), epoch))

    async def test_sign_in_elsewhere_kicks_the_old_connection(self) -> None:
        """Signing in through c2 a device that was on c1 publishes, on c1's channel, a kick naming c1's connection."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        recorder = await self.open_recorder(f.presence.keys.channel("c1"))
        await self.signed_in(f, f.alice, "c1", serial=7)
        await self.signed_in(f, f.alice, "c2", serial=1)
        self.assertEqual(await self.present(f, f.alice), conn("c2"))
        await wait_until(lambda: recorder.messages, "the kick on c1")
        event = internal_pb2.NodeEvent()
        event.ParseFromString(recorder.messages[0][1])
        [kick] = event.kicks
        self.assertEqual((kick.device_id, kick.conn, kick.new_node), (device_id, conn("c1", 7), "c2"))

    async def test_sign_in_finished_after_its_deadline_changes_nothing(self) -> None:
        """A sign-in this logic node finishes after the connect node's deadline (the node was paused) is refused:
        it neither names its connection in presence nor kicks the device's newer connection elsewhere."""
        from twisted.internet.task import Clock

        f = await self.fixture()
        user_id, device_id, token = f.alice
        recorder = await self.open_recorder(f.presence.keys.channel("c2"))
        await self.signed_in(f, f.alice, "c2", serial=4)
        clock = Clock()
        clock.advance(1000)
        late = ConnectNodePerspective("c1", f.services.logic, f.presence, f.delivery, clock)
        ok, message, _ = await late.perspective_sign_in(device_id, user_id, token, conn("c1", 9), 999_000)
        self.assertEqual((ok, message), (False, "sign-in took too long, try again"))
        self.assertEqual(await self.present(f, f.alice), conn("c2", 4))
        # in time, the same sign-in takes over and kicks the connection on c2
        ok, _, _ = await late.perspective_sign_in(device_id, user_id, token, conn("c1", 10), 1_001_000)
        self.assertTrue(ok)
        self.assertEqual(await self.present(f, f.alice), conn("c1", 10))
        await wait_until(lambda: recorder.messages, "the kick on c2")
        event = internal_pb2.NodeEvent()
        event.ParseFromString(recorder.messages[0][1])
        self.assertEqual([k.conn for k in event.kicks], [conn("c2", 4)])

    async def test_sign_in_again_on_the_same_node_kicks_nobody(self) -> None:
        """A newer connection signing in through the same node publishes no kick (the node's table handles it)."""
        f = await self.fixture()
        recorder = await self.open_recorder(f.presence.keys.channel("c1"))
        p = await self.signed_in(f, f.alice)
        user_id, device_id, token = f.alice
        ok, message, _ = await p.perspective_sign_in(device_id, user_id, token, conn("c1", 2))
        self.assertEqual((ok, message), (True, ""))
        # an earlier boot of the node is the same node too
        ok, message, _ = await p.perspective_sign_in(device_id, user_id, token, conn("c1", 1, "reboot"))
        self.assertEqual((ok, message), (True, ""))
        await self.no_kick_on(f, recorder, "c1")

    async def test_superseded_sign_in_is_refused(self) -> None:
        """A sign-in finishing after a newer connection's on the same node boot gets (False, message, 0) and is not trusted."""
        f = await self.fixture()
        recorder = await self.open_recorder(f.presence.keys.channel("c1"))
        user_id, device_id, token = f.alice
        p = await self.signed_in(f, f.alice, serial=5)
        result = await p.perspective_sign_in(device_id, user_id, token, conn("c1", 4))
        self.assertEqual(result, (False, "a newer connection of this device signed in", 0))
        self.assertEqual(await self.present(f, f.alice), conn("c1", 5))
        with self.assertRaises(NotSignedInHere):
            await p.perspective_ack(device_id, user_id, 1, conn("c1", 4))
        self.assertEqual(
            await p.perspective_send([(conn("c1", 4), device_id, user_id, send_bytes(f.bob[0], 1))]), [(1, 0, 0)]
        )
        await p.perspective_ack(device_id, user_id, 1, conn("c1", 5))
        await self.no_kick_on(f, recorder, "c1")

    async def test_sign_in_bad_arguments(self) -> None:
        """Ids that are not non-negative int64s, tokens that are not short strings and malformed conns are refused."""
        f = await self.fixture()
        user_id, device_id, token = f.alice
        c = conn()
        p = self.node(f)
        for args in [
            (str(device_id), user_id, token, c),
            (device_id, str(user_id), token, c),
            (True, user_id, token, c),
            (device_id, False, token, c),
            (-1, user_id, token, c),
            (device_id, -5, token, c),
            (2**63, user_id, token, c),
            (device_id, 2**64, token, c),
            (float(device_id), user_id, token, c),
            (None, user_id, token, c),
            (device_id, user_id, token.encode(), c),
            (device_id, user_id, None, c),
            (device_id, user_id, "x" * 257, c),
            (device_id, user_id, token, c.encode()),
            (device_id, user_id, token, None),
            (device_id, user_id, token, 1),
            (device_id, user_id, token, "c1"),
            (device_id, user_id, token, "c1/boot"),
            (device_id, user_id, token, "c1/boot/1/2"),
            (device_id, user_id, token, "c1/" + "b" * 200 + "/1"),
        ]:
            with self.assertRaises(BadArgument, msg=repr(args)):
                await p.perspective_sign_in(*args)
        self.assertIsNone(await f.presence.entry(device_id=device_id, user_id=user_id))

    async def test_sign_in_for_a_connection_of_another_node_is_refused(self) -> None:
        """Node c1 may not sign in a connection whose id names node c2 (NotSignedInHere, no presence)."""
        f = await self.fixture()
        user_id, device_id, token = f.alice
        with self.assertRaises(NotSignedInHere):
            await self.node(f, "c1").perspective_sign_in(device_id, user_id, token, conn("c2"))
        # nor one of a node whose id starts with c1's
        with self.assertRaises(NotSignedInHere):
            await self.node(f, "c1").perspective_sign_in(device_id, user_id, token, conn("c10"))
        self.assertIsNone(await f.presence.entry(device_id=device_id, user_id=user_id))

    # --- who may speak for a connection --------------------------------------------------------

    async def test_device_not_signed_in_here_is_refused(self) -> None:
        """ack and sync_page for a device that never signed in anywhere raise NotSignedInHere; its sends get code 1."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        bob_id = f.bob[0]
        p = self.node(f)
        self.assertEqual(await p.perspective_send([(conn(), device_id, user_id, send_bytes(bob_id, 1))]), [(1, 0, 0)])
        with self.assertRaises(NotSignedInHere):
            await p.perspective_ack(device_id, user_id, 1, conn())
        with self.assertRaises(NotSignedInHere):
            await p.perspective_sync_page(device_id, user_id, 0, 10, conn())

    async def test_device_signed_in_through_another_node_is_refused(self) -> None:
        """Node c1 may not speak, through a connection of its own, for a device whose presence names c2's."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        await self.signed_in(f, f.alice, "c2")
        p = self.node(f, "c1")
        mine = conn("c1")
        self.assertEqual(await p.perspective_send([(mine, device_id, user_id, send_bytes(f.bob[0], 1))]), [(1, 0, 0)])
        with self.assertRaises(NotSignedInHere):
            await p.perspective_sync_page(device_id, user_id, 0, 10, mine)
        with self.assertRaises(NotSignedInHere):
            await p.perspective_ack(device_id, user_id, 1, mine)

    async def test_connection_of_another_node_is_refused(self) -> None:
        """Node c1 may not use a connection id of c2, even the one presence names: its send gets code 1, the rest NotSignedInHere."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        bob_id = f.bob[0]
        await f.services.social.add_friend(user_id, bob_id, "")
        await self.signed_in(f, f.alice, "c2")
        theirs = conn("c2")
        p = self.node(f, "c1")
        self.assertEqual(await p.perspective_send([(theirs, device_id, user_id, send_bytes(bob_id, 1))]), [(1, 0, 0)])
        with self.assertRaises(NotSignedInHere):
            await p.perspective_sync_page(device_id, user_id, 0, 10, theirs)
        with self.assertRaises(NotSignedInHere):
            await p.perspective_ack(device_id, user_id, 1, theirs)
        with self.assertRaises(NotSignedInHere):
            await p.perspective_offline(device_id, user_id, theirs)
        # nothing was stored, and c2's sign-in stands
        self.assertEqual((await f.services.messages.sync_page(bob_id, 0, 10)).messages, [])
        self.assertEqual(await self.present(f, f.alice), theirs)

    async def test_connection_of_another_node_fails_only_its_own_sends(self) -> None:
        """In a batch, a send naming another node's connection gets code 1 and the others are stored."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        bob_id = f.bob[0]
        await f.services.social.add_friend(user_id, bob_id, "")
        p = await self.signed_in(f, f.alice, "c1")
        results = await p.perspective_send(
            [
                (conn("c1"), device_id, user_id, send_bytes(bob_id, 1, "mine")),
                (conn("c2"), device_id, user_id, send_bytes(bob_id, 2, "forged")),
            ]
        )
        self.assertEqual(results[0][0], SEND_OK)
        self.assertEqual(results[1], (1, 0, 0))
        page = await f.services.messages.sync_page(bob_id, 0, 10)
        self.assertEqual([m.content for m in page.messages], ["mine"])

    async def test_device_with_another_user_id_is_refused(self) -> None:
        """A node that signed in alice's device may not use it with bob's user id."""
        f = await self.fixture()
        _, device_id, _ = f.alice
        p = await self.signed_in(f, f.alice)
        with self.assertRaises(NotSignedInHere):
            await p.perspective_sync_page(device_id, f.bob[0], 0, 10, conn())

    async def test_another_connection_of_this_node_is_refused(self) -> None:
        """Trust is per connection: another connection id of the same node may not speak for the signed-in device."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        p = await self.signed_in(f, f.alice, serial=1)
        for other in (conn("c1", 2), conn("c1", 1, "anotherboot")):
            with self.assertRaises(NotSignedInHere):
                await p.perspective_sync_page(device_id, user_id, 0, 10, other)
            with self.assertRaises(NotSignedInHere):
                await self.node(f).perspective_ack(device_id, user_id, 1, other)

    async def test_presence_naming_this_connection_is_trusted(self) -> None:
        """A connection presence names is served by a fresh perspective (another logic node)."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        await self.signed_in(f, f.alice, "c1")
        fresh = self.node(f, "c1")
        page = gpb.Message()
        page.ParseFromString(await fresh.perspective_sync_page(device_id, user_id, 0, 10, conn()))
        self.assertEqual(list(page.messages), [])

    async def test_presence_epoch_is_the_dedupe_epoch(self) -> None:
        """A fresh perspective dedupes a connection's sends with the epoch presence holds for it."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        bob_id = f.bob[0]
        await f.services.social.add_friend(user_id, bob_id, "")
        p = await self.signed_in(f, f.alice, "c1", serial=1)
        [first] = await p.perspective_send([(conn("c1", 1), device_id, user_id, send_bytes(bob_id, 1, "one"))])
        # the same send_sequence through another logic node: same epoch, deduped
        [again] = await self.node(f).perspective_send([(conn("c1", 1), device_id, user_id, send_bytes(bob_id, 1, "one"))])
        self.assertEqual(again, first)
        # a connection signed in (elsewhere) at a later epoch: a new message
        entry = await f.presence.entry(device_id=device_id, user_id=user_id)
        assert entry is not None
        await f.presence.online(device_id=device_id, user_id=user_id, conn=conn("c1", 2), epoch=entry.epoch + 1)
        [later] = await self.node(f).perspective_send([(conn("c1", 2), device_id, user_id, send_bytes(bob_id, 1, "two"))])
        self.assertEqual(later[0], SEND_OK)
        self.assertNotEqual(later[1], first[1])
        page = await f.services.messages.sync_page(bob_id, 0, 10)
        self.assertEqual([m.content for m in page.messages], ["one", "two"])

    async def test_new_connections_of_a_batch_ask_presence_once_each_and_together(self) -> None:
        """After a failover every connection is new to a logic node: a batch asks presence once per
        connection, for all of them at once, and its sends are still stored in batch order."""
        f = await self.fixture()
        (alice, alice_device, _), (bob, bob_device, _) = f.alice, f.bob
        await f.services.social.add_friend(alice, bob, "")
        await self.signed_in(f, f.alice, serial=1)
        await self.signed_in(f, f.bob, serial=2)
        asked: list[int] = []
        answers: list[Deferred[None]] = []
        entry = f.presence.entry

        async def held_entry(*, device_id: int, user_id: int) -> Any:
            asked.append(device_id)
            answers.append(Deferred())
            await answers[-1]
            return await entry(device_id=device_id, user_id=user_id)

        f.presence.entry = held_entry  # type: ignore[method-assign]
        fresh = self.node(f)  # another logic node: knows neither connection
        batch = [(conn(serial=1), alice_device, alice, send_bytes(bob, s, f"a{s}")) for s in (1, 2, 3)]
        batch[1:1] = [(conn(serial=2), bob_device, bob, send_bytes(alice, 1, "b1"))]
        stored = fresh.perspective_send(batch)
        self.assertEqual(sorted(asked), sorted([alice_device, bob_device]), "both asked before any answer")
        for answer in answers:
            answer.callback(None)
        self.assertEqual([r[0] for r in await stored], [SEND_OK] * 4)
        page = await f.services.messages.sync_page(bob, 0, 10)
        self.assertEqual([m.content for m in page.messages if m.sender_id == alice], ["a1", "a2", "a3"])
        self.assertEqual(len(asked), 2, "then trusted")
        await fresh.perspective_send([(conn(serial=1), alice_device, alice, send_bytes(bob, 4, "a4"))])
        self.assertEqual(len(asked), 2)

    async def test_offline_revokes_trust(self) -> None:
        """After offline, the node may no longer speak for the connection and presence is gone."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        p = await self.signed_in(f, f.alice)
        await p.perspective_offline(device_id, user_id, conn())
        self.assertIsNone(await f.presence.entry(device_id=device_id, user_id=user_id))
        with self.assertRaises(NotSignedInHere):
            await p.perspective_ack(device_id, user_id, 1, conn())

    async def test_a_newer_sign_in_ends_the_trust_in_the_older_connection(self) -> None:
        """Once the device signed in again through this node, a send still queued on its old connection is
        refused (presence names the new one) instead of being stored ahead of the sends the client resends."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        bob_id = f.bob[0]
        await f.services.social.add_friend(user_id, bob_id, "")
        p = await self.signed_in(f, f.alice, "c1", serial=1)
        await p.perspective_sign_in(device_id, user_id, f.alice[2], conn("c1", 2))
        [late] = await p.perspective_send([(conn("c1", 1), device_id, user_id, send_bytes(bob_id, 13, "late"))])
        self.assertEqual(late[0], SEND_INTERNAL_ERROR)
        [served] = await p.perspective_send([(conn("c1", 2), device_id, user_id, send_bytes(bob_id, 12, "resent"))])
        self.assertEqual(served[0], SEND_OK)
        page = await f.services.messages.sync_page(bob_id, 0, 10)
        self.assertEqual([m.content for m in page.messages], ["resent"])

    async def test_late_offline_keeps_the_new_node(self) -> None:
        """offline from c1 after the device signed in through c2 leaves c2's presence."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        old = await self.signed_in(f, f.alice, "c1")
        await self.signed_in(f, f.alice, "c2")
        await old.perspective_offline(device_id, user_id, conn("c1"))
        self.assertEqual(await self.present(f, f.alice), conn("c2"))

    async def test_late_offline_of_an_old_connection_on_the_same_node(self) -> None:
        """offline of an old connection after a newer one of the device signed in on the same node keeps the newer one trusted and present."""
        f = await self.fixture()
        user_id, device_id, token = f.alice
        bob_id = f.bob[0]
        await f.services.social.add_friend(user_id, bob_id, "")
        p = await self.signed_in(f, f.alice, "c1", serial=1)
        ok, _, _ = await p.perspective_sign_in(device_id, user_id, token, conn("c1", 2))
        self.assertTrue(ok)
        await p.perspective_offline(device_id, user_id, conn("c1", 1))
        self.assertEqual(await self.present(f, f.alice), conn("c1", 2))
        await f.presence.beat("c1")
        self.assertEqual(await f.presence.locate([user_id]), {user_id: {device_id: "c1"}})
        # the new connection is served, by this perspective and by a fresh one; the old one no longer
        [result] = await p.perspective_send([(conn("c1", 2), device_id, user_id, send_bytes(bob_id, 1))])
        self.assertEqual(result[0], SEND_OK)
        await self.node(f).perspective_ack(device_id, user_id, 1, conn("c1", 2))
        with self.assertRaises(NotSignedInHere):
            await p.perspective_ack(device_id, user_id, 1, conn("c1", 1))

    # --- argument checking ---------------------------------------------------------------

    async def test_send_bad_batches(self) -> None:
        """A batch that is not a list of (conn, int, int, bytes) up to MAX_SEND_BATCH long is refused."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        p = await self.signed_in(f, f.alice)
        ok = send_bytes(f.bob[0], 1)
        c = conn()
        for batch in [
            None,
            "batch",
            (c, device_id, user_id, ok),
            ((c, device_id, user_id, ok),),
            {device_id: ok},
            [(c, device_id, user_id, ok)] * (MAX_SEND_BATCH + 1),
            [(c, device_id, user_id)],
            [(device_id, user_id, ok)],
            [(c, device_id, user_id, ok, ok)],
            [(c, device_id, user_id, ok.decode("latin-1"))],
            [[c, device_id, user_id, None]],
            [(c, str(device_id), user_id, ok)],
            [(c, device_id, True, ok)],
            [(c, -device_id, user_id, ok)],
            [(c, device_id, 2**63, ok)],
            [(c.encode(), device_id, user_id, ok)],
            [(None, device_id, user_id, ok)],
            [("c1", device_id, user_id, ok)],
            [("c1/boot/1/1", device_id, user_id, ok)],
            [(c, device_id, user_id, b"\x0a\x05ab")],  # truncated MessageSend
            [(c, device_id, user_id, b"\xff\xff\xff")],
        ]:
            with self.assertRaises(BadArgument, msg=repr(batch)[:80]):
                await p.perspective_send(batch)

    async def test_a_bad_send_refuses_the_whole_batch(self) -> None:
        """A batch with one malformed send stores none of its sends."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        bob_id = f.bob[0]
        await f.services.social.add_friend(user_id, bob_id, "")
        p = await self.signed_in(f, f.alice)
        with self.assertRaises(BadArgument):
            await p.perspective_send(
                [(conn(), device_id, user_id, send_bytes(bob_id, 1)), (conn(), device_id, user_id, b"\xff")]
            )
        page = await f.services.messages.sync_page(bob_id, 0, 10)
        self.assertEqual(page.messages, [])

    async def test_one_untrusted_device_does_not_fail_the_others(self) -> None:
        """Through PBLogicClient, a send of a connection not signed in here does not fail another connection's send of the same turn."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        bob_id, bob_device, _ = f.bob
        await f.services.social.add_friend(user_id, bob_id, "")
        p = await self.signed_in(f, f.alice)
        client = PBLogicClient(reactor, ["127.0.0.1:1"], node="c1", secret=SECRET)
        client.links = [InProcessLink(p)]  # type: ignore[list-item]
        mine = client.send(SendRequest(device_id, user_id, 1, bob_id, 1, "mine", 1, 1000), conn=conn("c1", 1))
        other = client.send(SendRequest(bob_device, bob_id, 1, user_id, 1, "other", 1, 1000), conn=conn("c1", 2))
        self.assertNotEqual((await other).code, SEND_OK)
        self.assertEqual((await mine).code, SEND_OK)
        page = await f.services.messages.sync_page(bob_id, 0, 10)
        self.assertEqual([m.content for m in page.messages], ["mine"])

    async def test_batch_exactly_max_size_is_accepted(self) -> None:
        """A batch of MAX_SEND_BATCH sends passes the size check (each answered)."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        p = await self.signed_in(f, f.alice)
        # to a stranger: refused one by one with code 2, cheaply
        batch = [(conn(), device_id, user_id, send_bytes(f.bob[0], s)) for s in range(1, MAX_SEND_BATCH + 1)]
        results = await p.perspective_send(batch)
        self.assertEqual(len(results), MAX_SEND_BATCH)
        self.assertEqual({r[0] for r in results}, {SEND_NOT_FRIEND})

    async def test_sync_page_ack_and_offline_bad_arguments(self) -> None:
        """Negative or non-int seqs, a limit below 1, bad ids and malformed conns are refused."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        p = await self.signed_in(f, f.alice)
        c = conn()
        for after_seq, limit in [(-1, 10), (0, 0), (0, -3), ("0", 10), (0, "10"), (0, 1.5), (True, 10), (0, 2**63)]:
            with self.assertRaises(BadArgument, msg=repr((after_seq, limit))):
                await p.perspective_sync_page(device_id, user_id, after_seq, limit, c)
        for seq in [-1, "1", None, 2**63, False]:
            with self.assertRaises(BadArgument, msg=repr(seq)):
                await p.perspective_ack(device_id, user_id, seq, c)
        for bad_conn in [None, c.encode(), 7, "", "c1", "c1/boot/1/1"]:
            with self.assertRaises(BadArgument, msg=repr(bad_conn)):
                await p.perspective_sync_page(device_id, user_id, 0, 10, bad_conn)
            with self.assertRaises(BadArgument, msg=repr(bad_conn)):
                await p.perspective_ack(device_id, user_id, 1, bad_conn)
            with self.assertRaises(BadArgument, msg=repr(bad_conn)):
                await p.perspective_offline(device_id, user_id, bad_conn)
        for args in [(0, user_id, c), (device_id, 0, c), ("1", user_id, c), (device_id, None, c)]:
            with self.assertRaises(BadArgument, msg=repr(args)):
                await p.perspective_offline(*args)
        # none of that touched the sign-in
        self.assertEqual(await self.present(f, f.alice), c)

    # --- the real work ------------------------------------------------------------------

    async def test_send_batch_answers_in_order_and_dedupes(self) -> None:
        """A batch gets one (code, message_id, seq) per send in order; a repeated send_sequence gets the first ACK."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        bob_id = f.bob[0]
        await f.services.social.add_friend(user_id, bob_id, "")
        p = await self.signed_in(f, f.alice)
        c = conn()
        results = await p.perspective_send(
            [
                (c, device_id, user_id, send_bytes(bob_id, 1, "one")),
                (c, device_id, user_id, send_bytes(bob_id, 2, "two")),
                (c, device_id, user_id, send_bytes(bob_id, 1, "one again")),
                (c, device_id, user_id, send_bytes(bob_id, 3, "")),  # empty content: invalid
                (c, device_id, user_id, send_bytes(f.bob[0] + 1000, 4)),  # no such friend
            ]
        )
        first, second, again, invalid, stranger = results
        self.assertEqual(first[0], SEND_OK)
        self.assertEqual(second[0], SEND_OK)
        self.assertGreater(first[1], 0)
        self.assertNotEqual(first[1], second[1])
        self.assertEqual(first[2] + 1, second[2])
        self.assertEqual(again, first)
        self.assertEqual(invalid[0], SEND_INVALID)
        self.assertEqual(stranger[0], SEND_NO_SUCH_USER)  # no user has that id
        # retried in a later batch: still the first attempt's ACK
        [retried] = await p.perspective_send([(c, device_id, user_id, send_bytes(bob_id, 2, "two"))])
        self.assertEqual(retried, second)
        page = await f.services.messages.sync_page(bob_id, 0, 10)
        self.assertEqual([m.content for m in page.messages], ["one", "two"])

    async def test_send_batch_bytes_answers_like_the_tuple_batch(self) -> None:
        """send_batch (a SendBatch's bytes) stores, dedupes and answers SendResults bytes in batch order; another node's connection fails only its own send."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        bob_id = f.bob[0]
        await f.services.social.add_friend(user_id, bob_id, "")
        p = await self.signed_in(f, f.alice)
        c = conn()

        def batch(*sends: tuple[str, int, bytes]) -> bytes:
            out = internal_pb2.SendBatch()
            for conn_id, device, message in sends:
                out.sends.add(conn=conn_id, device_id=device, user_id=user_id, message=message)
            return out.SerializeToString()

        answer = await p.perspective_send_batch(
            batch(
                (c, device_id, send_bytes(bob_id, 1, "one")),
                (conn("c2", 1), device_id, send_bytes(bob_id, 2, "theirs")),
                (c, device_id, send_bytes(bob_id, 3, "")),
                (c, device_id, send_bytes(bob_id, 1, "one again")),
            )
        )
        self.assertIsInstance(answer, bytes)
        one, theirs, invalid, again = decode_send_results(answer)
        self.assertEqual(one.code, SEND_OK)
        self.assertGreater(one.message_id, 0)
        self.assertEqual(theirs.code, 1)
        self.assertEqual(invalid.code, SEND_INVALID)
        self.assertEqual(again, one)
        page = await f.services.messages.sync_page(bob_id, 0, 10)
        self.assertEqual([m.content for m in page.messages], ["one"])
        # bad input refuses the whole batch and stores nothing
        ok = send_bytes(bob_id, 9)
        for bad in [
            None,
            [(c, device_id, user_id, ok)],
            b"\xff\xff",
            batch((c, device_id, ok)) * 1 + batch((c, device_id, b"\x0a\x05ab")),  # a truncated MessageSend
            batch(*[(c, device_id, ok)] * (MAX_SEND_BATCH + 1)),
            batch((c, -device_id, ok)),
            batch((c, 0, ok)),
            batch(("c1", device_id, ok)),
            batch(("c1/boot/1/1", device_id, ok)),
        ]:
            with self.assertRaises(BadArgument, msg=repr(bad)[:80]):
                await p.perspective_send_batch(bad)
        page = await f.services.messages.sync_page(bob_id, 0, 10)
        self.assertEqual([m.content for m in page.messages], ["one"])

    async def test_sync_page_returns_message_bytes(self) -> None:
        """sync_page answers a goim Message (type 1) with the items after after_seq, limited."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        bob_id = f.bob[0]
        await f.services.social.add_friend(user_id, bob_id, "")
        p = await self.signed_in(f, f.alice)
        c = conn()
        await p.perspective_send([(c, device_id, user_id, send_bytes(bob_id, s, f"m{s}")) for s in range(1, 4)])
        page = gpb.Message()
        page.ParseFromString(await p.perspective_sync_page(device_id, user_id, 1, 1, c))
        self.assertEqual(page.type, 1)
        self.assertEqual([(i.sync_sequence, i.content) for i in page.messages], [(2, "m2")])
        self.assertTrue(page.more)
        page.ParseFromString(await p.perspective_sync_page(device_id, user_id, 2, 10, c))
        self.assertEqual([i.content for i in page.messages], ["m3"])
        self.assertFalse(page.more)

    async def test_ack_is_stored(self) -> None:
        """ack raises the device's acknowledged seq."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        p = await self.signed_in(f, f.alice)
        await p.perspective_ack(device_id, user_id, 7, conn())
        device = await f.services.account_store.get_device(device_id)
        assert device is not None
        self.assertEqual(device.acked_seq, 7)


    async def acked(self, f: Fixture, who: tuple[int, int, str]) -> int:
        device = await f.services.account_store.get_device(who[1])
        assert device is not None
        return device.acked_seq

    async def test_ack_batch_is_stored(self) -> None:
        """ack_batch raises each device's acknowledged seq; an ack of a connection presence does not name,
        or of another node's, is dropped without failing the others."""
        f = await self.fixture()
        p = await self.signed_in(f, f.alice)
        await self.signed_in(f, f.bob, serial=2)
        batch = encode_ack_batch(
            [
                BatchedAck(conn(), f.alice[1], f.alice[0], 7),
                BatchedAck(conn(serial=9), f.bob[1], f.bob[0], 5),  # not bob's connection
                BatchedAck(conn("c2", 2), f.bob[1], f.bob[0], 6),  # another node's
            ]
        )
        await p.perspective_ack_batch(batch)
        self.assertEqual((await self.acked(f, f.alice), await self.acked(f, f.bob)), (7, 0))
        await p.perspective_ack_batch(encode_ack_batch([BatchedAck(conn(serial=2), f.bob[1], f.bob[0], 4)]))
        self.assertEqual(await self.acked(f, f.bob), 4)

    async def test_ack_batch_is_one_write(self) -> None:
        """A batch's acks, of connections this node knows and of ones only presence names, are
        queued together: one write for the batch."""
        f = await self.fixture()
        p = await self.signed_in(f, f.alice)
        await self.signed_in(f, f.bob, serial=2)  # through another perspective: p asks presence
        writes: list[list[tuple[int, int]]] = []
        ack_many = f.services.account_store.ack_many

        async def recording(acks: Any) -> None:
            writes.append(sorted(acks))
            await ack_many(acks)

        f.services.account_store.ack_many = recording  # type: ignore[method-assign]
        alice, bob = f.alice[1], f.bob[1]
        batch = [
            BatchedAck(conn(), alice, f.alice[0], 7),
            BatchedAck(conn(serial=2), bob, f.bob[0], 5),
        ]
        await p.perspective_ack_batch(encode_ack_batch(batch))
        self.assertEqual(writes, [sorted([(alice, 7), (bob, 5)])])
        self.assertEqual((await self.acked(f, f.alice), await self.acked(f, f.bob)), (7, 5))

    async def test_ack_batch_bad_arguments(self) -> None:
        """Bytes that are no AckBatch, too many acks or a bad id or seq in any ack refuse the whole batch."""
        f = await self.fixture()
        user_id, device_id, _ = f.alice
        p = await self.signed_in(f, f.alice)
        good = BatchedAck(conn(), device_id, user_id, 3)
        bad = [
            "not bytes",
            b"\xff\xff",
            encode_ack_batch([good, BatchedAck(conn(), 0, user_id, 4)]),
            encode_ack_batch([good, BatchedAck(conn(), device_id + 1, -1, 4)]),
            encode_ack_batch([good, BatchedAck(conn(serial=2), device_id, user_id, -4)]),
            encode_ack_batch([good, BatchedAck("c1/boot", device_id, user_id, 4)]),
            encode_ack_batch([BatchedAck(conn(serial=n), device_id, user_id, 1) for n in range(MAX_ACK_BATCH + 1)]),
        ]
        for data in bad:
            with self.assertRaises(BadArgument, msg=repr(data[:40])):
                await p.perspective_ack_batch(data)
        self.assertEqual(await self.acked(f, f.alice), 0)

@implementer(credentials.IUsernameHashedPassword)
class Offered:
    """Credentials as PB's challenge-response presents them to a checker."""

    def __init__(self, username: bytes, password: bytes) -> None:
        self.username = username
        self._password = password

    def checkPassword(self, password: bytes) -> bool:
        return password == self._password


class SharedSecretCheckerTests(SynchronousTestCase):
    def test_accepts_the_secret(self) -> None:
        """Any node id with the shared secret logs in as that node id."""
        checker = SharedSecretChecker(SECRET)
        self.assertEqual(self.successResultOf(checker.requestAvatarId(Offered(b"c1", SECRET))), b"c1")

    def test_refuses_another_secret_and_logs(self) -> None:
        """A wrong secret fails with UnauthorizedLogin and is logged as a warning naming the node."""
        events = capture_logs(self)
        checker = SharedSecretChecker(SECRET)
        for wrong in (b"", SECRET[:-1], SECRET + b"x", b"another-secret-of-32-characters!"):
            self.failureResultOf(checker.requestAvatarId(Offered(b"c9", wrong)), UnauthorizedLogin)
        warnings = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(len(warnings), 4)
        self.assertIn("c9", warnings[0])
        self.assertIn("wrong shared secret", warnings[0])


class RemoteLoginTests(RedisTestMixin, SQLiteBackend, TestCase):
    """PB over loopback TCP: a real listener, PBClientFactory login, callRemote."""

    async def serve(self) -> tuple[Services, int, list[pb.Broker]]:
        services = Services(await self.make_database(), reactor)
        redis, keys = self.open_redis()
        presence = RedisPresence(redis, keys)
        factory = pb_factory(SECRET, LogicRealm(services.logic, presence, RedisDelivery(presence)))
        brokers: list[pb.Broker] = []
        build = factory.buildProtocol

        def build_and_keep(addr: Any) -> Any:
            broker = build(addr)
            brokers.append(broker)
            return broker

        factory.buildProtocol = build_and_keep  # type: ignore[method-assign]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(self._all_closed, brokers)
        return services, port.getHost().port, brokers

    async def _all_closed(self, brokers: list[pb.Broker]) -> None:
        for broker in brokers:
            if broker.transport is not None:
                broker.transport.loseConnection()
        await wait_until(lambda: all(b.disconnected for b in brokers), "server connections to close")

    async def login(self, port: int, node: bytes, secret: bytes) -> Failure | pb.RemoteReference:
        factory = pb.PBClientFactory()
        broker = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
        self.addCleanup(self._closed, broker)
        return await outcome(factory.login(credentials.UsernamePassword(node, secret)))

    async def _closed(self, broker: pb.Broker) -> None:
        broker.transport.loseConnection()
        await wait_until(lambda: broker.disconnected, "the client connection to close")

    async def test_wrong_secret_is_refused(self) -> None:
        """Logging in with another secret fails with UnauthorizedLogin."""
        _, port, _ = await self.serve()
        events = capture_logs(self)
        result = await self.login(port, b"c1", b"not-the-shared-secret-at-all!!!!")
        self.assertIsInstance(result, Failure)
        assert isinstance(result, Failure)
        self.assertTrue(result.check(UnauthorizedLogin), result)
        self.assertTrue(any("wrong shared secret" in formatEvent(e) for e in events))
        # PB itself logs a failure it sends that is not a pb.Error
        self.flushLoggedErrors(UnauthorizedLogin)

    async def test_right_secret_gets_a_working_perspective(self) -> None:
        """With the secret the node gets a perspective; sign_in works remotely and bad arguments fail remotely."""
        services, port, _ = await self.serve()
        user_id, device_id, token = await services.new_user("alice")
        perspective = await self.login(port, b"c1", SECRET)
        assert isinstance(perspective, pb.RemoteReference), perspective
        c = connection_id("c1", "boot", 1)
        ok, message, epoch = await perspective.callRemote("sign_in", device_id, user_id, token, c)
        self.assertEqual((ok, message), (True, ""))
        device = await services.account_store.get_device(device_id)
        assert device is not None
        self.assertEqual(epoch, device.send_epoch)
        ok, message, epoch = await perspective.callRemote("sign_in", device_id, user_id, "wrong", c)
        self.assertEqual((ok, epoch), (False, 0))
        failure = await outcome(perspective.callRemote("ack", "1", user_id, 1, c))
        self.assertIsInstance(failure, Failure)
        self.assertTrue(failure.check(BadArgument), failure)
        # the login name is the node: a connection of another node is not this node's
        failure = await outcome(perspective.callRemote("ack", device_id, user_id, 1, connection_id("c2", "boot", 1)))
        self.assertTrue(failure.check(NotSignedInHere), failure)
        page = gpb.Message()
        page.ParseFromString(await perspective.callRemote("sync_page", device_id, user_id, 0, 10, c))
        self.assertEqual(page.type, 1)
