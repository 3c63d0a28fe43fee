"""Message.trimmed through the logic node's PB root to the connect node's logic client."""

from twisted.internet import reactor
from twisted.internet.task import Clock as TaskClock
from twisted.trial.unittest import TestCase

from goim.clock import Clock
from goim.connect.logic_client import decode_page
from goim.logic.retention import DAY_MS, Retention
from goim.storage.push import PushStore
from tests.distributed import test_pb_server as pb_tests
from tests.support.db import SQLiteBackend
from tests.support.redis import RedisTestMixin
from tests.support.services import to_user


class TrimmedOverPBTests(RedisTestMixin, SQLiteBackend, TestCase):
    fixture = pb_tests.PerspectiveTests.fixture
    node = pb_tests.PerspectiveTests.node
    signed_in = pb_tests.PerspectiveTests.signed_in

    async def test_trimmed_page_crosses_pb(self) -> None:
        """A sync page from below the trim mark decodes on the connect side with trimmed
        set (so its sync stream can flag the first frame); one from above it does not."""
        f = await self.fixture()
        (alice, alice_device, _), (bob, bob_device, _) = f.alice, f.bob
        await f.services.social.add_friend(alice, bob, "")
        for seq in (1, 2, 3):
            await f.services.messages.send(to_user(alice, alice_device, bob, seq))
        later = TaskClock()
        later.advance(reactor.seconds() + 2 * DAY_MS / 1000)
        await Retention(PushStore(f.services.db), Clock(later), retention_days=1).run()
        await f.services.messages.send(to_user(alice, alice_device, bob, 4, "kept"))
        p = await self.signed_in(f, f.bob)
        page = decode_page(await p.perspective_sync_page(bob_device, bob, 0, 10, pb_tests.conn()), bob)
        self.assertEqual(([m.content for m in page.messages], [m.seq for m in page.messages], page.trimmed), (["kept"], [4], True))
        page = decode_page(await p.perspective_sync_page(bob_device, bob, 3, 10, pb_tests.conn()), bob)
        self.assertFalse(page.trimmed)
