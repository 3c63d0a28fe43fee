"""Tests for goim.protocols.connection over StringTransport, a Clock and a fake LogicPort."""

from __future__ import annotations

import sys
from typing import Any, Sequence, TypeVar, cast

from hypothesis import given, settings, strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from goim.ports import DeliveryPort, LogicPort
from goim.protocols import codec
from goim.connect.table import ConnectionTable
from goim.protocols.connection import COALESCE_LIMIT, ClientConnection, ClientConnectionFactory
from goim.protocols.framing import Frame, encode_frame
from goim.types import SendRequest, SendResult, SignInResult, copies_of
from tests.protocols.fakes import (
    FakeLogic,
    FlowControlTransport,
    RecordingClient,
    frame,
    frames_of,
    make_message,
    push,
)
from tests.protocols.test_codec import (
    HEARTBEAT_HEX,
    MESSAGE_SEND_HEX,
    SIGN_IN_HEX,
    SYNC_TRIGGER_HEX,
)

F = TypeVar("F", bound=codec.WireFrame)

PEER = IPv4Address("TCP", "10.0.0.7", 40000)
PEER_TEXT = "10.0.0.7:40000"


def sign_in(device_id: int = 1, user_id: int = 2, token: str = "t", max_frame: int = 0) -> bytes:
    return codec.SignIn(device_id=device_id, user_id=user_id, token=token, max_frame=max_frame).to_frame()


def sync_trigger(seq: int) -> bytes:
    return codec.SyncTrigger(sync_sequence=seq).to_frame()


def message_send(send_sequence: int, content: str = "hi") -> bytes:
    return codec.MessageSend(
        receiver_type=1, receiver_id=7, type=1, content=content, send_sequence=send_sequence
    ).to_frame()


def message_ack(seq: int) -> bytes:
    return codec.MessageAck(sync_sequence=seq).to_frame()


def heartbeat() -> bytes:
    return frame(codec.HEARTBEAT)


def parse(frame_class: type[F], value: bytes) -> F:
    """A frame value decoded as the codec's typed ``frame_class``."""
    return frame_class.from_bytes(value)


class Conn:
    """One server-side connection under test: protocol, transport, clock, fake logic."""

    def __init__(
        self,
        *,
        logic: FakeLogic | None = None,
        clock: Clock | None = None,
        table: ConnectionTable | None = None,
        transport: StringTransport | None = None,
        factory: ClientConnectionFactory | None = None,
        **settings: Any,
    ) -> None:
        self.clock = clock if clock is not None else Clock()
        self.logic = logic if logic is not None else FakeLogic()
        if factory is not None:
            self.logic = cast(FakeLogic, factory.logic)
            self.clock = cast(Clock, factory.clock)
        self.factory = factory or ClientConnectionFactory(
            logic=self.logic, clock=self.clock, table=table if table is not None else ConnectionTable(), **settings
        )
        self.table = self.factory.table
        self.proto = self.factory.buildProtocol(None)
        self.transport = transport if transport is not None else StringTransport(peerAddress=PEER)
        if transport is not None:
            transport.peerAddr = PEER
        self.proto.makeConnection(self.transport)

    def feed(self, *chunks: bytes) -> None:
        self.proto.dataReceived(b"".join(chunks))

    def take(self) -> list[Frame]:
        """Frames written since the last take (the end of the reactor turn flushes them)."""
        self.clock.advance(0)
        frames = frames_of(self.transport.value())
        self.transport.clear()
        return frames

    def signed_in(self, device_id: int = 1, user_id: int = 2, max_frame: int = 0) -> ClientConnection:
        """Sign in and clear the SignInACK."""
        self.feed(sign_in(device_id, user_id, max_frame=max_frame))
        if not self.logic.sign_ins[-1].deferred.called:
            self.logic.sign_ins[-1].deferred.callback(SignInResult(ok=True))
        frames = self.take()
        assert [f.type for f in frames] == [codec.SIGN_IN_ACK], frames
        return self.proto

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def lose(self) -> None:
        self.proto.connectionLost()


def capture_logs(test: SynchronousTestCase) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    test.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


def log_texts(events: list[dict[str, Any]]) -> list[str]:
    return [formatEvent(e) for e in events]


def sync_messages(frames: list[Frame]) -> tuple[list[codec.MessageItem], list[bool]]:
    items: list[codec.MessageItem] = []
    mores: list[bool] = []
    for f in frames:
        assert f.type == codec.MESSAGE
        message = parse(codec.Message, f.value)
        assert message.type == codec.MESSAGE_SYNC
        items.extend(message.messages)
        mores.append(message.more)
    return items, mores


class SignInTests(SynchronousTestCase):
    def test_success(self) -> None:
        """A good SignIn gets SignInACK code 1 only after logic answers, and registers."""
        conn = Conn()
        conn.feed(sign_in(device_id=3, user_id=4, token="secret"))
        self.assertEqual(conn.logic.sign_ins[0].args, dict(device_id=3, user_id=4, token="secret"))
        self.assertEqual(conn.transport.value(), b"")
        conn.logic.sign_ins[0].deferred.callback(SignInResult(ok=True))
        [ack] = conn.take()
        self.assertEqual(ack.type, codec.SIGN_IN_ACK)
        self.assertEqual(parse(codec.SignInAck, ack.value).code, codec.SIGN_IN_OK)
        self.assertIs(conn.table.get(3), conn.proto)
        self.assertEqual((conn.proto.device_id, conn.proto.user_id), (3, 4))
        # Only the idle timer remains; the sign-in timer was cancelled.
        calls: Sequence[Any] = conn.clock.getDelayedCalls()
        self.assertEqual([c.getTime() for c in calls], [600.0])

    def test_refused(self) -> None:
        """A refused sign-in gets SignInACK code 2 with the message, then the connection closes."""
        conn = Conn()
        conn.feed(sign_in())
        conn.logic.sign_ins[0].deferred.callback(SignInResult(ok=False, message="bad token"))
        [ack] = conn.take()
        self.assertEqual(
            (parse(codec.SignInAck, ack.value).code, parse(codec.SignInAck, ack.value).message),
            (codec.SIGN_IN_FAILED, "bad token"),
        )
        self.assertTrue(conn.closed)
        self.assertEqual(len(conn.table), 0)

    def test_logic_raises(self) -> None:
        """A sign-in that raises in logic is logged and answered with code 2, then closed."""
        conn = Conn()
        conn.feed(sign_in())
        conn.logic.sign_ins[0].deferred.errback(RuntimeError("db down"))
        [ack] = conn.take()
        self.assertEqual(parse(codec.SignInAck, ack.value).code, codec.SIGN_IN_FAILED)
        self.assertTrue(conn.closed)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_invalid_ids_refused(self) -> None:
        """device_id or user_id 0 is refused without asking logic."""
        conn = Conn()
        conn.feed(sign_in(device_id=0, user_id=2))
        self.assertEqual(conn.logic.sign_ins, [])
        [ack] = conn.take()
        self.assertEqual(parse(codec.SignInAck, ack.value).code, codec.SIGN_IN_FAILED)
        self.assertTrue(conn.closed)

    def test_other_frame_before_sign_in_closes(self) -> None:
        """Any frame but SignIn before sign-in closes the connection."""
        for first in (heartbeat(), sync_trigger(0), message_send(1), frame(77)):
            conn = Conn()
            conn.feed(first, sign_in())
            self.assertTrue(conn.closed)
            self.assertEqual(conn.logic.sign_ins, [])

    def test_frames_while_sign_in_pending_then_refused(self) -> None:
        """Frames behind a SignIn that is then refused are never handled."""
        conn = Conn()
        conn.feed(sign_in(), sync_trigger(0), message_send(1))
        conn.logic.sign_ins[0].deferred.callback(SignInResult(ok=False))
        self.assertEqual(conn.logic.order, ["sign_in"])
        self.assertTrue(conn.closed)

    def test_signin_timeout(self) -> None:
        """A connection not signed in within signin_timeout is closed."""
        conn = Conn(signin_timeout=10)
        conn.clock.advance(9.9)
        self.assertFalse(conn.closed)
        conn.clock.advance(0.1)
        self.assertTrue(conn.closed)

    def test_signin_timeout_while_pending(self) -> None:
        """The timeout also fires while logic is slow; a late success is undone with offline."""
        conn = Conn(signin_timeout=10)
        conn.feed(sign_in(device_id=5, user_id=6))
        conn.clock.advance(10)
        self.assertTrue(conn.closed)
        conn.lose()
        conn.logic.sign_ins[0].deferred.callback(SignInResult(ok=True))
        self.assertEqual(conn.transport.value(), b"")
        self.assertEqual(len(conn.table), 0)
        self.assertEqual(conn.logic.offlines, [dict(device_id=5, user_id=6)])

    def test_repeated_sign_in_ignored(self) -> None:
        """A second SignIn on a signed-in connection is ignored."""
        conn = Conn()
        conn.signed_in()
        conn.feed(sign_in(device_id=9, user_id=9), heartbeat())
        self.assertEqual(len(conn.logic.sign_ins), 1)
        self.assertEqual([f.type for f in conn.take()], [codec.HEARTBEAT_ACK])
        self.assertEqual(conn.proto.device_id, 1)


class OrderingTests(SynchronousTestCase):
    def test_chunk_waits_for_sign_in(self) -> None:
        """SignIn + SyncTrigger + MessageSend in one chunk: the rest waits for sign-in,
        then is handled in order with the connection's identity."""
        conn = Conn()
        conn.feed(sign_in(device_id=1, user_id=2), sync_trigger(5), message_send(1))
        self.assertEqual(conn.logic.order, ["sign_in"])
        self.assertEqual(conn.transport.producerState, "paused")
        conn.logic.sign_ins[0].deferred.callback(SignInResult(ok=True))
        self.assertEqual(conn.logic.order, ["sign_in", "sync_page 5", "send 1"])
        self.assertEqual(conn.transport.producerState, "producing")
        request = conn.logic.sends[0].args["request"]
        self.assertEqual((request.device_id, request.user_id, request.content), (1, 2, "hi"))
        self.assertEqual([f.type for f in conn.take()], [codec.SIGN_IN_ACK])

    def test_goim11_byte_stream(self) -> None:
        """The exact bytes a goim 1.1 client writes are understood and answered in order."""
        conn = Conn(logic=FakeLogic(auto_sign_in=True, auto_send=True, auto_sync=True))
        conn.logic.store(2, 7)
        data = bytes.fromhex(SIGN_IN_HEX + SYNC_TRIGGER_HEX + HEARTBEAT_HEX + MESSAGE_SEND_HEX)
        conn.feed(data)
        frames = conn.take()
        self.assertEqual(
            [f.type for f in frames],
            [codec.SIGN_IN_ACK, codec.MESSAGE, codec.HEARTBEAT_ACK, codec.MESSAGE_SEND_ACK],
        )
        self.assertEqual(conn.logic.sign_ins[0].args, dict(device_id=1, user_id=2, token="t"))
        items, mores = sync_messages([frames[1]])
        self.assertEqual([i.sync_sequence for i in items], [6, 7])
        self.assertEqual(mores, [False])
        ack = parse(codec.MessageSendAck, frames[3].value)
        self.assertEqual(
            (ack.send_sequence, ack.code, ack.message_id, ack.sync_sequence), (1, 0, 1001, 1)
        )

    def test_byte_at_a_time(self) -> None:
        """The goim 1.1 stream fed one byte at a time gives the same answers."""
        conn = Conn(logic=FakeLogic(auto_sign_in=True, auto_send=True, auto_sync=True))
        data = bytes.fromhex(SIGN_IN_HEX + SYNC_TRIGGER_HEX + HEARTBEAT_HEX + MESSAGE_SEND_HEX)
        for i in range(len(data)):
            conn.feed(data[i : i + 1])
        self.assertEqual(
            [f.type for f in conn.take()],
            [codec.SIGN_IN_ACK, codec.MESSAGE, codec.HEARTBEAT_ACK, codec.MESSAGE_SEND_ACK],
        )


class TimerTests(SynchronousTestCase):
    def test_idle_timeout_reset_by_frames(self) -> None:
        """A signed-in connection is closed after idle_timeout of silence; any frame resets it."""
        conn = Conn(idle_timeout=600)
        conn.signed_in()
        conn.clock.advance(599)
        conn.feed(heartbeat())
        conn.clock.advance(599)
        self.assertFalse(conn.closed)
        conn.feed(frame(77))  # even an unknown code counts
        conn.clock.advance(599)
        self.assertFalse(conn.closed)
        conn.clock.advance(1)
        self.assertTrue(conn.closed)

    def test_heartbeat_ack(self) -> None:
        """Heartbeat (4) is answered with an empty heartbeat ack (5)."""
        conn = Conn()
        conn.signed_in()
        conn.feed(heartbeat(), heartbeat())
        self.assertEqual(conn.take(), [Frame(codec.HEARTBEAT_ACK, b"")] * 2)

    def test_no_timers_after_loss(self) -> None:
        """connectionLost cancels every timer."""
        conn = Conn()
        conn.signed_in()
        conn.lose()
        self.assertEqual(conn.clock.getDelayedCalls(), [])

    def test_close_aborts_after_close_timeout(self) -> None:
        """A close that has not completed within close_timeout aborts the connection."""
        conn = Conn(close_timeout=30)
        conn.proto.kick("bye")
        self.assertTrue(conn.closed)
        conn.clock.advance(30)
        self.assertTrue(conn.transport.disconnected)


class KickTests(SynchronousTestCase):
    def test_same_device_twice(self) -> None:
        """A second sign-in of the same device kicks the first with code 10 and closes it."""
        table = ConnectionTable()
        clock = Clock()
        first = Conn(table=table, clock=clock)
        first.signed_in(device_id=1, user_id=2)
        second = Conn(table=table, clock=clock, logic=first.logic)
        second.signed_in(device_id=1, user_id=2)
        [kicked] = first.take()
        self.assertEqual(kicked.type, codec.KICKED)
        self.assertEqual(parse(codec.Kicked, kicked.value).reason, "signed in elsewhere")
        self.assertTrue(first.closed)
        self.assertIsNone(first.transport.producer)  # else TCP would not finish the close
        self.assertFalse(second.closed)
        self.assertIs(table.get(1), second.proto)
        first.lose()
        self.assertIs(table.get(1), second.proto)
        self.assertEqual(table.connections_of(2), [second.proto])
        self.assertEqual(first.logic.offlines, [])
        second.lose()
        self.assertEqual(len(table), 0)
        self.assertEqual(first.logic.offlines, [dict(device_id=1, user_id=2)])

    def test_kick_by_table(self) -> None:
        """ConnectionTable.kick writes Kicked{reason} then closes; unknown devices are False."""
        conn = Conn()
        conn.signed_in(device_id=8)
        self.assertFalse(conn.table.kick(9, "nope"))
        self.assertTrue(conn.table.kick(8, "token revoked"))
        [kicked] = conn.take()
        self.assertEqual(parse(codec.Kicked, kicked.value).reason, "token revoked")
        self.assertTrue(conn.closed)
        conn.feed(heartbeat())
        self.assertEqual(conn.take(), [])

    def test_close_all(self) -> None:
        """close_all kicks every connection and fires once all are lost."""
        table = ConnectionTable()
        conns = [Conn(table=table) for _ in range(3)]
        for i, conn in enumerate(conns):
            conn.signed_in(device_id=i + 1, user_id=i + 1)
        done = table.close_all()
        self.assertNoResult(done)
        for conn in conns:
            [kicked] = conn.take()
            self.assertEqual(parse(codec.Kicked, kicked.value).reason, "server shutting down")
            conn.lose()
        self.successResultOf(done)
        self.assertEqual(len(table), 0)


class SendTests(SynchronousTestCase):
    def test_ack_fields(self) -> None:
        """MessageSendACK echoes send_sequence and carries code, message_id and the seq."""
        conn = Conn()
        conn.signed_in()
        conn.feed(message_send(42))
        conn.logic.sends[0].deferred.callback(SendResult(code=0, message_id=777, seq=12))
        [ack_frame] = conn.take()
        ack = parse(codec.MessageSendAck, ack_frame.value)
        self.assertEqual(
            (ack.send_sequence, ack.code, ack.message_id, ack.sync_sequence), (42, 0, 777, 12)
        )

    def test_pipelined(self) -> None:
        """Sends are dispatched without waiting for earlier ones; ACKs follow completion."""
        conn = Conn()
        conn.signed_in()
        conn.feed(message_send(1), message_send(2), message_send(3))
        self.assertEqual(conn.logic.order[-3:], ["send 1", "send 2", "send 3"])
        conn.logic.sends[1].deferred.callback(SendResult(code=2))
        conn.logic.sends[0].deferred.callback(SendResult(code=0, message_id=5, seq=1))
        acks = [parse(codec.MessageSendAck, f.value) for f in conn.take()]
        self.assertEqual([(a.send_sequence, a.code) for a in acks], [(2, 2), (1, 0)])

    def test_logic_raises_gives_code_1(self) -> None:
        """A send that raises in logic is logged and ACKed with code 1 (internal error)."""
        conn = Conn()
        conn.signed_in()
        conn.feed(message_send(9))
        conn.logic.sends[0].deferred.errback(RuntimeError("boom"))
        ack = parse(codec.MessageSendAck, conn.take()[0].value)
        self.assertEqual((ack.send_sequence, ack.code), (9, 1))
        self.assertFalse(conn.closed)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_logic_raising_at_once_gives_code_1_and_frees_its_place(self) -> None:
        """A logic whose send raises instead of returning a Deferred: code 1, and the send no longer counts as in flight."""

        class Raising(FakeLogic):
            def send(self, request: SendRequest, *, conn: str = "") -> "Deferred[SendResult]":
                raise RuntimeError("boom")

        conn = Conn(logic=Raising(), max_in_flight=1)
        conn.signed_in()
        conn.feed(message_send(1), message_send(2))
        acks = [parse(codec.MessageSendAck, f.value) for f in conn.take()]
        self.assertEqual([(a.send_sequence, a.code) for a in acks], [(1, 1), (2, 1)])
        self.assertEqual(conn.transport.producerState, "producing")
        self.assertFalse(conn.closed)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_in_flight_limit_pauses_reading(self) -> None:
        """At max_in_flight pending sends reading pauses; it resumes when one completes."""
        conn = Conn(max_in_flight=2)
        conn.signed_in()
        conn.feed(message_send(1), message_send(2), message_send(3), heartbeat())
        self.assertEqual(len(conn.logic.sends), 2)
        self.assertEqual(conn.transport.producerState, "paused")
        self.assertEqual(conn.take(), [])
        conn.logic.sends[0].deferred.callback(SendResult(code=0))
        self.assertEqual(len(conn.logic.sends), 3)
        self.assertEqual(conn.transport.producerState, "paused")
        self.assertEqual([f.type for f in conn.take()], [codec.MESSAGE_SEND_ACK])
        conn.logic.sends[1].deferred.callback(SendResult(code=0))
        self.assertEqual(conn.transport.producerState, "producing")
        self.assertEqual(
            [f.type for f in conn.take()], [codec.MESSAGE_SEND_ACK, codec.HEARTBEAT_ACK]
        )
        conn.logic.sends[2].deferred.callback(SendResult(code=0))
        self.assertEqual(conn.proto.in_flight, 0)

    def test_completion_after_loss_writes_nothing(self) -> None:
        """A send completing after the connection was lost writes no ACK."""
        conn = Conn()
        conn.signed_in()
        conn.feed(message_send(1))
        conn.lose()
        conn.logic.sends[0].deferred.callback(SendResult(code=0))
        self.assertEqual(conn.transport.value(), b"")
        self.assertEqual(conn.proto.in_flight, 0)


class AckTests(SynchronousTestCase):
    def test_message_ack(self) -> None:
        """MessageACK calls logic.ack; acked_seq is the max of acks and SyncTrigger values."""
        conn = Conn(logic=FakeLogic(auto_sync=True))
        conn.signed_in(device_id=1, user_id=2)
        conn.feed(message_ack(10))
        self.assertEqual(conn.logic.acks, [dict(device_id=1, user_id=2, seq=10)])
        conn.feed(sync_trigger(5))
        self.assertEqual(conn.proto.acked_seq, 10)
        conn.feed(sync_trigger(15))
        self.assertEqual(conn.proto.acked_seq, 15)

    def test_catch_up(self) -> None:
        """catch_up syncs from the highest acknowledged seq."""
        conn = Conn(logic=FakeLogic(auto_sync=True))
        conn.signed_in(user_id=2)
        conn.logic.store(2, 12)
        conn.feed(message_ack(10))
        conn.take()
        conn.proto.catch_up()
        items, mores = sync_messages(conn.take())
        self.assertEqual([i.sync_sequence for i in items], [11, 12])
        self.assertEqual(mores, [False])

    def test_catch_up_before_sign_in_does_nothing(self) -> None:
        """catch_up and push before sign-in write nothing and call nothing."""
        conn = Conn()
        conn.proto.catch_up()
        push(conn.proto, [make_message(2, 1)])
        self.assertEqual((conn.logic.order, conn.transport.value()), ([], b""))


class SyncTests(SynchronousTestCase):
    def test_empty_sync(self) -> None:
        """An empty sync is one Message frame with no messages and more=False."""
        conn = Conn(logic=FakeLogic(auto_sync=True))
        conn.signed_in()
        conn.feed(sync_trigger(0))
        [f] = conn.take()
        message = parse(codec.Message, f.value)
        self.assertEqual((message.type, len(message.messages), message.more), (1, 0, False))

    def test_pages_and_default_cap(self) -> None:
        """A 1,000-message sync fetches pages of 200 and writes frames within 4,092 bytes,
        more on all but the last."""
        conn = Conn(logic=FakeLogic(auto_sync=True))
        conn.signed_in(user_id=2)
        conn.logic.store(2, 1000, content="z" * 100)
        conn.feed(sync_trigger(0))
        frames = conn.take()
        self.assertTrue(all(len(f.value) <= 4092 for f in frames))
        items, mores = sync_messages(frames)
        self.assertEqual([i.sync_sequence for i in items], list(range(1, 1001)))
        self.assertEqual(mores, [True] * (len(frames) - 1) + [False])
        self.assertEqual(
            [c.args["after_seq"] for c in conn.logic.sync_pages], [0, 200, 400, 600, 800]
        )
        self.assertEqual({c.args["limit"] for c in conn.logic.sync_pages}, {200})

    def test_larger_max_frame(self) -> None:
        """An announced max_frame lets frames grow past 4,092 bytes up to it."""
        conn = Conn(logic=FakeLogic(auto_sync=True))
        conn.signed_in(user_id=2, max_frame=20_000)
        conn.logic.store(2, 300, content="z" * 100)
        conn.feed(sync_trigger(0))
        sizes = [len(f.value) for f in conn.take()]
        self.assertTrue(all(size <= 20_000 for size in sizes))
        self.assertGreater(max(sizes), 4092)

    def test_tiny_max_frame_clamped(self) -> None:
        """A tiny announced max_frame is raised to 512 bytes."""
        conn = Conn(logic=FakeLogic(auto_sync=True))
        conn.signed_in(user_id=2, max_frame=50)
        self.assertEqual(conn.proto.cap, 512)
        conn.logic.store(2, 20, content="z" * 100)
        conn.feed(sync_trigger(0))
        frames = conn.take()
        self.assertTrue(all(len(f.value) <= 512 for f in frames))
        self.assertEqual(len(sync_messages(frames)[0]), 20)

    def test_oversize_item_sent_alone_with_warning(self) -> None:
        """A message that cannot fit the cap alone is sent in its own frame, with a warning."""
        events = capture_logs(self)
        conn = Conn(logic=FakeLogic(auto_sync=True))
        conn.signed_in(user_id=2)
        conn.logic.messages[2] = [
            make_message(2, 1),
            make_message(2, 2, content="w" * 5000),
            make_message(2, 3),
        ]
        conn.feed(sync_trigger(0))
        frames = conn.take()
        items, mores = sync_messages(frames)
        self.assertEqual([i.sync_sequence for i in items], [1, 2, 3])
        self.assertEqual([len(parse(codec.Message, f.value).messages) for f in frames], [1, 1, 1])
        self.assertEqual(mores, [True, True, False])
        texts = log_texts(events)
        self.assertTrue(any("over the frame cap" in t and PEER_TEXT in t for t in texts))

    def test_backpressure_stops_fetching(self) -> None:
        """While the transport has paused the producer no page is fetched; resuming continues."""
        transport = FlowControlTransport(high_water=10_000)
        conn = Conn(logic=FakeLogic(auto_sync=True), transport=transport)
        conn.signed_in(user_id=2)
        conn.logic.store(2, 1000, content="z" * 100)
        transport.writes = 0
        conn.feed(sync_trigger(0))
        self.assertEqual(len(conn.logic.sync_pages), 1)
        self.assertTrue(conn.proto.producer.paused)
        received = transport.drain()
        self.assertEqual(len(conn.logic.sync_pages), 2)
        self.assertEqual(transport.writes, 2)  # one write per page (over COALESCE_LIMIT: at once)
        while conn.proto.syncing:
            received += transport.drain()
        received += transport.value()
        self.assertEqual(len(conn.logic.sync_pages), 5)
        items, mores = sync_messages(frames_of(received))
        self.assertEqual([i.sync_sequence for i in items], list(range(1, 1001)))
        self.assertEqual(mores[-1], False)
        self.assertTrue(all(mores[:-1]))

    def test_triggers_coalesce(self) -> None:
        """SyncTriggers arriving during a sync are coalesced into one run with the latest value."""
        conn = Conn()
        conn.signed_in(user_id=2)
        conn.feed(sync_trigger(0), sync_trigger(3), sync_trigger(7))
        self.assertEqual(len(conn.logic.sync_pages), 1)
        conn.logic.answer_sync()
        self.assertEqual([c.args["after_seq"] for c in conn.logic.sync_pages], [0, 7])
        conn.logic.answer_sync()
        self.assertFalse(conn.proto.syncing)
        self.assertEqual(len(conn.take()), 2)

    def test_lost_during_fetch_stops(self) -> None:
        """Connection lost while a page is being fetched: nothing written, no further page."""
        conn = Conn()
        conn.signed_in(user_id=2)
        conn.logic.store(2, 500)
        conn.feed(sync_trigger(0))
        conn.lose()
        conn.logic.answer_sync()
        self.assertEqual(conn.transport.value(), b"")
        self.assertEqual(len(conn.logic.sync_pages), 1)
        self.assertFalse(conn.proto.syncing)

    def test_lost_while_paused_stops(self) -> None:
        """Connection lost while the sync waits on a paused producer ends the sync."""
        transport = FlowControlTransport(high_water=1000)
        conn = Conn(logic=FakeLogic(auto_sync=True), transport=transport)
        conn.signed_in(user_id=2)
        conn.logic.store(2, 1000)
        conn.feed(sync_trigger(0))
        self.assertTrue(conn.proto.syncing)
        conn.lose()
        self.assertFalse(conn.proto.syncing)
        self.assertEqual(len(conn.logic.sync_pages), 1)

    def test_sync_failure_closes(self) -> None:
        """A failing sync_page is logged and closes the connection (the client will resync)."""
        conn = Conn()
        conn.signed_in()
        conn.feed(sync_trigger(0))
        conn.logic.sync_pages[0].deferred.errback(RuntimeError("db gone"))
        self.assertTrue(conn.closed)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class NoDelayTransport(FlowControlTransport):
    """A transport with ITCPTransport's TCP_NODELAY switch."""

    nodelay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled


class WriteCoalescingTests(SynchronousTestCase):
    """TCP_NODELAY on, and one write per connection per reactor turn."""

    def test_nodelay_set_when_connected(self) -> None:
        """A TCP connection gets TCP_NODELAY as soon as it is made."""
        transport = NoDelayTransport(high_water=65536)
        Conn(transport=transport)
        self.assertTrue(transport.nodelay)

    def test_transport_without_the_option(self) -> None:
        """A transport without setTcpNoDelay (a pipe, a test transport) is left alone."""
        conn = Conn()
        self.assertFalse(conn.closed)

    def test_frames_of_one_turn_leave_in_one_write(self) -> None:
        """Send ACKs, heartbeat replies and pushes of one turn are written once, at its end, in order."""
        transport = NoDelayTransport(high_water=65536)
        conn = Conn(transport=transport)
        conn.signed_in(user_id=2)
        transport.writes = 0
        conn.feed(heartbeat(), message_send(1, "a"), heartbeat())
        conn.logic.sends[0].deferred.callback(SendResult(code=0, message_id=7, seq=1))
        push(conn.proto, [make_message(2, 1)])
        self.assertEqual((transport.writes, transport.value()), (0, b""), "nothing before the turn ends")
        conn.clock.advance(0)
        self.assertEqual(transport.writes, 1)
        self.assertEqual(
            [f.type for f in conn.take()],
            [codec.HEARTBEAT_ACK, codec.HEARTBEAT_ACK, codec.MESSAGE_SEND_ACK, codec.MESSAGE],
        )
        self.assertEqual(conn.clock.getDelayedCalls()[0].getTime(), 600.0, "only the idle timer is left")
        self.assertEqual(len(conn.clock.getDelayedCalls()), 1)

    def test_a_send_keeps_the_client_bytes(self) -> None:
        """The request handed to logic keeps the MessageSend value the client wrote (a connect node forwards it)."""
        conn = Conn()
        conn.signed_in(user_id=2)
        frame = message_send(1, "a")
        conn.feed(frame)
        self.assertEqual(conn.logic.sends[0].args["request"].frame, frame[4:])

    def test_connections_of_one_turn_share_one_timer(self) -> None:
        """Connections that queue output in the same turn are flushed together by one timer at its end."""
        first = Conn()
        second = Conn(factory=first.factory)
        for conn, device in ((first, 1), (second, 3)):
            conn.signed_in(device_id=device, user_id=2)
        timers = len(first.clock.getDelayedCalls())
        first.feed(heartbeat())
        second.feed(heartbeat())
        self.assertEqual(len(first.clock.getDelayedCalls()), timers + 1)
        self.assertEqual((first.transport.value(), second.transport.value()), (b"", b""))
        first.clock.advance(0)
        for conn in (first, second):
            self.assertEqual(conn.transport.value(), encode_frame(codec.HEARTBEAT_ACK, b""))

    def test_bytes_are_those_of_frame_by_frame_writes(self) -> None:
        """Coalescing changes the writes, not the bytes: the stream equals the frames concatenated."""
        conn = Conn()
        conn.signed_in(user_id=2)
        conn.feed(heartbeat() * 3)
        conn.clock.advance(0)
        self.assertEqual(conn.transport.value(), encode_frame(codec.HEARTBEAT_ACK, b"") * 3)

    def test_limit_writes_at_once(self) -> None:
        """Once COALESCE_LIMIT bytes are queued they are written without waiting for the turn to end."""
        conn = Conn(rate_burst=10_000)
        conn.signed_in(user_id=2)
        conn.feed(heartbeat() * (COALESCE_LIMIT // 4 + 1))
        self.assertEqual(len(conn.transport.value()), COALESCE_LIMIT)
        conn.clock.advance(0)
        self.assertEqual(len(conn.transport.value()), COALESCE_LIMIT + 4)

    def test_queued_frame_written_before_close(self) -> None:
        """A Kicked frame queued in this turn is written before the transport is told to close."""
        conn = Conn()
        conn.signed_in(user_id=2)
        conn.proto.kick("bye")
        self.assertTrue(conn.closed)
        self.assertEqual([f.type for f in frames_of(conn.transport.value())], [codec.KICKED])

    def test_lost_drops_queued_output(self) -> None:
        """Output queued when the connection is lost is dropped: neither the end of the turn nor a flush writes it."""
        transport = NoDelayTransport(high_water=65536)
        conn = Conn(transport=transport)
        conn.signed_in(user_id=2)
        transport.writes = 0
        conn.feed(heartbeat())
        conn.lose()
        conn.clock.advance(0)
        conn.proto.flush()
        self.assertEqual(transport.writes, 0)


class PushTests(SynchronousTestCase):
    def test_push(self) -> None:
        """push writes type-2 Message frames, packed to the cap, more=False."""
        conn = Conn()
        conn.signed_in(user_id=2)
        push(conn.proto, [make_message(2, seq, content="p" * 1000) for seq in range(1, 10)])
        frames = conn.take()
        self.assertGreater(len(frames), 1)
        seqs: list[int] = []
        for f in frames:
            message = parse(codec.Message, f.value)
            self.assertEqual((message.type, message.more), (codec.MESSAGE_PUSH, False))
            self.assertLessEqual(len(f.value), 4092)
            seqs.extend(i.sync_sequence for i in message.messages)
        self.assertEqual(seqs, list(range(1, 10)))

    def test_pushes_wait_for_a_slow_reader(self) -> None:
        """While the transport is paused pushes are skipped; on resume a sync from below the first skipped one runs."""
        conn = Conn(transport=FlowControlTransport(high_water=10**9))
        conn.signed_in(user_id=2)
        push(conn.proto, [make_message(2, 1)])
        self.assertEqual(len(conn.take()), 1)
        conn.proto.producer.pauseProducing()
        push(conn.proto, [make_message(2, 2), make_message(2, 3)])
        push(conn.proto, [make_message(2, 4)])
        self.assertEqual(conn.take(), [], "nothing is buffered for a client that does not read")
        self.assertEqual(conn.logic.sync_pages, [])
        conn.proto.producer.resumeProducing()
        self.assertEqual([c.args["after_seq"] for c in conn.logic.sync_pages], [1])

    def test_table_deliver(self) -> None:
        """deliver pushes each message to every connection of its user, and only theirs."""
        table = ConnectionTable()
        a1 = Conn(table=table)
        a1.signed_in(device_id=1, user_id=2)
        a2 = Conn(table=table)
        a2.signed_in(device_id=2, user_id=2)
        b = Conn(table=table)
        b.signed_in(device_id=3, user_id=3)
        port: DeliveryPort = table
        port.deliver(copies_of([make_message(2, 1), make_message(3, 1), make_message(2, 2)]))
        for conn, expected in ((a1, [1, 2]), (a2, [1, 2]), (b, [1])):
            [f] = conn.take()
            seqs = [i.sync_sequence for i in parse(codec.Message, f.value).messages]
            self.assertEqual(seqs, expected)
        self.assertEqual(len(table), 3)
        self.assertEqual({c.device_id for c in table.connections_of(2)}, {1, 2})


class ConnectionIdentityTests(SynchronousTestCase):
    """Connection ids, out-of-order sign-ins of one device, kicks by id, unknown send outcomes."""

    def test_ids_are_unique_and_carried_on_every_call(self) -> None:
        """Each connection gets node/boot/serial; sign-in, send, sync, ack and offline all carry it."""
        factory = ClientConnectionFactory(logic=FakeLogic(auto_send=True, auto_sync=True), clock=Clock(), table=ConnectionTable(), node_id="c1")
        first = Conn(factory=factory)
        second = Conn(factory=factory)
        self.assertEqual(first.proto.conn_id, f"c1/{factory.boot}/1")
        self.assertEqual(second.proto.conn_id, f"c1/{factory.boot}/2")
        self.assertNotEqual(factory.boot, ClientConnectionFactory(logic=FakeLogic(), clock=Clock(), table=ConnectionTable(), node_id="c1").boot)
        first.signed_in()
        first.feed(message_send(1), sync_trigger(0), message_ack(1))
        first.lose()
        self.assertEqual(
            first.logic.conns,
            [(m, first.proto.conn_id) for m in ("sign_in", "send", "sync_page", "ack", "offline")],
        )

    def test_older_connection_finishing_sign_in_late_is_refused(self) -> None:
        """Of two connections of one device, the older one's late sign-in is refused; the newer stays."""
        table = ConnectionTable()
        logic = FakeLogic()
        factory = ClientConnectionFactory(logic=logic, clock=Clock(), table=table)
        old = Conn(factory=factory)
        new = Conn(factory=factory)
        old.feed(sign_in(device_id=1, user_id=2))
        new.feed(sign_in(device_id=1, user_id=2))
        logic.sign_ins[1].deferred.callback(SignInResult(ok=True))
        logic.sign_ins[0].deferred.callback(SignInResult(ok=True))
        [ack] = old.take()
        self.assertEqual(parse(codec.SignInAck, ack.value).code, codec.SIGN_IN_FAILED)
        self.assertTrue(old.closed)
        self.assertIs(table.get(1), new.proto)
        self.assertFalse(new.closed)
        # the refused connection withdraws only its own presence
        self.assertIn(("offline", old.proto.conn_id), logic.conns)
        self.assertNotIn(("offline", new.proto.conn_id), logic.conns)

    def test_kick_by_connection_id_spares_a_newer_connection(self) -> None:
        """A kick naming an old connection of a device never closes its newer connection."""
        table = ConnectionTable()
        factory = ClientConnectionFactory(logic=FakeLogic(), clock=Clock(), table=table)
        old = Conn(factory=factory)
        old.signed_in(device_id=1)
        new = Conn(factory=factory)
        new.signed_in(device_id=1)
        self.assertTrue(old.closed, "the newer connection replaced the older one")
        self.assertFalse(table.kick_connection(1, old.proto.conn_id, "signed in elsewhere"))
        self.assertFalse(new.closed)
        self.assertTrue(table.kick_connection(1, new.proto.conn_id, "signed in elsewhere"))
        self.assertTrue(new.closed)
        self.assertEqual([f.type for f in new.take()], [codec.KICKED])

    def test_kick_that_arrives_before_sign_in_finishes_is_applied(self) -> None:
        """A kick for a connection whose sign-in answer is still on its way closes it once it registers."""
        table = ConnectionTable()
        logic = FakeLogic()
        conn = Conn(factory=ClientConnectionFactory(logic=logic, clock=Clock(), table=table))
        conn.feed(sign_in(device_id=1, user_id=2))
        self.assertFalse(table.kick_connection(1, conn.proto.conn_id, "signed in elsewhere"))
        logic.sign_ins[0].deferred.callback(SignInResult(ok=True))
        self.assertEqual([f.type for f in conn.take()], [codec.SIGN_IN_ACK, codec.KICKED])
        self.assertTrue(conn.closed)

    def test_unknown_send_outcome_closes_without_ack(self) -> None:
        """A send whose outcome is unknown gets no ACK and closes the connection (the client resends in order)."""
        from goim.types import SendOutcomeUnknown

        conn = Conn()
        conn.signed_in()
        conn.feed(message_send(1), message_send(2))
        conn.logic.sends[0].deferred.errback(SendOutcomeUnknown("no answer"))
        self.assertTrue(conn.closed)
        conn.logic.sends[1].deferred.errback(SendOutcomeUnknown("no answer"))
        self.assertEqual(conn.take(), [])


class ErrorTests(SynchronousTestCase):
    def test_malformed_closes_and_logs_peer(self) -> None:
        """Malformed protobuf closes the connection and is logged with the peer address."""
        events = capture_logs(self)
        conn = Conn()
        conn.signed_in()
        conn.feed(frame(codec.MESSAGE_SEND, b"\x22\x09hi"), heartbeat())
        self.assertTrue(conn.closed)
        self.assertEqual(conn.logic.sends, [])
        self.assertEqual(conn.take(), [])
        self.assertTrue(any("malformed" in t and PEER_TEXT in t for t in log_texts(events)))

    def test_malformed_sign_in_closes(self) -> None:
        """A malformed SignIn closes without asking logic."""
        conn = Conn()
        conn.feed(frame(codec.SIGN_IN, b"\x1a\x02\xff\xfe"))
        self.assertTrue(conn.closed)
        self.assertEqual(conn.logic.sign_ins, [])

    def test_oversize_frame_closes(self) -> None:
        """A frame over MAX_LENGTH closes the connection."""
        events = capture_logs(self)
        conn = Conn(max_frame_length=4096)
        conn.signed_in()
        conn.feed(frame(codec.HEARTBEAT, b"x" * 4096), b"\x00\x06\x10\x01")
        self.assertTrue(conn.closed)
        self.assertEqual([f.type for f in conn.take()], [codec.HEARTBEAT_ACK])
        self.assertTrue(any("exceeds the limit" in t and PEER_TEXT in t for t in log_texts(events)))

    def test_unknown_codes_ignored(self) -> None:
        """Unknown codes and server->client codes from a client are ignored after sign-in."""
        conn = Conn()
        conn.signed_in()
        conn.feed(
            frame(77, b"whatever"),
            frame(codec.MESSAGE, b"\xff"),
            frame(codec.KICKED),
            heartbeat(),
        )
        self.assertFalse(conn.closed)
        self.assertEqual([f.type for f in conn.take()], [codec.HEARTBEAT_ACK])

    def test_flood_closes(self) -> None:
        """Frames past the token bucket's burst close the connection; a steady rate is fine."""
        conn = Conn(rate_limit=10, rate_burst=20)
        conn.signed_in()  # the SignIn took one token
        for _ in range(10):
            conn.clock.advance(0.1)
            conn.feed(heartbeat())
        self.assertFalse(conn.closed)
        conn.feed(heartbeat() * 30)
        self.assertTrue(conn.closed)
        self.assertEqual(len(conn.take()), 10 + 19)

    @settings(max_examples=300, deadline=None)
    @given(
        st.one_of(
            st.binary(max_size=300),
            st.lists(
                st.tuples(st.integers(0, 12), st.binary(max_size=40)), max_size=10
            ).map(lambda frames: b"".join(encode_frame(t, v) for t, v in frames)),
        )
    )
    def test_random_bytes_never_raise(self, data: bytes) -> None:
        """Random bytes and random frames after sign-in never raise nor log an error."""
        conn = Conn(logic=FakeLogic(auto_sign_in=True, auto_send=True, auto_sync=True))
        conn.signed_in()
        conn.feed(data)
        conn.lose()
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_connection_lost_twice_never_raises(self) -> None:
        """connectionLost is safe to call on a half-built or already lost connection."""
        conn = Conn()
        conn.lose()
        conn.lose()
        proto = ClientConnectionFactory(logic=FakeLogic(), clock=Clock(), table=ConnectionTable()).buildProtocol(None)
        proto.connectionLost()

    def test_factory_rejects_bad_settings(self) -> None:
        """Non-positive settings are refused when the factory is built."""
        self.assertRaises(
            ValueError, ClientConnectionFactory, logic=FakeLogic(), clock=Clock(), table=ConnectionTable(), idle_timeout=0
        )
        self.assertRaises(
            ValueError, ClientConnectionFactory, logic=FakeLogic(), clock=Clock(), table=ConnectionTable(), max_frame_length=65536
        )

    def test_fake_is_a_logic_port(self) -> None:
        """The fake satisfies LogicPort (checked by mypy) and the table DeliveryPort."""
        logic: LogicPort = FakeLogic()
        delivery: DeliveryPort = ConnectionTable()
        self.assertIsNotNone((logic, delivery))


class LoopbackTests(SynchronousTestCase):
    def test_client_server_pair(self) -> None:
        """A real client/server pair over iosim: sign-in, sync, send, push, then a kick."""
        clock = Clock()
        logic = FakeLogic(auto_sign_in=True, auto_send=True, auto_sync=True)
        logic.store(2, 3)
        factory = ClientConnectionFactory(logic=logic, clock=clock, table=ConnectionTable())
        client, server, pump = connectedServerAndClient(
            lambda: factory.buildProtocol(None), RecordingClient, clock=clock
        )
        cast(Any, client.transport).write(
            bytes.fromhex(SIGN_IN_HEX + SYNC_TRIGGER_HEX + HEARTBEAT_HEX + MESSAGE_SEND_HEX)
        )
        pump.flush()
        self.assertEqual(
            [f.type for f in client.frames],
            [codec.SIGN_IN_ACK, codec.MESSAGE, codec.HEARTBEAT_ACK, codec.MESSAGE_SEND_ACK],
        )
        factory.table.deliver(copies_of([make_message(2, 4)]))
        pump.flush()
        self.assertEqual(client.frames[-1].type, codec.MESSAGE)
        self.assertEqual(parse(codec.Message, client.frames[-1].value).type, codec.MESSAGE_PUSH)
        factory.table.kick(1, "bye")
        pump.flush()
        kicked = Frame(codec.KICKED, codec.Kicked(reason="bye").to_bytes())
        self.assertEqual(client.frames[-1], kicked)
        self.assertTrue(client.lost)
        self.assertEqual(len(factory.table), 0)
        self.assertEqual(logic.offlines, [dict(device_id=1, user_id=2)])
        self.assertIsInstance(server, ClientConnection)


class RateLimitAckTests(SynchronousTestCase):
    def test_code_5_carries_the_retry_hint_and_keeps_the_connection(self) -> None:
        """A send answered code 5 gets its ACK with retry_after_ms; the connection stays open and usable."""
        conn = Conn()
        conn.signed_in()
        conn.feed(message_send(1), message_send(2))
        conn.logic.sends[0].deferred.callback(SendResult(code=5, retry_after_ms=250))
        ack = parse(codec.MessageSendAck, conn.take()[0].value)
        self.assertEqual((ack.send_sequence, ack.code, ack.retry_after_ms, ack.message_id), (1, 5, 250, 0))
        self.assertFalse(conn.closed)
        # the send already in flight completes; new frames wait for the hint's 250 ms
        conn.logic.sends[1].deferred.callback(SendResult(code=0, message_id=7, seq=3))
        conn.feed(message_send(1), heartbeat())
        self.assertEqual(len(conn.logic.sends), 2)
        self.assertEqual(conn.transport.producerState, "paused")
        conn.clock.advance(0.25)
        self.assertEqual(conn.transport.producerState, "producing")
        conn.logic.sends[2].deferred.callback(SendResult(code=0, message_id=8, seq=4))
        frames = conn.take()
        acks = [parse(codec.MessageSendAck, f.value) for f in frames if f.type == codec.MESSAGE_SEND_ACK]
        self.assertEqual([(a.send_sequence, a.code, a.retry_after_ms) for a in acks], [(2, 0, 0), (1, 0, 0)])
        self.assertIn(codec.HEARTBEAT_ACK, [f.type for f in frames])
        self.assertFalse(conn.closed)

    def test_code_5_without_a_hint_pauses_briefly_and_long_hints_are_capped(self) -> None:
        """No hint: 0.1 s without reading; a 60 s hint: at most 5 s, so heartbeats keep flowing."""
        conn = Conn()
        conn.signed_in()
        conn.feed(message_send(1))
        conn.logic.sends[0].deferred.callback(SendResult(code=5))
        self.assertEqual(conn.transport.producerState, "paused")
        conn.clock.advance(0.1)
        self.assertEqual(conn.transport.producerState, "producing")
        conn.feed(message_send(2))
        conn.logic.sends[1].deferred.callback(SendResult(code=5, retry_after_ms=60_000))
        conn.clock.advance(4.9)
        self.assertEqual(conn.transport.producerState, "paused")
        conn.clock.advance(0.1)
        self.assertEqual(conn.transport.producerState, "producing")
        conn.lose()
        self.assertEqual(conn.clock.getDelayedCalls(), [])


class OutboundBoundTests(SynchronousTestCase):
    """A client that does not read: its unsent bytes pass the transport's bound."""

    def make(self, **settings: Any) -> tuple[Conn, FlowControlTransport]:
        transport = FlowControlTransport(high_water=1000)
        settings.setdefault("rate_burst", 10_000)  # room for 5,000 heartbeats at once
        conn = Conn(transport=transport, write_grace=60.0, **settings)
        conn.signed_in(user_id=2)
        return conn, transport

    def test_heartbeat_replies_fill_the_bound_then_reading_stops(self) -> None:
        """Heartbeats never read back: once the coalesced replies pass the bound no further frame is handled."""
        conn, transport = self.make()
        # HeartbeatACKs of 4 bytes: the 4,096th fills COALESCE_LIMIT and is written
        # at once, past the transport's bound; the rest wait unread
        conn.feed(heartbeat() * 5000)
        self.assertTrue(conn.proto.producer.paused)
        self.assertEqual(transport.producerState, "paused")
        size = len(transport.value())
        self.assertEqual(size, COALESCE_LIMIT, "frames after the write that crossed the bound wait unread")
        conn.feed(heartbeat() * 1000)
        push(conn.proto, [make_message(2, seq) for seq in range(1, 500)])
        conn.clock.advance(0)
        self.assertEqual(len(transport.value()), size, "memory stays flat for a client that never reads")
        self.assertFalse(conn.closed)

    def test_one_turn_of_replies_is_written_at_its_end(self) -> None:
        """Replies under COALESCE_LIMIT leave at the end of the turn in one write, then meet the bound."""
        conn, transport = self.make()
        transport.writes = 0
        conn.feed(heartbeat() * 300)
        self.assertEqual(transport.value(), b"")
        conn.clock.advance(0)
        self.assertEqual(len(transport.value()), 300 * 4)
        self.assertEqual(transport.writes, 1)
        self.assertTrue(conn.proto.producer.paused)

    def test_aborted_after_the_grace_period(self) -> None:
        """Still unread after write_grace seconds: the connection is aborted (and logged)."""
        events = capture_logs(self)
        conn, transport = self.make()
        conn.feed(heartbeat() * 300)
        conn.clock.advance(0)  # the end of the turn writes the replies: past the bound
        conn.clock.advance(59.9)
        self.assertFalse(conn.closed)
        conn.clock.advance(0.1)
        self.assertTrue(conn.closed)
        self.assertTrue(transport.disconnected, "aborted, not waiting for a flush that will never come")
        self.assertTrue(any("has not read its data for 60.0 s" in t for t in log_texts(events)))
        conn.lose()
        self.assertEqual(conn.clock.getDelayedCalls(), [])

    def test_reading_again_within_the_grace_period(self) -> None:
        """The client reads again in time: the held frames are handled, the timer is off, pushes skipped meanwhile are synced."""
        conn, transport = self.make()
        conn.feed(heartbeat() * (COALESCE_LIMIT // 4 + 200))
        push(conn.proto, [make_message(2, 5)])
        conn.clock.advance(30)
        received = transport.drain()
        self.assertEqual(len(frames_of(received)), COALESCE_LIMIT // 4)
        # the 200 held heartbeats are answered now; the skipped push starts a sync
        self.assertEqual([f.type for f in conn.take()], [codec.HEARTBEAT_ACK] * 200)
        self.assertEqual([c.args["after_seq"] for c in conn.logic.sync_pages], [4])
        conn.clock.advance(60)
        self.assertFalse(conn.closed)

    def test_send_acks_count_towards_the_bound(self) -> None:
        """MessageSendACKs of sends still in flight fill the buffer too: reading stops, then the grace period runs."""
        conn, transport = self.make()
        conn.feed(*[message_send(n, "x" * 10) for n in range(1, 101)])
        self.assertEqual(len(conn.logic.sends), 100)
        for call in conn.logic.sends:
            call.deferred.callback(SendResult(code=0, message_id=10**12, seq=10**6))
        conn.clock.advance(0)  # the turn ends: its acks are written in one go
        self.assertTrue(conn.proto.producer.paused)
        conn.feed(message_send(101))
        self.assertEqual(len(conn.logic.sends), 100, "no frame is read while the output is over the bound")
        conn.clock.advance(60)
        self.assertTrue(conn.closed)


class IdleFootprintTests(SynchronousTestCase):
    def test_a_connection_keeps_its_state_out_of_a_large_dict(self) -> None:
        """A signed-in connection's instance dict holds fewer than 30 keys: past that,
        CPython gives every instance a key table of its own (about 1.5 KiB more for
        each idle connection); the connection's own state is in its slots."""
        conns = [Conn() for _ in range(3)]
        protos = [conn.signed_in(device_id=i + 1, user_id=i + 10) for i, conn in enumerate(conns)]
        for proto in protos:
            self.assertLess(len(vars(proto)), 30, sorted(vars(proto)))
            self.assertLess(sys.getsizeof(vars(proto)), 1000)
        self.assertEqual(protos[0].device_id, 1)
        self.assertNotIn("device_id", vars(protos[0]))
