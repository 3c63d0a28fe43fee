"""The client side of issue 14 without processes: the chat's unread counts and /read,
event lines, the message log's event fields, and the HTTP methods (StubTreq)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Coroutine, TypeVar

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from goim.client.chat import Chat
from goim.client.client import GoimClient
from goim.client.directory import Directory
from goim.client.history import message_from_json, message_to_json
from goim.client.session import SessionConfig
from goim.client.state import MemoryStateStore
from goim.features import Feature
from goim.protocols import codec
from goim.resources.api import GoimAPI
from goim.types import KIND_EDIT, KIND_READ, KIND_RECALL, RECEIVER_USER, SENDER_USER, StoredMessage
from tests.client.fakes import FakeConnector, FakeServer
from tests.support.db import SQLiteBackend
from tests.support.services import Services, to_user

T = TypeVar("T")


class HistoryFieldTests(SynchronousTestCase):
    def test_event_fields_round_trip_and_old_lines_still_parse(self) -> None:
        """The log writes kind, ref_seq, edited_at, recalled; a line written before them reads with defaults."""
        event = StoredMessage(1, 5, 9, 1, 2, 3, 1, 7, 1, "hi", 10, kind=KIND_EDIT, ref_seq=4, edited_at=10)
        self.assertEqual(message_from_json(message_to_json(event)), event)
        old = message_to_json(StoredMessage(1, 1, 9, 1, 2, 3, 1, 7, 1, "hi", 10))
        for name in ("kind", "ref_seq", "edited_at", "recalled"):
            del old[name]
        self.assertEqual(message_from_json(old), StoredMessage(1, 1, 9, 1, 2, 3, 1, 7, 1, "hi", 10))
        with self.assertRaises(ValueError):
            message_from_json({**message_to_json(event), "recalled": 1})


class ChatReceiptTests(SQLiteBackend, SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.services = services = Services(self.make_sync_database(), self.clock, synchronous=True)
        api = GoimAPI(services.accounts, services.social, receipts=services.container.get_receipts())
        self.stub = StubTreq(api.app.resource())
        self.connector = FakeConnector()
        self.bob = self.client()
        self.run_(self.bob.register("bob", "Bob", "secret-pw"))
        self.alice = self.client()
        self.run_(self.alice.register("alice", "Alice", "secret-pw"))
        self.run_(self.alice.api.add_friend(self.bob.state.user_id))
        for n in (1, 2):
            self.run_(services.messages.send(to_user(self.bob.state.user_id, self.bob.state.device_id, self.alice.state.user_id, n, f"m{n}")))
        self.lines: list[str] = []
        self.chat = Chat(self.alice, Directory(self.alice.api, self.clock), self.lines.append, address="here:1", clock=self.clock)

    def client(self) -> GoimClient:
        return GoimClient(
            reactor=self.clock, http_url="http://goim.test", store=MemoryStateStore(), connect=self.connector,
            http=self.stub, config=SessionConfig(features=int(Feature.EVENTS)),
        )

    def run_(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def test_unread_counts_read_and_event_lines(self) -> None:
        """The chat starts with the unread counts; /read clears them; events show as lines;
        the session signs in with features bit 1."""
        self.run_(self.chat.start())
        server: FakeServer = self.connector.accept()
        self.assertEqual(server.of(codec.SIGN_IN)[0].features, int(Feature.EVENTS))
        self.assertIn("* 2 unread from Bob", self.lines)
        self.chat.line("/to bob")
        self.chat.line("/read")
        self.assertEqual(self.lines[-1], "* read up to #2")
        self.chat.line("/unread")
        self.assertEqual(self.lines[-1], "* no unread messages")
        base = StoredMessage(
            user_id=self.alice.state.user_id, seq=3, message_id=50, sender_type=SENDER_USER,
            sender_id=self.bob.state.user_id, sender_device_id=1, receiver_type=RECEIVER_USER,
            receiver_id=self.alice.state.user_id, type=1, content="", send_time=0,
        )
        server.sign_in_ok()
        server.sync([replace(base, seq=1, content="m1"), replace(base, seq=2, content="m2")])
        server.push(replace(base, kind=KIND_READ, ref_seq=2))
        server.push(replace(base, seq=4, kind=KIND_RECALL, ref_seq=1, recalled=True))
        server.push(replace(base, seq=5, kind=KIND_EDIT, ref_seq=2, content="m2!", edited_at=1))
        self.assertTrue(self.lines[-3].endswith("Bob → me: (read up to #2)"), self.lines)
        self.assertTrue(self.lines[-2].endswith("Bob → me: (recalled message 50)"), self.lines)
        self.assertTrue(self.lines[-1].endswith("Bob → me: (edited message 50) m2!"), self.lines)

    def test_api_methods(self) -> None:
        """read, conversations, recall, edit and read_count over the HTTP client."""
        alice = self.alice.api
        page, next_cursor = self.run_(alice.conversations(limit=1))
        self.assertEqual([(c.id, c.unread, c.last_content) for c in page], [(self.bob.state.user_id, 2, "m2")])
        self.assertIsNone(next_cursor)
        self.assertEqual(self.run_(alice.read(RECEIVER_USER, self.bob.state.user_id, 1)), 1)
        self.assertEqual(self.run_(alice.conversations())[0][0].unread, 1)
        message_id = page[0].last_message_id
        self.run_(self.bob.api.edit(message_id, "m2 edited"))
        self.run_(self.bob.api.recall(message_id))
        self.assertTrue(self.run_(alice.conversations())[0][0].last_recalled)
