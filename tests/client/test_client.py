"""GoimClient: device registration, sign-in epochs and the session, on StubTreq and fakes."""

from __future__ import annotations

from typing import Any, Coroutine, TypeVar

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from goim.client.client import GoimClient
from goim.client.errors import APIError
from goim.client.state import ClientState, MemoryStateStore
from goim.protocols import codec
from goim.resources.api import GoimAPI
from tests.client.fakes import FakeConnector
from tests.support.db import SQLiteBackend
from tests.support.services import Services

T = TypeVar("T")


class ClientTestCase(SQLiteBackend, SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.services = Services(self.make_sync_database(), self.clock, synchronous=True)
        self.stub = StubTreq(GoimAPI(self.services.accounts, self.services.social).app.resource())
        self.connector = FakeConnector()

    def client(self, store: MemoryStateStore | None = None) -> GoimClient:
        return GoimClient(
            reactor=self.clock,
            http_url="http://goim.test",
            store=store or MemoryStateStore(),
            connect=self.connector,
            http=self.stub,
            random=lambda: 0.5,
        )

    def run_(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.successResultOf(Deferred.fromCoroutine(coroutine))


class AccountFlowTests(ClientTestCase):
    def test_register_creates_a_device_first_and_saves_the_state(self) -> None:
        """register(): POST /device, POST /user, then the state holds device, token and user."""
        store = MemoryStateStore()
        client = self.client(store)
        session = self.run_(client.register("alice", "Alice", "secret-pw"))
        saved = store.load()
        self.assertTrue(saved.signed_in)
        self.assertEqual(saved.user_id, session.user_id)
        self.assertEqual((saved.send_sequence, saved.synced_seq), (0, 0))
        self.assertEqual(self.run_(client.api.user_info()).number, "alice")

    def test_login_keeps_the_device_and_starts_a_new_epoch(self) -> None:
        """login() on a registered device reuses it and resets send_sequence to the server's 0."""
        store = MemoryStateStore()
        client = self.client(store)
        self.run_(client.register("bob", "Bob", "secret-pw"))
        device_id = client.state.device_id
        client.state.send_sequence = 17
        self.run_(client.login("bob", "secret-pw"))
        self.assertEqual((store.load().device_id, store.load().send_sequence), (device_id, 0))

    def test_unknown_device_is_registered_again(self) -> None:
        """A state whose device the server does not know (code 1001) gets a new device, then signs in."""
        self.run_(self.client().register("carol", "Carol", "secret-pw"))
        store = MemoryStateStore(ClientState(device_id=999, token="stale", user_id=5))
        client = self.client(store)
        self.run_(client.login("carol", "secret-pw"))
        self.assertNotEqual(store.load().device_id, 999)
        self.assertTrue(store.load().signed_in)

    def test_wrong_password_raises_and_leaves_no_device_behind(self) -> None:
        """login() with a wrong password raises APIError 1003; a fresh profile stays without
        a device (nothing saved), and a later good login works."""
        self.run_(self.client().register("dave", "Dave", "secret-pw"))
        store = MemoryStateStore()
        client = self.client(store)
        error = self.failureResultOf(Deferred.fromCoroutine(client.login("dave", "nope-nope")), APIError).value
        self.assertEqual(getattr(error, "code", None), 1003)
        self.assertEqual(store.saves, 0)
        self.assertFalse(client.state.has_device)
        self.run_(client.login("dave", "secret-pw"))
        self.assertTrue(store.load().signed_in)

    def test_failed_login_keeps_the_previous_device_and_user(self) -> None:
        """A failed login on a signed-in profile leaves device, user and sequences as they were."""
        self.run_(self.client().register("gina", "Gina", "secret-pw"))
        store = MemoryStateStore()
        client = self.client(store)
        self.run_(client.register("hank", "Hank", "secret-pw"))
        before = client.state.to_json()
        self.failureResultOf(Deferred.fromCoroutine(client.login("gina", "wrong-pw")), APIError)
        self.assertEqual((client.state.to_json(), store.load().to_json()), (before, before))

    def test_session_signs_in_with_the_registered_credentials(self) -> None:
        """start() after register() signs in over TCP as the new device and user."""
        client = self.client()
        session = self.run_(client.register("erin", "Erin", "secret-pw"))
        client.start()
        server = self.connector.accept()
        (sign_in,) = server.of(codec.SIGN_IN)
        self.assertEqual((sign_in.device_id, sign_in.user_id), (client.state.device_id, session.user_id))
        self.assertEqual(sign_in.token, client.state.token)

    def test_login_while_the_session_runs_is_refused(self) -> None:
        """Changing the epoch under a running session is a programming error."""
        client = self.client()
        self.run_(client.register("fred", "Fred", "secret-pw"))
        client.start()
        self.failureResultOf(Deferred.fromCoroutine(client.login("fred", "secret-pw")), RuntimeError)
