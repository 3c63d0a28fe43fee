"""Message.trimmed on the first sync frame, only for clients with Feature.TRIMMED."""

from dataclasses import replace

from twisted.trial.unittest import SynchronousTestCase

from goim.features import Feature
from goim.protocols import codec
from goim.protocols.sync import TRIMMED_FIELD
from goim.types import SignInResult
from tests.protocols.fakes import FakeLogic
from tests.protocols.test_connection import Conn, parse


def signed_in(conn: Conn, features: int) -> None:
    conn.feed(codec.SignIn(device_id=1, user_id=2, token="t", features=features).to_frame())
    conn.logic.sign_ins[-1].deferred.callback(SignInResult(ok=True))
    conn.take()


def synced(features: int, *, trimmed: bool) -> list[bytes]:
    """The frame values of a trimmed 300-message sync to a connection with ``features``."""
    conn = Conn(logic=FakeLogic())
    signed_in(conn, features)
    conn.logic.store(2, 300, content="z" * 100)
    conn.feed(codec.SyncTrigger(sync_sequence=0).to_frame())
    while any(not c.deferred.called for c in conn.logic.sync_pages):
        call = next(c for c in conn.logic.sync_pages if not c.deferred.called)
        call.deferred.callback(replace(conn.logic.page_for(call), trimmed=trimmed))
    return [f.value for f in conn.take()]


class TrimmedTests(SynchronousTestCase):
    def test_first_frame_flagged_for_opted_in_clients(self) -> None:
        """With Feature.TRIMMED the first frame of a trimmed sync carries trimmed=true
        and still fits 4,092 bytes; no later frame carries it."""
        values = synced(Feature.TRIMMED, trimmed=True)
        messages = [parse(codec.Message, v) for v in values]
        self.assertEqual([m.trimmed for m in messages], [True] + [False] * (len(values) - 1))
        self.assertTrue(all(len(v) <= 4092 for v in values))
        self.assertTrue(values[0].endswith(TRIMMED_FIELD))
        self.assertEqual(sum(len(m.messages) for m in messages), 300)

    def test_goim11_clients_see_nothing_new(self) -> None:
        """A client without the feature gets exactly the bytes of an untrimmed sync."""
        self.assertEqual(synced(0, trimmed=True), synced(0, trimmed=False))
        self.assertEqual(synced(Feature.EVENTS, trimmed=True), synced(Feature.EVENTS, trimmed=False))

    def test_vector(self) -> None:
        """docs/protocol.md: an empty trimmed sync page is 08 01 20 01."""
        self.assertEqual(codec.Message(type=1, messages=(), more=False, trimmed=True).to_bytes().hex(), "08012001")
