"""The PB ``change`` call (issue 14) on a real perspective: services on SQLite, a real
Redis presence; only a connection signed in through the calling node may change, and
every argument is type-checked; answers are plain PB-serialisable values."""

from twisted.spread import jelly
from twisted.trial.unittest import TestCase

from goim.distributed.pb_server import BadArgument, NotSignedInHere
from goim.types import KIND_EDIT, KIND_READ, KIND_RECALL
from tests.distributed import test_pb_server as pb_tests
from tests.distributed.test_pb_server import conn
from tests.support.db import SQLiteBackend
from tests.support.redis import RedisTestMixin
from tests.support.services import to_user


class ChangeCallTests(RedisTestMixin, SQLiteBackend, TestCase):
    # the perspective fixtures of test_pb_server (not its tests, which run there)
    fixture = pb_tests.PerspectiveTests.fixture
    node = pb_tests.PerspectiveTests.node
    signed_in = pb_tests.PerspectiveTests.signed_in

    async def test_change_through_pb(self) -> None:
        """Read, recall and edit through the perspective; answers are (code, message, read_seq)
        of plain ints and str, so they cross PB (jelly accepts them)."""
        f = await self.fixture()
        alice, alice_device, _ = f.alice
        bob, bob_device, _ = f.bob
        await f.services.social.add_friend(alice, bob, "")
        sent = await f.services.messages.send(to_user(alice, alice_device, bob, 1, "hi"))
        p = await self.signed_in(f, f.bob)
        answer = await p.perspective_change(bob_device, bob, KIND_READ, 1, alice, 5, 0, "", conn())
        self.assertEqual(answer, (0, "", 1))
        jelly.jelly(answer)  # serialisable: an ApiCode member would raise here
        refused = await p.perspective_change(bob_device, bob, KIND_RECALL, 0, 0, 0, sent.message_id, "", conn())
        self.assertEqual(refused[0], 1017)
        self.assertIs(type(refused[0]), int)
        a = await self.signed_in(f, f.alice, "c2")
        self.assertEqual(
            await a.perspective_change(alice_device, alice, KIND_EDIT, 0, 0, 0, sent.message_id, "hey", conn("c2")),
            (0, "", 0),
        )

    async def test_change_refused_for_strangers_and_bad_arguments(self) -> None:
        """A device not signed in through this node is refused; wrong types are BadArgument."""
        f = await self.fixture()
        bob, bob_device, _ = f.bob
        p = self.node(f)
        with self.assertRaises(NotSignedInHere):
            await p.perspective_change(bob_device, bob, KIND_READ, 1, 1, 1, 0, "", conn())
        p = await self.signed_in(f, f.bob)
        for args in (
            ("1", 1, 1, 1, 0, ""),
            (KIND_READ, 1, 1, -1, 0, ""),
            (KIND_EDIT, 0, 0, 0, 1, b"bytes"),
            (KIND_EDIT, 0, 0, 0, 1, "x" * 70_000),
        ):
            with self.assertRaises(BadArgument):
                await p.perspective_change(bob_device, bob, *args, conn())
