"""Read receipts, unread counts, recall and edit on SQLite and MariaDB (issue 14).

Through the real stores and services (``tests.support.services``): event rows land
in each holder's stream under its next seq, are handed to delivery after commit,
and retried reports and changes write nothing twice.
"""

import time
from typing import Any

from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from goim.logic.codes import ApiCode
from goim.logic.receipts import ReceiptService
from goim.types import KIND_EDIT, KIND_MESSAGE, KIND_READ, KIND_RECALL, RECEIVER_GROUP, RECEIVER_USER, StoredMessage
from tests.support.db import MySQLBackend, SQLiteBackend
from tests.support.services import ServiceTests, Services, to_group, to_user


class ReceiptTests(ServiceTests):
    """Mixed into one TestCase per backend."""

    s: Services
    receipts: ReceiptService

    async def setup(self: Any, *, offset: float = 0.0) -> None:
        self.s = await self.services()
        clock = task.Clock()
        clock.advance(time.time() + offset)
        self.clock = clock
        self.receipts = ReceiptService(
            self.s.container.get_receipt_store(), self.s.delivery, clock, recall_window=120, edit_window=900
        )

    async def stream(self, user_id: int) -> list[StoredMessage]:
        return (await self.s.messages.sync_page(user_id, 0, 1000)).messages

    async def pair(self) -> tuple[tuple[int, int], tuple[int, int]]:
        a, da, _ = await self.s.new_user("a")
        b, db, _ = await self.s.new_user("b")
        await self.s.social.add_friend(a, b, "")
        return (a, da), (b, db)

    async def test_read_report_is_monotonic_and_reaches_both_sides(self: Any) -> None:
        """A's read report stores A's position, writes a read event into A's stream
        (other devices) and one into B's stream naming B's own copy's seq; a retried
        or lower report writes nothing."""
        await self.setup()
        (a, da), (b, db) = await self.pair()
        await self.s.messages.send(to_user(a, da, b, 1, "a1"))  # a:1 b:1
        await self.s.messages.send(to_user(b, db, a, 1, "b1"))  # a:2 b:2
        await self.s.messages.send(to_user(b, db, a, 2, "b2"))  # a:3 b:3
        self.s.delivery.delivered.clear()
        read_seq = await self.receipts.read(a, da, RECEIVER_USER, b, 3)
        self.assertEqual(read_seq, 3)
        mine = (await self.stream(a))[-1]
        self.assertEqual((mine.kind, mine.seq, mine.ref_seq, mine.receiver_id), (KIND_READ, 4, 3, b))
        theirs = (await self.stream(b))[-1]
        self.assertEqual((theirs.kind, theirs.seq, theirs.ref_seq, theirs.sender_id), (KIND_READ, 4, 3, a))
        self.assertEqual(sorted(m.user_id for m in self.s.delivery.delivered if m.kind), [a, b])
        # retried, lower, and past-the-end reports: no new rows
        self.assertEqual(await self.receipts.read(a, da, RECEIVER_USER, b, 3), 3)
        self.assertEqual(await self.receipts.read(a, da, RECEIVER_USER, b, 1), 3)
        self.assertEqual(await self.receipts.read(a, da, RECEIVER_USER, b, 99), 3)
        self.assertEqual(len(await self.stream(a)), 4)
        self.assertEqual(len(await self.stream(b)), 4)

    async def test_bad_read_report(self: Any) -> None:
        """A conversation type other than 1 or 2 is code 2."""
        await self.setup()
        (a, da), (b, _) = await self.pair()
        await self.assert_code(self.receipts.read(a, da, 3, b, 1), ApiCode.BAD_REQUEST)

    async def test_conversations_with_unread_counts(self: Any) -> None:
        """The chat list: newest first, paginated, last message, unread count, read position."""
        await self.setup()
        (a, da), (b, db) = await self.pair()
        c, dc, _ = await self.s.new_user("c")
        group = await self.s.social.create_group(c, "g", [a, b])
        await self.s.messages.send(to_user(b, db, a, 1, "b1"))
        await self.s.messages.send(to_user(b, db, a, 2, "b2"))
        await self.s.messages.send(to_user(a, da, b, 1, "a1"))
        await self.s.messages.send(to_group(c, dc, group, 1, "g1"))
        first = await self.receipts.conversations(a, before=0, limit=1)
        self.assertEqual(len(first.items), 1)
        conv = first.items[0]
        self.assertEqual((conv.conv_type, conv.conv_id, conv.unread, conv.read_seq), (RECEIVER_GROUP, group, 1, 0))
        self.assertEqual(conv.last.content, "g1")
        self.assertIsNotNone(first.next)
        second = await self.receipts.conversations(a, before=first.next, limit=1)
        conv = second.items[0]
        self.assertEqual((conv.conv_type, conv.conv_id, conv.unread), (RECEIVER_USER, b, 2))
        self.assertEqual(conv.last.content, "a1")
        self.assertIsNone(second.next)
        await self.receipts.read(a, da, RECEIVER_USER, b, 2)
        everything = await self.receipts.conversations(a, before=0, limit=10)
        self.assertEqual([(x.conv_id, x.unread, x.read_seq) for x in everything.items], [(group, 1, 0), (b, 0, 2)])
        self.assertIsNone(everything.next)

    async def test_conversation_pages_show_each_conversation_once(self: Any) -> None:
        """A conversation with messages on both sides of a page's cursor is listed once,
        on the page of its newest message."""
        await self.setup()
        (a, da), (b, db) = await self.pair()
        c, dc, _ = await self.s.new_user("c")
        await self.s.social.add_friend(a, c, "")
        await self.s.messages.send(to_user(b, db, a, 1, "b1"))  # a:1
        await self.s.messages.send(to_user(c, dc, a, 1, "c1"))  # a:2
        await self.s.messages.send(to_user(b, db, a, 2, "b2"))  # a:3
        seen = []
        cursor = 0
        for _ in range(5):
            page = await self.receipts.conversations(a, before=cursor, limit=1)
            seen += [(x.conv_id, x.last.content) for x in page.items]
            if page.next is None:
                break
            cursor = page.next
        self.assertEqual(seen, [(b, "b2"), (c, "c1")])

    async def test_group_read_count(self: Any) -> None:
        """Per-member read positions give a group message's read count (the sender not counted)."""
        await self.setup()
        a, da, _ = await self.s.new_user("a")
        b, db, _ = await self.s.new_user("b")
        c, dc, _ = await self.s.new_user("c")
        group = await self.s.social.create_group(a, "g", [b, c])
        sent = await self.s.messages.send(to_group(a, da, group, 1, "hello"))
        self.assertEqual(await self.receipts.read_count(a, sent.message_id), 0)
        b_copy = [m for m in await self.stream(b) if m.message_id == sent.message_id][0]
        await self.receipts.read(b, db, RECEIVER_GROUP, group, b_copy.seq)
        self.assertEqual(await self.receipts.read_count(c, sent.message_id), 1)
        await self.receipts.read(a, da, RECEIVER_GROUP, group, 100)  # the sender: not counted
        self.assertEqual(await self.receipts.read_count(a, sent.message_id), 1)
        outsider, _, _ = await self.s.new_user("d")
        await self.assert_code(self.receipts.read_count(outsider, sent.message_id), ApiCode.MESSAGE_NOT_FOUND)

    async def test_recall_tombstones_every_copy_and_writes_events(self: Any) -> None:
        """A recall empties every copy, marks it recalled, and writes a recall event
        after it in each holder's stream; a retry writes nothing."""
        await self.setup()
        (a, da), (b, db) = await self.pair()
        sent = await self.s.messages.send(to_user(a, da, b, 1, "oops"))
        self.s.delivery.delivered.clear()
        await self.receipts.recall(a, da, sent.message_id)
        for user in (a, b):
            original, event = await self.stream(user)
            self.assertEqual((original.kind, original.content, original.recalled), (KIND_MESSAGE, "", True))
            self.assertEqual((event.kind, event.message_id, event.ref_seq, event.seq), (KIND_RECALL, sent.message_id, 1, 2))
        self.assertEqual([m.kind for m in self.s.delivery.delivered if m.kind], [KIND_RECALL, KIND_RECALL])
        await self.receipts.recall(a, da, sent.message_id)  # retried: idempotent
        self.assertEqual(len(await self.stream(a)), 2)
        await self.assert_code(self.receipts.edit(a, da, sent.message_id, "x"), ApiCode.MESSAGE_RECALLED)

    async def test_edit_updates_every_copy(self: Any) -> None:
        """An edit replaces the content of every copy with the edit time; a retry
        with the same content writes nothing."""
        await self.setup()
        (a, da), (b, db) = await self.pair()
        sent = await self.s.messages.send(to_user(a, da, b, 1, "helo"))
        await self.receipts.edit(a, da, sent.message_id, "hello")
        await self.receipts.edit(a, da, sent.message_id, "hello")
        original, event = await self.stream(b)
        self.assertEqual((original.content, original.edited_at > 0), ("hello", True))
        self.assertEqual((event.kind, event.content, event.ref_seq), (KIND_EDIT, "hello", 1))
        await self.assert_code(self.receipts.edit(a, da, sent.message_id, ""), ApiCode.BAD_REQUEST)

    async def test_only_the_sender_or_group_owner(self: Any) -> None:
        """The receiver may not recall or edit; a group owner may recall, not edit;
        an unknown or foreign message id is 1016."""
        await self.setup()
        (a, da), (b, db) = await self.pair()
        sent = await self.s.messages.send(to_user(a, da, b, 1, "mine"))
        await self.assert_code(self.receipts.recall(b, db, sent.message_id), ApiCode.NOT_MESSAGE_SENDER)
        await self.assert_code(self.receipts.edit(b, db, sent.message_id, "x"), ApiCode.NOT_MESSAGE_SENDER)
        await self.assert_code(self.receipts.recall(a, da, 987654), ApiCode.MESSAGE_NOT_FOUND)
        c, dc, _ = await self.s.new_user("c")
        await self.assert_code(self.receipts.recall(c, dc, sent.message_id), ApiCode.MESSAGE_NOT_FOUND)
        group = await self.s.social.create_group(c, "g", [b])
        in_group = await self.s.messages.send(to_group(b, db, group, 1, "hi all"))
        await self.assert_code(self.receipts.edit(c, dc, in_group.message_id, "x"), ApiCode.NOT_MESSAGE_SENDER)
        await self.receipts.recall(c, dc, in_group.message_id)
        copy = [m for m in await self.stream(b) if m.message_id == in_group.message_id and m.kind == KIND_MESSAGE]
        self.assertTrue(copy[0].recalled)

    async def test_windows(self: Any) -> None:
        """Past the recall window (2 minutes) a recall is 1018; an edit is allowed up to 15."""
        await self.setup(offset=200)
        (a, da), (b, _) = await self.pair()
        sent = await self.s.messages.send(to_user(a, da, b, 1, "old"))
        await self.assert_code(self.receipts.recall(a, da, sent.message_id), ApiCode.CHANGE_WINDOW_CLOSED)
        await self.receipts.edit(a, da, sent.message_id, "new")
        self.clock.advance(900)
        await self.assert_code(self.receipts.edit(a, da, sent.message_id, "newer"), ApiCode.CHANGE_WINDOW_CLOSED)

    async def test_events_interleave_with_sends_in_seq_order(self: Any) -> None:
        """Event rows and messages share the user's seq space with no gap or repeat."""
        await self.setup()
        (a, da), (b, db) = await self.pair()
        first = await self.s.messages.send(to_user(a, da, b, 1, "one"))
        await self.receipts.edit(a, da, first.message_id, "uno")
        await self.s.messages.send(to_user(b, db, a, 1, "two"))
        await self.receipts.read(b, db, RECEIVER_USER, a, 10)
        self.assertEqual([m.seq for m in await self.stream(a)], [1, 2, 3, 4])
        self.assertEqual([m.kind for m in await self.stream(a)], [KIND_MESSAGE, KIND_EDIT, KIND_MESSAGE, KIND_READ])
        self.assertEqual(await self.s.messages.store.max_seq(a), 4)


    async def test_concurrent_retries_write_once(self: Any) -> None:
        """The same recall, edit and read report sent at once several times (retries
        racing on the pool's threads) write one set of events."""
        await self.setup()
        (a, da), (b, db) = await self.pair()
        first = await self.s.messages.send(to_user(a, da, b, 1, "one"))
        second = await self.s.messages.send(to_user(a, da, b, 2, "two"))
        await defer.gatherResults(
            [
                defer.Deferred.fromCoroutine(work)
                for _ in range(3)
                for work in (
                    self.receipts.recall(a, da, first.message_id),
                    self.receipts.edit(a, da, second.message_id, "zwei"),
                    self.receipts.read(b, db, RECEIVER_USER, a, 2),
                )
            ],
            consumeErrors=True,
        )
        kinds = [m.kind for m in await self.stream(b)]
        self.assertEqual(sorted(kinds), [KIND_MESSAGE, KIND_MESSAGE, KIND_READ, KIND_RECALL, KIND_EDIT])
        self.assertEqual([m.seq for m in await self.stream(b)], [1, 2, 3, 4, 5])


class ReceiptSQLiteTests(ReceiptTests, SQLiteBackend, TestCase):
    pass


class ReceiptMySQLTests(ReceiptTests, MySQLBackend, TestCase):
    pass
