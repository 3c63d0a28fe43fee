"""Event rows on the wire (docs/protocol.md "Events"): the documented vectors, and
that only connections with ``Feature.EVENTS`` are sent event rows or fields 11-14,
live or by sync, while goim 1.1 clients page through them without a stall."""

from dataclasses import replace

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from goim.features import Feature
from goim.protocols import codec
from goim.protocols.changes import for_connection
from goim.protocols.sync import SyncProducer, SyncStream
from goim.types import KIND_EDIT, KIND_READ, KIND_RECALL, SignInResult, StoredMessage, SyncPage
from tests.protocols.fakes import make_message
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
        conn.proto.push([event(2, 1, KIND_READ)])
        self.assertEqual(conn.take(), [])
        conn.proto.push([event(2, 2, KIND_READ), make_message(2, 3)])
        (f,) = conn.take()
        self.assertEqual([i.sync_sequence for i in parse(codec.Message, f.value).messages], [3])

    def test_events_client_is_pushed_events(self) -> None:
        """A connection with features bit 1 gets event rows live."""
        conn = Conn()
        conn.feed(codec.SignIn(device_id=1, user_id=2, token="t", features=int(Feature.EVENTS)).to_frame())
        conn.logic.sign_ins[-1].deferred.callback(SignInResult(ok=True))
        conn.take()
        conn.proto.push([event(2, 1, KIND_RECALL)])
        (f,) = conn.take()
        (item,) = parse(codec.Message, f.value).messages
        self.assertEqual((item.kind, item.sync_sequence), (KIND_RECALL, 1))
