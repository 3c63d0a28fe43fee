"""A hypothesis state machine: random sends, retries, acks, syncs and group changes
checked against a simple in-memory model, on SQLite and on MariaDB.

Transactions run synchronously (``SynchronousPool``) so each rule completes before
the next one; the concurrency of the real pool is covered in test_messages.
"""

from dataclasses import dataclass, field
from typing import Any, Coroutine, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase

from goim.storage.database import Database, DatabaseURL
from goim.storage.schema import migrate_txn
from goim.types import SEND_NOT_FRIEND, SEND_NOT_IN_GROUP, SEND_OK, SendRequest, SendResult
from tests.support.db import MySQLBackend, SQLiteBackend, SynchronousPool
from tests.support.services import Services, to_group, to_user

T = TypeVar("T")

USERS = 4
#: device index -> user index; user 0 has two devices
DEVICE_OWNERS = [0, 0, 1, 2, 3]
#: fixed friendships (both directions); user 3 has no friends
FRIENDS = {(0, 1), (1, 0), (1, 2), (2, 1), (0, 2), (2, 0)}


@dataclass
class Model:
    """What the server should hold."""

    #: per user, the message ids of its copies in seq order
    copies: list[list[int]] = field(default_factory=lambda: [[] for _ in range(USERS)])
    members: set[int] = field(default_factory=lambda: {0, 1})
    acked: dict[int, int] = field(default_factory=dict)
    next_send_sequence: dict[int, int] = field(default_factory=dict)
    #: the requests already sent, with their first result
    sent: list[tuple[int, SendRequest, SendResult]] = field(default_factory=list)


def make_machine(testcase: Any) -> type[RuleBasedStateMachine]:
    """A state machine class whose databases come from ``testcase``'s backend."""

    def run(coroutine: Coroutine[Any, Any, T]) -> T:
        result: T = testcase.successResultOf(defer.Deferred.fromCoroutine(coroutine))
        return result

    class MessagingMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.url = testcase.database_url()
            db = Database(self.url, reactor, pool=SynchronousPool(DatabaseURL.parse(self.url)))
            run(db.run("migrate", migrate_txn))
            self.s = Services(db, reactor, id_step=10, synchronous=True)
            self.model = Model()
            store = self.s.account_store
            self.users = [
                run(
                    store.create_user(
                        number=f"u{i}", nickname=f"u{i}", sex=0, avatar="", password_hash="x", now_ms=0
                    )
                )
                for i in range(USERS)
            ]
            self.devices = []
            for owner in DEVICE_OWNERS:
                device_id = run(
                    store.create_device(
                        device_type=1, brand="b", model="m", system_version="1", app_version="1",
                        token_hash="x", now_ms=0,
                    )
                )
                run(store.bind_device(device_id, self.users[owner]))
                self.devices.append(device_id)
            for a, b in FRIENDS:
                if a < b:
                    run(self.s.social_store.add_friend(self.users[a], self.users[b], "", 0))
            self.group_id = run(self.s.social_store.create_group("g", self.users[0], [self.users[1]], 0))

        def teardown(self) -> None:
            self.s.db.close()
            testcase._drop(self.url)

        def _expected(self, sender: int, request: SendRequest) -> tuple[int, list[int]]:
            if request.receiver_type == 1:
                receiver = self.users.index(request.receiver_id)
                if (sender, receiver) not in FRIENDS:
                    return SEND_NOT_FRIEND, []
                return SEND_OK, sorted({sender, receiver})
            if sender not in self.model.members:
                return SEND_NOT_IN_GROUP, []
            return SEND_OK, sorted(self.model.members)

        def _send(self, device: int, request: SendRequest, first: SendResult | None) -> SendResult:
            sender = DEVICE_OWNERS[device]
            result = run(self.s.messages.send(request))
            if first is not None and first.code == SEND_OK:
                assert result == first, (result, first)
                return result
            code, recipients = self._expected(sender, request)
            assert result.code == code, (result, code)
            if code == SEND_OK:
                for user in recipients:
                    self.model.copies[user].append(result.message_id)
                assert result.seq == len(self.model.copies[sender])
            return result

        def _next_request(self, device: int, receiver_type: int, receiver_id: int) -> SendRequest:
            seq = self.model.next_send_sequence.get(device, 0) + 1
            self.model.next_send_sequence[device] = seq
            user = self.users[DEVICE_OWNERS[device]]
            make = to_user if receiver_type == 1 else to_group
            return make(user, self.devices[device], receiver_id, seq, f"d{device}s{seq}")

        @rule(device=st.integers(0, len(DEVICE_OWNERS) - 1), receiver=st.integers(0, USERS - 1))
        def send_to_user(self, device: int, receiver: int) -> None:
            request = self._next_request(device, 1, self.users[receiver])
            self.model.sent.append((device, request, self._send(device, request, None)))

        @rule(device=st.integers(0, len(DEVICE_OWNERS) - 1))
        def send_to_group(self, device: int) -> None:
            request = self._next_request(device, 2, self.group_id)
            self.model.sent.append((device, request, self._send(device, request, None)))

        @rule(data=st.data())
        def retry(self, data: st.DataObject) -> None:
            if not self.model.sent:
                return
            index = data.draw(st.integers(0, len(self.model.sent) - 1))
            device, request, first = self.model.sent[index]
            result = self._send(device, request, first)
            if first.code != SEND_OK and result.code == SEND_OK:
                # refused before (no dedupe record), stored now: later retries get this ACK
                self.model.sent[index] = (device, request, result)

        @rule(user=st.integers(1, USERS - 1), add=st.booleans())
        def change_membership(self, user: int, add: bool) -> None:
            if add:
                run(self.s.social_store.add_members(self.group_id, [self.users[user]], 0))
                self.model.members.add(user)
            else:
                run(self.s.social_store.remove_members(self.group_id, [self.users[user]], self.users[0]))
                self.model.members.discard(user)

        @rule(device=st.integers(0, len(DEVICE_OWNERS) - 1), seq=st.integers(0, 30))
        def ack(self, device: int, seq: int) -> None:
            run(self.s.messages.ack(self.devices[device], seq))
            self.model.acked[device] = max(self.model.acked.get(device, 0), seq)
            stored = run(self.s.account_store.get_device(self.devices[device]))
            assert stored is not None and stored.acked_seq == self.model.acked[device]

        @rule(user=st.integers(0, USERS - 1), after=st.integers(0, 30), limit=st.integers(1, 5))
        def sync(self, user: int, after: int, limit: int) -> None:
            page = run(self.s.messages.sync_page(self.users[user], after, limit))
            expected = self.model.copies[user][after : after + limit]
            assert [m.message_id for m in page.messages] == expected
            assert [m.seq for m in page.messages] == list(range(after + 1, after + 1 + len(expected)))
            assert page.more == (len(self.model.copies[user]) > after + limit)

        @invariant()
        def sequences_are_gapless(self) -> None:
            for i, user in enumerate(self.users):
                assert run(self.s.message_store.max_seq(user)) == len(self.model.copies[i])

    return MessagingMachine


class ModelTests:
    """Mixed into one TestCase per backend."""

    examples = 30

    def test_against_model(self) -> None:
        """Random sends, retries, acks, syncs and membership changes agree with the model."""
        run_state_machine_as_test(
            make_machine(self),
            settings=settings(
                max_examples=self.examples,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )


class ModelSQLiteTests(ModelTests, SQLiteBackend, SynchronousTestCase):
    pass


class ModelMySQLTests(ModelTests, MySQLBackend, SynchronousTestCase):
    examples = 15
