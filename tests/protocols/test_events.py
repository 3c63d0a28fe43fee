"""Event rows on the wire (docs/protocol.md "Events"): the documented vectors, and
that only connections with ``Feature.EVENTS`` are sent event rows or fields 11-14,
live or by sync, while goim 1.1 clients page through them without a stall."""

from dataclasses import replace
from typing import cast

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from goim.features import Feature
from goim.protocols import codec
from goim.protocols.changes import audience, for_connection, items_for_connection
from goim.protocols.sync import SyncProducer, SyncStream
from goim.protocols.framing import decode_frames
from goim.types import (
    KIND_EDIT,
    KIND_READ,
    KIND_RECALL,
    ChangeRequest,
    ChangeResult,
    SignInResult,
    StoredMessage,
    SyncPage,
)
from tests.protocols.fakes import FakeLogic, frame, make_message, push
from tests.protocols.test_connection import Conn, parse
from tests.protocols.test_sync import PagedLogic, Sink, run

_BASE = dict(message_id=9, sender_type=1, sender_id=2, sender_device_id=3, receiver_type=1, receiver_id=7)
#: docs/protocol.md "Events" test vectors
VECTORS = [
    (
        codec.MessageItem(**_BASE, sync_sequence=5, send_time=1, kind=1, ref_seq=4),
        "08 09 10 01 18 02 20 03 28 01 30 07 48 05 50 01 58 01 60 04",
    ),
    (
        codec.MessageItem(**_BASE, type=1, sync_sequence=6, send_time=2, kind=2, ref_seq=4, recalled=True),
        "08 09 10 01 18 02 20 03 28 01 30 07 38 01 48 06 50 02 58 02 60 04 70 01",
    ),
    (
        codec.MessageItem(**_BASE, type=1, content="hi", sync_sequence=7, send_time=2, kind=3, ref_seq=4, edited_at=2),
        "08 09 10 01 18 02 20 03 28 01 30 07 38 01 42 02 68 69 48 07 50 02 58 03 60 04 68 02",
    ),
]
PUSHED_RECALL_HEX = (
    "00 08 00 1c 08 02 12 18 08 09 10 01 18 02 20 03 28 01 30 07 38 01 48 06 50 02 58 02 60 04 70 01"
)


def event(user_id: int, seq: int, kind: int) -> StoredMessage:
    return replace(make_message(user_id, seq), kind=kind, ref_seq=seq - 1, content="")


class VectorTests(SynchronousTestCase):
    def test_event_vectors_both_ways(self) -> None:
        """Each documented item encodes to its bytes and decodes back."""
        for item, hex_value in VECTORS:
            raw = bytes.fromhex(hex_value)
            self.assertEqual(item.to_bytes(), raw)
            self.assertEqual(codec.MessageItem.from_bytes(raw), item)
        recall = VECTORS[1][0]
        self.assertEqual(codec.Message(type=2, messages=(recall,)).to_frame(), bytes.fromhex(PUSHED_RECALL_HEX))

    def test_stored_round_trip(self) -> None:
        """Fields 11-14 survive stored copy -> item -> stored copy (the Redis and PB paths use this)."""
        stored = replace(make_message(4, 8), kind=KIND_EDIT, ref_seq=3, edited_at=77, recalled=False)
        self.assertEqual(codec.stored_from_item(codec.item_from_stored(stored), user_id=4), stored)

    def test_plain_message_encoding_unchanged(self) -> None:
        """A message without events or state encodes as in goim 1.1 (no field 11-14)."""
        m = make_message(2, 1)
        self.assertEqual(codec.encode_item(m), codec.pb.MessageItem(
            message_id=m.message_id, sender_type=m.sender_type, sender_id=m.sender_id,
            sender_device_id=m.sender_device_id, receiver_type=m.receiver_type, receiver_id=m.receiver_id,
            type=m.type, content=m.content, sync_sequence=m.seq, send_time=m.send_time,
        ).SerializeToString())


class FilterTests(SynchronousTestCase):
    def test_for_connection(self) -> None:
        """Without EVENTS: event rows dropped, state fields cleared; with it: everything."""
        edited = replace(make_message(2, 1), edited_at=5)
        rows = [edited, event(2, 2, KIND_READ), event(2, 3, KIND_RECALL)]
        self.assertEqual(for_connection(rows, Feature.EVENTS), rows)
        self.assertEqual(for_connection(rows, Feature.NONE), [make_message(2, 1)])
        self.assertEqual(for_connection(rows, Feature.TRIMMED), [make_message(2, 1)])

    def test_items_for_connection_is_for_connection_on_bytes(self) -> None:
        """The serialised items a connection is sent are those of for_connection, byte for byte."""
        rows = [
            replace(make_message(2, 1), edited_at=5),
            event(2, 2, KIND_READ),
            make_message(2, 3),
            replace(make_message(2, 4), recalled=True, content=""),
            event(2, 5, KIND_RECALL),
        ]
        items = [codec.encode_item(m) for m in rows]
        audiences = [audience(m) for m in rows]
        for features in (Feature.NONE, Feature.TRIMMED, Feature.EVENTS, Feature.EVENTS | Feature.TRIMMED):
            self.assertEqual(
                items_for_connection(items, audiences, features),
                [codec.encode_item(m) for m in for_connection(rows, features)],
            )


class EventSyncTests(SynchronousTestCase):
    def stream(self, features: int) -> tuple[Sink, PagedLogic, SyncStream]:
        sink = Sink()
        sink.features = features  # type: ignore[attr-defined]
        logic = PagedLogic()
        stream = SyncStream(sink, logic=logic, producer=SyncProducer(), page_size=2, run=run, log=Logger())
        return sink, logic, stream

    def test_old_client_pages_past_event_only_pages(self) -> None:
        """A page of nothing but event rows writes nothing to a goim 1.1 client and the
        next page starts after its last seq; the sync still ends with more=False."""
        sink, logic, stream = self.stream(0)
        stream.request(0, from_client=True)
        logic.asked[-1][1].callback(SyncPage([event(2, 1, KIND_READ), event(2, 2, KIND_READ)], more=True))
        self.assertEqual(sink.values, [])
        self.assertEqual(logic.asked[-1][0], 2)
        logic.asked[-1][1].callback(SyncPage([make_message(2, 3), event(2, 4, KIND_RECALL)], more=True))
        self.assertEqual(logic.asked[-1][0], 4)
        logic.asked[-1][1].callback(SyncPage([event(2, 5, KIND_EDIT)], more=False))
        self.assertFalse(stream.running)
        self.assertEqual(sink.values, [
            *codec.pack_sync([make_message(2, 3)], cap=4092, last=False),
            *codec.pack_sync([], cap=4092, last=True),
        ])
        self.assertFalse(parse(codec.Message, sink.values[-1]).more)

    def test_events_client_gets_every_row(self) -> None:
        """With EVENTS the sync carries event rows with their fields, in seq order."""
        sink, logic, stream = self.stream(Feature.EVENTS)
        stream.request(0, from_client=True)
        rows = [make_message(2, 1), event(2, 2, KIND_RECALL)]
        logic.asked[-1][1].callback(SyncPage(rows, more=False))
        self.assertEqual(sink.values, codec.pack_sync(rows, cap=4092, last=True))
        items = parse(codec.Message, sink.values[0]).messages
        self.assertEqual([(i.sync_sequence, i.kind, i.ref_seq) for i in items], [(1, 0, 0), (2, KIND_RECALL, 1)])


class EventPushTests(SynchronousTestCase):
    def test_old_client_is_not_pushed_events(self) -> None:
        """A connection that signed in without features gets no frame for event rows."""
        conn = Conn()
        conn.signed_in(user_id=2)
        push(conn.proto, [event(2, 1, KIND_READ)])
        self.assertEqual(conn.take(), [])
        push(conn.proto, [event(2, 2, KIND_READ), make_message(2, 3)])
        (f,) = conn.take()
        self.assertEqual([i.sync_sequence for i in parse(codec.Message, f.value).messages], [3])

    def test_events_client_is_pushed_events(self) -> None:
        """A connection with features bit 1 gets event rows live."""
        conn = Conn()
        conn.feed(codec.SignIn(device_id=1, user_id=2, token="t", features=int(Feature.EVENTS)).to_frame())
        conn.logic.sign_ins[-1].deferred.callback(SignInResult(ok=True))
        conn.take()
        push(conn.proto, [event(2, 1, KIND_RECALL)])
        (f,) = conn.take()
        (item,) = parse(codec.Message, f.value).messages
        self.assertEqual((item.kind, item.sync_sequence), (KIND_RECALL, 1))


#: docs/protocol.md "Events": the frames of codes 11-14
FRAME_VECTORS = [
    (codec.ReadReport(conversation_type=1, conversation_id=7, sync_sequence=5, request_id=1), "00 0b 00 08 08 01 10 07 18 05 20 01"),
    (codec.Recall(message_id=9, request_id=2), "00 0c 00 04 08 09 10 02"),
    (codec.Edit(message_id=9, content="hi", request_id=3), "00 0d 00 08 08 09 12 02 68 69 18 03"),
    (codec.ChangeAck(request_id=1, read_sequence=5), "00 0e 00 04 08 01 20 05"),
    (
        codec.ChangeAck(request_id=2, code=1018, message="too old"),
        "00 0e 00 0e 08 02 10 fa 07 1a 07 74 6f 6f 20 6f 6c 64",
    ),
]


class ChangeLogic(FakeLogic):
    """A FakeLogic that also takes read reports, recalls and edits (answered by the test)."""

    def __init__(self) -> None:
        super().__init__()
        self.changes: list[tuple[ChangeRequest, Deferred[ChangeResult]]] = []

    async def change(self, *, device_id: int, user_id: int, request: ChangeRequest, conn: str = "") -> ChangeResult:
        d: Deferred[ChangeResult] = Deferred()
        self.changes.append((request, d))
        return await d


class ChangeFrameTests(SynchronousTestCase):
    def test_frame_vectors_both_ways(self) -> None:
        """Codes 11-14 encode to the documented bytes and decode back; the tables know them."""
        for typed, hex_frame in FRAME_VECTORS:
            raw = bytes.fromhex(hex_frame)
            self.assertEqual(typed.to_frame(), raw)
            (frame,), _ = decode_frames(raw)
            self.assertEqual(codec.decode_frame(frame.type, frame.value), typed)
        self.assertEqual(
            {c: codec.code_name(c) for c in (11, 12, 13, 14)},
            {11: "ReadReport", 12: "Recall", 13: "Edit", 14: "ChangeACK"},
        )
        self.assertLessEqual({11, 12, 13}, set(codec.CLIENT_FRAMES))
        self.assertIn(14, codec.SERVER_FRAMES)

    def conn(self) -> Conn:
        conn = Conn(logic=ChangeLogic(), max_in_flight=2)
        conn.signed_in()
        return conn

    def test_each_frame_reaches_logic_and_is_acked_by_request_id(self) -> None:
        """ReadReport, Recall and Edit become ChangeRequests; each answer is a ChangeACK
        with the request's id, in the order the answers come."""
        conn = self.conn()
        logic = cast(ChangeLogic, conn.logic)
        conn.feed(
            codec.ReadReport(conversation_type=2, conversation_id=5, sync_sequence=9, request_id=1).to_frame(),
            codec.Recall(message_id=70, request_id=2).to_frame(),
        )
        self.assertEqual(
            [r for r, _ in logic.changes],
            [ChangeRequest(KIND_READ, conversation_type=2, conversation_id=5, seq=9), ChangeRequest(KIND_RECALL, message_id=70)],
        )
        logic.changes[1][1].callback(ChangeResult(1017, "not yours"))
        logic.changes[0][1].callback(ChangeResult(read_seq=9))
        acks = [parse(codec.ChangeAck, f.value) for f in conn.take()]
        self.assertEqual(acks, [codec.ChangeAck(2, 1017, "not yours"), codec.ChangeAck(1, 0, "", 9)])
        conn.feed(codec.Edit(message_id=70, content="new", request_id=3).to_frame())
        self.assertEqual(logic.changes[2][0], ChangeRequest(KIND_EDIT, message_id=70, content="new"))

    def test_in_flight_changes_are_bounded_and_failures_answered(self) -> None:
        """Past max_in_flight the connection reads no further frame until an answer
        comes; a failed call is answered with code 3 and logged."""
        conn = self.conn()
        logic = cast(ChangeLogic, conn.logic)
        conn.feed(*[codec.Recall(message_id=1, request_id=i).to_frame() for i in range(1, 3)])
        self.assertEqual(len(logic.changes), 2)
        self.assertEqual(conn.proto._holds, {"in-flight read reports, recalls and edits"})  # type: ignore[attr-defined]
        self.assertEqual(conn.transport.producerState, "paused")
        logic.changes[0][1].errback(RuntimeError("db down"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        (ack,) = [parse(codec.ChangeAck, f.value) for f in conn.take()]
        self.assertEqual((ack.request_id, ack.code), (1, 3))
        self.assertFalse(conn.proto._holds)  # type: ignore[attr-defined]

    def test_malformed_change_frame_closes(self) -> None:
        """A value that is no protobuf of the frame closes the connection, like any frame."""
        conn = self.conn()
        conn.feed(frame(codec.RECALL, b"\xff"))
        self.assertTrue(conn.closed)
