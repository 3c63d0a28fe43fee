"""Test doubles for the client: a connector whose connections the test opens by hand,
and the server end of a connection on a StringTransport that speaks real frames."""

from __future__ import annotations

from typing import Any, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.python.failure import Failure

from goim.client.protocol import ClientConnection, ConnectionListener
from goim.client.session import SessionObserver, SendAck
from goim.client.state import OutgoingMessage
from goim.protocols import codec
from goim.protocols.framing import Frame, decode_frames, encode_frame
from goim.types import RECEIVER_USER, SENDER_USER, StoredMessage

def message(seq: int, *, user_id: int = 1, sender_id: int = 2, sender_device_id: int = 20, content: str = "") -> StoredMessage:
    """A stored copy for ``user_id`` with this seq (message id 1000 + seq)."""
    return StoredMessage(
        user_id=user_id,
        seq=seq,
        message_id=1000 + seq,
        sender_type=SENDER_USER,
        sender_id=sender_id,
        sender_device_id=sender_device_id,
        receiver_type=RECEIVER_USER,
        receiver_id=user_id,
        type=1,
        content=content or f"message {seq}",
        send_time=1_700_000_000_000 + seq,
    )


class FakeServer:
    """The server end of one :class:`ClientConnection`, on a StringTransport."""

    def __init__(self, protocol: ClientConnection) -> None:
        self.protocol = protocol
        self.transport = StringTransportWithDisconnection()
        self.transport.protocol = protocol
        protocol.makeConnection(self.transport)
        self._buffer = b""

    # --- what the client wrote

    def frames(self) -> list[Frame]:
        """The frames the client wrote since the last call."""
        data = self.transport.value()
        self.transport.clear()
        frames, self._buffer = decode_frames(self._buffer + data)
        return frames

    def decoded(self) -> list[tuple[int, Any]]:
        """:meth:`frames` as ``(code, typed frame)`` (the codec's client frames)."""
        return [(f.type, codec.CLIENT_FRAMES[f.type].from_bytes(f.value)) for f in self.frames()]

    def of(self, code: int) -> list[Any]:
        """The messages of one code the client wrote since the last call (others are dropped)."""
        return [m for c, m in self.decoded() if c == code]

    # --- what the server writes

    def write(self, frame: codec.WireFrame) -> None:
        """Deliver one frame to the client."""
        self.protocol.dataReceived(frame.to_frame())

    def write_raw(self, code: int, value: bytes = b"") -> None:
        """Deliver one frame of any code and value (malformed or unknown ones too)."""
        self.protocol.dataReceived(encode_frame(code, value))

    def sign_in_ok(self) -> None:
        """SignInACK code 1."""
        self.write(codec.SignInAck(code=codec.SignInCode.OK))

    def sign_in_failed(self, text: str = "wrong device id or token") -> None:
        """SignInACK code 2, then close."""
        self.write(codec.SignInAck(code=codec.SignInCode.FAILED, message=text))
        self.close()

    def sync(self, messages: Sequence[StoredMessage], *, more: bool = False) -> None:
        """One type-1 Message frame."""
        self.write(codec.Message.of_stored(codec.MessageType.SYNC, messages, more=more))

    def push(self, *messages: StoredMessage) -> None:
        """One type-2 Message frame."""
        self.write(codec.Message.of_stored(codec.MessageType.PUSH, messages))

    def send_ack(self, send_sequence: int, code: int = 0, message_id: int = 0, seq: int = 0) -> None:
        """MessageSendACK."""
        self.write(
            codec.MessageSendAck(send_sequence=send_sequence, code=code, message_id=message_id, sync_sequence=seq)
        )

    def heartbeat_ack(self) -> None:
        """HeartbeatACK."""
        self.write(codec.HeartbeatAck())

    def kick(self, reason: str) -> None:
        """Kicked, then close."""
        self.write(codec.Kicked(reason=reason))
        self.close()

    def close(self) -> None:
        """The connection closes cleanly."""
        self.transport.loseConnection()

    def drop(self) -> None:
        """The connection breaks."""
        if self.transport.connected:
            self.transport.connected = False
            self.protocol.connectionLost(Failure(ConnectionLost("connection cut")))


class FakeConnector:
    """A connector whose attempts wait until the test accepts or refuses them."""

    def __init__(self) -> None:
        self.attempts: list[tuple[ConnectionListener, Deferred[ClientConnection]]] = []
        self.servers: list[FakeServer] = []
        self.cancelled = 0

    def __call__(self, listener: ConnectionListener) -> Deferred[ClientConnection]:
        def cancel(d: Deferred[ClientConnection]) -> None:
            self.cancelled += 1

        d: Deferred[ClientConnection] = Deferred(cancel)
        self.attempts.append((listener, d))
        return d

    def accept(self) -> FakeServer:
        """Open the oldest waiting attempt; returns the server end."""
        listener, d = self.attempts.pop(0)
        protocol = ClientConnection(listener)
        server = FakeServer(protocol)
        self.servers.append(server)
        d.callback(protocol)
        return server

    def refuse(self) -> None:
        """Fail the oldest waiting attempt."""
        from twisted.internet.error import ConnectionRefusedError

        _, d = self.attempts.pop(0)
        d.errback(ConnectionRefusedError())


class Recorder(SessionObserver):
    """Records every event in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.messages: list[StoredMessage] = []

    def messages_received(self, messages: Sequence[StoredMessage]) -> None:
        self.messages.extend(messages)
        self.events.append(("messages", [m.seq for m in messages]))

    def send_acked(self, message: OutgoingMessage, ack: SendAck) -> None:
        self.events.append(("send_acked", ack))

    def send_failed(self, message: OutgoingMessage, code: int) -> None:
        self.events.append(("send_failed", (message.send_sequence, code)))

    def connected(self) -> None:
        self.events.append(("connected", None))

    def disconnected(self, reason: str) -> None:
        self.events.append(("disconnected", reason))

    def reconnecting(self, delay: float, reason: str) -> None:
        self.events.append(("reconnecting", delay))

    def synced(self, sync_sequence: int) -> None:
        self.events.append(("synced", sync_sequence))

    def kicked(self, reason: str) -> None:
        self.events.append(("kicked", reason))

    def sign_in_refused(self, message: str) -> None:
        self.events.append(("refused", message))

    def names(self) -> list[str]:
        """The event names, in order."""
        return [name for name, _ in self.events]

    def of(self, name: str) -> list[Any]:
        """The arguments of every event called ``name``."""
        return [arg for n, arg in self.events if n == name]
