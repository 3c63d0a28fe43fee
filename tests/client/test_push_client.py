"""The client's side of issue 14: it opts in to Feature.TRIMMED, reports trimmed
history, and shows business pushes (sender_type 2) as from "system"."""

from __future__ import annotations

from dataclasses import replace

from goim.client.directory import Directory
from goim.features import Feature
from goim.protocols import codec
from goim.types import RECEIVER_USER, SENDER_SYSTEM, StoredMessage
from tests.client.fakes import Recorder, message
from tests.client.test_session import USER_ID, SessionTestCase


class TrimmedRecorder(Recorder):
    def history_trimmed(self) -> None:
        self.events.append(("trimmed", None))


class TrimmedTests(SessionTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.session.remove_observer(self.events)
        self.events = TrimmedRecorder()
        self.session.add_observer(self.events)

    def test_signs_in_with_trimmed(self) -> None:
        """SignIn announces Feature.TRIMMED by default."""
        self.session.start()
        server = self.connector.accept()
        sign_in = server.decoded()[0][1]
        self.assertEqual(sign_in.features, Feature.TRIMMED)

    def test_trimmed_sync_is_reported(self) -> None:
        """A sync frame with trimmed=true gives one history_trimmed event before its
        messages, and the device takes the oldest kept as its new start (no gap)."""
        self.session.start()
        server = self.connector.accept()
        server.sign_in_ok()
        frame = codec.Message.of_stored(codec.MessageType.SYNC, [message(5), message(6)])
        server.write(replace(frame, trimmed=True))
        self.assertEqual(self.events.names(), ["connected", "trimmed", "messages", "synced"])
        self.assertEqual([m.seq for m in self.events.messages], [5, 6])
        self.assertEqual(self.session.synced_seq, 6)
        server.push(message(7))
        self.assertEqual([m.seq for m in self.events.messages], [5, 6, 7])


class BusinessPushDisplayTests(SessionTestCase):
    def test_system_sender_shown_as_system(self) -> None:
        """A sender_type-2 message is shown as from "system", never as a user."""
        push = StoredMessage(USER_ID, 1, 99, SENDER_SYSTEM, 0, 0, RECEIVER_USER, USER_ID, 1, "50% off", 0)
        line = Directory(None, self.clock).format(push, user_id=USER_ID)  # type: ignore[arg-type]
        self.assertIn("system → me: 50% off", line)
