"""Ordering of received messages: duplicates dropped, gaps held."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from goim.client.inbox import Inbox
from tests.client.fakes import message


class InboxTests(SynchronousTestCase):
    def test_in_order_messages_pass_through(self) -> None:
        """Contiguous messages come out at once, in order; held advances."""
        inbox = Inbox(0)
        self.assertEqual([m.seq for m in inbox.add([message(1), message(2)])], [1, 2])
        self.assertEqual(inbox.held, 2)
        self.assertFalse(inbox.has_gap)

    def test_duplicates_are_dropped(self) -> None:
        """A seq already handed out, or already waiting, is dropped and counted."""
        inbox = Inbox(2)
        self.assertEqual(inbox.add([message(1), message(2)]), [])
        inbox.add([message(4)])
        inbox.add([message(4)])
        self.assertEqual(inbox.duplicates, 3)

    def test_gap_holds_later_messages_until_filled(self) -> None:
        """Messages after a gap wait; filling the gap releases them all, in order."""
        inbox = Inbox(0)
        self.assertEqual(inbox.add([message(3), message(2)]), [])
        self.assertTrue(inbox.has_gap)
        self.assertEqual(inbox.waiting, [2, 3])
        self.assertEqual([m.seq for m in inbox.add([message(1)])], [1, 2, 3])
        self.assertFalse(inbox.has_gap)

    def test_each_seq_comes_out_once_whatever_the_arrival_order(self) -> None:
        """Any interleaving with repeats yields 1..n exactly once."""
        inbox = Inbox(0)
        out = []
        for batch in ([5, 1, 1], [3, 2, 5], [4, 4, 1, 6], [6, 7]):
            out.extend(m.seq for m in inbox.add([message(s) for s in batch]))
        self.assertEqual(out, [1, 2, 3, 4, 5, 6, 7])
