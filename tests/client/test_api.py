"""The HTTP API client against the real Klein app through StubTreq (no sockets)."""

from __future__ import annotations

from typing import Any, Coroutine, TypeVar

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from goim.client.api import DeviceInfo, HTTPAPI
from goim.client.errors import APIError
from goim.resources.api import GoimAPI
from tests.support.db import SQLiteBackend
from tests.support.services import Services

T = TypeVar("T")

BASE = "http://goim.test"


class APIClientTestCase(SQLiteBackend, SynchronousTestCase):
    """An HTTPAPI on StubTreq over fresh services with a synchronous SQLite database."""

    def setUp(self) -> None:
        self.services = Services(self.make_sync_database(), Clock(), synchronous=True)
        self.stub = StubTreq(GoimAPI(self.services.accounts, self.services.social, health=lambda: {"ok": 1}).app.resource())

    def run_(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def fails(self, coroutine: Coroutine[Any, Any, Any]) -> APIError:
        error = self.failureResultOf(Deferred.fromCoroutine(coroutine), APIError).value
        assert isinstance(error, APIError)
        return error

    def api(self) -> HTTPAPI:
        return HTTPAPI(BASE, http=self.stub)

    def user(self, number: str) -> tuple[HTTPAPI, int]:
        api = self.api()
        device = self.run_(api.register_device())
        api.set_credentials(device.id, device.token)
        session = self.run_(api.register_user(number, number.title(), "secret-pw"))
        return api, session.user_id


class AccountTests(APIClientTestCase):
    def test_register_device_then_user(self) -> None:
        """POST /device gives id and token; POST /user binds a user with send_sequence 0."""
        api = self.api()
        device = self.run_(api.register_device(DeviceInfo(type=1, brand="b", model="m", system_version="1", app_version="2")))
        self.assertGreater(device.id, 0)
        api.set_credentials(device.id, device.token)
        session = self.run_(api.register_user("alice", "Alice", "secret-pw"))
        self.assertEqual((session.send_sequence, session.sync_sequence), (0, 0))
        info = self.run_(api.user_info())
        self.assertEqual((info.id, info.number, info.nickname), (session.user_id, "alice", "Alice"))

    def test_sign_in_on_a_second_device(self) -> None:
        """POST /user/signin binds another device to the same user."""
        _, user_id = self.user("bob")
        api = self.api()
        device = self.run_(api.register_device())
        api.set_credentials(device.id, device.token)
        self.assertEqual(self.run_(api.sign_in("bob", "secret-pw")).user_id, user_id)

    def test_server_errors_carry_code_and_message(self) -> None:
        """A taken number is 1002, a wrong password 1003, a bad token 1001, each with the server's text."""
        api, _ = self.user("carol")
        error = self.fails(api.register_user("carol", "Again", "secret-pw"))
        self.assertEqual((error.code, error.message, error.status), (1002, "number already used", 409))
        error = self.fails(api.sign_in("carol", "wrong-password"))
        self.assertEqual((error.code, error.message), (1003, "wrong number or password"))
        api.set_credentials(api.device_id, "not-the-token")
        self.assertEqual(self.fails(api.user_info()).code, 1001)

    def test_unbound_device_and_missing_credentials(self) -> None:
        """A device without a user gets code 4; no credentials at all fail before any request."""
        api = self.api()
        self.assertEqual(self.fails(api.friends()).code, 1)
        device = self.run_(api.register_device())
        api.set_credentials(device.id, device.token)
        self.assertEqual(self.fails(api.friends()).code, 4)

    def test_health_and_openapi_need_no_credentials(self) -> None:
        """GET /healthz and /openapi.json answer without a device."""
        api = self.api()
        self.assertEqual(self.run_(api.health()), {"ok": 1})
        self.assertIn("paths", self.run_(api.openapi()))

    def test_non_envelope_answer_is_an_api_error(self) -> None:
        """A 404 page that is not an envelope (or an unknown path) still raises APIError."""
        api, _ = self.user("dave")
        error = self.fails(api.call("GET", "/no/such/route"))
        self.assertEqual(error.status, 404)


class SocialTests(APIClientTestCase):
    def test_friends_add_list_delete(self) -> None:
        """POST /friend is mutual, GET /friend/all lists with label, DELETE removes both ways."""
        alice, alice_id = self.user("alice")
        bob, bob_id = self.user("bob")
        self.run_(alice.add_friend(bob_id, "work"))
        (friend,) = self.run_(alice.friends())
        self.assertEqual((friend.user_id, friend.label, friend.nickname, friend.number), (bob_id, "work", "Bob", "bob"))
        self.assertEqual([c.user_id for c in self.run_(bob.friends())], [alice_id])
        self.run_(bob.delete_friend(alice_id))
        self.assertEqual(self.run_(alice.friends()), [])

    def test_groups_create_show_add_remove_label(self) -> None:
        """Every group route: create, one, all, add and remove members, set a label."""
        alice, alice_id = self.user("alice")
        _, bob_id = self.user("bob")
        carol, carol_id = self.user("carol")
        group_id = self.run_(alice.create_group("devs", [bob_id]))
        group = self.run_(alice.group(group_id))
        self.assertEqual((group.name, group.owner_id), ("devs", alice_id))
        self.assertEqual(sorted(u.user_id for u in group.users), sorted([alice_id, bob_id]))
        self.run_(alice.add_members(group_id, [carol_id]))
        self.assertEqual([g.id for g in self.run_(carol.groups())], [group_id])
        self.run_(carol.set_group_label(group_id, "the new one"))
        labels = {u.user_id: u.label for u in self.run_(alice.group(group_id)).users}
        self.assertEqual(labels[carol_id], "the new one")
        self.run_(alice.remove_members(group_id, [bob_id]))
        self.assertNotIn(bob_id, [u.user_id for u in self.run_(alice.group(group_id)).users])
        error = self.fails(carol.remove_members(group_id, [alice_id]))
        self.assertEqual(error.code, 1007)
        self.assertEqual(self.fails(alice.group(group_id + 100)).code, 1005)
