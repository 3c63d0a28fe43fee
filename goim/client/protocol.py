"""The client side of one TCP connection: frames in, listener calls out.

:class:`ClientConnection` frames and decodes what the server writes (with goim's own
:mod:`goim.protocols.framing` and :mod:`goim.protocols.codec`) and hands each frame to
a :class:`ConnectionListener` as a typed frame of the codec (``codec.SignInAck``,
``codec.Message`` …). It keeps no session state and no timers: reconnecting,
syncing, acks and retries are the business of :class:`goim.client.session.Session`.
The ``encode_*`` functions build the frames a client writes with the codec's typed
frames; they are pure.
"""

from __future__ import annotations

from typing import Protocol as TypingProtocol, cast

from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from goim.client.state import OutgoingMessage
from goim.protocols import codec
from goim.protocols.framing import MAX_VALUE_LENGTH, TLVReceiver, set_no_delay

#: what a client announces in SignIn.max_frame: it reads frames of any size
CLIENT_MAX_FRAME = MAX_VALUE_LENGTH


def encode_sign_in(
    *, device_id: int, user_id: int, token: str, max_frame: int = CLIENT_MAX_FRAME, features: int = 0
) -> bytes:
    """The SignIn frame (code 1); ``features`` are the opt-in bits of ``goim.features``."""
    return codec.SignIn(
        device_id=device_id, user_id=user_id, token=token, max_frame=max_frame, features=features
    ).to_frame()


def encode_sync_trigger(sync_sequence: int) -> bytes:
    """The SyncTrigger frame (code 3): send me every message after ``sync_sequence``."""
    return codec.SyncTrigger(sync_sequence=sync_sequence).to_frame()


def encode_heartbeat() -> bytes:
    """The Heartbeat frame (code 4)."""
    return codec.Heartbeat().to_frame()


def encode_message_send(message: OutgoingMessage) -> bytes:
    """The MessageSend frame (code 6) of a queued send."""
    return codec.MessageSend(
        receiver_type=message.receiver_type,
        receiver_id=message.receiver_id,
        type=message.type,
        content=message.content,
        send_sequence=message.send_sequence,
        send_time=message.send_time,
    ).to_frame()


def encode_message_ack(*, message_id: int, sync_sequence: int, receive_time: int) -> bytes:
    """The MessageACK frame (code 9): the device holds everything up to ``sync_sequence``."""
    return codec.MessageAck(message_id=message_id, sync_sequence=sync_sequence, receive_time=receive_time).to_frame()


class ConnectionListener(TypingProtocol):
    """What a :class:`ClientConnection` reports to (the session)."""

    def connection_made(self, connection: ClientConnection) -> None:
        """The TCP connection is up; nothing has been written yet."""

    def sign_in_answered(self, connection: ClientConnection, ack: codec.SignInAck) -> None:
        """A SignInACK (code 2) arrived."""

    def messages_received(self, connection: ClientConnection, message: codec.Message) -> None:
        """A Message frame (code 8, sync result or live push) arrived."""

    def send_answered(self, connection: ClientConnection, ack: codec.MessageSendAck) -> None:
        """A MessageSendACK (code 7) arrived."""

    def heartbeat_answered(self, connection: ClientConnection) -> None:
        """A HeartbeatACK (code 5) arrived."""

    def kicked(self, connection: ClientConnection, reason: str) -> None:
        """A Kicked frame (code 10) arrived; the server closes the connection next."""

    def connection_lost(self, connection: ClientConnection, reason: Failure) -> None:
        """The connection is gone."""


class _Transport(TypingProtocol):
    def write(self, data: bytes) -> None: ...

    def loseConnection(self) -> None: ...


class ClientConnection(TLVReceiver):
    """One client connection to a goim connect node.

    Accepts frames up to 65,535 value bytes (what it announces in SignIn). A malformed
    frame closes the connection (the session then reconnects and syncs); codes it does
    not know are ignored, as the protocol asks.

    Args:
        listener: where decoded frames go.

    Attributes:
        frames_received: how many frames arrived so far (a liveness counter for the
            session's heartbeat check).
    """

    log = Logger()
    MAX_LENGTH = MAX_VALUE_LENGTH

    def __init__(self, listener: ConnectionListener) -> None:
        self.listener = listener
        self.frames_received = 0
        self.lost = False

    # --- writing ----------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.lost:
            cast(_Transport, self.transport).write(data)

    def sign_in(
        self, *, device_id: int, user_id: int, token: str, max_frame: int = CLIENT_MAX_FRAME, features: int = 0
    ) -> None:
        """Write SignIn."""
        self._write(
            encode_sign_in(device_id=device_id, user_id=user_id, token=token, max_frame=max_frame, features=features)
        )

    def sync(self, sync_sequence: int) -> None:
        """Write SyncTrigger."""
        self._write(encode_sync_trigger(sync_sequence))

    def heartbeat(self) -> None:
        """Write Heartbeat."""
        self._write(encode_heartbeat())

    def send_message(self, message: OutgoingMessage) -> None:
        """Write MessageSend."""
        self._write(encode_message_send(message))

    def ack(self, *, message_id: int, sync_sequence: int, receive_time: int) -> None:
        """Write MessageACK."""
        self._write(encode_message_ack(message_id=message_id, sync_sequence=sync_sequence, receive_time=receive_time))

    def close(self) -> None:
        """Close after what was written has been sent."""
        if self.transport is not None and not self.lost:
            self.closeConnection()

    def abort(self) -> None:
        """Drop the connection at once (a dead peer will not read what is buffered)."""
        if self.transport is None or self.lost:
            return
        self._stop_receiving()
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            cast(_Transport, self.transport).loseConnection()

    # --- IProtocol --------------------------------------------------------------

    def connectionMade(self) -> None:
        """Set TCP_NODELAY (requests are small and latency-bound) and tell the listener."""
        set_no_delay(self.transport)
        self.listener.connection_made(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Tell the listener (once)."""
        super().connectionLost(reason)
        if self.lost:
            return
        self.lost = True
        self.listener.connection_lost(self, reason)

    def frameReceived(self, frame_type: int, value: bytes) -> None:
        """Decode one frame and hand it to the listener; close on a malformed value."""
        self.frames_received += 1
        try:
            if frame_type == codec.MESSAGE:
                self.listener.messages_received(self, codec.Message.from_bytes(value))
            elif frame_type == codec.MESSAGE_SEND_ACK:
                self.listener.send_answered(self, codec.MessageSendAck.from_bytes(value))
            elif frame_type == codec.HEARTBEAT_ACK:
                self.listener.heartbeat_answered(self)
            elif frame_type == codec.SIGN_IN_ACK:
                self.listener.sign_in_answered(self, codec.SignInAck.from_bytes(value))
            elif frame_type == codec.KICKED:
                self.listener.kicked(self, codec.Kicked.from_bytes(value).reason)
            else:
                self.log.debug("ignoring {code} from {peer}", code=codec.code_name(frame_type), peer=self.peer)
        except codec.MalformedFrameError as e:
            self.log.warn("{error} from {peer}: closing", error=str(e), peer=self.peer)
            self.abort()
