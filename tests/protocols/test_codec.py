"""Tests for goim.protocols.codec: codes, protobuf helpers and Message packing."""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from goim.pb import goim_pb2 as pb
from goim.protocols import codec
from goim.protocols.framing import Frame, decode_frames
from goim.types import SendCode, SendResult, SignInCode, StoredMessage
from tests.protocols.fakes import make_message

# Bytes a goim 1.1 client writes (DESIGN section 3).
SIGN_IN_HEX = "00 01 00 07 08 01 10 02 1a 01 74"
SYNC_TRIGGER_HEX = "00 03 00 02 10 05"
HEARTBEAT_HEX = "00 04 00 00"
MESSAGE_SEND_HEX = "00 06 00 0e 08 01 10 07 18 01 22 02 68 69 28 01 30 01"

int64s = st.integers(-(2**63), 2**63 - 1)
int32s = st.integers(-(2**31), 2**31 - 1)
stored_messages = st.builds(
    StoredMessage,
    user_id=int64s,
    seq=int64s,
    message_id=int64s,
    sender_type=int32s,
    sender_id=int64s,
    sender_device_id=int64s,
    receiver_type=int32s,
    receiver_id=int64s,
    type=int32s,
    content=st.text(max_size=200),
    send_time=int64s,
)


def parse_message(value: bytes) -> pb.Message:
    message = pb.Message()
    message.ParseFromString(value)
    return message


class VectorTests(SynchronousTestCase):
    def test_goim11_vectors(self) -> None:
        """The goim 1.1 byte stream decodes to SignIn, SyncTrigger, Heartbeat, MessageSend."""
        data = bytes.fromhex(SIGN_IN_HEX + SYNC_TRIGGER_HEX + HEARTBEAT_HEX + MESSAGE_SEND_HEX)
        frames, rest = decode_frames(data)
        self.assertEqual(rest, b"")
        self.assertEqual(
            [f.type for f in frames],
            [codec.SIGN_IN, codec.SYNC_TRIGGER, codec.HEARTBEAT, codec.MESSAGE_SEND],
        )
        self.assertEqual(
            codec.decode_sign_in(frames[0].value), pb.SignIn(device_id=1, user_id=2, token="t")
        )
        self.assertEqual(codec.decode_sync_trigger(frames[1].value).sync_sequence, 5)
        self.assertEqual(frames[2], Frame(codec.HEARTBEAT, b""))
        self.assertEqual(
            codec.decode_message_send(frames[3].value),
            pb.MessageSend(
                receiver_type=1, receiver_id=7, type=1, content="hi", send_sequence=1, send_time=1
            ),
        )


class DecodeTests(SynchronousTestCase):
    def test_malformed_raises(self) -> None:
        """Truncated protobuf and invalid UTF-8 in a string raise MalformedFrameError."""
        self.assertRaises(codec.MalformedFrameError, codec.decode_message_send, b"\x22\x05hi")
        with self.assertRaises(codec.MalformedFrameError) as caught:
            codec.decode_sign_in(b"\x1a\x02\xff\xfe")
        self.assertEqual(caught.exception.code, codec.SIGN_IN)

    def test_unknown_fields_accepted(self) -> None:
        """A value with a field this server does not know still decodes (forward compatibility)."""
        value = pb.SyncTrigger(sync_sequence=9).SerializeToString() + b"\x78\x01"
        self.assertEqual(codec.decode_sync_trigger(value).sync_sequence, 9)

    @settings(deadline=None)
    @given(st.binary(max_size=200))
    def test_random_bytes_only_malformed(self, value: bytes) -> None:
        """Any bytes either decode or raise MalformedFrameError, for every client message."""
        for decoder in (
            codec.decode_sign_in,
            codec.decode_sync_trigger,
            codec.decode_message_send,
            codec.decode_message_ack,
        ):
            try:
                decoder(value)
            except codec.MalformedFrameError:
                pass

    def test_send_request_identity(self) -> None:
        """send_request takes device, user and epoch from the connection, the rest from the frame."""
        request = codec.send_request(
            pb.MessageSend(receiver_type=2, receiver_id=5, type=1, content="x", send_sequence=3),
            device_id=11,
            user_id=22,
            epoch=4,
        )
        self.assertEqual((request.device_id, request.user_id, request.epoch), (11, 22, 4))
        self.assertEqual(
            (request.receiver_type, request.receiver_id, request.send_sequence), (2, 5, 3)
        )


class EncodeTests(SynchronousTestCase):
    def test_frame_cap(self) -> None:
        """0 means 4,092; tiny values are raised to 512; large ones capped at 65,535."""
        self.assertEqual(codec.frame_cap(0), 4092)
        self.assertEqual(codec.frame_cap(10), 512)
        self.assertEqual(codec.frame_cap(10_000), 10_000)
        self.assertEqual(codec.frame_cap(1 << 31), 65_535)

    def test_send_ack(self) -> None:
        """MessageSendACK carries send_sequence, code, message_id and the sender's seq."""
        ack = pb.MessageSendACK()
        ack.ParseFromString(codec.encode_send_ack(7, SendResult(code=0, message_id=99, seq=4)))
        self.assertEqual(
            (ack.send_sequence, ack.code, ack.message_id, ack.sync_sequence), (7, 0, 99, 4)
        )

    def test_texts_clipped(self) -> None:
        """SignInACK messages and Kicked reasons are clipped to 256 bytes between characters."""
        kicked = pb.Kicked()
        kicked.ParseFromString(codec.encode_kicked("é" * 300))
        self.assertEqual(kicked.reason, "é" * 128)
        ack = pb.SignInACK()
        ack.ParseFromString(codec.encode_sign_in_ack(2, "x" * 1000))
        self.assertEqual((ack.code, len(ack.message)), (2, 256))
        self.assertEqual(codec.clip_text("ab€", 4), "ab")

    @settings(deadline=None)
    @given(stored_messages)
    def test_item_roundtrip(self, message: StoredMessage) -> None:
        """StoredMessage -> MessageItem -> StoredMessage is the identity."""
        item = pb.MessageItem()
        item.ParseFromString(codec.encode_item(message))
        self.assertEqual(codec.stored_from_item(item, user_id=message.user_id), message)

    def test_code_names(self) -> None:
        """Known codes have names; unknown ones say their number."""
        self.assertEqual(codec.code_name(codec.MESSAGE_SEND), "MessageSend")
        self.assertEqual(codec.code_name(77), "code 77")
        self.assertFalse(codec.CLIENT_CODES & codec.SERVER_CODES)


class PackingTests(SynchronousTestCase):
    @settings(deadline=None)
    @given(
        st.lists(stored_messages, max_size=40),
        st.integers(512, 6000),
        st.booleans(),
    )
    def test_pack_sync_properties(
        self, messages: list[StoredMessage], cap: int, last: bool
    ) -> None:
        """Sync packing keeps order, fits the cap, sets more on all but the final frame,
        and matches protobuf's own encoding."""
        values = codec.pack_sync(messages, cap=cap, last=last)
        self.assertGreaterEqual(len(values), 1)
        decoded: list[StoredMessage] = []
        for index, value in enumerate(values):
            message = parse_message(value)
            self.assertEqual(message.type, codec.MESSAGE_SYNC)
            is_final = index == len(values) - 1
            self.assertEqual(message.more, not (is_final and last))
            self.assertEqual(value, message.SerializeToString())
            items = [codec.stored_from_item(i, user_id=0) for i in message.messages]
            if len(value) > cap:
                self.assertEqual(len(items), 1)
            decoded.extend(items)
        expected = [codec.stored_from_item(codec.item_from_stored(m), user_id=0) for m in messages]
        self.assertEqual(decoded, expected)

    def test_pack_is_greedy(self) -> None:
        """With an announced max_frame, frames are filled as far as the cap allows."""
        messages = [make_message(1, seq, content="x" * 100) for seq in range(1, 201)]
        values = codec.pack_sync(messages, cap=4093, last=True)
        for value in values[:-1]:
            self.assertLessEqual(len(value), 4093)
            self.assertGreater(len(value), 4093 - 150)
        self.assertEqual(sum(len(parse_message(v).messages) for v in values), 200)

    def test_empty_sync(self) -> None:
        """An empty final page is one frame with no messages and more=False."""
        values = codec.pack_sync([], cap=4092, last=True)
        self.assertEqual(len(values), 1)
        message = parse_message(values[0])
        self.assertEqual((message.type, len(message.messages), message.more), (1, 0, False))

    def test_oversize_item_alone(self) -> None:
        """An item bigger than the cap travels alone in its own frame."""
        messages = [
            make_message(1, 1, content="a"),
            make_message(1, 2, content="b" * 1000),
            make_message(1, 3, content="c"),
        ]
        values = codec.pack_sync(messages, cap=512, last=True)
        counts = [len(parse_message(v).messages) for v in values]
        self.assertEqual(counts, [1, 1, 1])
        self.assertGreater(len(values[1]), 512)

    def test_pack_push(self) -> None:
        """Push frames have type 2 and never set more; nothing to push gives no frames."""
        self.assertEqual(codec.pack_push([], cap=4092), [])
        messages = [make_message(1, seq, content="y" * 500) for seq in range(1, 30)]
        values = codec.pack_push([codec.encode_item(m) for m in messages], cap=4092)
        self.assertGreater(len(values), 1)
        for value in values:
            message = parse_message(value)
            self.assertEqual((message.type, message.more), (codec.MESSAGE_PUSH, False))
            self.assertLessEqual(len(value), 4092)

    def test_encode_message_matches_pack(self) -> None:
        """encode_message (protobuf) and pack_items produce the same bytes."""
        messages = [make_message(3, seq) for seq in range(1, 4)]
        self.assertEqual(
            codec.encode_message(codec.MESSAGE_SYNC, messages, True),
            codec.pack_sync(messages, cap=4092, last=False)[0],
        )


# --- typed frames: both directions --------------------------------------------------

from google.protobuf.descriptor import FieldDescriptor  # noqa: E402

_INT_RANGES = {
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
}


def _strategy_for(proto: type, name: str) -> st.SearchStrategy[object]:
    """Any value protobuf accepts for one field (ranges from the descriptor itself)."""
    field = proto.DESCRIPTOR.fields_by_name[name]  # type: ignore[attr-defined]
    if field.type in _INT_RANGES:
        low, high = _INT_RANGES[field.type]
        return st.integers(low, high)
    if field.type == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=100)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    raise AssertionError(f"no strategy for {proto.__name__}.{name}")


def frames_of(cls: type[codec.WireFrame]) -> st.SearchStrategy[codec.WireFrame]:
    """Arbitrary values of one typed frame."""
    if cls is codec.Message:
        return st.builds(codec.Message, type=int32s, messages=st.lists(message_items, max_size=5).map(tuple), more=st.booleans())
    if cls.PROTO is None:
        return st.just(cls())
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    return st.builds(cls, **{name: _strategy_for(cls.PROTO, name) for name in names})


message_items = st.builds(
    codec.MessageItem, **{f.name: _strategy_for(pb.MessageItem, f.name) for f in dataclasses.fields(codec.MessageItem)}
)
any_frame = st.sampled_from(sorted(codec.FRAMES.values(), key=lambda c: c.CODE)).flatmap(frames_of)


def protobuf_of(frame: codec.WireFrame) -> bytes:
    """What protobuf itself makes of a typed frame's fields (the reference encoding)."""
    if frame.PROTO is None:
        return b""
    fields = {f.name: getattr(frame, f.name) for f in dataclasses.fields(frame)}  # type: ignore[arg-type]
    if isinstance(frame, codec.Message):
        fields["messages"] = [item.to_pb() for item in frame.messages]
    return frame.PROTO(**fields).SerializeToString()


class TypedFrameTests(SynchronousTestCase):
    def test_every_code_has_one_typed_frame(self) -> None:
        """Client and server frames together cover codes 1-10, each direction its own."""
        self.assertEqual(set(codec.CLIENT_FRAMES), set(codec.CLIENT_CODES))
        self.assertEqual(set(codec.SERVER_FRAMES), set(codec.SERVER_CODES))
        self.assertEqual(sorted(codec.FRAMES), list(codec.FrameCode))
        for code, cls in codec.FRAMES.items():
            self.assertEqual(cls.CODE, code)

    @settings(deadline=None, max_examples=300)
    @given(any_frame)
    def test_roundtrip_every_frame(self, frame: codec.WireFrame) -> None:
        """encode -> decode gives the frame back, for every frame of both directions, and the
        bytes are protobuf's own (goim 1.1 reads them)."""
        value = frame.to_bytes()
        self.assertEqual(value, protobuf_of(frame))
        self.assertEqual(type(frame).from_bytes(value), frame)
        self.assertEqual(codec.decode_frame(frame.CODE, value), frame)
        frames, rest = decode_frames(frame.to_frame())
        self.assertEqual((frames, rest), ([Frame(frame.CODE, value)], b""))

    @settings(deadline=None)
    @given(st.sampled_from(sorted(codec.FRAMES.values(), key=lambda c: c.CODE)), st.binary(max_size=200))
    def test_random_bytes_decode_or_raise_malformed(self, cls: type[codec.WireFrame], value: bytes) -> None:
        """Any bytes either decode to a frame that re-encodes canonically, or raise MalformedFrameError."""
        try:
            frame = cls.from_bytes(value)
        except codec.MalformedFrameError as e:
            self.assertEqual(e.code, cls.CODE)
            return
        self.assertEqual(cls.from_bytes(frame.to_bytes()), frame)

    def test_goim11_vectors_both_ways(self) -> None:
        """The goim 1.1 client bytes decode to typed frames that encode to the same bytes."""
        expected = [
            codec.SignIn(device_id=1, user_id=2, token="t"),
            codec.SyncTrigger(sync_sequence=5),
            codec.Heartbeat(),
            codec.MessageSend(receiver_type=1, receiver_id=7, type=1, content="hi", send_sequence=1, send_time=1),
        ]
        for hex_frame, typed in zip((SIGN_IN_HEX, SYNC_TRIGGER_HEX, HEARTBEAT_HEX, MESSAGE_SEND_HEX), expected):
            raw = bytes.fromhex(hex_frame)
            (frame,), _ = decode_frames(raw)
            self.assertEqual(codec.decode_frame(frame.type, frame.value), typed)
            self.assertEqual(typed.to_frame(), raw)

    def test_server_frames_match_the_server_encoders(self) -> None:
        """Typed server frames are byte-identical to what the server's encoders write."""
        result = SendResult(code=5, message_id=9, seq=4, retry_after_ms=250)
        self.assertEqual(codec.MessageSendAck.of_result(3, result).to_bytes(), codec.encode_send_ack(3, result))
        self.assertEqual(codec.SignInAck(code=1).to_frame(), bytes.fromhex("0002000208 01".replace(" ", "")))
        self.assertEqual(codec.SignInAck(code=2, message="no").to_bytes(), codec.encode_sign_in_ack(2, "no"))
        self.assertEqual(codec.Kicked(reason="bye").to_bytes(), codec.encode_kicked("bye"))
        self.assertEqual(codec.HeartbeatAck().to_frame(), bytes.fromhex("00050000"))
        messages = [make_message(3, seq) for seq in range(1, 4)]
        self.assertEqual(
            codec.Message.of_stored(codec.MessageType.SYNC, messages, more=True).to_bytes(),
            codec.encode_message(codec.MESSAGE_SYNC, messages, True),
        )

    @settings(deadline=None)
    @given(st.lists(stored_messages, max_size=30), st.integers(512, 6000), st.booleans())
    def test_packed_sync_decodes_to_the_stored_messages(
        self, messages: list[StoredMessage], cap: int, last: bool
    ) -> None:
        """The hand-packed Message values decode, with the typed Message, to the page's copies."""
        values = codec.pack_sync(messages, cap=cap, last=last)
        decoded = [codec.Message.from_bytes(v) for v in values]
        self.assertEqual([m.more for m in decoded], [True] * (len(values) - 1) + [not last])
        got = [s for m in decoded for s in m.stored(user_id=7)]
        self.assertEqual(got, [dataclasses.replace(m, user_id=7) for m in messages])

    def test_codes_decode_as_named_enums(self) -> None:
        """Known codes come back as enum members that name themselves; unknown ones as plain ints."""
        ack = codec.SignInAck.from_bytes(b"\x08\x02")
        self.assertIs(ack.code, codec.SignInCode.FAILED)
        self.assertEqual(repr(ack.code), "SignInCode.FAILED(2)")
        send_ack = codec.MessageSendAck.from_bytes(codec.MessageSendAck(code=6).to_bytes())
        self.assertIs(send_ack.code, SendCode.NO_SUCH_USER)
        unknown = codec.MessageSendAck.from_bytes(codec.MessageSendAck(code=42).to_bytes())
        self.assertEqual((type(unknown.code), unknown.code), (int, 42))
        self.assertIs(codec.Message.from_bytes(b"\x08\x02").type, codec.MessageType.PUSH)
        self.assertEqual(repr(codec.FrameCode(7)), "FrameCode.MESSAGE_SEND_ACK(7)")

    def test_codes_format_as_numbers(self) -> None:
        """Codes are numbers wherever text or JSON carries them (API, metrics labels, CLI),
        and compare equal to the numbers older code uses."""
        self.assertEqual(str(SendCode.NOT_FRIEND), "2")
        self.assertEqual(f"{codec.FrameCode.KICKED}", "10")
        self.assertEqual(json.dumps({"code": SignInCode.OK}), '{"code": 1}')
        self.assertEqual(SendCode.RATE_LIMITED, 5)
        self.assertEqual(codec.SIGN_IN_OK, 1)
        self.assertEqual(SendCode.describe(2), "2 (NOT_FRIEND)")
        self.assertEqual(SendCode.describe(42), "42")
