"""The connect node's PB side: PBLogicClient over fake links (batching, per-connection order,
retry, round robin, deadlines) and LogicLink over in-memory PB connections (login, reconnect,
dropping a hung node). No sockets; time is a MemoryReactorClock (a Clock that
HostnameEndpoint accepts as a reactor)."""

from typing import Any

from twisted.cred import portal
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.address import IPv4Address
from twisted.internet.defer import AlreadyCalledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.spread import pb
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer  # type: ignore[import-untyped]

from goim.connect.logic_client import NoLogicNode, PBLogicClient, decode_page
from goim.distributed.pb_server import SharedSecretChecker
from goim.pb import goim_pb2 as gpb
from goim.pb import internal_pb2 as ipb
from goim.protocols.batch import BatchedAck, decode_ack_batch, encode_send_results
from goim.protocols.codec import encode_message
from goim.types import SendOutcomeUnknown, SendRequest, SendResult, SignInResult, SyncPage, connection_id
from tests.protocols.fakes import make_message

SECRET = b"a-shared-secret-of-32-characters"
CALL_TIMEOUT = 5.0
REMOTE_TIMEOUT = 10.0
SEND_DEADLINE = 30.0

#: two client connections of this connect node
A = connection_id("c1", "boot", 1)
B = connection_id("c1", "boot", 2)


def request(send_sequence: int, device_id: int = 10, user_id: int = 1) -> SendRequest:
    return SendRequest(device_id, user_id, 1, 2, 1, f"m{send_sequence}", send_sequence, 1000 + send_sequence)


def entries(payload: bytes) -> list[tuple[str, int, int, bytes]]:
    """``(conn, device_id, user_id, MessageSend bytes)`` of each send of a ``SendBatch``."""
    assert isinstance(payload, bytes), "a send batch travels as bytes"
    return [(e.conn, e.device_id, e.user_id, e.message) for e in ipb.SendBatch.FromString(payload).sends]


def answer_bytes(results: list[tuple[int, ...]]) -> bytes:
    """The ``SendResults`` bytes of ``(code, message_id, seq[, retry_after_ms])`` tuples."""
    return encode_send_results([SendResult(*r) for r in results])


def send_sequences(payload: bytes) -> list[tuple[str, int, int, int]]:
    """``(conn, device_id, user_id, send_sequence)`` of each entry of a remote send batch."""
    out = []
    for conn, device_id, user_id, raw in entries(payload):
        message = gpb.MessageSend()
        message.ParseFromString(raw)
        out.append((conn, device_id, user_id, message.send_sequence))
    return out


def ok(payload: bytes) -> list[tuple[int, int, int]]:
    """An answer storing every send of a batch: message id 100 + send_sequence, seq = send_sequence."""
    return [(0, 100 + s, s) for _, _, _, s in send_sequences(payload)]


class FakeBroker:
    disconnected = False


class FakePerspective:
    """A RemoteReference whose calls the test answers; callRemote on a dead one raises
    DeadReferenceError, as PB does."""

    #: dead calls after which the fake assumes the caller spins without yielding
    SPIN_LIMIT = 100

    def __init__(self, name: str) -> None:
        self.name = name
        self.broker = FakeBroker()
        self.calls: list[tuple[str, tuple[Any, ...], Deferred[Any]]] = []
        self.dead_calls = 0

    def callRemote(self, method: str, *args: Any) -> Deferred[Any]:
        if self.broker.disconnected:
            self.dead_calls += 1
            if self.dead_calls > self.SPIN_LIMIT:
                raise RuntimeError(f"{self.dead_calls} calls on a dead perspective without yielding to the reactor")
            raise pb.DeadReferenceError("Calling Stale Broker")
        d: Deferred[Any] = Deferred()
        self.calls.append((method, args, d))
        return d

    def answer(self, index: int, result: Any) -> None:
        """Answer a call; a send batch's result tuples are sent as SendResults bytes."""
        if self.calls[index][0] == "send_batch" and isinstance(result, list):
            result = answer_bytes(result)
        self.calls[index][2].callback(result)

    def batches(self) -> list[list[tuple[str, int, int, int]]]:
        """The send batches this perspective got, decoded, in call order."""
        return [send_sequences(args[0]) for method, args, _ in self.calls if method == "send_batch"]


class FakeLink:
    """What PBLogicClient uses of a LogicLink: ``perspective``, ``_waiters``, ``address``, ``drop()``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.address = f"{name}:50100"
        self.perspective: FakePerspective | None = None
        self._waiters: list[Deferred[None]] = []
        self.dropped = 0

    def connect(self) -> FakePerspective:
        """Become connected and wake the waiting calls, as LogicLink._connect_loop does."""
        self.perspective = FakePerspective(self.name)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)
        return self.perspective

    def die(self) -> None:
        """Lose the connection in Broker.connectionLost's order: the broker is marked
        disconnected and pending calls fail first, then the link hears of it."""
        perspective = self.perspective
        assert perspective is not None
        perspective.broker.disconnected = True
        for _, _, d in perspective.calls:
            if not d.called:
                d.errback(pb.PBConnectionLost("connection lost"))
        self.perspective = None

    def drop(self) -> None:
        """Close the connection, as LogicLink.drop does (it stays down until ``connect``)."""
        self.dropped += 1
        if self.perspective is not None:
            self.die()


def acks_of(args: tuple[Any, ...]) -> list[BatchedAck]:
    """The acks of an ``ack_batch`` call's argument."""
    (payload,) = args
    return decode_ack_batch(payload, limit=10_000)


def calls(*links: FakeLink) -> list[tuple[str, str, tuple[Any, ...]]]:
    """``(link, method, args)`` of every remote call the links' perspectives got."""
    out: list[tuple[str, str, tuple[Any, ...]]] = []
    for link in links:
        if link.perspective is not None:
            out.extend((link.name, method, args) for method, args, _ in link.perspective.calls)
    return out


class PBLogicClientTests(SynchronousTestCase):
    def client(self, *names: str, max_batch: int = 500) -> tuple[PBLogicClient, MemoryReactorClock, list[FakeLink]]:
        """A client on fake links named ``names`` (none connected yet)."""
        reactor = MemoryReactorClock()
        client = PBLogicClient(
            reactor,
            [f"127.0.0.1:{50100 + i}" for i in range(len(names))],
            node="c1",
            secret=SECRET,
            call_timeout=CALL_TIMEOUT,
            remote_timeout=REMOTE_TIMEOUT,
            send_deadline=SEND_DEADLINE,
            max_batch=max_batch,
        )
        links = [FakeLink(name) for name in names]
        client.links = links  # type: ignore[assignment]
        return client, reactor, links

    def sign_in(self, client: PBLogicClient, device_id: int = 10) -> Deferred[SignInResult]:
        return Deferred.fromCoroutine(client.sign_in(device_id=device_id, user_id=1, token="t", conn=A))

    def send(
        self, client: PBLogicClient, *sequences: int, conn: str = A, device_id: int = 10, user_id: int = 1
    ) -> list[Deferred[SendResult]]:
        return [client.send(request(s, device_id, user_id), conn=conn) for s in sequences]

    # --- batching ------------------------------------------------------------------------

    def test_sends_of_one_turn_go_in_one_call(self) -> None:
        """Sends of several connections made in one reactor turn travel in one remote call, each connection's in order, and get their own results."""
        client, reactor, [link] = self.client("a")
        p = link.connect()
        a1, b5, a2 = self.send(client, 1) + self.send(client, 5, conn=B, device_id=20, user_id=2) + self.send(client, 2)
        self.assertEqual(p.calls, [])
        reactor.advance(0)
        [(method, (payload,), _)] = p.calls
        self.assertEqual(method, "send_batch")
        self.assertEqual(send_sequences(payload), [(A, 10, 1, 1), (A, 10, 1, 2), (B, 20, 2, 5)])
        p.answer(0, [(0, 101, 1), (2, 0, 0), (0, 105, 9)])
        self.assertEqual(
            [self.successResultOf(d) for d in (a1, a2, b5)],
            [SendResult(0, 101, 1), SendResult(2, 0, 0), SendResult(0, 105, 9)],
        )

    def test_rate_limit_hint_reaches_the_connection(self) -> None:
        """A code-5 result's retry_after_ms (the fourth field) is handed to the sender's connection."""
        client, reactor, [link] = self.client("a")
        p = link.connect()
        [d] = self.send(client, 1)
        reactor.advance(0)
        p.answer(0, [(5, 0, 0, 250)])
        self.assertEqual(self.successResultOf(d), SendResult(5, 0, 0, 250))

    def test_malformed_answer_leaves_the_outcome_unknown(self) -> None:
        """An answer that does not decode, or has a result too few, fails the batch's sends as outcome unknown (they may be stored)."""
        for answer in [b"\xff\xff", answer_bytes([(0, 101, 1)]), [(0, 101, 1), (0, 102, 2)]]:
            client, reactor, [link] = self.client("a")
            p = link.connect()
            d1, d2 = self.send(client, 1) + self.send(client, 2)
            reactor.advance(0)
            p.calls[0][2].callback(answer)  # raw: a list is not bytes either
            for d in (d1, d2):
                self.failureResultOf(d, SendOutcomeUnknown)
            self.flushLoggedErrors()

    def test_send_carries_every_field(self) -> None:
        """The batch entry holds the connection id, and its MessageSend bytes the request's fields."""
        client, reactor, [link] = self.client("a")
        p = link.connect()
        r = SendRequest(7, 3, 2, 99, 4, "héllo", 42, 1_700_000_000_123)
        client.send(r, conn=B)
        reactor.advance(0)
        [(conn, device_id, user_id, raw)] = entries(p.calls[0][1][0])
        message = gpb.MessageSend()
        message.ParseFromString(raw)
        self.assertEqual(
            (conn, device_id, user_id, message.receiver_type, message.receiver_id, message.type, message.content,
             message.send_sequence, message.send_time),
            (B, 7, 3, 2, 99, 4, "héllo", 42, 1_700_000_000_123),
        )

    def test_sends_of_later_turns_go_in_later_calls(self) -> None:
        """A send made after the flush travels in a call of its own."""
        client, reactor, [link] = self.client("a")
        p = link.connect()
        self.send(client, 1)
        reactor.advance(0)
        self.send(client, 2, conn=B)
        reactor.advance(0)
        self.assertEqual(p.batches(), [[(A, 10, 1, 1)], [(B, 10, 1, 2)]])
        # and, once the first is answered, the next send of A too
        p.answer(0, [(0, 101, 1)])
        self.send(client, 3)
        reactor.advance(0)
        self.assertEqual(p.batches()[2:], [[(A, 10, 1, 3)]])

    def test_max_batch_splits_a_turn(self) -> None:
        """More sends than max_batch in one turn go in several concurrent calls, order kept."""
        client, reactor, [link] = self.client("a", max_batch=2)
        p = link.connect()
        conns = [connection_id("c1", "boot", s) for s in range(1, 6)]
        ds = [d for s, c in enumerate(conns, start=1) for d in self.send(client, s, conn=c)]
        reactor.advance(0)
        self.assertEqual([[s for _, _, _, s in batch] for batch in p.batches()], [[1, 2], [3, 4], [5]])
        for i, (_, args, _) in enumerate(p.calls):
            p.answer(i, ok(args[0]))
        self.assertEqual([self.successResultOf(d).message_id for d in ds], [101, 102, 103, 104, 105])

    def test_one_call_never_carries_two_batches_of_one_connection(self) -> None:
        """A connection with more queued sends than max_batch sends them max_batch at a time, each batch after the previous one's answer."""
        client, reactor, [link] = self.client("a", max_batch=2)
        p = link.connect()
        ds = self.send(client, 1, 2, 3, 4, 5)
        [other] = self.send(client, 9, conn=B)
        reactor.advance(0)
        self.assertEqual(p.batches(), [[(A, 10, 1, 1), (A, 10, 1, 2)], [(B, 10, 1, 9)]])
        p.answer(1, ok(p.calls[1][1][0]))
        reactor.advance(0)
        self.assertEqual(len(p.calls), 2)
        p.answer(0, ok(p.calls[0][1][0]))
        reactor.advance(0)
        self.assertEqual(p.batches()[2:], [[(A, 10, 1, 3), (A, 10, 1, 4)]])
        p.answer(2, ok(p.calls[2][1][0]))
        reactor.advance(0)
        self.assertEqual(p.batches()[3:], [[(A, 10, 1, 5)]])
        p.answer(3, ok(p.calls[3][1][0]))
        self.assertEqual([self.successResultOf(d).message_id for d in ds + [other]], [101, 102, 103, 104, 105, 109])

    def test_second_batch_of_a_connection_waits_for_the_first_answer(self) -> None:
        """While a connection's batch is in flight its later sends wait (and then go together); another connection's sends go meanwhile."""
        client, reactor, [link] = self.client("a")
        p = link.connect()
        [first] = self.send(client, 1)
        reactor.advance(0)
        later = self.send(client, 2, 3)
        [other] = self.send(client, 7, conn=B, device_id=20, user_id=2)
        reactor.advance(0)
        self.assertEqual(p.batches(), [[(A, 10, 1, 1)], [(B, 20, 2, 7)]])
        p.answer(1, [(0, 107, 1)])
        self.assertEqual(self.successResultOf(other), SendResult(0, 107, 1))
        reactor.advance(0)
        self.assertEqual(len(p.calls), 2)
        for d in later:
            self.assertNoResult(d)
        p.answer(0, [(0, 101, 1)])
        self.assertEqual(self.successResultOf(first), SendResult(0, 101, 1))
        reactor.advance(0)
        self.assertEqual(p.batches()[2:], [[(A, 10, 1, 2), (A, 10, 1, 3)]])
        p.answer(2, [(0, 102, 2), (0, 103, 3)])
        self.assertEqual([self.successResultOf(d).message_id for d in later], [102, 103])

    def test_failed_batch_answers_each_send_with_code_1(self) -> None:
        """With no logic node reachable within call_timeout, each send of the batch gets code 1 (nothing was sent)."""
        client, reactor, [link] = self.client("a")
        ds = self.send(client, 1, 2)
        reactor.advance(0)
        reactor.advance(CALL_TIMEOUT - 1)
        for d in ds:
            self.assertNoResult(d)
        reactor.advance(1)
        self.assertEqual([self.successResultOf(d) for d in ds], [SendResult(1, 0, 0)] * 2)
        # the connection is not broken: its next send goes out
        p = link.connect()
        self.send(client, 3)
        reactor.advance(0)
        self.assertEqual(p.batches(), [[(A, 10, 1, 3)]])

    def test_refused_batch_answers_each_send_with_code_1(self) -> None:
        """A batch the logic node refused (a remote error) answers each send with code 1 and frees the connection."""
        client, reactor, [link] = self.client("a")
        p = link.connect()
        ds = self.send(client, 1, 2)
        reactor.advance(0)
        later = self.send(client, 3)
        reactor.advance(0)
        p.calls[0][2].errback(pb.Error("a send batch is a list of at most 1000 sends"))
        self.assertEqual([self.successResultOf(d) for d in ds], [SendResult(1, 0, 0)] * 2)
        reactor.advance(0)
        self.assertEqual(p.batches()[1:], [[(A, 10, 1, 3)]])
        p.answer(1, [(0, 103, 3)])
        self.assertEqual(self.successResultOf(later[0]), SendResult(0, 103, 3))

    def test_batch_that_cannot_be_encoded_answers_each_send_with_code_1(self) -> None:
        """A batch that fails before it is sent (here a device id protobuf cannot encode) answers each of its sends with code 1 instead of leaving them unanswered, and frees the connections."""
        client, reactor, [link] = self.client("a")
        p = link.connect()
        ds = self.send(client, 1) + self.send(client, 5, conn=B, device_id=2**64, user_id=2)
        reactor.advance(0)
        self.assertEqual(p.calls, [])
        self.assertEqual([self.successResultOf(d) for d in ds], [SendResult(1, 0, 0)] * 2)
        [later] = self.send(client, 2)
        reactor.advance(0)
        self.assertEqual(p.batches(), [[(A, 10, 1, 2)]])
        p.answer(0, [(0, 102, 2)])
        self.assertEqual(self.successResultOf(later), SendResult(0, 102, 2))
        self.assertIsNone(self.successResultOf(Deferred.fromCoroutine(client.drain())))

    def test_drain_waits_for_sends_in_flight_and_queued(self) -> None:
        """drain() fires once every send taken so far is answered, a connection's queued later batch included."""
        client, reactor, [link] = self.client("a")
        p = link.connect()
        self.assertIsNone(self.successResultOf(Deferred.fromCoroutine(client.drain())))
        first = self.send(client, 1)
        reactor.advance(0)
        later = self.send(client, 2)
        drained = Deferred.fromCoroutine(client.drain())
        reactor.advance(0)
        p.answer(0, [(0, 101, 1)])
        reactor.advance(0)
        self.assertNoResult(drained)
        p.answer(1, [(0, 102, 2)])
        self.assertIsNone(self.successResultOf(drained))
        self.assertEqual([self.successResultOf(d).message_id for d in first + later], [101, 102])

    # --- unanswered sends ----------------------------------------------------------------------

    def test_timed_out_batch_runs_again_on_another_link_and_drops_the_slow_one(self) -> None:
        """A send batch unanswered within remote_timeout is sent again, unchanged, on another link; the slow link is dropped; the connection's next sends still wait."""
        client, reactor, (a, b) = self.client("a", "b")
        a.connect()
        b.connect()
        ds = self.send(client, 1, 2)
        reactor.advance(0)
        [(first, _, (payload,))] = calls(a, b)
        slow, other = (a, b) if first == "a" else (b, a)
        later = self.send(client, 3)
        reactor.advance(REMOTE_TIMEOUT - 1)
        self.assertEqual(len(calls(a, b)), 1)
        self.assertEqual(slow.dropped, 0)
        reactor.advance(1)
        self.assertEqual((slow.dropped, other.dropped), (1, 0))
        assert other.perspective is not None
        [(method, (again,), _)] = other.perspective.calls
        self.assertEqual((method, again), ("send_batch", payload))
        reactor.advance(0)
        self.assertNoResult(later[0])
        self.assertEqual(len(other.perspective.calls), 1)
        other.perspective.answer(0, [(0, 5, 1), (0, 6, 2)])
        self.assertEqual([self.successResultOf(d).message_id for d in ds], [5, 6])
        reactor.advance(0)
        self.assertEqual(other.perspective.batches()[1:], [[(A, 10, 1, 3)]])

    def test_slow_ack_is_waited_for_then_runs_again_on_another_link(self) -> None:
        """An ack (like a sync page) is no sign-in: a saturated node that answers it after call_timeout still
        answers it; one silent for remote_timeout is dropped and the ack runs again on the other link."""
        client, reactor, (a, b) = self.client("a", "b")
        a.connect()
        b.connect()
        slow_but_answered = client.ack(device_id=10, user_id=1, seq=7, conn=A)
        reactor.advance(0)
        [(first, method, _)] = calls(a, b)
        self.assertEqual(method, "ack_batch")
        node = a if first == "a" else b
        reactor.advance(CALL_TIMEOUT + 1)
        self.assertNoResult(slow_but_answered)
        assert node.perspective is not None
        node.perspective.answer(0, None)
        self.successResultOf(slow_but_answered)
        self.assertEqual((a.dropped, b.dropped), (0, 0))

        before = calls(a, b)
        silent = client.ack(device_id=10, user_id=1, seq=8, conn=A)
        reactor.advance(0)
        [(second, _, _)] = [c for c in calls(a, b) if c not in before]
        slow, other = (a, b) if second == "a" else (b, a)
        reactor.advance(REMOTE_TIMEOUT)
        self.assertEqual((slow.dropped, other.dropped), (1, 0))
        assert other.perspective is not None
        method, args, _ = other.perspective.calls[-1]
        self.assertEqual((method, acks_of(args)), ("ack_batch", [BatchedAck(A, 10, 1, 8)]))
        other.perspective.answer(len(other.perspective.calls) - 1, None)
        self.successResultOf(silent)

    def test_unknown_outcome_breaks_the_connection(self) -> None:
        """A batch that reached a node but got no answer by send_deadline fails with SendOutcomeUnknown, as do its connection's queued and later sends; other connections go on."""
        client, reactor, [a] = self.client("a")
        p = a.connect()
        lost = self.send(client, 1, 2)
        reactor.advance(0)
        queued = self.send(client, 3)
        [fine] = self.send(client, 7, conn=B, device_id=20, user_id=2)
        reactor.advance(0)
        self.assertEqual(p.batches(), [[(A, 10, 1, 1), (A, 10, 1, 2)], [(B, 20, 2, 7)]])
        p.answer(1, [(0, 107, 1)])
        self.assertEqual(self.successResultOf(fine), SendResult(0, 107, 1))
        # A's batch times out; its link is dropped and no node comes back
        reactor.advance(REMOTE_TIMEOUT)
        self.assertEqual(a.dropped, 1)
        reactor.advance(SEND_DEADLINE - REMOTE_TIMEOUT - 1)
        for d in lost + queued:
            self.assertNoResult(d)
        reactor.advance(1)
        for d in lost + queued:
            self.failureResultOf(d, SendOutcomeUnknown)
        [refused] = self.send(client, 4)
        self.failureResultOf(refused, SendOutcomeUnknown)
        # B is not affected: once a node is back, its sends go (and A's never do)
        p2 = a.connect()
        [after] = self.send(client, 8, conn=B, device_id=20, user_id=2)
        reactor.advance(0)
        self.assertEqual(p2.batches(), [[(B, 20, 2, 8)]])
        p2.answer(0, [(0, 108, 2)])
        self.assertEqual(self.successResultOf(after), SendResult(0, 108, 2))

    def test_batch_interrupted_with_no_node_left_has_an_unknown_outcome(self) -> None:
        """A batch whose node died mid-call, with no node back before send_deadline, fails with SendOutcomeUnknown."""
        client, reactor, [a] = self.client("a")
        a.connect()
        ds = self.send(client, 1)
        reactor.advance(0)
        a.die()
        reactor.advance(SEND_DEADLINE - 1)
        self.assertNoResult(ds[0])
        reactor.advance(1)
        self.failureResultOf(ds[0], SendOutcomeUnknown)

    # --- choosing a link ---------------------------------------------------------------------

    def test_round_robin_over_healthy_links(self) -> None:
        """Successive calls alternate over the connected links."""
        client, reactor, links = self.client("a", "b", "c")
        for link in links:
            link.connect()
        for device_id in range(6):
            self.sign_in(client, device_id + 1)
        order = [name for name, _, _ in sorted(calls(*links), key=lambda c: c[2][0])]
        self.assertEqual(sorted(order[:3]), ["a", "b", "c"])
        self.assertEqual(order[3:], order[:3])

    def test_only_connected_links_are_used(self) -> None:
        """A link that is not connected gets no calls."""
        client, reactor, (a, b) = self.client("a", "b")
        b.connect()
        for device_id in range(4):
            self.sign_in(client, device_id + 1)
        self.assertEqual({name for name, _, _ in calls(a, b)}, {"b"})
        self.assertEqual(len(calls(b)), 4)

    def test_call_retried_on_another_link_when_its_link_dies(self) -> None:
        """A call whose link dies mid-call (PBConnectionLost) runs again on another link."""
        client, reactor, links = self.client("a", "b")
        for link in links:
            link.connect()
        d = self.sign_in(client)
        [(first, _, args)] = calls(*links)
        dying = next(link for link in links if link.name == first)
        other = next(link for link in links if link.name != first)
        dying.die()
        self.assertNoResult(d)
        assert other.perspective is not None
        [(method, retried_args, _)] = other.perspective.calls
        self.assertEqual((method, retried_args), ("sign_in", args))
        other.perspective.answer(0, (True, "", 4))
        self.assertEqual(self.successResultOf(d), SignInResult(True, "", 4))

    def test_send_batch_retried_on_another_link(self) -> None:
        """A send batch interrupted by a lost connection is sent again, unchanged, on another link."""
        client, reactor, (a, b) = self.client("a", "b")
        pa, pb_ = a.connect(), b.connect()
        ds = self.send(client, 1, 2)
        reactor.advance(0)
        [(first, _, (payload,))] = calls(a, b)
        dying, other = (a, pb_) if first == "a" else (b, pa)
        dying.die()
        [(_, (again,), _)] = other.calls
        self.assertEqual(again, payload)
        other.answer(0, [(0, 5, 1), (0, 6, 2)])
        self.assertEqual([self.successResultOf(d).message_id for d in ds], [5, 6])

    def test_remote_errors_are_not_retried(self) -> None:
        """An error the logic node raised (not a lost connection) reaches the caller; no other link is tried."""
        client, reactor, links = self.client("a", "b")
        for link in links:
            link.connect()
        d = self.sign_in(client)
        [(first, _, _)] = calls(*links)
        link = next(link for link in links if link.name == first)
        assert link.perspective is not None
        link.perspective.calls[0][2].errback(pb.Error("device_id must be an integer >= 1"))
        self.failureResultOf(d, pb.Error)
        self.assertEqual(len(calls(*links)), 1)
        self.assertEqual([link.dropped for link in links], [0, 0])

    # --- no logic node -----------------------------------------------------------------------

    def test_no_link_fails_with_no_logic_node_after_call_timeout(self) -> None:
        """With no link connected a call waits call_timeout seconds, then fails with NoLogicNode."""
        client, reactor, _ = self.client("a", "b")
        d = self.sign_in(client)
        reactor.advance(CALL_TIMEOUT - 1)
        self.assertNoResult(d)
        reactor.advance(1)
        self.failureResultOf(d, NoLogicNode)

    def test_waiting_call_runs_when_a_link_connects(self) -> None:
        """A call made while no link is connected runs as soon as one connects."""
        client, reactor, (a, b) = self.client("a", "b")
        d = self.sign_in(client)
        reactor.advance(1)
        p = b.connect()
        [(method, args, _)] = p.calls
        self.assertEqual((method, args), ("sign_in", (10, 1, "t", A, int(CALL_TIMEOUT * 1000))))
        p.answer(0, (False, "wrong token", 0))
        self.assertEqual(self.successResultOf(d), SignInResult(False, "wrong token", 0))
        # the deadline timer was cancelled with the wait
        reactor.advance(CALL_TIMEOUT)
        self.assertEqual(len(p.calls), 1)

    def test_links_connecting_after_a_wait_ended(self) -> None:
        """Links that connect after a waiting call was served, or gave up, connect without error."""
        client, reactor, (a, b) = self.client("a", "b")
        served = self.sign_in(client)
        a.connect().answer(0, (True, "", 0))
        self.successResultOf(served)
        b.connect()  # the waiter of `served` is still in b._waiters

    def test_link_connecting_after_a_call_gave_up(self) -> None:
        """A link that connects after a call timed out connects without error and serves new calls."""
        client, reactor, (a,) = self.client("a")
        gave_up = self.sign_in(client)
        reactor.advance(CALL_TIMEOUT)
        self.failureResultOf(gave_up, NoLogicNode)
        p = a.connect()
        self.sign_in(client)
        self.assertEqual(len(p.calls), 1)

    def test_single_link_dying_mid_call_waits_for_reconnect(self) -> None:
        """With one logic node, a call interrupted by a lost connection waits and runs again on reconnect."""
        client, reactor, (a,) = self.client("a")
        a.connect()
        d = self.sign_in(client)
        a.die()
        try:
            self.assertNoResult(d)
        finally:
            d.addErrback(lambda _: None)
        p = a.connect()
        p.answer(0, (True, "", 0))
        self.assertEqual(self.successResultOf(d), SignInResult(True, ""))

    # --- the other calls ---------------------------------------------------------------------

    def test_sync_page_decodes_the_page(self) -> None:
        """sync_page passes its arguments and the connection, and decodes the Message bytes into the user's stored copies."""
        client, reactor, (a,) = self.client("a")
        p = a.connect()
        d = Deferred.fromCoroutine(client.sync_page(device_id=10, user_id=1, after_seq=3, limit=2, conn=B))
        [(method, args, _)] = p.calls
        self.assertEqual((method, args), ("sync_page", (10, 1, 3, 2, B)))
        messages = [make_message(1, 4), make_message(1, 5)]
        p.answer(0, encode_message(1, messages, True))
        self.assertEqual(self.successResultOf(d), SyncPage(messages, more=True))

    def test_sync_page_refuses_a_non_bytes_answer(self) -> None:
        """A sync_page answer that is not bytes fails with TypeError."""
        client, reactor, (a,) = self.client("a")
        p = a.connect()
        d = Deferred.fromCoroutine(client.sync_page(device_id=10, user_id=1, after_seq=0, limit=2, conn=A))
        p.answer(0, "not bytes")
        self.failureResultOf(d, TypeError)

    def test_ack_and_offline(self) -> None:
        """offline is a remote call with the device, the user and the connection; an ack goes in an
        ack_batch at the end of the turn."""
        client, reactor, (a,) = self.client("a")
        p = a.connect()
        acked = client.ack(device_id=10, user_id=1, seq=9, conn=A)
        gone = Deferred.fromCoroutine(client.offline(device_id=10, user_id=1, conn=B))
        self.assertEqual([(m, args) for m, args, _ in p.calls], [("offline", (10, 1, B))])
        reactor.advance(0)
        method, args, _ = p.calls[1]
        self.assertEqual((method, acks_of(args)), ("ack_batch", [BatchedAck(A, 10, 1, 9)]))
        p.answer(0, None)
        p.answer(1, None)
        self.assertIsNone(self.successResultOf(acked))
        self.assertIsNone(self.successResultOf(gone))

    def test_acks_of_a_turn_share_one_call(self) -> None:
        """The acks of one turn travel in one ack_batch, only the highest seq per connection and device;
        acks taken while it is in flight wait for it and go in the next call."""
        client, reactor, (a,) = self.client("a")
        p = a.connect()
        first = [
            client.ack(device_id=device, user_id=1, seq=seq, conn=conn)
            for device, seq, conn in ((10, 3, A), (11, 5, B), (10, 4, A), (10, 2, A))
        ]
        reactor.advance(0)
        [(method, args, _)] = p.calls
        self.assertEqual((method, acks_of(args)), ("ack_batch", [BatchedAck(A, 10, 1, 4), BatchedAck(B, 11, 1, 5)]))
        later = client.ack(device_id=10, user_id=1, seq=6, conn=A)
        reactor.advance(0)
        self.assertEqual(len(p.calls), 1, "one ack call at a time")
        p.answer(0, None)
        for d in first:
            self.assertIsNone(self.successResultOf(d))
        self.assertNoResult(later)
        reactor.advance(0)
        self.assertEqual(acks_of(p.calls[1][1]), [BatchedAck(A, 10, 1, 6)])
        p.answer(1, None)
        self.assertIsNone(self.successResultOf(later))

    def test_sends_queued_behind_a_batch_do_not_go_out_once_the_connection_is_offline(self) -> None:
        """A connection that went offline with a batch in flight and sends queued behind it: the queued sends
        fail without being sent (its client resends them in order), the batch in flight is still answered."""
        client, reactor, [link] = self.client("a")
        p = link.connect()
        [first] = self.send(client, 12)
        reactor.advance(0)
        [queued] = self.send(client, 13)
        reactor.advance(0)
        Deferred.fromCoroutine(client.offline(device_id=10, user_id=1, conn=A))
        p.answer(0, [(0, 196, 93)])
        reactor.advance(0)
        self.assertEqual(self.successResultOf(first), SendResult(0, 196, 93))
        self.failureResultOf(queued, SendOutcomeUnknown)
        self.assertEqual([m for m, _, _ in p.calls], ["send_batch", "offline"])
        self.assertEqual(p.batches(), [[(A, 10, 1, 12)]])

    def test_sign_in_passes_the_connection_and_returns_the_epoch(self) -> None:
        """sign_in sends (device, user, token, conn, deadline in ms: now + call_timeout) and returns ok,
        message and the epoch."""
        client, reactor, (a,) = self.client("a")
        p = a.connect()
        reactor.advance(100)
        d = Deferred.fromCoroutine(client.sign_in(device_id=10, user_id=1, token="t", conn=B))
        [(method, args, _)] = p.calls
        self.assertEqual((method, args), ("sign_in", (10, 1, "t", B, int((100 + CALL_TIMEOUT) * 1000))))
        p.answer(0, (True, "", 7))
        self.assertEqual(self.successResultOf(d), SignInResult(True, "", 7))

    def test_decode_page_of_an_empty_message(self) -> None:
        """An empty Message is an empty last page."""
        self.assertEqual(decode_page(encode_message(1, [], False), 1), SyncPage([], more=False))


# --- LogicLink over in-memory PB connections -----------------------------------------------------

ADDRESS = IPv4Address("TCP", "127.0.0.1", 50100)


class Avatar(pb.Avatar):
    def __init__(self, node: str, hang_sends: bool = False) -> None:
        self.node = node
        self.hang_sends = hang_sends
        self.sign_ins: list[tuple[Any, ...]] = []
        self.sends: list[Any] = []

    def perspective_send_batch(self, data: Any) -> Any:
        batch = entries(data)
        self.sends.append(batch)
        if self.hang_sends:
            return Deferred()  # a logic node that never answers
        return answer_bytes([(0, 1000 + i + 1, i + 1) for i in range(len(batch))])

    def perspective_sign_in(self, device_id: int, user_id: int, token: str, conn: str, deadline_ms: int = 0) -> Any:
        self.sign_ins.append((device_id, user_id, token, conn))
        if token == "hang":
            return Deferred()  # a logic node that never answers
        return True, f"served {self.node}", 3


@implementer(portal.IRealm)
class Realm:
    def __init__(self) -> None:
        self.avatars: list[Avatar] = []
        #: how many of the next avatars never answer a send
        self.hang_sends = 0

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        avatar = Avatar(avatar_id.decode(), hang_sends=self.hang_sends > 0)
        self.hang_sends -= 1
        self.avatars.append(avatar)
        return pb.IPerspective, avatar, lambda: None


class InMemoryEndpoint:
    """A client endpoint that connects to a PB server factory through iosim pumps."""

    def __init__(self, server_factory: pb.PBServerFactory, clock: MemoryReactorClock) -> None:
        self.server_factory = server_factory
        self.clock = clock
        self.listening = False
        self.attempts = 0
        self.pumps: list[iosim.IOPump] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        self.attempts += 1
        if not self.listening:
            return fail(ConnectionRefusedError("nothing listens"))
        client = factory.buildProtocol(ADDRESS)
        server = self.server_factory.buildProtocol(ADDRESS)
        self.pumps.append(
            iosim.connect(
                server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client), greet=False, clock=self.clock
            )
        )
        return succeed(client)

    def flush(self) -> None:
        for pump in self.pumps:
            pump.flush()

    def open_connections(self) -> int:
        return sum(1 for pump in self.pumps if not pump.clientIO.disconnected)

    def drop(self) -> None:
        """The logic node closes every connection."""
        for pump in self.pumps:
            pump.serverIO.loseConnection()
        self.flush()


class LogicLinkTests(SynchronousTestCase):
    def client(
        self, secret: bytes = SECRET, *, listening: bool = True, call_timeout: float = CALL_TIMEOUT
    ) -> tuple[PBLogicClient, MemoryReactorClock, InMemoryEndpoint, Realm]:
        reactor = MemoryReactorClock()
        realm = Realm()
        server = pb.PBServerFactory(portal.Portal(realm, [SharedSecretChecker(SECRET)]))
        endpoint = InMemoryEndpoint(server, reactor)
        endpoint.listening = listening
        client = PBLogicClient(
            reactor,
            ["logic-a:50100"],
            node="c7",
            secret=secret,
            call_timeout=call_timeout,
            remote_timeout=REMOTE_TIMEOUT,
        )
        client.links[0]._endpoint = endpoint
        self.addCleanup(client.stop)
        return client, reactor, endpoint, realm

    def run_for(self, reactor: MemoryReactorClock, endpoint: InMemoryEndpoint, seconds: float) -> None:
        """Let ``seconds`` pass in steps, moving PB traffic after each."""
        for _ in range(int(seconds * 10)):
            reactor.advance(0.1)
            endpoint.flush()

    def test_logs_in_with_the_node_id_and_serves_calls(self) -> None:
        """A link logs in as its node id with the shared secret; calls reach that perspective."""
        client, reactor, endpoint, realm = self.client()
        client.start()
        endpoint.flush()
        self.assertEqual(client.connected(), 1)
        [avatar] = realm.avatars
        self.assertEqual(avatar.node, "c7")
        d = Deferred.fromCoroutine(client.sign_in(device_id=10, user_id=1, token="t", conn=A))
        endpoint.flush()
        self.assertEqual(self.successResultOf(d), SignInResult(True, "served c7", 3))
        self.assertEqual(avatar.sign_ins, [(10, 1, "t", A)])

    def test_reconnects_after_the_connection_drops(self) -> None:
        """After the logic node drops the connection, the link reconnects by itself and calls work again."""
        client, reactor, endpoint, realm = self.client()
        client.start()
        endpoint.flush()
        first = client.links[0].perspective
        endpoint.drop()
        self.run_for(reactor, endpoint, 10)
        self.assertEqual(client.connected(), 1)
        self.assertIsNot(client.links[0].perspective, first)
        self.assertEqual(len(realm.avatars), 2)
        self.assertEqual(endpoint.open_connections(), 1)
        d = Deferred.fromCoroutine(client.sign_in(device_id=10, user_id=1, token="t", conn=A))
        endpoint.flush()
        self.successResultOf(d)
        self.assertEqual([len(a.sign_ins) for a in realm.avatars], [0, 1])

    def test_keeps_trying_until_the_logic_node_listens(self) -> None:
        """A link retries with backoff while nothing listens, and connects once something does."""
        client, reactor, endpoint, realm = self.client(listening=False)
        client.start()
        self.run_for(reactor, endpoint, 3)
        self.assertGreater(endpoint.attempts, 2)
        self.assertEqual(client.connected(), 0)
        endpoint.listening = True
        self.run_for(reactor, endpoint, 10)
        self.assertEqual(client.connected(), 1)

    def test_stop_closes_and_stops_reconnecting(self) -> None:
        """stop closes the connection and leaves no reconnect timer behind."""
        client, reactor, endpoint, realm = self.client()
        client.start()
        endpoint.flush()
        client.stop()
        endpoint.flush()
        self.assertEqual(endpoint.open_connections(), 0)
        self.run_for(reactor, endpoint, 10)
        self.assertEqual(len(realm.avatars), 1)
        self.assertEqual([c for c in reactor.getDelayedCalls() if c.active()], [])

    def test_wrong_secret_never_connects(self) -> None:
        """With another secret the link never gets a perspective and calls fail with NoLogicNode."""
        client, reactor, endpoint, realm = self.client(b"another-secret-of-32-characters!")
        client.start()
        d = Deferred.fromCoroutine(client.sign_in(device_id=10, user_id=1, token="t", conn=A))
        self.run_for(reactor, endpoint, CALL_TIMEOUT + 0.2)
        self.failureResultOf(d, NoLogicNode)
        self.assertEqual(realm.avatars, [])
        self.assertGreater(endpoint.attempts, 1)
        # PB logs each refused login it reports to the peer
        self.flushLoggedErrors(UnauthorizedLogin)

    def test_refused_login_closes_its_connection(self) -> None:
        """A link whose login is refused closes that connection before it tries again."""
        client, reactor, endpoint, realm = self.client(b"another-secret-of-32-characters!")
        client.start()
        self.run_for(reactor, endpoint, 10)
        self.flushLoggedErrors(UnauthorizedLogin)
        self.assertGreater(endpoint.attempts, 3)
        self.assertLessEqual(endpoint.open_connections(), 1)

    def test_link_survives_a_call_that_gave_up(self) -> None:
        """A link that connects after a call timed out keeps working, and reconnects after a drop."""
        client, reactor, endpoint, realm = self.client(listening=False)
        client.start()
        d = Deferred.fromCoroutine(client.sign_in(device_id=10, user_id=1, token="t", conn=A))
        self.run_for(reactor, endpoint, CALL_TIMEOUT + 0.2)
        self.failureResultOf(d, NoLogicNode)
        endpoint.listening = True
        self.run_for(reactor, endpoint, 10)
        self.assertEqual(self.flushLoggedErrors(AlreadyCalledError), [])
        self.assertEqual(client.connected(), 1)
        endpoint.drop()
        self.run_for(reactor, endpoint, 10)
        self.assertEqual(len(realm.avatars), 2)
        self.assertEqual(endpoint.open_connections(), 1)

    def test_send_without_an_answer_drops_and_reconnects_the_link(self) -> None:
        """A send batch the logic node does not answer within remote_timeout closes that connection; the link
        reconnects and the same batch runs again there."""
        client, reactor, endpoint, realm = self.client()
        realm.hang_sends = 1  # the first avatar never answers a send
        client.start()
        endpoint.flush()
        d = client.send(request(1), conn=A)
        self.run_for(reactor, endpoint, REMOTE_TIMEOUT - 0.5)
        self.assertNoResult(d)
        self.assertEqual(len(realm.avatars), 1)
        self.run_for(reactor, endpoint, 1)
        # dropped; reconnected (the only node), the batch ran again there and was answered
        self.assertEqual(len(realm.avatars), 2)
        self.assertEqual(endpoint.open_connections(), 1)
        self.assertEqual([a.sends for a in realm.avatars], [realm.avatars[1].sends] * 2)
        self.assertEqual(self.successResultOf(d), SendResult(0, 1001, 1))

    def test_other_calls_without_an_answer_fail_within_call_timeout(self) -> None:
        """A sign-in the logic node does not answer fails with NoLogicNode within call_timeout (the client is
        answered before its own sign-in deadline); the link is kept."""
        client, reactor, endpoint, realm = self.client()
        client.start()
        endpoint.flush()
        d = Deferred.fromCoroutine(client.sign_in(device_id=10, user_id=1, token="hang", conn=A))
        self.run_for(reactor, endpoint, CALL_TIMEOUT + 0.2)
        self.failureResultOf(d, NoLogicNode)
        self.assertEqual(len(realm.avatars), 1)
        served = Deferred.fromCoroutine(client.sign_in(device_id=10, user_id=1, token="t", conn=A))
        endpoint.flush()
        self.assertEqual(self.successResultOf(served), SignInResult(True, "served c7", 3))
