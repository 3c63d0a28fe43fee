"""The logic layer's services wired to a test database, with a recording delivery port.

Built through the same container as the servers (``goim.logic.container``), with
the test's database, clock, delivery port and cheap password hashing given to it.
"""

from dataclasses import dataclass, field
from typing import Any, Awaitable, Sequence

from twisted.internet import defer, reactor

from goim.clock import Clock
from goim.logic.container import LogicContainer
from goim.logic.errors import GoimError
from goim.logic.ids import SegmentAllocator
from goim.logic.passwords import ScryptCost
from goim.standalone import StandaloneConfig
from goim.storage.database import Database
from goim.types import RECEIVER_GROUP, RECEIVER_USER, SendRequest, StoredCopies, StoredMessage, flatten

#: cheap scrypt parameters: tests check behaviour, not hashing cost
TEST_PASSWORD_COST = ScryptCost(n=2**4, r=1, p=1)


@dataclass
class RecordingDelivery:
    """A DeliveryPort that remembers what it was handed."""

    delivered: list[StoredMessage] = field(default_factory=list)

    def deliver(self, batch: Sequence[StoredCopies]) -> None:
        self.delivered.extend(flatten(batch))


class _Done:
    """A delayed call that has run already."""

    def active(self) -> bool:
        return False

    def cancel(self) -> None:
        pass


class ImmediateClock(Clock):
    """A clock that runs what is scheduled for the end of the reactor turn (delay 0)
    at once: with a ``SynchronousPool`` database, a send then completes before
    ``send`` returns although the message writer starts at the end of the turn."""

    def call_later(self, delay: float, f: Any, *args: Any, **kwargs: Any) -> Any:
        if delay <= 0:
            f(*args, **kwargs)
            return _Done()
        return super().call_later(delay, f, *args, **kwargs)


class Services:
    """Every store and service of one logic process on ``db``."""

    def __init__(self, db: Database, reactor: Any, *, id_step: int = 100, synchronous: bool = False) -> None:
        """
        Args:
            synchronous: run password hashing at once on the calling thread and
                what waits for the end of the reactor turn at once (with a
                ``SynchronousPool`` database, every call then completes at once).
        """
        self.delivery = RecordingDelivery()
        self.container = container = LogicContainer(
            StandaloneConfig(),
            reactor,
            clock=ImmediateClock(reactor) if synchronous else Clock(reactor),
            database=db,
            delivery=self.delivery,
            sessions=None,  # no connections to end
            password_cost=TEST_PASSWORD_COST,
            run_in_thread=defer.maybeDeferred if synchronous else None,
        )
        container.override("id_allocator", SegmentAllocator(container.get_message_store(), step=id_step))
        self.db = container.get_database()
        self.account_store = container.get_account_store()
        self.social_store = container.get_social_store()
        self.message_store = container.get_message_store()
        self.accounts = container.get_accounts()
        self.social = container.get_social()
        self.ids = container.get_id_allocator()
        self.messages = container.get_messages()
        self.logic = container.get_logic()

    async def new_user(self, number: str, nickname: str = "") -> tuple[int, int, str]:
        """Register a device and a user on it; returns ``(user_id, device_id, token)``."""
        device_id, token = await self.accounts.register_device(
            device_type=1, brand="brand", model="model", system_version="1", app_version="1"
        )
        session = await self.accounts.register_user(
            device_id, number=number, nickname=nickname or number, sex=0, avatar="", password="secret-pw"
        )
        return session.user_id, device_id, token

    async def new_device(self, number: str) -> int:
        """Sign in to an existing user on a new device; returns the device id."""
        device_id, _ = await self.accounts.register_device(
            device_type=2, brand="brand", model="model", system_version="1", app_version="1"
        )
        await self.accounts.sign_in_user(device_id, number=number, password="secret-pw")
        return device_id


class ServiceTests:
    """Helpers for TestCases that also mix in a backend (tests/support/db.py)."""

    async def services(self: Any) -> Services:
        """Services on a fresh, migrated database."""
        return Services(await self.make_database(), reactor)

    async def assert_code(self: Any, awaitable: Awaitable[Any], code: int) -> GoimError:
        """Await ``awaitable`` and check that it raises a ``GoimError`` with ``code``."""
        try:
            await awaitable
        except GoimError as e:
            self.assertEqual(e.code, code, e.message)
            return e
        self.fail(f"expected GoimError({code})")
        raise AssertionError("unreachable")


def to_user(
    user_id: int, device_id: int, receiver_id: int, send_sequence: int, content: str = "hi", *, epoch: int = 0
) -> SendRequest:
    """A 1:1 send."""
    return SendRequest(device_id, user_id, RECEIVER_USER, receiver_id, 1, content, send_sequence, 1000, epoch)


def to_group(
    user_id: int, device_id: int, group_id: int, send_sequence: int, content: str = "hi", *, epoch: int = 0
) -> SendRequest:
    """A group send."""
    return SendRequest(device_id, user_id, RECEIVER_GROUP, group_id, 1, content, send_sequence, 1000, epoch)
