"""The client connection protocol: frames written, frames decoded, bad input."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from goim.client.protocol import ClientConnection, encode_message_send, encode_sign_in, encode_sync_trigger
from goim.client.state import OutgoingMessage
from goim.protocols import codec
from goim.protocols.framing import encode_frame
from tests.client.fakes import message


class Listener:
    """Records listener calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def connection_made(self, connection: ClientConnection) -> None:
        self.calls.append(("made", None))

    def sign_in_answered(self, connection: ClientConnection, ack: codec.SignInAck) -> None:
        self.calls.append(("sign_in", (ack.code, ack.message)))

    def messages_received(self, connection: ClientConnection, m: codec.Message) -> None:
        self.calls.append(("messages", (m.type, [i.sync_sequence for i in m.messages], m.more)))

    def send_answered(self, connection: ClientConnection, ack: codec.MessageSendAck) -> None:
        self.calls.append(("send", (ack.send_sequence, ack.code, ack.message_id, ack.sync_sequence)))

    def heartbeat_answered(self, connection: ClientConnection) -> None:
        self.calls.append(("heartbeat", None))

    def kicked(self, connection: ClientConnection, reason: str) -> None:
        self.calls.append(("kicked", reason))

    def connection_lost(self, connection: ClientConnection, reason: Failure) -> None:
        self.calls.append(("lost", None))


class EncodingTests(SynchronousTestCase):
    def test_frames_match_the_protocol_test_vectors(self) -> None:
        """SignIn, SyncTrigger and MessageSend bytes equal docs/protocol.md's vectors."""
        self.assertEqual(
            encode_sign_in(device_id=1, user_id=2, token="t", max_frame=0).hex(), "00010007080110021a0174"
        )
        self.assertEqual(encode_sync_trigger(5).hex(), "000300021005")
        send = OutgoingMessage(send_sequence=1, receiver_type=1, receiver_id=7, type=1, content="hi", send_time=1)
        self.assertEqual(encode_message_send(send).hex(), "0006000e080110071801220268692801" + "3001")

    def test_sign_in_announces_max_frame_65535_by_default(self) -> None:
        """The client reads frames of any size and says so."""
        sign_in = codec.SignIn.from_bytes(encode_sign_in(device_id=1, user_id=2, token="t")[4:])
        self.assertEqual(sign_in.max_frame, 65535)


class ConnectionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.listener = Listener()
        self.protocol = ClientConnection(self.listener)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def test_every_server_frame_reaches_the_listener_decoded(self) -> None:
        """SignInACK, Message, MessageSendACK, HeartbeatACK and Kicked are decoded, in order."""
        data = b"".join(
            [
                codec.SignInAck(code=1).to_frame(),
                codec.Message.of_stored(1, [message(1), message(2)], more=True).to_frame(),
                codec.MessageSendAck(send_sequence=3, code=0, message_id=9, sync_sequence=4).to_frame(),
                codec.HeartbeatAck().to_frame(),
                codec.Kicked(reason="signed in elsewhere").to_frame(),
            ]
        )
        for i in range(len(data)):  # one byte at a time: fragmentation
            self.protocol.dataReceived(data[i : i + 1])
        self.assertEqual(
            self.listener.calls,
            [
                ("made", None),
                ("sign_in", (1, "")),
                ("messages", (1, [1, 2], True)),
                ("send", (3, 0, 9, 4)),
                ("heartbeat", None),
                ("kicked", "signed in elsewhere"),
            ],
        )
        self.assertEqual(self.protocol.frames_received, 5)

    def test_unknown_codes_are_ignored(self) -> None:
        """A code the client does not know (or a client code) is skipped; later frames still arrive."""
        self.protocol.dataReceived(encode_frame(99, b"\x01\x02") + encode_frame(codec.SIGN_IN, b"") + encode_frame(codec.HEARTBEAT_ACK, b""))
        self.assertEqual(self.listener.calls[-1], ("heartbeat", None))
        self.assertFalse(self.transport.disconnecting)

    def test_malformed_value_closes_the_connection(self) -> None:
        """A Message value that is not valid protobuf aborts the connection."""
        self.protocol.dataReceived(encode_frame(codec.MESSAGE, b"\xff\xff\xff"))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.listener.calls, [("made", None)])

    def test_writes_nothing_after_the_connection_is_lost(self) -> None:
        """Sends after connectionLost are dropped; the listener hears of the loss once."""
        self.protocol.connectionLost(Failure(Exception("gone")))
        self.protocol.connectionLost(Failure(Exception("again")))
        self.protocol.heartbeat()
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual([c for c, _ in self.listener.calls].count("lost"), 1)


class NoDelayTests(SynchronousTestCase):
    def test_tcp_nodelay_set_when_connected(self) -> None:
        """The client turns TCP_NODELAY on: its small requests must not wait for a delayed ACK."""

        class TCPTransport(StringTransport):
            nodelay = False

            def setTcpNoDelay(self, enabled: bool) -> None:
                self.nodelay = enabled

        transport = TCPTransport()
        listener = Listener()
        ClientConnection(listener).makeConnection(transport)
        self.assertTrue(transport.nodelay)
        self.assertEqual(listener.calls, [("made", None)])
