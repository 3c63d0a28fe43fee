"""The local message log: exactly once, per user, in seq order."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from goim.client.history import MessageLog, message_from_json, message_to_json
from tests.client.fakes import message


class MessageLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = Path(self.mktemp()) / "messages.jsonl"

    def test_append_keeps_each_message_once_across_instances(self) -> None:
        """A message logged again (after a crash before the state was saved) is not repeated."""
        MessageLog(self.path).append([message(1), message(2)])
        log = MessageLog(self.path)
        self.assertEqual([m.seq for m in log.append([message(2), message(3)])], [3])
        self.assertEqual([m.seq for m in log.messages(user_id=1)], [1, 2, 3])
        self.assertEqual(len(self.path.read_text().splitlines()), 3)

    def test_messages_filters_by_user_and_since(self) -> None:
        """messages() returns one user's messages after a seq, in seq order."""
        log = MessageLog(self.path)
        log.append([message(3), message(1), message(2), message(1, user_id=9)])
        self.assertEqual([m.seq for m in log.messages(user_id=1, since=1)], [2, 3])
        self.assertEqual([m.seq for m in log.messages(user_id=9)], [1])

    def test_a_line_cut_short_is_skipped_and_the_next_starts_fresh(self) -> None:
        """A torn last line (crash mid-write) is ignored; later appends start on a new line."""
        MessageLog(self.path).append([message(1)])
        with open(self.path, "a") as f:
            f.write('{"user_id": 1, "seq": 2, "mess')
        log = MessageLog(self.path)
        log.append([message(2)])
        self.assertEqual([m.seq for m in MessageLog(self.path).messages(user_id=1)], [1, 2])

    def test_json_round_trip(self) -> None:
        """message_from_json(message_to_json(m)) == m; wrong types are refused."""
        m = message(5, content="ünïcode")
        self.assertEqual(message_from_json(message_to_json(m)), m)
        bad = message_to_json(m)
        bad["seq"] = "5"
        self.assertRaises(ValueError, message_from_json, bad)
