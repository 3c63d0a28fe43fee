"""PushStore on SQLite and MariaDB: idempotent job rows, leases, cursor moves, trim marks."""

from typing import Any

from twisted.trial.unittest import TestCase

from goim.storage.push import DONE, RUNNING, NewPushJob, PushStore
from tests.support.db import MySQLBackend, SQLiteBackend


def new_job(key: str = "k") -> NewPushJob:
    return NewPushJob(key, "print", "users", (3, 1, 2, 2), 1, 0, 1, "hello")


class PushStoreTests:
    async def store(self: Any) -> PushStore:
        return PushStore(await self.make_database())

    async def test_one_job_per_key(self: Any) -> None:
        """create_job inserts once per idempotency key and returns the first job after."""
        store = await self.store()
        job, created = await store.create_job(new_job(), 77, 1000)
        self.assertEqual((created, job.target_ids, job.message_id, job.state, job.next_after), (True, (1, 2, 3), 77, RUNNING, 0))
        again, created = await store.create_job(new_job(), 78, 2000)
        self.assertEqual((created, again), (False, job))
        self.assertEqual(await store.find_job("k"), job)
        self.assertIsNone(await store.find_job("other"))

    async def test_lease_and_cursor(self: Any) -> None:
        """A job's lease keeps other owners out until it runs out; a cursor move by an
        owner that lost the lease, or of the wrong chunk, writes nothing."""
        store = await self.store()
        job, _ = await store.create_job(new_job(), 77, 1000)
        self.assertIsNotNone(await store.claim(job.id, "a", 1000, 500))
        self.assertIsNone(await store.claim(job.id, "b", 1200, 500))
        self.assertEqual(await store.claimable(1200, "b"), [])
        self.assertEqual(await store.claimable(1200, "a"), [job.id])
        self.assertTrue(await store.advance(job.id, "a", chunk=1, last_user=1, recipients=1, done=False, now_ms=1300, lease_ms=500))
        self.assertFalse(await store.advance(job.id, "a", chunk=1, last_user=1, recipients=1, done=False, now_ms=1300, lease_ms=500))
        self.assertEqual(await store.claimable(1900, "b"), [job.id])
        claimed = await store.claim(job.id, "b", 1900, 500)
        assert claimed is not None
        self.assertEqual((claimed.next_after, claimed.chunks, claimed.recipients), (1, 1, 1))
        self.assertFalse(await store.advance(job.id, "a", chunk=2, last_user=2, recipients=1, done=False, now_ms=1950, lease_ms=500))
        self.assertTrue(await store.advance(job.id, "b", chunk=2, last_user=3, recipients=2, done=True, now_ms=1950, lease_ms=500))
        done = await store.get_job(job.id)
        assert done is not None
        self.assertEqual((done.state, done.recipients, done.chunks), (DONE, 3, 2))
        self.assertIsNone(await store.claim(job.id, "b", 5000, 500))
        self.assertEqual(await store.job_counts(), {DONE: 1})

    async def test_recipients_skip_unknown_users(self: Any) -> None:
        """A user list's chunk holds the ids that are users; the cursor passes the others."""
        store = await self.store()

        def users_txn(txn: Any) -> None:
            txn.executemany(
                "INSERT INTO users (id, number, nickname, password_hash, created_at) VALUES (?, ?, ?, 'x', 0)",
                [(i, f"n{i}", f"n{i}") for i in (2, 5)],
            )

        await store.db.run("users", users_txn)
        job, _ = await store.create_job(NewPushJob("k", "p", "users", (1, 2, 3, 4, 5), 1, 0, 1, "x"), 1, 0)
        self.assertEqual(await store.recipients(job, 2), ([2], 2, False))
        self.assertEqual(await store.users_exist([1, 2, 5]), {2, 5})


class PushStoreSQLiteTests(PushStoreTests, SQLiteBackend, TestCase):
    pass


class PushStoreMySQLTests(PushStoreTests, MySQLBackend, TestCase):
    pass
