"""The client wire codec: frame codes and pure protobuf encoding and decoding of every
frame value, in both directions.

Everything here is bytes in, values out (or the reverse): no transport, no clock,
no logging. :mod:`goim.protocols.framing` is the TLV layer underneath.

* Typed frames (:class:`SignIn` … :class:`Kicked`): one frozen dataclass per frame
  code with ``to_bytes()`` / ``from_bytes()`` for its value and ``to_frame()`` for
  the whole TLV frame; :func:`decode_frame` turns any ``(code, value)`` into one.
  Servers, clients, tests and tools all build and read frames with them.
* Server-side helpers: ``decode_*`` (client frames as protobuf messages, as the
  server's connection uses them), ``encode_*`` and the ``Message`` packing for the
  goim 1.1 read buffer (``pack_items``), done by hand from each item's serialised
  bytes so an item is serialised once however the frames are cut; the result is
  byte-for-byte what protobuf itself would produce.
"""

from __future__ import annotations

import dataclasses
import operator
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, Final, Iterable, Sequence, TypeVar, Union

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as _PbMessage

from goim.pb import goim_pb2 as pb
from goim.protocols.framing import encode_frame
from goim.types import SIGN_IN_FAILED as SIGN_IN_FAILED
from goim.types import SIGN_IN_OK as SIGN_IN_OK
from goim.types import SendCode as SendCode
from goim.types import SignInCode as SignInCode
from goim.types import SendRequest, SendResult, StoredCopies, StoredMessage, known_code


class FrameCode(IntEnum):
    """Frame type codes (DESIGN section 3). Members compare equal to and format as
    their numbers; ``repr`` and :func:`code_name` name them for logs."""

    SIGN_IN = 1
    SIGN_IN_ACK = 2
    SYNC_TRIGGER = 3
    HEARTBEAT = 4
    HEARTBEAT_ACK = 5
    MESSAGE_SEND = 6
    MESSAGE_SEND_ACK = 7
    MESSAGE = 8
    MESSAGE_ACK = 9
    KICKED = 10
    # read receipts, recall and edit (issue 14; docs/protocol.md "Events")
    READ_REPORT = 11
    RECALL = 12
    EDIT = 13
    CHANGE_ACK = 14

    def __repr__(self) -> str:
        return f"FrameCode.{self.name}({self.value})"


class MessageType(IntEnum):
    """``Message.type``: a sync result or a live push."""

    SYNC = 1
    PUSH = 2

    def __repr__(self) -> str:
        return f"MessageType.{self.name}({self.value})"


# The module-level names predate the enums; both spell the same members.
SIGN_IN: Final = FrameCode.SIGN_IN
SIGN_IN_ACK: Final = FrameCode.SIGN_IN_ACK
SYNC_TRIGGER: Final = FrameCode.SYNC_TRIGGER
HEARTBEAT: Final = FrameCode.HEARTBEAT
HEARTBEAT_ACK: Final = FrameCode.HEARTBEAT_ACK
MESSAGE_SEND: Final = FrameCode.MESSAGE_SEND
MESSAGE_SEND_ACK: Final = FrameCode.MESSAGE_SEND_ACK
MESSAGE: Final = FrameCode.MESSAGE
MESSAGE_ACK: Final = FrameCode.MESSAGE_ACK
KICKED: Final = FrameCode.KICKED
READ_REPORT: Final = FrameCode.READ_REPORT
RECALL: Final = FrameCode.RECALL
EDIT: Final = FrameCode.EDIT
CHANGE_ACK: Final = FrameCode.CHANGE_ACK

CODE_NAMES: Final[dict[int, str]] = {
    SIGN_IN: "SignIn",
    SIGN_IN_ACK: "SignInACK",
    SYNC_TRIGGER: "SyncTrigger",
    HEARTBEAT: "Heartbeat",
    HEARTBEAT_ACK: "HeartbeatACK",
    MESSAGE_SEND: "MessageSend",
    MESSAGE_SEND_ACK: "MessageSendACK",
    MESSAGE: "Message",
    MESSAGE_ACK: "MessageACK",
    KICKED: "Kicked",
    READ_REPORT: "ReadReport",
    RECALL: "Recall",
    EDIT: "Edit",
    CHANGE_ACK: "ChangeACK",
}
CLIENT_CODES: Final = frozenset({SIGN_IN, SYNC_TRIGGER, HEARTBEAT, MESSAGE_SEND, MESSAGE_ACK, READ_REPORT, RECALL, EDIT})
SERVER_CODES: Final = frozenset(
    {SIGN_IN_ACK, HEARTBEAT_ACK, MESSAGE_SEND_ACK, MESSAGE, KICKED, CHANGE_ACK}
)

# Message.type values.
MESSAGE_SYNC: Final = MessageType.SYNC
MESSAGE_PUSH: Final = MessageType.PUSH

# Frame value caps for what the server writes.
DEFAULT_MAX_FRAME: Final = 4092  # goim 1.1 clients read into a 4,096-byte buffer
MIN_MAX_FRAME: Final = 512  # floor for a tiny announced max_frame
MAX_MAX_FRAME: Final = 0xFFFF  # the TLV length field's maximum

# Packing for clients that announce no max_frame (goim 1.1 clients). Their read buffer
# (4,096 bytes) panics when a read fills it and the decoder is left with only 2 or 3
# bytes of the next frame's 4-byte header at the buffer's end, i.e. when a frame
# starts 4,093 or 4,094 bytes after the start of the buffer window. Such a window
# always starts at a frame boundary, so the stream is safe when no two frame
# boundaries are 4,093 or 4,094 bytes apart (docs/protocol.md section 1).
LEGACY_BUFFER: Final = 4096
LEGACY_BAD_SPANS: Final = frozenset({LEGACY_BUFFER - 3, LEGACY_BUFFER - 2})
#: value bytes a legacy frame is packed to: a whole frame (4-byte header) stays
#: below 4,093 bytes, also right after the 6-byte SignInACK (6 + 4,086 = 4,092)
LEGACY_PACK_TARGET: Final = 4082
#: a page's last frame is topped up to this many bytes (header included) when the
#: page allows it, so that it cannot pair with its neighbours into a bad span
LEGACY_MIN_TAIL: Final = 2048
#: the frames a goim 1.1 client has read just before the first sync frame:
#: SignInACK{code: 1} (4 + 2 bytes)
LEGACY_LEAD: Final = 6

# Longest text put into SignInACK.message and Kicked.reason.
MAX_TEXT_BYTES: Final = 256

_M = TypeVar("_M", bound=_PbMessage)


class MalformedFrameError(ValueError):
    """A frame value is not a valid protobuf encoding of the message its code names."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"malformed {code_name(code)} value: {detail}")
        self.code = code


def code_name(code: int) -> str:
    """Name a frame code for log lines.

    Args:
        code: a frame type code.

    Returns:
        The message name, or ``code N`` for an unknown code.
    """
    return CODE_NAMES.get(code, f"code {code}")


def frame_cap(announced: int) -> int:
    """The largest frame value the server may write to a client.

    Args:
        announced: ``SignIn.max_frame`` as received (0 when absent).

    Returns:
        4,092 for 0; otherwise the announced value clamped to 512..65,535.
    """
    if announced <= 0:
        return DEFAULT_MAX_FRAME
    return max(MIN_MAX_FRAME, min(announced, MAX_MAX_FRAME))


def clip_text(text: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """Cut ``text`` to at most ``max_bytes`` of UTF-8 without splitting a character.

    Args:
        text: any text.
        max_bytes: the byte budget.

    Returns:
        ``text`` or its longest prefix that fits.
    """
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", errors="ignore")


# --- typed frames (both directions) ------------------------------------------------

_F = TypeVar("_F", bound="WireFrame")


class WireFrame:
    """One frame's value as a typed, immutable Python value.

    Subclasses are frozen dataclasses whose fields are the protobuf fields of the
    frame (same names, same defaults), so ``Cls.from_bytes(Cls(...).to_bytes())``
    gives the value back and ``to_bytes`` is byte-for-byte what goim 1.1 writes.
    """

    __slots__ = ()

    #: the frame code this value travels under
    CODE: ClassVar[FrameCode]
    #: the generated protobuf class of the value (None: the value is empty)
    PROTO: ClassVar[type[_PbMessage] | None] = None

    def to_bytes(self) -> bytes:
        """The frame value (protobuf encoding; empty for Heartbeat and HeartbeatACK).

        Raises:
            ValueError: a field is out of its protobuf type's range.
        """
        if self.PROTO is None:
            return b""
        return self.PROTO(**self._fields()).SerializeToString()

    def to_frame(self) -> bytes:
        """The whole TLV frame: code, length, value."""
        return encode_frame(self.CODE, self.to_bytes())

    @classmethod
    def from_bytes(cls: type[_F], value: bytes) -> _F:
        """Parse a frame value (unknown protobuf fields are ignored).

        Raises:
            MalformedFrameError: the value is not a valid encoding.
        """
        if cls.PROTO is None:
            return cls()
        return cls._from_pb(decode(cls.PROTO, cls.CODE, value))

    def _fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _field_names(type(self))}

    @classmethod
    def _from_pb(cls: type[_F], message: Any) -> _F:
        return cls(**{name: getattr(message, name) for name in _field_names(cls)})


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    """The dataclass fields of a typed frame (ClassVars excluded), cached per class."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


@dataclass(frozen=True, slots=True)
class SignIn(WireFrame):
    """Code 1, client to server: authenticate this connection."""

    CODE: ClassVar[FrameCode] = FrameCode.SIGN_IN
    PROTO: ClassVar[type[_PbMessage] | None] = pb.SignIn

    device_id: int = 0
    user_id: int = 0
    token: str = ""
    #: the largest frame value the client reads (0: goim 1.1's 4,092)
    max_frame: int = 0
    #: the :class:`goim.features.Feature` bits the client opts in to (0: goim 1.1)
    features: int = 0


@dataclass(frozen=True, slots=True)
class SignInAck(WireFrame):
    """Code 2, server to client: the sign-in's outcome (``code`` a :class:`SignInCode`
    when known)."""

    CODE: ClassVar[FrameCode] = FrameCode.SIGN_IN_ACK
    PROTO: ClassVar[type[_PbMessage] | None] = pb.SignInACK

    code: int = 0
    message: str = ""

    @classmethod
    def _from_pb(cls, message: Any) -> SignInAck:
        return cls(code=known_code(SignInCode, message.code), message=message.message)


@dataclass(frozen=True, slots=True)
class SyncTrigger(WireFrame):
    """Code 3, client to server: send every message after ``sync_sequence``."""

    CODE: ClassVar[FrameCode] = FrameCode.SYNC_TRIGGER
    PROTO: ClassVar[type[_PbMessage] | None] = pb.SyncTrigger

    sync_sequence: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat(WireFrame):
    """Code 4, client to server; empty value."""

    CODE: ClassVar[FrameCode] = FrameCode.HEARTBEAT


@dataclass(frozen=True, slots=True)
class HeartbeatAck(WireFrame):
    """Code 5, server to client; empty value."""

    CODE: ClassVar[FrameCode] = FrameCode.HEARTBEAT_ACK


@dataclass(frozen=True, slots=True)
class MessageSend(WireFrame):
    """Code 6, client to server: one message to store and deliver."""

    CODE: ClassVar[FrameCode] = FrameCode.MESSAGE_SEND
    PROTO: ClassVar[type[_PbMessage] | None] = pb.MessageSend

    receiver_type: int = 0
    receiver_id: int = 0
    type: int = 0
    content: str = ""
    send_sequence: int = 0
    send_time: int = 0


@dataclass(frozen=True, slots=True)
class MessageSendAck(WireFrame):
    """Code 7, server to client: a send's outcome (``code`` a :class:`SendCode` when
    known)."""

    CODE: ClassVar[FrameCode] = FrameCode.MESSAGE_SEND_ACK
    PROTO: ClassVar[type[_PbMessage] | None] = pb.MessageSendACK

    send_sequence: int = 0
    code: int = 0
    message_id: int = 0
    sync_sequence: int = 0
    retry_after_ms: int = 0

    @classmethod
    def _from_pb(cls, message: Any) -> MessageSendAck:
        return cls(
            send_sequence=message.send_sequence,
            code=known_code(SendCode, message.code),
            message_id=message.message_id,
            sync_sequence=message.sync_sequence,
            retry_after_ms=message.retry_after_ms,
        )

    @classmethod
    def of_result(cls, send_sequence: int, result: SendResult) -> MessageSendAck:
        """The ACK of a send's result (``seq`` travels as ``sync_sequence``)."""
        return cls(
            send_sequence=send_sequence,
            code=result.code,
            message_id=result.message_id,
            sync_sequence=result.seq,
            retry_after_ms=result.retry_after_ms,
        )


@dataclass(frozen=True, slots=True)
class MessageItem:
    """One message inside a :class:`Message` frame (not a frame of its own)."""

    message_id: int = 0
    sender_type: int = 0
    sender_id: int = 0
    sender_device_id: int = 0
    receiver_type: int = 0
    receiver_id: int = 0
    type: int = 0
    content: str = ""
    sync_sequence: int = 0
    send_time: int = 0
    kind: int = 0
    ref_seq: int = 0
    edited_at: int = 0
    recalled: bool = False

    def to_pb(self) -> pb.MessageItem:
        """The generated protobuf message."""
        return pb.MessageItem(**{name: getattr(self, name) for name in _ITEM_FIELDS})

    def to_bytes(self) -> bytes:
        """The item's protobuf encoding."""
        return self.to_pb().SerializeToString()

    @classmethod
    def from_pb(cls, item: pb.MessageItem) -> MessageItem:
        """From the generated protobuf message."""
        # positional and spelled out: a sync frame carries many items (hot in clients)
        return cls(
            item.message_id,
            item.sender_type,
            item.sender_id,
            item.sender_device_id,
            item.receiver_type,
            item.receiver_id,
            item.type,
            item.content,
            item.sync_sequence,
            item.send_time,
            item.kind,
            item.ref_seq,
            item.edited_at,
            item.recalled,
        )

    @classmethod
    def from_bytes(cls, value: bytes) -> MessageItem:
        """Parse an item's encoding. Raises MalformedFrameError (code 8)."""
        return cls.from_pb(decode(pb.MessageItem, MESSAGE, value))

    @classmethod
    def from_stored(cls, message: StoredMessage) -> MessageItem:
        """The item of a stored copy (``seq`` -> ``sync_sequence``)."""
        return cls.from_pb(item_from_stored(message))

    def stored(self, *, user_id: int) -> StoredMessage:
        """The copy stored for ``user_id`` that this item carries."""
        return stored_from_item(self, user_id=user_id)


_ITEM_FIELDS: Final = _field_names(MessageItem)


@dataclass(frozen=True, slots=True)
class Message(WireFrame):
    """Code 8, server to client: a sync result (type 1) or a live push (type 2);
    ``more`` is true while more sync frames follow."""

    CODE: ClassVar[FrameCode] = FrameCode.MESSAGE
    PROTO: ClassVar[type[_PbMessage] | None] = pb.Message

    type: int = 0
    messages: tuple[MessageItem, ...] = ()
    more: bool = False
    #: history before this page was deleted by retention (sent only to clients
    #: with :attr:`goim.features.Feature.TRIMMED`)
    trimmed: bool = False

    def to_bytes(self) -> bytes:
        """The frame value (protobuf encoding)."""
        return pb.Message(
            type=self.type,
            messages=[item.to_pb() for item in self.messages],
            more=self.more,
            trimmed=self.trimmed,
        ).SerializeToString()

    @classmethod
    def _from_pb(cls, message: Any) -> Message:
        return cls(
            type=known_code(MessageType, message.type),
            messages=tuple(map(MessageItem.from_pb, message.messages)),
            more=message.more,
            trimmed=message.trimmed,
        )

    @classmethod
    def of_stored(cls, message_type: int, messages: Iterable[StoredMessage], *, more: bool = False) -> Message:
        """A Message carrying stored copies (no size limit applied)."""
        return cls(type=message_type, messages=tuple(MessageItem.from_stored(m) for m in messages), more=more)

    def stored(self, *, user_id: int) -> list[StoredMessage]:
        """The copies for ``user_id`` the frame carries, in order."""
        return [item.stored(user_id=user_id) for item in self.messages]


@dataclass(frozen=True, slots=True)
class MessageAck(WireFrame):
    """Code 9, client to server: the device holds everything up to ``sync_sequence``."""

    CODE: ClassVar[FrameCode] = FrameCode.MESSAGE_ACK
    PROTO: ClassVar[type[_PbMessage] | None] = pb.MessageACK

    message_id: int = 0
    sync_sequence: int = 0
    receive_time: int = 0


@dataclass(frozen=True, slots=True)
class Kicked(WireFrame):
    """Code 10, server to client: the server closes the connection next."""

    CODE: ClassVar[FrameCode] = FrameCode.KICKED
    PROTO: ClassVar[type[_PbMessage] | None] = pb.Kicked

    reason: str = ""


@dataclass(frozen=True, slots=True)
class ReadReport(WireFrame):
    """Code 11, client to server: the conversation is read up to ``sync_sequence`` (of
    the user's own stream); answered by :class:`ChangeAck` with ``request_id``."""

    CODE: ClassVar[FrameCode] = FrameCode.READ_REPORT
    PROTO: ClassVar[type[_PbMessage] | None] = pb.ReadReport

    conversation_type: int = 0
    conversation_id: int = 0
    sync_sequence: int = 0
    request_id: int = 0


@dataclass(frozen=True, slots=True)
class Recall(WireFrame):
    """Code 12, client to server: recall a message; answered by :class:`ChangeAck`."""

    CODE: ClassVar[FrameCode] = FrameCode.RECALL
    PROTO: ClassVar[type[_PbMessage] | None] = pb.Recall

    message_id: int = 0
    request_id: int = 0


@dataclass(frozen=True, slots=True)
class Edit(WireFrame):
    """Code 13, client to server: replace a message's content; answered by :class:`ChangeAck`."""

    CODE: ClassVar[FrameCode] = FrameCode.EDIT
    PROTO: ClassVar[type[_PbMessage] | None] = pb.Edit

    message_id: int = 0
    content: str = ""
    request_id: int = 0


@dataclass(frozen=True, slots=True)
class ChangeAck(WireFrame):
    """Code 14, server to client: the outcome of a ReadReport, Recall or Edit
    (``code`` is an API code, docs/http-api.md; ``read_sequence`` the stored read position)."""

    CODE: ClassVar[FrameCode] = FrameCode.CHANGE_ACK
    PROTO: ClassVar[type[_PbMessage] | None] = pb.ChangeACK

    request_id: int = 0
    code: int = 0
    message: str = ""
    read_sequence: int = 0


ClientFrame = Union[SignIn, SyncTrigger, Heartbeat, MessageSend, MessageAck, ReadReport, Recall, Edit]
ServerFrame = Union[SignInAck, HeartbeatAck, MessageSendAck, Message, Kicked, ChangeAck]
AnyFrame = Union[ClientFrame, ServerFrame]

#: the typed frame of each code a client writes
CLIENT_FRAMES: Final[dict[int, type[WireFrame]]] = {
    cls.CODE: cls for cls in (SignIn, SyncTrigger, Heartbeat, MessageSend, MessageAck, ReadReport, Recall, Edit)
}
#: the typed frame of each code a server writes
SERVER_FRAMES: Final[dict[int, type[WireFrame]]] = {
    cls.CODE: cls for cls in (SignInAck, HeartbeatAck, MessageSendAck, Message, Kicked, ChangeAck)
}
FRAMES: Final[dict[int, type[WireFrame]]] = {**CLIENT_FRAMES, **SERVER_FRAMES}


def decode_frame(code: int, value: bytes) -> WireFrame | None:
    """The typed value of any frame, either direction.

    Args:
        code: the frame code.
        value: the frame value.

    Returns:
        The typed frame, or None for a code this version does not know (the
        protocol says to ignore those).

    Raises:
        MalformedFrameError: the value is not a valid encoding for its code.
    """
    cls = FRAMES.get(code)
    return None if cls is None else cls.from_bytes(value)


# --- decoding (client -> server) ---------------------------------------------------


def decode(message_class: type[_M], code: int, value: bytes) -> _M:
    """Parse a frame value as ``message_class``.

    Unknown fields are accepted (forward compatibility), as protobuf does.

    Args:
        message_class: the generated protobuf class.
        code: the frame code, for the error text.
        value: the frame value.

    Returns:
        The parsed message.

    Raises:
        MalformedFrameError: the value is not a valid encoding.
    """
    message = message_class()
    try:
        message.ParseFromString(value)
    except DecodeError as e:
        raise MalformedFrameError(code, str(e)) from e
    return message


def decode_sign_in(value: bytes) -> pb.SignIn:
    """Parse a SignIn (code 1) value. Raises MalformedFrameError."""
    return decode(pb.SignIn, SIGN_IN, value)


def decode_sync_trigger(value: bytes) -> pb.SyncTrigger:
    """Parse a SyncTrigger (code 3) value. Raises MalformedFrameError."""
    return decode(pb.SyncTrigger, SYNC_TRIGGER, value)


def decode_message_send(value: bytes) -> pb.MessageSend:
    """Parse a MessageSend (code 6) value. Raises MalformedFrameError."""
    return decode(pb.MessageSend, MESSAGE_SEND, value)


def decode_message_ack(value: bytes) -> pb.MessageACK:
    """Parse a MessageACK (code 9) value. Raises MalformedFrameError."""
    return decode(pb.MessageACK, MESSAGE_ACK, value)


def send_request(
    message: pb.MessageSend, *, device_id: int, user_id: int, epoch: int, frame: bytes = b""
) -> SendRequest:
    """Build the logic layer's SendRequest from a MessageSend.

    Args:
        message: the decoded frame.
        device_id: the device the connection signed in as (never from the frame).
        user_id: the user the connection signed in as (never from the frame).
        epoch: the device's send_sequence epoch at the connection's sign-in.
        frame: the frame value ``message`` was decoded from, kept for forwarding.

    Returns:
        The request.
    """
    return SendRequest(
        device_id=device_id,
        user_id=user_id,
        receiver_type=message.receiver_type,
        receiver_id=message.receiver_id,
        type=message.type,
        content=message.content,
        send_sequence=message.send_sequence,
        send_time=message.send_time,
        epoch=epoch,
        frame=frame,
    )


def encode_message_send(request: SendRequest) -> bytes:
    """The MessageSend value of a request (what a connect node forwards to logic);
    the inverse of ``send_request`` but for the connection's identity."""
    return MessageSend(
        receiver_type=request.receiver_type,
        receiver_id=request.receiver_id,
        type=request.type,
        content=request.content,
        send_sequence=request.send_sequence,
        send_time=request.send_time,
    ).to_bytes()


# --- encoding (server -> client) ---------------------------------------------------


def encode_sign_in_ack(code: int, message: str = "") -> bytes:
    """Encode a SignInACK (code 2) value; ``message`` is clipped to 256 bytes."""
    return SignInAck(code=code, message=clip_text(message)).to_bytes()


def encode_send_ack(send_sequence: int, result: SendResult) -> bytes:
    """Encode a MessageSendACK (code 7) value for a send's result.

    Args:
        send_sequence: the send's ``send_sequence`` as the client sent it.
        result: what the logic layer answered.

    Returns:
        The value bytes.
    """
    return MessageSendAck.of_result(send_sequence, result).to_bytes()


def encode_kicked(reason: str) -> bytes:
    """Encode a Kicked (code 10) value; ``reason`` is clipped to 256 bytes."""
    return Kicked(reason=clip_text(reason)).to_bytes()


def item_from_stored(message: StoredMessage) -> pb.MessageItem:
    """Convert a stored copy to the wire's MessageItem (``seq`` -> ``sync_sequence``)."""
    return pb.MessageItem(
        message_id=message.message_id,
        sender_type=message.sender_type,
        sender_id=message.sender_id,
        sender_device_id=message.sender_device_id,
        receiver_type=message.receiver_type,
        receiver_id=message.receiver_id,
        type=message.type,
        content=message.content,
        sync_sequence=message.seq,
        send_time=message.send_time,
        kind=message.kind,
        ref_seq=message.ref_seq,
        edited_at=message.edited_at,
        recalled=message.recalled,
    )


def stored_from_item(item: pb.MessageItem | MessageItem, *, user_id: int) -> StoredMessage:
    """Convert a MessageItem back to the copy stored for ``user_id``.

    Args:
        item: a decoded item.
        user_id: whose copy it is (the wire does not carry it).

    Returns:
        The stored copy.
    """
    return StoredMessage(
        user_id=user_id,
        seq=item.sync_sequence,
        message_id=item.message_id,
        sender_type=item.sender_type,
        sender_id=item.sender_id,
        sender_device_id=item.sender_device_id,
        receiver_type=item.receiver_type,
        receiver_id=item.receiver_id,
        type=item.type,
        content=item.content,
        send_time=item.send_time,
        kind=item.kind,
        ref_seq=item.ref_seq,
        edited_at=item.edited_at,
        recalled=item.recalled,
    )


def encode_item(message: StoredMessage) -> bytes:
    """Serialise a stored copy as a MessageItem."""
    return item_from_stored(message).SerializeToString()


#: a seq no stored copy has, whose varint (ff ff ff ff ff ff ff ff 7f) cannot occur
#: inside a string field (0xff is never UTF-8): marks where sync_sequence goes
_SENTINEL_SEQ = 2**63 - 1
_SEQ_TAG = b"\x48"  # MessageItem field 9 (sync_sequence), varint
_SENTINEL = _SEQ_TAG + b"\xff" * 8 + b"\x7f"
#: every StoredMessage field but whose copy (user_id) and where in its stream (seq) it is
_BODY_FIELDS = tuple(f.name for f in dataclasses.fields(StoredMessage) if f.name not in ("user_id", "seq"))


class ItemEncoder:
    """Encodes the copies of one message once: every copy of a message has the same
    MessageItem but for ``sync_sequence``, so the bytes around that field are
    serialised once (with :func:`item_from_stored`, so every field flows through)
    and each copy gets its own seq spliced in. The bytes equal
    ``encode_item(copy)`` exactly (fields stay in number order). Not thread-safe:
    one per thread (the reactor's is :data:`PUSH_ITEMS`).

    Args:
        max_bytes: how many bytes of bodies are kept (the oldest are dropped first).
        max_entries: how many messages' bodies are kept.
    """

    def __init__(self, *, max_bytes: int = 4 << 20, max_entries: int = 4096) -> None:
        self._max_bytes = max_bytes
        self._max_entries = max_entries
        self._bytes = 0
        self._bodies: OrderedDict[Any, tuple[bytes, bytes] | None] = OrderedDict()

    def encode(self, message: StoredMessage) -> bytes:
        """The MessageItem bytes of one stored copy (``encode_item(message)``)."""
        parts = self._parts(message)
        seq = message.seq
        if parts is None or seq <= 0:
            return encode_item(message)
        return parts[0] + _seq_field(seq) + parts[1]

    def encode_copies(self, copies: StoredCopies, indexes: Iterable[int]) -> list[bytes]:
        """The MessageItem bytes of the copies at ``indexes`` (``encode(copies.copy(i))``
        each), without building a StoredMessage per copy when they share a body."""
        if copies.receiver_is_user:
            # each copy names its own receiver: bodies differ
            return [self.encode(copies.copy(i)) for i in indexes]
        parts = self._parts(copies.message)
        if parts is None:
            return [self.encode(copies.copy(i)) for i in indexes]
        before, after = parts
        seqs = copies.seqs
        return [before + _seq_field(seqs[i]) + after if seqs[i] > 0 else encode_item(copies.copy(i)) for i in indexes]

    def _parts(self, message: StoredMessage) -> tuple[bytes, bytes] | None:
        """The message's item bytes before and after sync_sequence, split once per body."""
        key = _body_key(message)
        parts = self._bodies.get(key, _MISSING)
        if parts is _MISSING:
            parts = _split_item(message)
            self._remember(key, parts)
        return parts

    def _remember(self, key: Any, parts: tuple[bytes, bytes] | None) -> None:
        bodies = self._bodies
        size = _parts_size(parts)
        while bodies and (self._bytes + size > self._max_bytes or len(bodies) >= self._max_entries):
            self._bytes -= _parts_size(bodies.popitem(last=False)[1])
        if size <= self._max_bytes:
            bodies[key] = parts
            self._bytes += size


_MISSING: Any = object()
_body_key = operator.attrgetter(*_BODY_FIELDS)


def _seq_field(seq: int) -> bytes:
    """MessageItem field 9 (sync_sequence) holding ``seq`` (> 0)."""
    if seq < 0x80:
        return bytes((0x48, seq))
    if seq < 0x4000:
        return bytes((0x48, (seq & 0x7F) | 0x80, seq >> 7))
    if seq < 0x200000:
        return bytes((0x48, (seq & 0x7F) | 0x80, ((seq >> 7) & 0x7F) | 0x80, seq >> 14))
    return _SEQ_TAG + _varint(seq)


def _parts_size(parts: tuple[bytes, bytes] | None) -> int:
    return 64 if parts is None else 64 + len(parts[0]) + len(parts[1])


#: the reactor's encoder of pushed copies (connections, the standalone table, the Redis delivery)
PUSH_ITEMS = ItemEncoder()


def _split_item(message: StoredMessage) -> tuple[bytes, bytes] | None:
    """The item's bytes before and after its sync_sequence field (None: no unique split)."""
    item = item_from_stored(message)
    item.sync_sequence = _SENTINEL_SEQ
    data = item.SerializeToString()
    at = data.find(_SENTINEL)
    if at < 0 or data.find(_SENTINEL, at + 1) >= 0:
        return None
    return data[:at], data[at + len(_SENTINEL) :]


def encode_message(message_type: int, items: Iterable[StoredMessage], more: bool) -> bytes:
    """Encode one Message (code 8) value with protobuf itself (no size limit applied).

    Args:
        message_type: 1 sync result, 2 live push.
        items: the messages to carry.
        more: whether more sync frames follow.

    Returns:
        The value bytes.
    """
    return pb.Message(
        type=message_type, messages=[item_from_stored(m) for m in items], more=more
    ).SerializeToString()


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_TAG_TYPE = b"\x08"  # field 1, varint
_TAG_ITEM = b"\x12"  # field 2, length-delimited
_MORE_TRUE = b"\x18\x01"  # field 3 = true


def pack_items(
    items: Sequence[bytes],
    *,
    message_type: int,
    cap: int,
    more: bool,
    more_on_last: bool,
    legacy: bool | None = None,
) -> list[bytes]:
    """Pack serialised MessageItems, in order, into Message values.

    Each value is at most ``cap`` bytes, except that an item too big to fit ``cap``
    on its own travels alone in a value that exceeds it (the caller may log that).

    For a client that announced no ``max_frame`` (``cap`` 4,092, ``legacy``) the
    values are cut so that the goim 1.1 read buffer cannot panic on them (see
    ``LEGACY_BAD_SPANS``): at most 4,082 bytes each, no two frame boundaries of the
    page (nor the SignInACK before it) 4,093 or 4,094 bytes apart, and the last
    frame topped up to half a buffer when the page allows it. Otherwise frames are
    filled greedily up to ``cap``.

    Args:
        items: ``MessageItem`` serialisations, in the order to send them.
        message_type: ``Message.type`` (1 sync, 2 push).
        cap: the largest value the client accepts.
        more: ``Message.more`` of every value but the last.
        more_on_last: ``Message.more`` of the last value.
        legacy: pack for the goim 1.1 buffer; default: ``cap == 4092``.

    Returns:
        The values, at least one: no items give one value with no messages.
    """
    if legacy is None:
        legacy = cap == DEFAULT_MAX_FRAME
    header = _TAG_TYPE + _varint(message_type) if message_type else b""
    # Room for the "more" field is always kept, so a value fits whatever its flag.
    overhead = len(header) + len(_MORE_TRUE)
    entries = [_TAG_ITEM + _varint(len(item)) + item for item in items]
    if sum(map(len, entries)) <= (LEGACY_PACK_TARGET if legacy else cap) - overhead:
        # everything fits one value (the common case of a live push): nothing to
        # cut, and a lone frame within the legacy target cannot make a bad span
        groups = [(0, len(entries))]
    elif legacy:
        # frames but the last carry ``more``: that decides their size on the wire
        flag_bytes = len(_MORE_TRUE) if more else 0
        groups = _legacy_groups([len(e) for e in entries], header=len(header), flag=flag_bytes)
    else:
        groups = _greedy_groups([len(e) for e in entries], cap - overhead)
    last = len(groups) - 1
    values: list[bytes] = []
    for index, (start, end) in enumerate(groups):
        flag = more_on_last if index == last else more
        values.append(header + b"".join(entries[start:end]) + (_MORE_TRUE if flag else b""))
    return values


def _greedy_groups(sizes: Sequence[int], budget: int, *, offset: int = 0) -> list[tuple[int, int]]:
    """Cut ``sizes`` into ``[start, end)`` runs of total at most ``budget`` (a lone
    oversize entry makes its own run); at least one run. Indexes start at ``offset``."""
    groups: list[tuple[int, int]] = []
    start = 0
    size = 0
    for index, entry in enumerate(sizes):
        if index > start and size + entry > budget:
            groups.append((offset + start, offset + index))
            start, size = index, 0
        size += entry
    groups.append((offset + start, offset + len(sizes)))
    return groups


def _legacy_groups(sizes: Sequence[int], *, header: int, flag: int) -> list[tuple[int, int]]:
    """Cut ``sizes`` (item entries) into runs for a goim 1.1 client.

    Frame sizes on the wire count the 4-byte frame header, ``header`` (the type
    field) and ``flag`` (the bytes of ``more`` in these frames); every value keeps
    room for ``more`` whatever its flag, so that the last one may differ. Boundaries are frame starts in the stream; position 0 is the page's
    first frame and ``-LEGACY_LEAD`` the SignInACK that may precede it. Each frame
    takes as many items as fit, fewer when its end would be 4,093 or 4,094 bytes
    after an earlier boundary; when no cut of a frame avoids that, the search goes
    back to the frames before it (depth-first, iterative). After a bounded number
    of tries it settles for the fullest cut of every remaining frame.
    """
    if not sizes:
        return [(0, 0)]
    budget = LEGACY_PACK_TARGET - header - len(_MORE_TRUE)
    frame = 4 + header + flag  # bytes of a frame beyond its entries
    prefix = [0]
    for size in sizes:
        prefix.append(prefix[-1] + size)
    count = len(sizes)

    def candidates(start: int) -> list[int]:
        """Where a frame starting at item ``start`` may end, fullest first."""
        end = start + 1
        while end < count and prefix[end + 1] - prefix[start] <= budget:
            end += 1
        return list(range(end, start, -1))

    def bad(position: int, bounds: list[int]) -> bool:
        for b in reversed(bounds):
            span = position - b
            if span > LEGACY_BUFFER:
                return False
            if span in LEGACY_BAD_SPANS:
                return True
        return False

    steps = 0
    groups: list[tuple[int, int]] = []
    bounds = [-LEGACY_LEAD, 0]
    tried: list[list[int]] = []  # per placed frame: the cuts not tried yet
    start = 0
    pending = candidates(0)
    while start < count:
        while pending:
            end = pending.pop(0)
            steps += 1
            position = bounds[-1] + frame + prefix[end] - prefix[start]
            if steps < _LEGACY_STEPS and bad(position, bounds):
                continue
            tried.append(pending)
            groups.append((start, end))
            bounds.append(position)
            start, pending = end, candidates(end)
            break
        else:
            if not tried or steps >= _LEGACY_STEPS:
                # nothing left to go back to: take the fullest cuts from here on
                steps = _LEGACY_STEPS
                pending = candidates(start)
                continue
            pending = tried.pop()
            start = groups.pop()[0]
            bounds.pop()
    return _top_up_tail(groups, sizes, frame, budget)


#: how many cuts the legacy packing search tries per page before it settles
_LEGACY_STEPS: Final = 2000


def _top_up_tail(
    groups: list[tuple[int, int]], sizes: Sequence[int], frame: int, budget: int
) -> list[tuple[int, int]]:
    """Re-cut the last two frames when the last is under ``LEGACY_MIN_TAIL`` bytes:
    the cut that makes the smaller of the two largest, unless it makes a bad span.

    A small last frame could pair with the next page's first frame (which this
    call cannot see) into a bad span; two frames of half a buffer or more cannot.
    """
    if len(groups) < 2:
        return groups

    def total(start: int, end: int) -> int:
        return frame + sum(sizes[start:end])

    (a, b), (_, c) = groups[-2], groups[-1]
    if total(b, c) >= LEGACY_MIN_TAIL:
        return groups
    head = [-LEGACY_LEAD, 0]
    for g in groups[:-2]:
        head.append(head[-1] + total(*g))
    best, best_key = b, (min(total(a, b), total(b, c)), total(b, c))
    for cut in range(b - 1, a, -1):
        first, second = total(a, cut), total(cut, c)
        if second - frame > budget:
            break
        key = (min(first, second), second)
        if key <= best_key:
            continue
        # only the two boundaries that move can make a new bad span
        middle, end = head[-1] + first, head[-1] + first + second
        if any(middle - q in LEGACY_BAD_SPANS for q in head) or any(
            end - q in LEGACY_BAD_SPANS for q in (*head, middle)
        ):
            continue
        best, best_key = cut, key
    return groups[:-2] + [(a, best), (best, c)]


def pack_sync(messages: Sequence[StoredMessage], *, cap: int, last: bool) -> list[bytes]:
    """Pack one sync page into type-1 Message values.

    Args:
        messages: the page, in seq order.
        cap: the connection's frame cap.
        last: whether this page ends the sync (its last value gets ``more=False``;
            every other value of the sync has ``more=True``).

    Returns:
        The values, at least one.
    """
    return pack_items(
        [encode_item(m) for m in messages],
        message_type=MESSAGE_SYNC,
        cap=cap,
        more=True,
        more_on_last=not last,
    )


def pack_push(items: Sequence[bytes], *, cap: int) -> list[bytes]:
    """Pack live-pushed items into type-2 Message values (``more`` is False).

    Args:
        items: serialised MessageItems to push (``ItemEncoder``); empty gives no values.
        cap: the connection's frame cap.

    Returns:
        The values.
    """
    if not items:
        return []
    return pack_items(items, message_type=MESSAGE_PUSH, cap=cap, more=False, more_on_last=False)
