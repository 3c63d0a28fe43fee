"""A small goim client for end-to-end tests: real TCP, goim's own framing and the codec's
typed frames (both directions).

:class:`WireClient` keeps every frame the server wrote, in arrival order, and offers
the few round trips the tests need (sign in, send, sync). Nothing here sleeps for a
fixed time: waiting is :func:`wait_until`, which polls a condition with a deadline.
"""

from __future__ import annotations

from typing import Iterable, TypeVar, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from goim.protocols import codec
from goim.protocols.codec import (
    KICKED,
    MESSAGE,
    MESSAGE_PUSH,
    MESSAGE_SEND_ACK,
    MESSAGE_SYNC,
    SIGN_IN_ACK,
    code_name,
)
from goim.protocols.framing import Frame, ProducerTransport, decode_frames
from goim.types import RECEIVER_GROUP, RECEIVER_USER

F = TypeVar("F", bound=codec.WireFrame)

#: how long a test waits for something the server should do at once
DEFAULT_TIMEOUT = 15.0


# one wait_until for every test (re-exported here for the wire tests)
from goim.testing.harness import wait_until  # noqa: E402,F401


# --- client frames (the codec's typed frames; one frame builder for every test) -------


def sign_in_frame(device_id: int, user_id: int, token: str, *, max_frame: int = 0) -> bytes:
    """An encoded SignIn (code 1) frame."""
    return codec.SignIn(device_id=device_id, user_id=user_id, token=token, max_frame=max_frame).to_frame()


def sync_frame(after: int) -> bytes:
    """An encoded SyncTrigger (code 3) frame."""
    return codec.SyncTrigger(sync_sequence=after).to_frame()


def heartbeat_frame() -> bytes:
    """An encoded Heartbeat (code 4) frame."""
    return codec.Heartbeat().to_frame()


def send_frame(
    receiver_id: int,
    content: str,
    send_sequence: int,
    *,
    receiver_type: int = RECEIVER_USER,
    message_type: int = 1,
    send_time: int = 1_700_000_000_000,
) -> bytes:
    """An encoded MessageSend (code 6) frame."""
    return codec.MessageSend(
        receiver_type=receiver_type,
        receiver_id=receiver_id,
        type=message_type,
        content=content,
        send_sequence=send_sequence,
        send_time=send_time,
    ).to_frame()


def message_ack_frame(sync_sequence: int) -> bytes:
    """An encoded MessageACK (code 9) frame."""
    return codec.MessageAck(sync_sequence=sync_sequence).to_frame()


def parse(frame_class: type[F], frame: Frame) -> F:
    """Decode a frame's value as the codec's typed ``frame_class`` (``codec.SignInAck`` …).

    Raises:
        AssertionError: the frame has another code.
    """
    assert frame.type == frame_class.CODE, f"expected {code_name(frame_class.CODE)}, got {code_name(frame.type)}"
    return frame_class.from_bytes(frame.value)


def items(messages: Iterable[codec.Message]) -> list[codec.MessageItem]:
    """Every MessageItem of some Message frames, in order."""
    return [item for message in messages for item in message.messages]


# --- the client ------------------------------------------------------------------------


class WireClient(Protocol):
    """One client connection that records every frame the server sends.

    Attributes:
        frames: every complete frame received, in order.
        closed: whether the connection is closed.
        signed_in_as: ``(device_id, user_id)`` after a successful :meth:`sign_in`.
    """

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.closed = False
        self.signed_in_as: tuple[int, int] | None = None
        self._buffer = b""
        self._lost: list[Deferred[None]] = []

    # --- IProtocol

    def dataReceived(self, data: bytes) -> None:
        frames, self._buffer = decode_frames(self._buffer + data)
        self.frames.extend(frames)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        waiters, self._lost = self._lost, []
        for waiter in waiters:
            waiter.callback(None)

    # --- writing

    @property
    def _transport(self) -> ProducerTransport:
        assert self.transport is not None, "not connected"
        return cast(ProducerTransport, self.transport)

    def write(self, *frames: bytes) -> None:
        """Write encoded frames in one ``write`` (so they travel together)."""
        self._transport.write(b"".join(frames))

    def close(self) -> Deferred[None]:
        """Close the connection; the Deferred fires once it is closed."""
        if self.closed:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._lost.append(waiter)
        self._transport.loseConnection()
        return waiter

    # --- what arrived

    def of_code(self, code: int, *, since: int = 0) -> list[Frame]:
        """The frames of one code received so far (from index ``since``)."""
        return [f for f in self.frames[since:] if f.type == code]

    def codes(self) -> list[int]:
        """The codes of every frame received, in order."""
        return [f.type for f in self.frames]

    def messages(self, message_type: int | None = None, *, since: int = 0) -> list[codec.Message]:
        """The decoded code-8 frames (of one ``Message.type`` when given)."""
        found = [parse(codec.Message, f) for f in self.of_code(MESSAGE, since=since)]
        return [m for m in found if message_type is None or m.type == message_type]

    def pushed(self) -> list[codec.MessageItem]:
        """Every item of the live pushes (type-2 Message frames) received so far."""
        return items(self.messages(MESSAGE_PUSH))

    def pushed_ids(self) -> list[int]:
        """The message ids of every pushed item, in arrival order."""
        return [item.message_id for item in self.pushed()]

    def send_acks(self) -> list[codec.MessageSendAck]:
        """Every MessageSendACK received so far."""
        return [parse(codec.MessageSendAck, f) for f in self.of_code(MESSAGE_SEND_ACK)]

    def ack_for(self, send_sequence: int) -> codec.MessageSendAck | None:
        """The first MessageSendACK for ``send_sequence``, if one arrived."""
        for ack in self.send_acks():
            if ack.send_sequence == send_sequence:
                return ack
        return None

    def kicks(self) -> list[codec.Kicked]:
        """Every Kicked frame received so far."""
        return [parse(codec.Kicked, f) for f in self.of_code(KICKED)]

    # --- round trips

    async def sign_in(
        self, device_id: int, user_id: int, token: str, *, max_frame: int = 0, expect_ok: bool = True
    ) -> codec.SignInAck:
        """Write SignIn and wait for the SignInACK.

        Raises:
            AssertionError: no ACK in time, or (``expect_ok``) an ACK other than code 1.
        """
        start = len(self.frames)
        self.write(sign_in_frame(device_id, user_id, token, max_frame=max_frame))
        frame = await wait_until(lambda: next(iter(self.of_code(SIGN_IN_ACK, since=start)), None), "SignInACK")
        ack = parse(codec.SignInAck, frame)
        if expect_ok:
            assert ack.code == 1, f"sign-in of device {device_id} refused: {ack.message!r}"
            self.signed_in_as = (device_id, user_id)
        return ack

    async def send(
        self, receiver_id: int, content: str, send_sequence: int, *, receiver_type: int = RECEIVER_USER
    ) -> codec.MessageSendAck:
        """Write one MessageSend and wait for its ACK (matched by ``send_sequence``).

        A retry of an earlier ``send_sequence`` waits for a new ACK, not the old one.
        """
        start = len(self.of_code(MESSAGE_SEND_ACK))
        self.write(send_frame(receiver_id, content, send_sequence, receiver_type=receiver_type))

        def answered() -> codec.MessageSendAck | None:
            for ack in self.send_acks()[start:]:
                if ack.send_sequence == send_sequence:
                    return ack
            return None

        ack: codec.MessageSendAck = await wait_until(answered, f"MessageSendACK {send_sequence}")
        return ack

    async def send_to_group(self, group_id: int, content: str, send_sequence: int) -> codec.MessageSendAck:
        """:meth:`send` to a group."""
        return await self.send(group_id, content, send_sequence, receiver_type=RECEIVER_GROUP)

    async def sync(self, after: int = 0, *, timeout: float = DEFAULT_TIMEOUT) -> list[codec.Message]:
        """Write SyncTrigger and collect the type-1 frames up to the one with ``more`` false."""
        start = len(self.frames)
        self.write(sync_frame(after))
        return await self.sync_result(since=start, timeout=timeout)

    async def sync_result(self, *, since: int, timeout: float = DEFAULT_TIMEOUT) -> list[codec.Message]:
        """The type-1 frames received from index ``since`` up to the first with ``more`` false."""

        def complete() -> list[codec.Message] | None:
            frames = self.messages(MESSAGE_SYNC, since=since)
            for index, message in enumerate(frames):
                if not message.more:
                    return frames[: index + 1]
            if self.closed:
                raise AssertionError(f"connection closed during a sync ({len(frames)} frames received)")
            return None

        result: list[codec.Message] = await wait_until(complete, "the last sync frame", timeout=timeout)
        return result

    async def wait_closed(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until the server closes the connection."""
        await wait_until(lambda: self.closed, "the connection to close", timeout=timeout)

    def describe(self) -> str:
        """The received codes by name, for assertion messages."""
        return ", ".join(code_name(c) for c in self.codes())


async def connect(testcase: SynchronousTestCase, port: int | None) -> WireClient:
    """Open a connection to ``127.0.0.1:port``; it is closed when the test ends."""
    assert port is not None, "the server has no client TCP port"
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
    client: WireClient = await connectProtocol(endpoint, WireClient())
    testcase.addCleanup(client.close)
    return client
