"""Frame codes and pure protobuf encoding and decoding of frame values.

Everything here is bytes in, values out (or the reverse): no transport, no clock,
no logging. Packing of ``Message`` frames (code 8) is done by hand from each item's
serialised bytes so an item is serialised once however the frames are cut; the
result is byte-for-byte what protobuf itself would produce.
"""

from __future__ import annotations

from typing import Final, Iterable, Sequence, TypeVar

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as _PbMessage

from goim.pb import goim_pb2 as pb
from goim.types import SendRequest, SendResult, StoredMessage

# Frame codes (DESIGN section 3).
SIGN_IN: Final = 1
SIGN_IN_ACK: Final = 2
SYNC_TRIGGER: Final = 3
HEARTBEAT: Final = 4
HEARTBEAT_ACK: Final = 5
MESSAGE_SEND: Final = 6
MESSAGE_SEND_ACK: Final = 7
MESSAGE: Final = 8
MESSAGE_ACK: Final = 9
KICKED: Final = 10

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
}
CLIENT_CODES: Final = frozenset({SIGN_IN, SYNC_TRIGGER, HEARTBEAT, MESSAGE_SEND, MESSAGE_ACK})
SERVER_CODES: Final = frozenset(
    {SIGN_IN_ACK, HEARTBEAT_ACK, MESSAGE_SEND_ACK, MESSAGE, KICKED}
)

# SignInACK codes.
SIGN_IN_OK: Final = 1
SIGN_IN_FAILED: Final = 2

# Message.type values.
MESSAGE_SYNC: Final = 1
MESSAGE_PUSH: Final = 2

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


def send_request(message: pb.MessageSend, *, device_id: int, user_id: int, epoch: int) -> SendRequest:
    """Build the logic layer's SendRequest from a MessageSend.

    Args:
        message: the decoded frame.
        device_id: the device the connection signed in as (never from the frame).
        user_id: the user the connection signed in as (never from the frame).
        epoch: the device's send_sequence epoch at the connection's sign-in.

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
    )


def encode_message_send(request: SendRequest) -> bytes:
    """The MessageSend value of a request (what a connect node forwards to logic);
    the inverse of ``send_request`` but for the connection's identity."""
    return pb.MessageSend(
        receiver_type=request.receiver_type,
        receiver_id=request.receiver_id,
        type=request.type,
        content=request.content,
        send_sequence=request.send_sequence,
        send_time=request.send_time,
    ).SerializeToString()


# --- encoding (server -> client) ---------------------------------------------------


def encode_sign_in_ack(code: int, message: str = "") -> bytes:
    """Encode a SignInACK (code 2) value; ``message`` is clipped to 256 bytes."""
    return pb.SignInACK(code=code, message=clip_text(message)).SerializeToString()


def encode_send_ack(send_sequence: int, result: SendResult) -> bytes:
    """Encode a MessageSendACK (code 7) value for a send's result.

    Args:
        send_sequence: the send's ``send_sequence`` as the client sent it.
        result: what the logic layer answered.

    Returns:
        The value bytes.
    """
    return pb.MessageSendACK(
        send_sequence=send_sequence,
        code=result.code,
        message_id=result.message_id,
        sync_sequence=result.seq,
        retry_after_ms=result.retry_after_ms,
    ).SerializeToString()


def encode_kicked(reason: str) -> bytes:
    """Encode a Kicked (code 10) value; ``reason`` is clipped to 256 bytes."""
    return pb.Kicked(reason=clip_text(reason)).SerializeToString()


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
    )


def stored_from_item(item: pb.MessageItem, *, user_id: int) -> StoredMessage:
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
    )


def encode_item(message: StoredMessage) -> bytes:
    """Serialise a stored copy as a MessageItem."""
    return item_from_stored(message).SerializeToString()


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
    if legacy:
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


def pack_push(messages: Sequence[StoredMessage], *, cap: int) -> list[bytes]:
    """Pack live-pushed messages into type-2 Message values (``more`` is False).

    Args:
        messages: the messages to push; empty gives no values.
        cap: the connection's frame cap.

    Returns:
        The values.
    """
    if not messages:
        return []
    return pack_items(
        [encode_item(m) for m in messages],
        message_type=MESSAGE_PUSH,
        cap=cap,
        more=False,
        more_on_last=False,
    )
