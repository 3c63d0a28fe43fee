"""Business push jobs and retention: the rows of ``push_jobs`` and ``retention_marks``.

A push job is one row per caller-chosen idempotency key. Its recipients are read in
ascending user id order, a chunk at a time, from the source its target names (a
list of user ids, a group's members, every user); ``next_after`` is the last user
id whose chunk was stored, so a job that stopped half-way (a crash) resumes behind
it. Each chunk is stored as one send with the dedupe key ``(-job id, 0, chunk
number)`` (device ids are positive), so a chunk that was stored but whose cursor
move was lost is recognised and never stored twice.
"""

import json
from dataclasses import dataclass
from typing import Any, Sequence

from goim.storage.database import Database, Txn

#: push job states
RUNNING = "running"
DONE = "done"

#: push job targets
TARGET_USER = "user"
TARGET_USERS = "users"
TARGET_GROUP = "group"
TARGET_ALL = "all"
TARGETS = (TARGET_USER, TARGET_USERS, TARGET_GROUP, TARGET_ALL)

_JOB_COLUMNS = (
    "id, idempotency_key, fingerprint, target, target_ids, receiver_type, receiver_id, type, content,"
    " message_id, state, next_after, chunks, recipients, created_at, updated_at"
)


@dataclass(frozen=True, slots=True)
class PushJob:
    """One business push and how far it got."""

    id: int
    idempotency_key: str
    fingerprint: str
    target: str
    target_ids: tuple[int, ...]
    receiver_type: int
    receiver_id: int
    type: int
    content: str
    message_id: int
    state: str
    #: the last recipient user id stored (0: none yet)
    next_after: int
    #: chunks stored so far (the next chunk's dedupe sequence is ``chunks + 1``)
    chunks: int
    #: recipients stored so far
    recipients: int
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class NewPushJob:
    """What a caller asks to push."""

    idempotency_key: str
    fingerprint: str
    target: str
    target_ids: tuple[int, ...]
    receiver_type: int
    receiver_id: int
    type: int
    content: str


def _job(row: Sequence[Any]) -> PushJob:
    ids = json.loads(str(row[4]))
    return PushJob(
        id=int(row[0]),
        idempotency_key=str(row[1]),
        fingerprint=str(row[2]),
        target=str(row[3]),
        target_ids=tuple(int(i) for i in ids),
        receiver_type=int(row[5]),
        receiver_id=int(row[6]),
        type=int(row[7]),
        content=str(row[8]),
        message_id=int(row[9]),
        state=str(row[10]),
        next_after=int(row[11]),
        chunks=int(row[12]),
        recipients=int(row[13]),
        created_at=int(row[14]),
        updated_at=int(row[15]),
    )


class PushStore:
    """Push jobs, their recipients, and the deletions of retention."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_job(self, job: NewPushJob, message_id: int, now_ms: int) -> tuple[PushJob, bool]:
        """Insert a job, or find the one with the same idempotency key.

        Returns:
            ``(job, created)``: ``created`` is False when the key was used before
            (the earlier job is returned, whatever its content).
        """

        def create_job_txn(txn: Txn) -> tuple[PushJob, bool]:
            rows = txn.query(f"SELECT {_JOB_COLUMNS} FROM push_jobs WHERE idempotency_key = ?", (job.idempotency_key,))
            if rows:
                return _job(rows[0]), False
            txn.execute(
                "INSERT INTO push_jobs (idempotency_key, fingerprint, target, target_ids, receiver_type,"
                " receiver_id, type, content, message_id, state, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.idempotency_key,
                    job.fingerprint,
                    job.target,
                    json.dumps(sorted(set(job.target_ids))),
                    job.receiver_type,
                    job.receiver_id,
                    job.type,
                    job.content,
                    message_id,
                    RUNNING,
                    now_ms,
                    now_ms,
                ),
            )
            rows = txn.query(f"SELECT {_JOB_COLUMNS} FROM push_jobs WHERE idempotency_key = ?", (job.idempotency_key,))
            return _job(rows[0]), True

        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.db.run("create_push_job", create_job_txn)
            except Exception as e:
                # two requests with the same key at once: the loser finds the winner's row
                if attempt >= 3 or not self.db.dialect.is_duplicate_key(e):
                    raise

    async def find_job(self, idempotency_key: str) -> PushJob | None:
        """The job created with this idempotency key, or None."""

        def find_job_txn(txn: Txn) -> PushJob | None:
            rows = txn.query(f"SELECT {_JOB_COLUMNS} FROM push_jobs WHERE idempotency_key = ?", (idempotency_key,))
            return _job(rows[0]) if rows else None

        return await self.db.run("find_push_job", find_job_txn)

    async def get_job(self, job_id: int) -> PushJob | None:
        """The job with this id, or None."""

        def get_job_txn(txn: Txn) -> PushJob | None:
            rows = txn.query(f"SELECT {_JOB_COLUMNS} FROM push_jobs WHERE id = ?", (job_id,))
            return _job(rows[0]) if rows else None

        return await self.db.run("get_push_job", get_job_txn)

    async def claim(self, job_id: int, owner: str, now_ms: int, lease_ms: int) -> PushJob | None:
        """Take the lease of a running job if nobody else holds it.

        Returns:
            The job (its current cursor) when this owner now holds it, else None.
        """

        def claim_txn(txn: Txn) -> PushJob | None:
            txn.execute(
                "UPDATE push_jobs SET owner = ?, lease_until = ? WHERE id = ? AND state = ?"
                " AND (owner = ? OR lease_until < ?)",
                (owner, now_ms + lease_ms, job_id, RUNNING, owner, now_ms),
            )
            if txn.rowcount != 1:
                return None
            rows = txn.query(f"SELECT {_JOB_COLUMNS} FROM push_jobs WHERE id = ?", (job_id,))
            return _job(rows[0])

        return await self.db.run("claim_push_job", claim_txn)

    async def claimable(self, now_ms: int, owner: str, limit: int = 100) -> list[int]:
        """Ids of running jobs this owner may run: its own (a restart of the node
        resumes them at once) and those whose lease ran out (their node died)."""

        def claimable_txn(txn: Txn) -> list[int]:
            rows = txn.query(
                "SELECT id FROM push_jobs WHERE state = ? AND (lease_until < ? OR owner = ?) ORDER BY id LIMIT ?",
                (RUNNING, now_ms, owner, limit),
            )
            return [int(r[0]) for r in rows]

        return await self.db.run("claimable_push_jobs", claimable_txn)

    async def advance(
        self, job_id: int, owner: str, *, chunk: int, last_user: int, recipients: int, done: bool, now_ms: int, lease_ms: int
    ) -> bool:
        """Record that chunk number ``chunk`` (ending at ``last_user``) is stored.

        Returns:
            False when this owner lost the job's lease meanwhile (nothing written).
        """

        def advance_txn(txn: Txn) -> bool:
            txn.execute(
                "UPDATE push_jobs SET next_after = ?, chunks = ?, recipients = recipients + ?, state = ?,"
                " lease_until = ?, updated_at = ? WHERE id = ? AND owner = ? AND chunks = ?",
                (last_user, chunk, recipients, DONE if done else RUNNING, now_ms + lease_ms, now_ms, job_id, owner, chunk - 1),
            )
            return txn.rowcount == 1

        return await self.db.run("advance_push_job", advance_txn)

    async def recipients(self, job: PushJob, limit: int) -> tuple[list[int], int, bool]:
        """The next recipients of ``job`` after its cursor, ascending.

        The target's users are read now: users that joined a group (or registered)
        while the job ran get it when their id is still ahead of the cursor; ids
        of a user list that are no user (any more) are skipped.

        Returns:
            ``(users, last, exhausted)``: up to ``limit`` user ids, the cursor to
            move to once they are stored, and whether the target has no more.
        """

        def recipients_txn(txn: Txn) -> tuple[list[int], int, bool]:
            after = job.next_after
            if job.target in (TARGET_GROUP, TARGET_ALL):
                if job.target == TARGET_GROUP:
                    rows = txn.query(
                        "SELECT user_id FROM group_members WHERE group_id = ? AND user_id > ? ORDER BY user_id LIMIT ?",
                        (job.receiver_id, after, limit),
                    )
                else:
                    rows = txn.query("SELECT id FROM users WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
                users = [int(r[0]) for r in rows]
                return users, users[-1] if users else after, len(users) < limit
            wanted = [u for u in job.target_ids if u > after][:limit]
            if not wanted:
                return [], after, True
            rows = txn.query(f"SELECT id FROM users WHERE id IN ({', '.join('?' * len(wanted))}) ORDER BY id", wanted)
            return [int(r[0]) for r in rows], wanted[-1], wanted[-1] == job.target_ids[-1]

        return await self.db.run("push_recipients", recipients_txn)

    async def users_exist(self, user_ids: Sequence[int]) -> set[int]:
        """Which of ``user_ids`` are users."""

        def users_exist_txn(txn: Txn) -> set[int]:
            ids = sorted(set(user_ids))
            rows = txn.query(f"SELECT id FROM users WHERE id IN ({', '.join('?' * len(ids))})", ids)
            return {int(r[0]) for r in rows}

        if not user_ids:
            return set()
        return await self.db.run("push_users_exist", users_exist_txn)

    async def group_exists(self, group_id: int) -> bool:
        """Whether the group exists."""

        def group_exists_txn(txn: Txn) -> bool:
            return bool(txn.query("SELECT id FROM chat_groups WHERE id = ?", (group_id,)))

        return await self.db.run("push_group_exists", group_exists_txn)

    async def job_counts(self) -> dict[str, int]:
        """``{state: jobs}``."""

        def job_counts_txn(txn: Txn) -> dict[str, int]:
            return {str(r[0]): int(r[1]) for r in txn.query("SELECT state, COUNT(*) FROM push_jobs GROUP BY state")}

        return await self.db.run("push_job_counts", job_counts_txn)

    # --- retention ----------------------------------------------------------------------

    async def users_after(self, after: int, limit: int) -> list[int]:
        """Up to ``limit`` user ids with stored sequences, ascending after ``after``."""

        def users_after_txn(txn: Txn) -> list[int]:
            rows = txn.query("SELECT user_id FROM user_seqs WHERE user_id > ? ORDER BY user_id LIMIT ?", (after, limit))
            return [int(r[0]) for r in rows]

        return await self.db.run("retention_users", users_after_txn)

    async def trim_user(self, user_id: int, before_ms: int, limit: int) -> int:
        """Delete up to ``limit`` of the user's oldest copies stored before ``before_ms``.

        Deletes a seq range from the user's oldest copy, stopping at the first copy
        stored at or after ``before_ms`` (copies of one user are stored in seq
        order), and records the highest seq deleted in ``retention_marks``.

        Returns:
            The copies deleted (fewer than ``limit``: the user is done).
        """

        def trim_user_txn(txn: Txn) -> int:
            rows = txn.query(
                "SELECT seq, created_at FROM messages WHERE user_id = ? ORDER BY seq LIMIT ?", (user_id, limit)
            )
            cut = 0
            for seq, created in rows:
                if int(created) >= before_ms:
                    break  # never leave a hole in the middle of a user's history
                cut = int(seq)
            if cut == 0:
                return 0
            txn.execute("DELETE FROM messages WHERE user_id = ? AND seq <= ?", (user_id, cut))
            deleted = txn.rowcount
            # monotonic whichever node trims concurrently: the row exists before the
            # conditional update locks it
            txn.execute(txn.dialect.insert_ignore("retention_marks", ["user_id", "trimmed_seq"]), (user_id, 0))
            txn.execute(
                "UPDATE retention_marks SET trimmed_seq = ? WHERE user_id = ? AND trimmed_seq < ?", (cut, user_id, cut)
            )
            return deleted

        return await self.db.run("retention_trim_user", trim_user_txn)

    async def delete_old_sends(self, before_ms: int, limit: int) -> int:
        """Delete up to ``limit`` dedupe records stored before ``before_ms``.

        Returns:
            The records deleted.
        """

        def delete_old_sends_txn(txn: Txn) -> int:
            rows = txn.query(
                "SELECT device_id, epoch, send_sequence FROM sends WHERE created_at < ? ORDER BY created_at LIMIT ?",
                (before_ms, limit),
            )
            if not rows:
                return 0
            txn.executemany("DELETE FROM sends WHERE device_id = ? AND epoch = ? AND send_sequence = ?", rows)
            return len(rows)

        return await self.db.run("retention_sends", delete_old_sends_txn)

    async def trimmed_seq(self, user_id: int) -> int:
        """The highest seq retention deleted for the user (0: none)."""

        def trimmed_seq_txn(txn: Txn) -> int:
            rows = txn.query("SELECT trimmed_seq FROM retention_marks WHERE user_id = ?", (user_id,))
            return int(rows[0][0]) if rows else 0

        return await self.db.run("trimmed_seq", trimmed_seq_txn)
