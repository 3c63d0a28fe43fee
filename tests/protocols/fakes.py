"""Test doubles for the client protocol: a LogicPort whose answers the test controls,
a flow-controlled StringTransport and a frame-recording client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import StringTransport

from goim.protocols import codec
from goim.protocols.changes import audience
from goim.protocols.framing import Frame, TLVReceiver, decode_frames, encode_frame
from goim.types import ChangeRequest, ChangeResult, SendRequest, SendResult, SignInResult, StoredMessage, SyncPage

T = TypeVar("T")


@dataclass
class Call(Generic[T]):
    """One call into the fake logic: its arguments and the Deferred it waits on."""

    args: dict[str, Any]
    deferred: Deferred[T] = field(default_factory=Deferred)


class FakeLogic:
    """A LogicPort whose every call waits on a Deferred the test fires.

    ``auto_*`` switches answer at once instead: sign-in with ok=True, sends with
    code 0 (message id = 1000 + send_sequence, seq = send_sequence), sync pages from
    ``messages``; acks and offline always complete at once.
    """

    def __init__(
        self,
        *,
        auto_sign_in: bool = False,
        auto_send: bool = False,
        auto_sync: bool = False,
    ) -> None:
        self.auto_sign_in = auto_sign_in
        self.auto_send = auto_send
        self.auto_sync = auto_sync
        self.sign_ins: list[Call[SignInResult]] = []
        self.sends: list[Call[SendResult]] = []
        self.sync_pages: list[Call[SyncPage]] = []
        self.acks: list[dict[str, int]] = []
        self.offlines: list[dict[str, int]] = []
        self.messages: dict[int, list[StoredMessage]] = {}
        self.order: list[str] = []
        #: ``(method, connection id)`` of every call
        self.conns: list[tuple[str, str]] = []

    async def sign_in(self, *, device_id: int, user_id: int, token: str, conn: str = "") -> SignInResult:
        self.conns.append(("sign_in", conn))
        call: Call[SignInResult] = Call(dict(device_id=device_id, user_id=user_id, token=token))
        self.sign_ins.append(call)
        self.order.append("sign_in")
        if self.auto_sign_in:
            call.deferred.callback(SignInResult(ok=True))
        return await call.deferred

    def send(self, request: SendRequest, *, conn: str = "") -> Deferred[SendResult]:
        self.conns.append(("send", conn))
        call: Call[SendResult] = Call(dict(request=request))
        self.sends.append(call)
        self.order.append(f"send {request.send_sequence}")
        if self.auto_send:
            call.deferred.callback(
                SendResult(
                    code=0, message_id=1000 + request.send_sequence, seq=request.send_sequence
                )
            )
        return call.deferred

    async def sync_page(self, *, device_id: int, user_id: int, after_seq: int, limit: int, conn: str = "") -> SyncPage:
        self.conns.append(("sync_page", conn))
        call: Call[SyncPage] = Call(dict(device_id=device_id, user_id=user_id, after_seq=after_seq, limit=limit))
        self.sync_pages.append(call)
        self.order.append(f"sync_page {after_seq}")
        if self.auto_sync:
            call.deferred.callback(self.page_for(call))
        return await call.deferred

    def ack(self, *, device_id: int, user_id: int, seq: int, conn: str = "") -> Deferred[None]:
        self.conns.append(("ack", conn))
        self.acks.append(dict(device_id=device_id, user_id=user_id, seq=seq))
        self.order.append(f"ack {seq}")
        return succeed(None)

    async def offline(self, *, device_id: int, user_id: int, conn: str = "") -> None:
        self.conns.append(("offline", conn))
        self.offlines.append(dict(device_id=device_id, user_id=user_id))

    async def change(self, *, device_id: int, user_id: int, request: ChangeRequest, conn: str = "") -> ChangeResult:
        """Read reports, recalls and edits (issue 14) are answered 0 at once."""
        self.conns.append(("change", conn))
        self.order.append(f"change {request.kind}")
        return ChangeResult()

    def page_for(self, call: Call[SyncPage]) -> SyncPage:
        """The page ``messages`` holds for a sync_page call's arguments."""
        args = call.args
        later = [m for m in self.messages.get(args["user_id"], []) if m.seq > args["after_seq"]]
        return SyncPage(messages=later[: args["limit"]], more=len(later) > args["limit"])

    def answer_sync(self, index: int = -1) -> None:
        """Fire a pending sync_page call with its page from ``messages``."""
        call = self.sync_pages[index]
        call.deferred.callback(self.page_for(call))

    def store(self, user_id: int, count: int, *, content: str = "hello") -> list[StoredMessage]:
        """Add ``count`` messages for a user, continuing its seq, and return them."""
        kept = self.messages.setdefault(user_id, [])
        new = [make_message(user_id, len(kept) + i + 1, content=content) for i in range(count)]
        kept.extend(new)
        return new


def push(connection: Any, messages: list[StoredMessage]) -> None:
    """Live-push stored copies to a connection, as the connection table does."""
    connection.push_items(
        [m.seq for m in messages], [codec.encode_item(m) for m in messages], [audience(m) for m in messages]
    )


def make_message(user_id: int, seq: int, *, content: str = "hello") -> StoredMessage:
    """A stored one-to-one message from user 99 to ``user_id`` with the given seq."""
    return StoredMessage(
        user_id=user_id,
        seq=seq,
        message_id=10_000 + seq,
        sender_type=1,
        sender_id=99,
        sender_device_id=990,
        receiver_type=1,
        receiver_id=user_id,
        type=1,
        content=content,
        send_time=1_700_000_000_000 + seq,
    )


class FlowControlTransport(StringTransport):
    """A StringTransport that pauses its streaming producer past ``high_water`` bytes,
    as a TCP transport does when its send buffer fills."""

    def __init__(self, high_water: int) -> None:
        super().__init__()
        self.high_water = high_water
        #: calls of write and writeSequence
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)
        self._check()

    def writeSequence(self, data: Any) -> None:
        self.writes += 1
        super().writeSequence(data)
        self._check()

    def drain(self) -> bytes:
        """Take everything written so far and resume the producer, as the kernel would."""
        data = self.value()
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()
        return data

    def _check(self) -> None:
        if self.producer is not None and len(self.io.getvalue()) > self.high_water:
            self.producer.pauseProducing()


def frames_of(data: bytes) -> list[Frame]:
    """Decode everything a transport received; fails on a trailing partial frame."""
    frames, rest = decode_frames(data)
    assert rest == b"", f"{len(rest)} trailing bytes"
    return frames


def frame(frame_type: int, value: bytes = b"") -> bytes:
    """A raw frame of any code and value (unknown codes, malformed values); well-formed
    frames come from the codec's typed frames (``codec.SignIn(...).to_frame()``)."""
    return encode_frame(frame_type, value)


class RecordingClient(TLVReceiver):
    """A client side that records every frame it receives."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.lost = False

    def frameReceived(self, frame_type: int, value: bytes) -> None:
        self.frames.append(Frame(frame_type, value))

    def decoded(self) -> list[codec.WireFrame | None]:
        """Every frame received, as the codec's typed frames (None for an unknown code)."""
        return [codec.decode_frame(f.type, f.value) for f in self.frames]

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost()
        self.lost = True
