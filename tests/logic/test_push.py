"""Business push jobs and retention on SQLite and MariaDB: targets, idempotency,
crash-resume exactly once per recipient, trimmed history."""

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock as TaskClock
from twisted.trial.unittest import TestCase

from goim.clock import Clock
from goim.logic.errors import BAD_REQUEST, GROUP_NOT_FOUND, IDEMPOTENCY_KEY_REUSED, PUSH_JOB_NOT_FOUND, USER_NOT_FOUND
from goim.logic.push import PushService
from goim.logic.receipts import ReceiptService
from goim.logic.retention import DAY_MS, Retention
from goim.storage.push import DONE, PushStore
from goim.types import KIND_READ, RECEIVER_GROUP, RECEIVER_USER, SENDER_SYSTEM, StoredMessage
from goim.testing.harness import pause, wait_until
from tests.support.db import MySQLBackend, SQLiteBackend
from tests.support.services import ServiceTests, Services, to_user


class PushTests(ServiceTests):
    """Mixed into one TestCase per backend."""

    async def setup(self: Any, chunk_size: int = 2, owner: str = "node-a", lease: float = 60.0) -> tuple[Services, PushService]:
        s = await self.services()
        push = self.push_service(s, chunk_size=chunk_size, owner=owner, lease=lease)
        return s, push

    def push_service(self: Any, s: Services, *, chunk_size: int = 2, owner: str = "node-a", lease: float = 60.0) -> PushService:
        push = PushService(
            PushStore(s.db), s.messages, s.ids, Clock(reactor), node_id=owner, chunk_size=chunk_size, lease_seconds=lease
        )
        self.addCleanup(push.stop)
        return push

    async def copies(self, s: Services, user_id: int) -> list[StoredMessage]:
        return (await s.messages.sync_page(user_id, 0, 1000)).messages

    async def users(self, s: Services, count: int) -> list[int]:
        return [(await s.new_user(f"u{i}"))[0] for i in range(count)]

    async def test_push_to_users_in_chunks(self: Any) -> None:
        """A push to a list of users stores one sender_type-2 copy per existing user,
        each naming its own user as receiver, in chunks; unknown ids are skipped."""
        s, push = await self.setup(chunk_size=2)
        users = await self.users(s, 5)
        job, created = await push.create(
            idempotency_key="k1", target="users", user_ids=[*users, users[-1] + 1000], message_type=3, content="sale!"
        )
        self.assertTrue(created)
        await push.wait(job.id)
        done = await push.get(job.id)
        self.assertEqual((done.state, done.recipients), (DONE, 5))
        for user in users:
            [copy] = await self.copies(s, user)
            self.assertEqual(
                (copy.sender_type, copy.sender_id, copy.sender_device_id, copy.receiver_type, copy.receiver_id, copy.type, copy.content, copy.message_id),
                (SENDER_SYSTEM, 0, 0, RECEIVER_USER, user, 3, "sale!", job.message_id),
            )
        self.assertEqual(sorted(m.user_id for m in s.delivery.delivered), sorted(users))

    async def test_pushes_are_the_conversation_with_user_0(self: Any) -> None:
        """Business pushes to a user form its conversation (1, 0) in the chat list,
        with unread counts, and the user can mark it read (no peer gets an event)."""
        s, push = await self.setup(chunk_size=2)
        user, device, _ = await s.new_user("u")
        receipts = ReceiptService(s.container.get_receipt_store(), s.delivery, TaskClock(), recall_window=120, edit_window=900)
        for n in range(2):
            job, _ = await push.create(idempotency_key=f"k{n}", target="user", user_ids=[user], message_type=1, content=f"p{n}")
            await push.wait(job.id)
        [conv] = (await receipts.conversations(user, before=0, limit=10)).items
        self.assertEqual((conv.conv_type, conv.conv_id, conv.unread, conv.last.content), (RECEIVER_USER, 0, 2, "p1"))
        self.assertEqual(await receipts.read(user, device, RECEIVER_USER, 0, conv.last.seq), conv.last.seq)
        [conv] = (await receipts.conversations(user, before=0, limit=10)).items
        self.assertEqual((conv.unread, conv.read_seq), (0, conv.last.seq))
        self.assertEqual([m.kind for m in await self.copies(s, user)], [0, 0, KIND_READ])

    async def test_push_to_group_and_all(self: Any) -> None:
        """A group push reaches every member (receiver the group); an "all" push every user."""
        s, push = await self.setup(chunk_size=2)
        users = await self.users(s, 3)
        group = await s.social.create_group(users[0], "g", users[1:])
        job, _ = await push.create(idempotency_key="g", target="group", group_id=group, content="to the group")
        await push.wait(job.id)
        for user in users:
            [copy] = await self.copies(s, user)
            self.assertEqual((copy.receiver_type, copy.receiver_id), (RECEIVER_GROUP, group))
        job, _ = await push.create(idempotency_key="all", target="all", content="to everyone")
        await push.wait(job.id)
        self.assertEqual((await push.get(job.id)).recipients, 3)
        for user in users:
            self.assertEqual([m.content for m in await self.copies(s, user)], ["to the group", "to everyone"])

    async def test_retry_with_same_key_is_deduped(self: Any) -> None:
        """A retry with the same idempotency key returns the same job and stores nothing
        more; the same key for a different push is refused with 1104."""
        s, push = await self.setup()
        [user] = await self.users(s, 1)
        job, created = await push.create(idempotency_key="once", target="user", user_ids=[user], content="hi")
        again, created_again = await push.create(idempotency_key="once", target="user", user_ids=[user], content="hi")
        self.assertEqual((again.id, created, created_again), (job.id, True, False))
        await push.wait(job.id)
        third, _ = await push.create(idempotency_key="once", target="user", user_ids=[user], content="hi")
        self.assertEqual(third.state, DONE)
        self.assertEqual(len(await self.copies(s, user)), 1)
        await self.assert_code(
            push.create(idempotency_key="once", target="user", user_ids=[user], content="other"), IDEMPOTENCY_KEY_REUSED
        )

    async def test_unknown_targets(self: Any) -> None:
        """An unknown user (1004), group (1005) or job (1103) is refused."""
        s, push = await self.setup()
        await self.assert_code(push.create(idempotency_key="a", target="user", user_ids=[999], content="x"), USER_NOT_FOUND)
        await self.assert_code(push.create(idempotency_key="b", target="group", group_id=999, content="x"), GROUP_NOT_FOUND)
        await self.assert_code(push.get(999), PUSH_JOB_NOT_FOUND)
        for bad in (
            dict(target="users", user_ids=[]),
            dict(target="user", user_ids=[1, 2]),
            dict(target="all", user_ids=[1]),
            dict(target="group", group_id=0),
            dict(target="all", message_type=2**31),
            dict(target="all", content=""),
            dict(target="all", idempotency_key="k" * 129),
        ):
            args: dict[str, Any] = {"idempotency_key": "c", "content": "x", **bad}
            await self.assert_code(push.create(**args), BAD_REQUEST)

    async def test_crash_mid_job_resumes_exactly_once(self: Any) -> None:
        """A node that stored a chunk but died before moving the job's cursor leaves
        the job to another node, which resumes it: every recipient gets one copy."""
        s, first = await self.setup(chunk_size=2, owner="node-a", lease=0.001)
        users = await self.users(s, 5)
        stuck: defer.Deferred[bool] = defer.Deferred()
        real_advance = first.store.advance
        calls = []

        async def advance(*args: Any, **kwargs: Any) -> bool:
            calls.append(kwargs["chunk"])
            if kwargs["chunk"] == 2:
                return await stuck  # the node "dies" here: chunk 2 is stored, its cursor not moved
            return await real_advance(*args, **kwargs)

        first.store.advance = advance  # type: ignore[method-assign]
        job, _ = await first.create(idempotency_key="crash", target="users", user_ids=users, content="x")
        await wait_until(lambda: calls == [1, 2], "chunk 2 stored")
        self.assertEqual([len(await self.copies(s, u)) for u in users], [1, 1, 1, 1, 0])
        first.stop()
        second = self.push_service(s, chunk_size=2, owner="node-b")
        await pause(0.01)  # node-a's lease (1 ms) runs out
        await second.scan()
        await second.wait(job.id)
        done = await second.get(job.id)
        self.assertEqual((done.state, done.chunks), (DONE, 3))
        for user in users:
            self.assertEqual(len(await self.copies(s, user)), 1, f"user {user}")
        stuck.callback(False)

    async def test_retention_trims_and_sync_says_so(self: Any) -> None:
        """Retention deletes copies older than its bound in small transactions, never
        younger ones; a sync from before the oldest kept gets the oldest kept and
        ``trimmed``; old dedupe records go too."""
        s = await self.services()
        a, da, _ = await s.new_user("a")
        b, _, _ = await s.new_user("b")
        await s.social.add_friend(a, b, "")
        for seq in range(1, 6):
            await s.messages.send(to_user(a, da, b, seq, f"m{seq}"))
        now = TaskClock()
        now.advance(reactor.seconds() + 2 * DAY_MS / 1000)
        retention = Retention(PushStore(s.db), Clock(now), retention_days=1, dedupe_days=1, batch=2)
        copies, sends = await retention.run()
        self.assertEqual((copies, sends), (10, 5))
        page = await s.messages.sync_page(b, 0, 100)
        self.assertEqual((page.messages, page.trimmed), ([], True))
        await s.messages.send(to_user(a, da, b, 6, "young"))
        today = Retention(PushStore(s.db), Clock(reactor), retention_days=1, dedupe_days=1, batch=2)
        self.assertEqual(await today.run(), (0, 0))
        page = await s.messages.sync_page(b, 2, 100)
        self.assertEqual(([m.content for m in page.messages], [m.seq for m in page.messages], page.trimmed), (["young"], [6], True))
        page = await s.messages.sync_page(b, 5, 100)
        self.assertFalse(page.trimmed)
        self.assertEqual(retention.metrics.deleted.labels("messages")._value.get(), 10)

    async def test_retention_on_two_nodes_at_once(self: Any) -> None:
        """Two retention jobs (two logic nodes) running at once delete each old copy
        once between them and leave one consistent trim mark."""
        s = await self.services()
        a, da, _ = await s.new_user("a")
        b, _, _ = await s.new_user("b")
        await s.social.add_friend(a, b, "")
        for seq in range(1, 21):
            await s.messages.send(to_user(a, da, b, seq))
        now = TaskClock()
        now.advance(reactor.seconds() + 2 * DAY_MS / 1000)
        jobs = [Retention(PushStore(s.db), Clock(now), retention_days=1, batch=3) for _ in range(2)]
        results = await defer.gatherResults([defer.Deferred.fromCoroutine(j.run()) for j in jobs])
        self.assertEqual(sum(copies for copies, _ in results), 40)
        self.assertEqual(await PushStore(s.db).trimmed_seq(b), 20)
        self.assertEqual((await s.messages.sync_page(a, 0, 10)).messages, [])

    async def test_retention_off_keeps_messages(self: Any) -> None:
        """With retention_days 0 nothing is deleted but old dedupe records."""
        s = await self.services()
        a, da, _ = await s.new_user("a")
        b, _, _ = await s.new_user("b")
        await s.social.add_friend(a, b, "")
        await s.messages.send(to_user(a, da, b, 1))
        now = TaskClock()
        now.advance(reactor.seconds() + 100 * DAY_MS / 1000)
        self.assertEqual(await Retention(PushStore(s.db), Clock(now)).run(), (0, 1))
        self.assertEqual(len(await self.copies(s, b)), 1)


class PushSQLiteTests(PushTests, SQLiteBackend, TestCase):
    pass


class PushMySQLTests(PushTests, MySQLBackend, TestCase):
    pass
