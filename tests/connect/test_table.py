"""The connection table against fake connections (``goim.ports.Connection``):
no protocol, no transport."""

from typing import Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from goim.connect.table import KICK_SHUTDOWN, KICK_SIGNED_IN_ELSEWHERE, ConnectionTable
from goim.ports import Connection, DeliveryPort, SessionPort
from goim.pb.goim_pb2 import MessageItem
from goim.protocols.codec import stored_from_item
from goim.types import StoredMessage, copies_of
from tests.protocols.fakes import make_message


class FakeConnection:
    """Records what the table asks of it."""

    def __init__(self, device_id: int, user_id: int, serial: int) -> None:
        self.device_id = device_id
        self.user_id = user_id
        self.serial = serial
        self.conn_id = f"n/b/{serial}"
        self.epoch = 0
        self.in_flight = 0
        self.pushed: list[StoredMessage] = []
        self.kicks: list[str] = []
        self.caught_up = 0
        self._lost: Deferred[None] = Deferred()

    def push_items(self, seqs: Sequence[int], items: Sequence[bytes], audiences: Sequence[int]) -> None:
        self.pushed.extend(stored_from_item(MessageItem.FromString(i), user_id=self.user_id) for i in items)

    def kick(self, reason: str) -> None:
        self.kicks.append(reason)

    def catch_up(self) -> None:
        self.caught_up += 1

    def when_lost(self) -> Deferred[None]:
        return self._lost if not self._lost.called else succeed(None)

    def pauseProducing(self) -> None:
        pass

    def lose(self) -> None:
        self._lost.callback(None)


class ConnectionTableTests(SynchronousTestCase):
    def test_is_the_ports(self) -> None:
        """The table is a DeliveryPort and a SessionPort; the fake is a Connection (checked by mypy)."""
        table = ConnectionTable()
        ports: tuple[DeliveryPort, SessionPort] = (table, table)
        conn: Connection = FakeConnection(1, 2, 1)
        self.assertIsNotNone((ports, conn))

    def test_one_connection_per_device(self) -> None:
        """A newer connection of a device replaces and kicks the older; an older one is refused."""
        table = ConnectionTable()
        old, new = FakeConnection(1, 2, 1), FakeConnection(1, 2, 2)
        self.assertTrue(table.register(old))
        self.assertTrue(table.register(new))
        self.assertEqual(old.kicks, [KICK_SIGNED_IN_ELSEWHERE])
        self.assertIs(table.get(1), new)
        self.assertFalse(table.register(FakeConnection(1, 2, 0)))
        self.assertFalse(table.unregister(old))
        self.assertTrue(table.unregister(new))
        self.assertEqual(len(table), 0)

    def test_deliver_by_user(self) -> None:
        """Each message reaches every connection of its user, and nobody else's."""
        table = ConnectionTable()
        phone, laptop, other = FakeConnection(1, 2, 1), FakeConnection(3, 2, 2), FakeConnection(4, 5, 3)
        for conn in (phone, laptop, other):
            table.register(conn)
        table.deliver(copies_of([make_message(2, 1), make_message(5, 1), make_message(2, 2)]))
        self.assertEqual([m.seq for m in phone.pushed], [1, 2])
        self.assertEqual([m.seq for m in laptop.pushed], [1, 2])
        self.assertEqual([(m.user_id, m.seq) for m in other.pushed], [(5, 1)])
        self.assertEqual(len(table.connections_of(2)), 2)

    def test_early_kick_applies_on_register(self) -> None:
        """A kick by connection id that arrives before the connection registered is applied when it does."""
        table = ConnectionTable()
        conn = FakeConnection(1, 2, 7)
        self.assertFalse(table.kick_connection(1, conn.conn_id, "gone"))
        table.register(conn)
        table.kick_if_early(conn)
        self.assertEqual(conn.kicks, ["gone"])

    def test_kick_by_id_spares_a_newer_connection(self) -> None:
        """A kick naming an older connection id leaves the device's newer connection alone."""
        table = ConnectionTable()
        new = FakeConnection(1, 2, 2)
        table.register(new)
        self.assertFalse(table.kick_connection(1, "n/b/1", "stale"))
        self.assertEqual(new.kicks, [])

    def test_close_all_waits_for_every_connection(self) -> None:
        """close_all kicks every connection and fires once all of them are lost."""
        table = ConnectionTable()
        a, b = FakeConnection(1, 2, 1), FakeConnection(3, 4, 2)
        table.register(a)
        table.register(b)
        closed = table.close_all()
        self.assertEqual((a.kicks, b.kicks), ([KICK_SHUTDOWN], [KICK_SHUTDOWN]))
        a.lose()
        self.assertNoResult(closed)
        b.lose()
        self.successResultOf(closed)

    def test_catch_up_all(self) -> None:
        """catch_up_all asks every connection to sync from what its client acknowledged."""
        table = ConnectionTable()
        conns = [FakeConnection(d, 9, d) for d in (1, 2, 3)]
        for conn in conns:
            table.register(conn)
        table.catch_up_all()
        self.assertEqual([c.caught_up for c in conns], [1, 1, 1])
