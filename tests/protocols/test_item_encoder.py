"""Encode once in fan-out: ItemEncoder's bytes are encode_item's, byte for byte."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from goim.pb import goim_pb2 as pb
from goim.protocols.changes import items_by_user
from goim.protocols.codec import MESSAGE_PUSH, PUSH_ITEMS, ItemEncoder, encode_item, pack_items, pack_push
from goim.types import StoredCopies, StoredMessage


def copy(user_id: int, seq: int, *, message_id: int = 42, content: str = "hello group") -> StoredMessage:
    return StoredMessage(user_id, seq, message_id, 1, 7, 70, 2, 5, 1, content, 1_700_000_000_000)


SEQS = [0, 1, 127, 128, 16_383, 16_384, 2**21 - 1, 2**21, 2**35, 2**63 - 2]


class ItemEncoderTests(SynchronousTestCase):
    def test_every_copy_equals_the_normal_encoding(self) -> None:
        """Each copy's bytes equal encode_item's and decode to the same MessageItem, for seqs of every varint length."""
        encoder = ItemEncoder()
        for seq in SEQS:
            message = copy(seq + 1, seq)
            data = encoder.encode(message)
            self.assertEqual(data, encode_item(message), seq)
            self.assertEqual(pb.MessageItem.FromString(data), pb.MessageItem.FromString(encode_item(message)))
            self.assertEqual(pb.MessageItem.FromString(data).sync_sequence, seq)

    def test_copies_share_one_body(self) -> None:
        """The copies of one message serialise its body once; another message gets its own."""
        encoder = ItemEncoder()
        for user in range(1, 501):
            encoder.encode(copy(user, 1000 + user))
        encoder.encode(copy(1, 5, message_id=43))
        self.assertEqual(len(encoder._bodies), 2)

    def test_a_differing_field_is_not_mixed_up(self) -> None:
        """Copies that differ in any field but user_id and seq are encoded on their own."""
        encoder = ItemEncoder()
        base = copy(1, 9)
        encoder.encode(base)
        for name, value in [("content", "other"), ("send_time", 5), ("sender_device_id", 99), ("type", 3)]:
            other = dataclasses.replace(base, **{name: value})
            self.assertEqual(encoder.encode(other), encode_item(other), name)

    def test_content_that_looks_like_the_marker(self) -> None:
        """Content with every byte the seq marker uses (as UTF-8 can spell them) still encodes exactly."""
        message = copy(1, 300, content="H\u00ff\u00ff\x7f" * 3 + "\uffff")
        self.assertEqual(ItemEncoder().encode(message), encode_item(message))

    def test_bounded_by_entries_and_bytes(self) -> None:
        """The oldest bodies are dropped past max_entries or max_bytes; a body over max_bytes is not kept."""
        encoder = ItemEncoder(max_entries=3, max_bytes=10_000)
        for message_id in range(10):
            encoder.encode(copy(1, 1, message_id=message_id))
        self.assertEqual(len(encoder._bodies), 3)
        big = copy(1, 1, message_id=99, content="x" * 20_000)
        self.assertEqual(encoder.encode(big), encode_item(big))
        self.assertNotIn(99, [key[0] for key in encoder._bodies])
        self.assertLessEqual(encoder._bytes, 10_000)

    def test_encode_copies_equals_each_copy_encoded(self) -> None:
        """encode_copies gives, for the chosen indexes, the bytes of each copy encoded on its own (a group's
        copies, seqs of every varint length; a business push whose copies name their own receiver)."""
        message = copy(1, 5)
        users = tuple(range(1, len(SEQS) + 1))
        group = StoredCopies(dataclasses.replace(message, seq=SEQS[0]), users, tuple(SEQS))
        own = StoredCopies(dataclasses.replace(message, receiver_id=1), users, tuple(s + 1 for s in SEQS),
                           receiver_is_user=True)  # fmt: skip
        for copies in (group, own):
            indexes = [0, 2, 3, len(SEQS) - 1]
            self.assertEqual(
                ItemEncoder().encode_copies(copies, indexes), [encode_item(copies.copy(i)) for i in indexes]
            )
        self.assertEqual([m.receiver_id for m in own.messages()], list(users))
        self.assertEqual({m.receiver_id for m in group.messages()}, {message.receiver_id})
        self.assertEqual([(m.user_id, m.seq) for m in group.messages()], list(zip(users, SEQS)))

    def test_items_by_user_serialises_online_users_copies_only(self) -> None:
        """A batch is grouped by user in batch order, each item with its seq and audience; users not online
        get nothing."""
        group = StoredCopies(copy(1, 10), (1, 2, 3), (10, 20, 30))
        single = StoredCopies.of(copy(2, 21, message_id=43))
        by_user = items_by_user([group, single], {2, 3, 9})
        self.assertEqual(sorted(by_user), [2, 3])
        self.assertEqual(by_user[2], ([20, 21], [encode_item(group.copy(1)), encode_item(single.message)], [0, 0]))
        self.assertEqual(by_user[3], ([30], [encode_item(group.copy(2))], [0]))

    def test_pack_push_of_its_items_stays_byte_identical(self) -> None:
        """A live push of the shared encoder's items packs exactly the bytes encode_item's would."""
        messages = [copy(3, seq, message_id=100 + seq) for seq in range(1, 30)]
        expected = pack_items([encode_item(m) for m in messages], message_type=MESSAGE_PUSH, cap=512, more=False,
                              more_on_last=False)  # fmt: skip
        self.assertEqual(pack_push([PUSH_ITEMS.encode(m) for m in messages], cap=512), expected)
        self.assertIsInstance(PUSH_ITEMS, ItemEncoder)

    @settings(max_examples=200, deadline=None)
    @given(
        seq=st.integers(min_value=0, max_value=2**63 - 2),
        message_id=st.integers(min_value=0, max_value=2**63 - 1),
        content=st.text(max_size=200),
        numbers=st.lists(st.integers(min_value=0, max_value=2**31 - 1), min_size=6, max_size=6),
    )
    def test_any_item(self, seq: int, message_id: int, content: str, numbers: list[int]) -> None:
        """For any field values the bytes equal encode_item's."""
        a, b, c, d, e, f = numbers
        message = StoredMessage(1, seq, message_id, a, b, c, d, e, f, content, 1_700_000_000_000 + a)
        encoder = ItemEncoder()
        self.assertEqual(encoder.encode(message), encode_item(message))
        again = dataclasses.replace(message, user_id=2, seq=seq + 1)
        self.assertEqual(encoder.encode(again), encode_item(again))
