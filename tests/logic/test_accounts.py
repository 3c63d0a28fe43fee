"""AccountService on SQLite and on MariaDB/MySQL: devices, users, sign-in, acks."""

import string
from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase

from goim.logic.accounts import AccountLimits, AccountService
from goim.logic.passwords import check_password
from goim.logic.throttle import Backoff, TokenBucket, address_key
from goim.metrics import Metrics
from goim.storage.database import Txn
from tests.support.db import BackendMixin, MySQLBackend, SQLiteBackend
from tests.support.services import TEST_PASSWORD_COST, Services, ServiceTests

if TYPE_CHECKING:

    class _Base(BackendMixin, TestCase):
        pass

else:
    _Base = object

PASSWORD = "secret-pw"
URLSAFE = set(string.ascii_letters + string.digits + "-_")


class AccountTests(ServiceTests, _Base):
    """Runs on each backend through the subclasses at the bottom of the module."""

    async def device(self, s: Services, **overrides: Any) -> tuple[int, str]:
        """Register a valid device, with ``overrides`` applied to its fields."""
        fields: dict[str, Any] = dict(
            device_type=1, brand="Pixel", model="8a", system_version="Android 14", app_version="1.0.0"
        )
        fields.update(overrides)
        return await s.accounts.register_device(**fields)

    async def register(self, s: Services, device_id: int, number: str, **overrides: Any) -> Any:
        """Register a user with valid fields on ``device_id``, with ``overrides`` applied."""
        fields: dict[str, Any] = dict(number=number, nickname=f"nick-{number}", sex=1, avatar="", password=PASSWORD)
        fields.update(overrides)
        return await s.accounts.register_user(device_id, **fields)

    async def device_rows(self, s: Services) -> list[tuple[Any, ...]]:
        """Every column of every row of ``devices``."""

        def txn(t: Txn) -> list[tuple[Any, ...]]:
            return t.query("SELECT * FROM devices")

        return await s.db.run("test_devices", txn)

    # register_device

    async def test_register_device_rejects_bad_type(self) -> None:
        """Device types outside 1..5 are refused with code 2."""
        s = await self.services()
        for bad in (0, 6, -1, 100):
            await self.assert_code(self.device(s, device_type=bad), 2)
        for good in (1, 2, 3, 4, 5):
            device_id, _ = await self.device(s, device_type=good)
            self.assertGreater(device_id, 0)

    async def test_register_device_rejects_empty_or_long_fields(self) -> None:
        """Empty, blank or over-64-character brand/model/system_version/app_version give code 2."""
        s = await self.services()
        for field in ("brand", "model", "system_version", "app_version"):
            for bad in ("", "   ", "\t\n", "x" * 65):
                e = await self.assert_code(self.device(s, **{field: bad}), 2)
                self.assertIn(field, e.message)
            device_id, _ = await self.device(s, **{field: "y" * 64})
            self.assertGreater(device_id, 0)
        self.assertEqual(len(await self.device_rows(s)), 4)

    async def test_register_device_token_is_long_random_and_stored_hashed(self) -> None:
        """The token carries at least 128 random bits and only a hash of it is stored."""
        s = await self.services()
        device_id, token = await self.device(s)
        other_id, other_token = await self.device(s)
        self.assertNotEqual(device_id, other_id)
        self.assertNotEqual(token, other_token)
        self.assertLessEqual(set(token), URLSAFE)
        self.assertGreaterEqual(len(token) * 6, 128)
        row = await s.account_store.get_device(device_id)
        assert row is not None
        self.assertTrue(row.token_hash)
        self.assertNotEqual(row.token_hash, token)
        self.assertNotIn(token, row.token_hash)
        for columns in await self.device_rows(s):
            for value in columns:
                self.assertNotIn(token, str(value))
                self.assertNotIn(other_token, str(value))

    async def test_new_device_is_unbound(self) -> None:
        """A new device has no user, epoch 0 and nothing acknowledged."""
        s = await self.services()
        device_id, _ = await self.device(s)
        row = await s.account_store.get_device(device_id)
        assert row is not None
        self.assertEqual((row.id, row.user_id, row.send_epoch, row.acked_seq), (device_id, 0, 0, 0))

    # authenticate

    async def test_authenticate_ok(self) -> None:
        """The right token authenticates its device."""
        s = await self.services()
        device_id, token = await self.device(s)
        await self.device(s)
        row = await s.accounts.authenticate(device_id, token)
        self.assertEqual(row.id, device_id)
        self.assertEqual(row.user_id, 0)

    async def test_authenticate_wrong_token(self) -> None:
        """A wrong token, another device's token or an empty one gives 1001."""
        s = await self.services()
        device_id, token = await self.device(s)
        _, other_token = await self.device(s)
        for bad in (token + "x", token[:-1], token[::-1], other_token, ""):
            await self.assert_code(s.accounts.authenticate(device_id, bad), 1001)

    async def test_authenticate_unknown_device(self) -> None:
        """An unknown device id or a non-positive one gives 1001."""
        s = await self.services()
        device_id, token = await self.device(s)
        for bad in (device_id + 1, device_id + 1000, 0, -1, -device_id):
            await self.assert_code(s.accounts.authenticate(bad, token), 1001)

    async def test_authenticate_out_of_range_device_id(self) -> None:
        """A device id beyond the 64-bit column range (from an untrusted header) gives 1001, not a driver error."""
        s = await self.services()
        _, token = await self.device(s)
        for bad in (2**63, 2**64 + 1, 10**30):
            await self.assert_code(s.accounts.authenticate(bad, token), 1001)
            await self.assert_code(s.accounts.authenticate_user(bad, token), 1001)

    async def test_authenticate_user_unbound_device(self) -> None:
        """authenticate_user on a device without a user gives code 4; once bound it passes."""
        s = await self.services()
        device_id, token = await self.device(s)
        await self.assert_code(s.accounts.authenticate_user(device_id, token), 4)
        session = await self.register(s, device_id, "alice")
        row = await s.accounts.authenticate_user(device_id, token)
        self.assertEqual(row.user_id, session.user_id)

    async def test_authenticate_user_checks_the_token_first(self) -> None:
        """authenticate_user with a wrong token gives 1001, not 4."""
        s = await self.services()
        device_id, token = await self.device(s)
        await self.assert_code(s.accounts.authenticate_user(device_id, token + "x"), 1001)
        await self.assert_code(s.accounts.authenticate_user(0, token), 1001)

    # register_user

    async def test_register_user_returns_zero_sequences(self) -> None:
        """Registration returns the new user id with send_sequence 0 and sync_sequence 0, and binds the device."""
        s = await self.services()
        device_id, _ = await self.device(s)
        session = await self.register(s, device_id, "alice")
        self.assertGreater(session.user_id, 0)
        self.assertEqual((session.send_sequence, session.sync_sequence), (0, 0))
        row = await s.account_store.get_device(device_id)
        assert row is not None
        self.assertEqual(row.user_id, session.user_id)
        other_device, _ = await self.device(s)
        other = await self.register(s, other_device, "bob")
        self.assertNotEqual(other.user_id, session.user_id)

    async def test_register_user_duplicate_number(self) -> None:
        """A number already in use gives 1002 and leaves the first user and the second device alone."""
        s = await self.services()
        first_device, _ = await self.device(s)
        first = await self.register(s, first_device, "alice")
        second_device, _ = await self.device(s)
        await self.assert_code(self.register(s, second_device, "alice", nickname="other"), 1002)
        row = await s.account_store.get_device(second_device)
        assert row is not None
        self.assertEqual((row.user_id, row.send_epoch), (0, 0))
        user = await s.accounts.get_user(first.user_id)
        self.assertEqual(user.nickname, "nick-alice")

    async def test_register_user_validation(self) -> None:
        """Empty number or nickname, a short password or a bad sex give code 2 and create nothing."""
        s = await self.services()
        device_id, _ = await self.device(s)
        cases: list[dict[str, Any]] = [
            {"number": ""},
            {"number": "   "},
            {"number": "n" * 65},
            {"number": "alice "},
            {"number": " alice"},
            {"nickname": ""},
            {"nickname": " \t"},
            {"nickname": "n" * 65},
            {"password": ""},
            {"password": "12345"},
            {"password": "p" * 129},
            {"sex": 3},
            {"sex": -1},
            {"avatar": "a" * 1025},
        ]
        for overrides in cases:
            fields: dict[str, Any] = {"number": "alice", **overrides}
            await self.assert_code(self.register(s, device_id, **fields), 2)
        self.assertIsNone(await s.account_store.get_credentials("alice"))
        row = await s.account_store.get_device(device_id)
        assert row is not None
        self.assertEqual((row.user_id, row.send_epoch), (0, 0))
        session = await self.register(s, device_id, "alice", password="123456", sex=0)
        self.assertGreater(session.user_id, 0)

    async def test_password_is_stored_as_scrypt_hash(self) -> None:
        """The stored password is a salted scrypt hash that verifies, never the plaintext."""
        s = await self.services()
        d1, _ = await self.device(s)
        d2, _ = await self.device(s)
        alice = await self.register(s, d1, "alice")
        await self.register(s, d2, "bob")
        credentials = await s.account_store.get_credentials("alice")
        assert credentials is not None
        user_id, stored = credentials
        self.assertEqual(user_id, alice.user_id)
        self.assertTrue(stored.startswith("scrypt$"), stored)
        self.assertNotIn(PASSWORD, stored)
        self.assertTrue(check_password(PASSWORD, stored))
        self.assertFalse(check_password(PASSWORD + "x", stored))
        bob = await s.account_store.get_credentials("bob")
        assert bob is not None
        self.assertNotEqual(bob[1], stored, "same password, same hash: no salt")

    async def test_user_profile_round_trip(self) -> None:
        """get_user returns the registered profile, non-ASCII text included."""
        s = await self.services()
        device_id, _ = await self.device(s)
        session = await self.register(
            s, device_id, "+86 138 0000 0000", nickname="Zoë 🦊", sex=2, avatar="https://example.com/a.png"
        )
        user = await s.accounts.get_user(session.user_id)
        self.assertEqual(
            (user.id, user.number, user.nickname, user.sex, user.avatar),
            (session.user_id, "+86 138 0000 0000", "Zoë 🦊", 2, "https://example.com/a.png"),
        )

    async def test_get_user_unknown(self) -> None:
        """get_user for a user that does not exist gives 1004."""
        s = await self.services()
        device_id, _ = await self.device(s)
        session = await self.register(s, device_id, "alice")
        for bad in (session.user_id + 1, 0, -1):
            await self.assert_code(s.accounts.get_user(bad), 1004)

    # sign_in_user

    async def test_sign_in_returns_user_and_highest_ack(self) -> None:
        """Sign-in binds the device and returns send_sequence 0 and the user's highest acked seq."""
        s = await self.services()
        d1, _ = await self.device(s)
        alice = await self.register(s, d1, "alice")
        d2, token2 = await self.device(s)
        first = await s.accounts.sign_in_user(d2, number="alice", password=PASSWORD)
        self.assertEqual((first.user_id, first.send_sequence, first.sync_sequence), (alice.user_id, 0, 0))
        await s.account_store.ack(d1, 7)
        await s.account_store.ack(d2, 3)
        d3, _ = await self.device(s)
        third = await s.accounts.sign_in_user(d3, number="alice", password=PASSWORD)
        self.assertEqual((third.user_id, third.send_sequence, third.sync_sequence), (alice.user_id, 0, 7))
        await s.account_store.ack(d2, 12)
        again = await s.accounts.sign_in_user(d3, number="alice", password=PASSWORD)
        self.assertEqual((again.send_sequence, again.sync_sequence), (0, 12))
        row = await s.accounts.authenticate_user(d2, token2)
        self.assertEqual(row.user_id, alice.user_id)

    async def test_sign_in_ignores_other_users_acks(self) -> None:
        """sync_sequence counts only devices bound to the signing-in user."""
        s = await self.services()
        d1, _ = await self.device(s)
        await self.register(s, d1, "alice")
        d2, _ = await self.device(s)
        await self.register(s, d2, "bob")
        await s.account_store.ack(d2, 50)
        await s.account_store.ack(d1, 5)
        d3, _ = await self.device(s)
        session = await s.accounts.sign_in_user(d3, number="alice", password=PASSWORD)
        self.assertEqual(session.sync_sequence, 5)

    async def test_sign_in_wrong_password_and_unknown_number_look_alike(self) -> None:
        """A wrong password and an unknown number both give 1003 with the same message and bind nothing."""
        s = await self.services()
        d1, _ = await self.device(s)
        await self.register(s, d1, "alice")
        d2, _ = await self.device(s)
        wrong = await self.assert_code(s.accounts.sign_in_user(d2, number="alice", password="wrong-pw"), 1003)
        unknown = await self.assert_code(s.accounts.sign_in_user(d2, number="nobody", password=PASSWORD), 1003)
        again = await self.assert_code(s.accounts.sign_in_user(d2, number="nobody2", password=PASSWORD), 1003)
        self.assertEqual(wrong.message, unknown.message)
        self.assertEqual(unknown.message, again.message)
        self.assertEqual(str(wrong), str(unknown))
        row = await s.account_store.get_device(d2)
        assert row is not None
        self.assertEqual((row.user_id, row.send_epoch), (0, 0))

    async def test_sign_in_validation(self) -> None:
        """Sign-in with an empty number or password gives code 2."""
        s = await self.services()
        d1, _ = await self.device(s)
        await self.register(s, d1, "alice")
        await self.assert_code(s.accounts.sign_in_user(d1, number="", password=PASSWORD), 2)
        await self.assert_code(s.accounts.sign_in_user(d1, number="alice", password=""), 2)

    # epochs and acks

    async def test_registration_and_sign_in_start_new_send_epochs(self) -> None:
        """Registration and every sign-in raise the device's send_epoch by one."""
        s = await self.services()
        device_id, _ = await self.device(s)

        async def epoch() -> int:
            row = await s.account_store.get_device(device_id)
            assert row is not None
            return row.send_epoch

        self.assertEqual(await epoch(), 0)
        await self.register(s, device_id, "alice")
        self.assertEqual(await epoch(), 1)
        await s.accounts.sign_in_user(device_id, number="alice", password=PASSWORD)
        self.assertEqual(await epoch(), 2)
        await s.accounts.sign_in_user(device_id, number="alice", password=PASSWORD)
        self.assertEqual(await epoch(), 3)
        await self.assert_code(s.accounts.sign_in_user(device_id, number="alice", password="wrong-pw"), 1003)
        self.assertEqual(await epoch(), 3)
        other_device, _ = await self.device(s)
        await self.register(s, other_device, "bob")
        await s.accounts.sign_in_user(device_id, number="bob", password=PASSWORD)
        self.assertEqual(await epoch(), 4)

    async def test_rebinding_to_another_user_forgets_acked_seq(self) -> None:
        """A device that changes hands forgets its acked seq; the same user signing in again keeps it."""
        s = await self.services()
        device_id, _ = await self.device(s)
        await self.register(s, device_id, "alice")
        await s.account_store.ack(device_id, 9)
        same = await s.accounts.sign_in_user(device_id, number="alice", password=PASSWORD)
        self.assertEqual(same.sync_sequence, 9)
        row = await s.account_store.get_device(device_id)
        assert row is not None
        self.assertEqual(row.acked_seq, 9)

        bob_device, _ = await self.device(s)
        bob = await self.register(s, bob_device, "bob")
        session = await s.accounts.sign_in_user(device_id, number="bob", password=PASSWORD)
        self.assertEqual(session.sync_sequence, 0)
        row = await s.account_store.get_device(device_id)
        assert row is not None
        self.assertEqual((row.user_id, row.acked_seq), (bob.user_id, 0))

        back = await s.accounts.sign_in_user(device_id, number="alice", password=PASSWORD)
        self.assertEqual(back.sync_sequence, 0)

    async def test_registering_on_a_bound_device_forgets_acked_seq(self) -> None:
        """Registering a new user on a device bound to someone else resets its acked seq."""
        s = await self.services()
        device_id, _ = await self.device(s)
        await self.register(s, device_id, "alice")
        await s.account_store.ack(device_id, 4)
        bob = await self.register(s, device_id, "bob")
        row = await s.account_store.get_device(device_id)
        assert row is not None
        self.assertEqual((row.user_id, row.acked_seq, row.send_epoch), (bob.user_id, 0, 2))

    async def test_ack_is_monotonic(self) -> None:
        """An ack lower than or equal to the current one changes nothing; a higher one raises it."""
        s = await self.services()
        device_id, _ = await self.device(s)
        await self.register(s, device_id, "alice")

        async def acked() -> int:
            row = await s.account_store.get_device(device_id)
            assert row is not None
            return row.acked_seq

        await s.account_store.ack(device_id, 10)
        self.assertEqual(await acked(), 10)
        await s.account_store.ack(device_id, 5)
        self.assertEqual(await acked(), 10)
        await s.account_store.ack(device_id, 10)
        self.assertEqual(await acked(), 10)
        await s.account_store.ack(device_id, 0)
        self.assertEqual(await acked(), 10)
        await s.account_store.ack(device_id, 11)
        self.assertEqual(await acked(), 11)

    # limits, throttles and tokens (issue 11)

    def limited(self, s: Services, **limits: Any) -> tuple[Clock, "RecordingSessions", Metrics]:
        """Replace the service with one under ``limits`` on a fake clock; returns clock, sessions, metrics."""
        clock = Clock()
        clock.advance(1_700_000_000)
        sessions = RecordingSessions()
        metrics = Metrics()
        s.accounts = AccountService(
            s.account_store,
            clock,
            password_cost=TEST_PASSWORD_COST,
            run_in_thread=partial(deferToThreadPool, reactor, reactor.getThreadPool()),
            sessions=sessions,
            limits=AccountLimits(**limits),
            metrics=metrics,
        )
        return clock, sessions, metrics

    async def test_devices_per_user_limit(self) -> None:
        """Binding a device past devices_per_user gives 1011; re-signing in a bound device or after a deletion works."""
        s = await self.services()
        self.limited(s, devices_per_user=2)
        d1, _ = await self.device(s)
        user = (await self.register(s, d1, "alice")).user_id
        d2, _ = await self.device(s)
        await s.accounts.sign_in_user(d2, number="alice", password=PASSWORD)
        d3, _ = await self.device(s)
        await self.assert_code(s.accounts.sign_in_user(d3, number="alice", password=PASSWORD), 1011)
        self.assertEqual((await s.account_store.get_device(d3)).user_id, 0)  # type: ignore[union-attr]
        await s.accounts.sign_in_user(d1, number="alice", password=PASSWORD)
        await s.accounts.delete_device(user, d2)
        await s.accounts.sign_in_user(d3, number="alice", password=PASSWORD)
        self.assertEqual([d.id for d in await s.accounts.list_devices(user)], [d1, d3])

    async def test_sign_in_backs_off_per_account(self) -> None:
        """After the free failures an account backs off exponentially, capped; attempts while blocked cost nothing."""
        s = await self.services()
        clock, _, metrics = self.limited(
            s, sign_in_free_failures=2, sign_in_free_failures_per_address=100, sign_in_backoff=1.0, sign_in_backoff_max=4.0
        )
        owner, _ = await self.device(s)
        await self.register(s, owner, "alice")
        d, _ = await self.device(s)

        async def attempt(password: str, code: int, client: str = "10.0.0.1") -> Any:
            return await self.assert_code(s.accounts.sign_in_user(d, number="alice", password=password, client=client), code)

        await attempt("wrong-1", 1003)
        await attempt("wrong-2", 1003)
        await attempt("wrong-3", 1003)  # the first failure past the free ones: blocked 1 s
        error = await attempt(PASSWORD, 1012, client="10.0.0.2")  # every address: it is the account
        self.assertEqual(error.retry_after, 1.0)
        clock.advance(1)
        await attempt("wrong-4", 1003)  # blocked 2 s
        clock.advance(2)
        await attempt("wrong-5", 1003)  # 4 s
        clock.advance(4)
        await attempt("wrong-6", 1003)  # still 4 s: capped
        self.assertEqual((await attempt(PASSWORD, 1012)).retry_after, 4.0)
        # the account's own device is exempt: the owner is never locked out
        session = await s.accounts.sign_in_user(owner, number="alice", password=PASSWORD, client="10.0.0.3")
        self.assertGreater(session.user_id, 0)
        clock.advance(4)
        await s.accounts.sign_in_user(d, number="alice", password=PASSWORD, client="10.0.0.1")
        rendered = metrics.render().decode()
        self.assertIn('goim_throttled_requests_total{throttle="sign-in account"} 2.0', rendered)
        self.assertIn("goim_sign_in_failures_total 6.0", rendered)

    async def test_throttle_log_lines_are_rate_limited(self) -> None:
        """A flood of refused registrations logs one line per second, then says how many were not logged."""
        from twisted.logger import globalLogPublisher

        s = await self.services()
        clock, _, metrics = self.limited(s, registrations_per_minute=1.0, registration_burst=1)
        lines: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if str(event.get("log_format", "")).startswith("throttled"):
                lines.append(str(event["suppressed"]))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        await self.device(s, client="203.0.113.9")
        for _ in range(50):
            await self.assert_code(self.device(s, client="203.0.113.9"), 1013)
        clock.advance(1)
        await self.assert_code(self.device(s, client="203.0.113.9"), 1013)
        self.assertEqual(lines, ["0", "49"])
        self.assertIn('goim_throttled_requests_total{throttle="device registration"} 51.0', metrics.render().decode())

    async def test_sign_in_backs_off_per_address(self) -> None:
        """Failures from one address against any accounts (unknown ones too) block that address only."""
        s = await self.services()
        clock, _, _ = self.limited(
            s, sign_in_free_failures=100, sign_in_free_failures_per_address=2, sign_in_backoff=10.0, sign_in_backoff_max=60.0
        )
        d, _ = await self.device(s)
        await self.register(s, d, "alice")
        other, _ = await self.device(s)
        for number in ("alice", "bob", "carol"):
            await self.assert_code(s.accounts.sign_in_user(other, number=number, password="nope-nope", client="2001:db8::1"), 1003)
        error = await self.assert_code(
            s.accounts.sign_in_user(other, number="alice", password=PASSWORD, client="2001:db8::2"), 1012
        )
        self.assertEqual(error.retry_after, 10.0)
        await s.accounts.sign_in_user(other, number="alice", password=PASSWORD, client="192.0.2.1")
        clock.advance(10)
        await s.accounts.sign_in_user(other, number="alice", password=PASSWORD, client="2001:db8::1")

    async def test_device_registration_rate_per_address(self) -> None:
        """Registrations per address beyond the burst give 1013 with a retry hint until the bucket refills."""
        s = await self.services()
        clock, _, metrics = self.limited(s, registrations_per_minute=6.0, registration_burst=2)
        for _ in range(2):
            await self.device(s, client="198.51.100.7")
        error = await self.assert_code(self.device(s, client="198.51.100.7"), 1013)
        self.assertEqual(error.retry_after, 10.0)
        await self.device(s, client="198.51.100.8")
        clock.advance(10)
        await self.device(s, client="198.51.100.7")
        await self.assert_code(self.device(s, client="198.51.100.7"), 1013)
        self.assertIn('goim_throttled_requests_total{throttle="device registration"} 2.0', metrics.render().decode())

    async def test_user_registration_rate_per_address(self) -> None:
        """POST /user is limited per address by its own bucket (each costs a password hash): 1013 past the burst."""
        s = await self.services()
        clock, _, _ = self.limited(s, registrations_per_minute=6.0, registration_burst=2)
        d, _ = await self.device(s, client="198.51.100.7")
        for number in ("u1", "u2"):
            await self.register(s, d, number, client="198.51.100.7")
        error = await self.assert_code(self.register(s, d, "u3", client="198.51.100.7"), 1013)
        self.assertEqual(error.retry_after, 10.0)
        await self.register(s, d, "u3", client="198.51.100.8")

    async def test_sign_out_revokes_the_token_and_ends_the_connection(self) -> None:
        """sign_out makes the token useless, unbinds the device and kicks its connection."""
        s = await self.services()
        _, sessions, _ = self.limited(s)
        d, token = await self.device(s)
        user = (await self.register(s, d, "alice")).user_id
        await s.accounts.sign_out(await s.accounts.authenticate(d, token))
        await self.assert_code(s.accounts.authenticate(d, token), 1001)
        self.assertEqual(sessions.ended, [(d, user, "signed out")])
        self.assertEqual(await s.accounts.list_devices(user), [])

    async def test_list_and_delete_devices(self) -> None:
        """A user lists its devices and deletes one (token revoked, connection ended); others' devices are 1015."""
        s = await self.services()
        _, sessions, _ = self.limited(s)
        d1, _ = await self.device(s)
        user = (await self.register(s, d1, "alice")).user_id
        d2, token2 = await self.device(s, brand="Fairphone")
        await s.accounts.sign_in_user(d2, number="alice", password=PASSWORD)
        d3, _ = await self.device(s)
        await self.register(s, d3, "bob")
        self.assertEqual([(d.id, d.brand) for d in await s.accounts.list_devices(user)], [(d1, "Pixel"), (d2, "Fairphone")])
        await self.assert_code(s.accounts.delete_device(user, d3), 1015)
        await self.assert_code(s.accounts.delete_device(user, 0), 1015)
        await s.accounts.delete_device(user, d2)
        await self.assert_code(s.accounts.authenticate(d2, token2), 1001)
        self.assertEqual(sessions.ended, [(d2, user, "device deleted")])
        await self.assert_code(s.accounts.delete_device(user, d2), 1015)

    async def test_token_lifetime_and_refresh(self) -> None:
        """With a lifetime, tokens expire (1014); a refresh gives a new token, the old one stops working."""
        s = await self.services()
        clock, _, _ = self.limited(s, token_lifetime=60.0)
        d, token = await self.device(s)
        clock.advance(59)
        device = await s.accounts.authenticate(d, token)
        new = await s.accounts.refresh_token(device)
        self.assertEqual(new.expires_at, int(clock.seconds() * 1000) + 60_000)
        await self.assert_code(s.accounts.authenticate(d, token), 1001)
        await self.assert_code(s.accounts.refresh_token(device), 1001)  # the old token is spent
        clock.advance(59)
        await s.accounts.authenticate(d, new.token)
        clock.advance(1)
        await self.assert_code(s.accounts.authenticate(d, new.token), 1014)

    async def test_expired_or_revoked_token_cannot_sign_in_over_tcp(self) -> None:
        """The TCP sign-in (InProcessLogic) refuses an expired token and a signed-out one."""
        from goim.logic.local import InProcessLogic

        s = await self.services()
        clock, _, _ = self.limited(s, token_lifetime=10.0)
        logic = InProcessLogic(s.accounts, s.messages)
        d, token = await self.device(s)
        user = (await self.register(s, d, "alice")).user_id
        self.assertTrue((await logic.sign_in(device_id=d, user_id=user, token=token)).ok)
        clock.advance(10)
        result = await logic.sign_in(device_id=d, user_id=user, token=token)
        self.assertEqual((result.ok, result.message), (False, "token expired: register the device again"))
        d2, token2 = await self.device(s)
        await s.accounts.sign_in_user(d2, number="alice", password=PASSWORD)
        await s.accounts.sign_out(await s.accounts.authenticate(d2, token2))
        self.assertFalse((await logic.sign_in(device_id=d2, user_id=user, token=token2)).ok)

    async def test_tokens_never_expire_by_default(self) -> None:
        """Without a lifetime a token works years later, and a refresh keeps expires_at 0."""
        s = await self.services()
        clock, _, _ = self.limited(s)
        d, token = await self.device(s)
        clock.advance(10 * 365 * 86400)
        new = await s.accounts.refresh_token(await s.accounts.authenticate(d, token))
        self.assertEqual(new.expires_at, 0)
        await s.accounts.authenticate(d, new.token)


class RecordingSessions:
    """A SessionPort that remembers which sessions were ended."""

    def __init__(self) -> None:
        self.ended: list[tuple[int, int, str]] = []

    def end_session(self, *, device_id: int, user_id: int, reason: str) -> None:
        self.ended.append((device_id, user_id, reason))


class ThrottleTests(SynchronousTestCase):
    def test_backoff_forgets_and_caps(self) -> None:
        """Backoff doubles past the free failures up to the cap and forgets a quiet key."""
        clock = Clock()
        b = Backoff(clock, free=1, base=2.0, cap=5.0, forget=100.0)
        self.assertEqual([b.failed("k") for _ in range(4)], [0.0, 2.0, 4.0, 5.0])
        self.assertEqual(b.retry_after("k"), 5.0)
        clock.advance(5)
        self.assertEqual(b.retry_after("k"), 0.0)
        clock.advance(100)
        self.assertEqual(b.failed("k"), 0.0)
        b.succeeded("k")
        self.assertEqual(len(b), 0)

    def test_backoff_and_bucket_are_bounded(self) -> None:
        """Neither keeps more than max_keys keys, whatever the number of attackers."""
        clock = Clock()
        b = Backoff(clock, free=0, base=1.0, cap=1.0, max_keys=10)
        t = TokenBucket(clock, rate=1.0, burst=1, max_keys=10)
        for i in range(1000):
            b.failed(str(i))
            t.take(str(i))
        self.assertEqual((len(b), len(t._keys)), (10, 10))

    def test_address_key(self) -> None:
        """IPv4 addresses count alone, IPv6 ones by /64, IPv4-mapped IPv6 as IPv4."""
        self.assertEqual(address_key("192.0.2.1"), "192.0.2.1")
        self.assertEqual(address_key("2001:db8::1"), address_key("2001:db8::ffff:1"))
        self.assertNotEqual(address_key("2001:db8::1"), address_key("2001:db8:0:1::1"))
        self.assertEqual(address_key("::ffff:192.0.2.1"), "192.0.2.1")
        self.assertEqual(address_key("unix"), "unix")


class AccountSQLiteTests(AccountTests, SQLiteBackend, TestCase):
    pass


class AccountMySQLTests(AccountTests, MySQLBackend, TestCase):
    pass
