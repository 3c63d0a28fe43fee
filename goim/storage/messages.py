"""Stored message copies, their per-user sequences, send dedupe and id segments.

The write path is a batch: one transaction stores every send of a batch, so that
the per-user sequence rows are locked and bumped once per user, the copies go in
with multi-row inserts, and everything of the batch commits together or not at all.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from goim.storage.database import Database, Txn, in_clause
from goim.types import RECEIVER_GROUP, RECEIVER_USER, SEND_OK, SendRequest, StoredCopies, StoredMessage, SyncPage

_MESSAGE_COLUMNS = (
    "user_id, seq, message_id, sender_type, sender_id, sender_device_id,"
    " receiver_type, receiver_id, type, content, send_time"
)
#: what sync reads of a row: the written columns and the event and state columns
#: of migration 3 (``StoredMessage`` field order)
_SYNC_COLUMNS = f"{_MESSAGE_COLUMNS}, kind, ref_seq, edited_at, recalled"


@dataclass(frozen=True, slots=True)
class PendingSend:
    """A validated send waiting for its batch, with its message id reserved."""

    request: SendRequest
    message_id: int
    sender_type: int


@dataclass(slots=True)
class BatchFacts:
    """What the rules need to know about a batch, read inside its transaction."""

    #: ``(user_id, friend_id)`` rows present among the batch's 1:1 sends
    friendships: set[tuple[int, int]] = field(default_factory=set)
    #: member ids, ascending, of every group the batch sends to
    members: dict[int, list[int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What became of one send of a batch."""

    code: int
    message_id: int = 0
    seq: int = 0
    #: the copies this batch stored for it (None for a duplicate or a rejection)
    stored: StoredCopies | None = None


#: The rules: given a send and the facts, a non-zero ACK code, or 0 and the
#: recipients (ascending user ids, the sender included).
Decide = Callable[[SendRequest, BatchFacts], tuple[int, list[int]]]

#: Called inside the batch transaction after every row was written (tests inject
#: failures here).
FaultHook = Callable[[Txn], None]


class MessageStore:
    """Rows of ``messages``, ``user_seqs``, ``sends`` and ``id_segments``."""

    #: how often a batch that raced another node on the same dedupe key is rerun
    DUPLICATE_RETRIES = 3

    def __init__(self, db: Database) -> None:
        self.db = db
        self.fault_hook: FaultHook | None = None

    async def store_sends(self, sends: Sequence[PendingSend], decide: Decide, now_ms: int) -> list[SendOutcome]:
        """Store a batch of sends in one transaction.

        Sends already stored (same ``device_id``, ``epoch`` and ``send_sequence``)
        are answered with their first outcome and store nothing.
        The others are judged by ``decide``; accepted ones get one copy per
        recipient under that recipient's next sequence, in batch order.

        Returns:
            One outcome per send, in order.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.db.run("store_sends", self._store_sends_txn, sends, decide, now_ms)
            except Exception as e:
                # Another node stored one of these sends concurrently (a client that
                # retried elsewhere): run again, and dedupe will see its row.
                if attempt >= self.DUPLICATE_RETRIES or not self.db.dialect.is_duplicate_key(e):
                    raise

    def _store_sends_txn(
        self, txn: Txn, sends: Sequence[PendingSend], decide: Decide, now_ms: int
    ) -> list[SendOutcome]:
        keys = [(s.request.device_id, s.request.epoch, s.request.send_sequence) for s in sends]
        requests = [s.request for s in sends]
        # On a networked database, the seqs of the copies a batch of 1:1 sends will
        # most likely store are reserved in the round trip of its reads (one round
        # trip less); the guess is corrected once the batch is judged
        guessed = _likely_copies(requests) if txn.dialect.scripts else Counter()
        reserve = txn.dialect.add_many_later(txn, "user_seqs", "user_id", "seq", guessed) if guessed else None
        earlier, facts, reserved_rows = _batch_reads_txn(txn, keys, requests, reserve)
        reserved = {}
        if guessed:
            reserved = txn.dialect.read_added(txn, reserved_rows, "user_seqs", "user_id", "seq", sorted(guessed))

        outcomes: list[SendOutcome | None] = [None] * len(sends)
        accepted: list[tuple[int, list[int]]] = []  # (index in batch, recipients)
        first_of: dict[tuple[int, int, int], int] = {}  # key -> index that decides it
        for i, (send, key) in enumerate(zip(sends, keys)):
            if key in earlier:
                message_id, seq = earlier[key]
                outcomes[i] = SendOutcome(SEND_OK, message_id, seq)
            elif key not in first_of:
                first_of[key] = i
                code, recipients = decide(send.request, facts)
                if code != SEND_OK:
                    outcomes[i] = SendOutcome(code)
                else:
                    accepted.append((i, recipients))

        copies = Counter(u for _, recipients in accepted for u in recipients)
        # each user's seq row moves past this batch's copies at once; the copies
        # take the seqs before it, in batch order
        seqs = reserve_seqs_txn(txn, copies, guessed, reserved)
        if copies:
            message_rows: list[tuple[object, ...]] = []
            send_rows = []
            for i, recipients in accepted:
                send = sends[i]
                r = send.request
                # a business push to users: each copy names its own user as receiver
                per_user = bool(r.recipients) and r.receiver_type == RECEIVER_USER
                sender_device_id = 0 if r.recipients else r.device_id
                copy_seqs = []
                # the row of each copy, built straight from the send (no object per copy)
                head = (send.message_id, send.sender_type, r.user_id, sender_device_id, r.receiver_type)
                tail = (r.type, r.content, r.send_time, now_ms)
                for u in recipients:
                    seq = seqs[u] = seqs[u] + 1
                    copy_seqs.append(seq)
                    message_rows.append((u, seq, *head, u if per_user else r.receiver_id, *tail))
                first_user = recipients[0] if recipients else 0
                stored = None if not recipients else StoredCopies(
                    StoredMessage(
                        user_id=first_user,
                        seq=copy_seqs[0],
                        message_id=send.message_id,
                        sender_type=send.sender_type,
                        sender_id=r.user_id,
                        sender_device_id=sender_device_id,
                        receiver_type=r.receiver_type,
                        receiver_id=first_user if per_user else r.receiver_id,
                        type=r.type,
                        content=r.content,
                        send_time=r.send_time,
                    ),
                    tuple(recipients),
                    tuple(copy_seqs),
                    receiver_is_user=per_user,
                )
                sender_seq = seqs[r.user_id] if r.user_id in recipients else 0
                send_rows.append((*keys[i], send.message_id, sender_seq, now_ms))
                outcomes[i] = SendOutcome(SEND_OK, send.message_id, sender_seq, stored)
            # both go with the commit, in one round trip on MySQL (a duplicate send
            # key raised there still fails the transaction, and the batch reruns)
            txn.executemany_later(
                f"INSERT INTO messages ({_MESSAGE_COLUMNS}, created_at) VALUES ({', '.join('?' * 12)})",
                message_rows,
            )
            txn.executemany_later(
                "INSERT INTO sends (device_id, epoch, send_sequence, message_id, sender_seq, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                send_rows,
            )
        if self.fault_hook is not None:
            self.fault_hook(txn)

        # Later duplicates within the batch share the outcome of the first one,
        # without its copies (those are delivered once).
        result = []
        for i, key in enumerate(keys):
            outcome = outcomes[i]
            if outcome is None:
                first = outcomes[first_of[key]]
                assert first is not None
                outcome = SendOutcome(first.code, first.message_id, first.seq)
            result.append(outcome)
        return result

    async def sync_page(self, user_id: int, after_seq: int, limit: int) -> SyncPage:
        """Up to ``limit`` copies of ``user_id`` with seq > ``after_seq``, ascending."""

        def sync_page_txn(txn: Txn) -> SyncPage:
            rows = txn.query(
                f"SELECT {_SYNC_COLUMNS} FROM messages WHERE user_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (user_id, after_seq, limit + 1),
            )
            messages = [_synced(r) for r in rows[:limit]]
            marks = txn.query("SELECT trimmed_seq FROM retention_marks WHERE user_id = ?", (user_id,))
            trimmed = bool(marks) and after_seq < int(marks[0][0])
            return SyncPage(messages, more=len(rows) > limit, trimmed=trimmed)

        return await self.db.run("sync_page", sync_page_txn)

    async def group_sizes(self, group_ids: Sequence[int]) -> dict[int, int]:
        """``{group_id: member count}`` of the groups that exist among ``group_ids``."""

        def group_sizes_txn(txn: Txn) -> dict[int, int]:
            ids = sorted(set(group_ids))
            rows = txn.query(
                f"SELECT group_id, COUNT(*) FROM group_members WHERE group_id IN {in_clause(ids)} GROUP BY group_id",
                ids,
            )
            return {int(r[0]): int(r[1]) for r in rows}

        if not group_ids:
            return {}
        return await self.db.run("group_sizes", group_sizes_txn)

    async def max_seq(self, user_id: int) -> int:
        """The user's latest sequence (0 before the first message)."""

        def max_seq_txn(txn: Txn) -> int:
            rows = txn.query("SELECT seq FROM user_seqs WHERE user_id = ?", (user_id,))
            return int(rows[0][0]) if rows else 0

        return await self.db.run("max_seq", max_seq_txn)

    async def reserve_ids(self, name: str, step: int) -> range:
        """Reserve ``step`` ids of the id space ``name`` for this process alone.

        Returns:
            The reserved ids, ascending. No other call, in this process or any
            other sharing the database, ever gets one of them.
        """

        def reserve_ids_txn(txn: Txn) -> int:
            rows = txn.query(f"SELECT max_id FROM id_segments WHERE name = ?{txn.dialect.for_update}", (name,))
            if rows:
                new_max = int(rows[0][0]) + step
                txn.execute("UPDATE id_segments SET max_id = ? WHERE name = ?", (new_max, name))
            else:
                new_max = step
                txn.execute("INSERT INTO id_segments (name, max_id) VALUES (?, ?)", (name, new_max))
            return new_max

        attempt = 0
        while True:
            attempt += 1
            try:
                new_max = await self.db.run("reserve_ids", reserve_ids_txn)
                return range(new_max - step + 1, new_max + 1)
            except Exception as e:
                # two processes created the id space at once: the loser reads it next time
                if attempt >= self.DUPLICATE_RETRIES or not self.db.dialect.is_duplicate_key(e):
                    raise


def reserve_seqs_txn(
    txn: Txn,
    copies: Mapping[int, int],
    guessed: Mapping[int, int] | None = None,
    reserved: Mapping[int, int] | None = None,
) -> dict[int, int]:
    """Move each user's seq past ``copies[user]`` new rows of their stream.

    Locks the users' ``user_seqs`` rows (ascending, so that two transactions
    wait for each other instead of deadlocking) until the transaction ends.

    Args:
        guessed: copies per user that this transaction already moved the rows
            past (``Dialect.add_many_later``), ``reserved`` their new values. A row
            moved too far is set back to its last copy (the transaction holds its
            lock, so nothing else took a seq meanwhile); a user with more copies
            than guessed is moved further, that row locked after the guessed
            ones (out of order: two such transactions may deadlock, and
            ``Database.run`` runs the loser again).

    Returns:
        Per user, the seq just before the first reserved one: the rows take the
        next ``copies[user]`` seqs after it.
    """
    guessed = guessed or {}
    reserved = reserved or {}
    seqs = {u: reserved[u] - n for u, n in guessed.items()}
    more = {u: n - guessed.get(u, 0) for u, n in copies.items() if n > guessed.get(u, 0)}
    if more:
        for u, value in txn.dialect.add_many(txn, "user_seqs", "user_id", "seq", more).items():
            seqs[u] = value - more[u] - guessed.get(u, 0)
    txn.executemany_later(
        "UPDATE user_seqs SET seq = ? WHERE user_id = ?",
        [(seqs[u] + copies.get(u, 0), u) for u in sorted(guessed) if copies.get(u, 0) < guessed[u]],
    )
    return seqs


def _likely_copies(requests: Sequence[SendRequest]) -> Counter[int]:
    """The copies per user that a batch stores if every send is a new one and
    accepted, when that is known before its reads: for a batch of 1:1 sends, one
    each for sender and receiver (``goim.logic.messages.decide``); empty when the
    batch holds any other send (a group's members are read in the batch)."""
    likely: Counter[int] = Counter()
    for r in requests:
        if r.receiver_type != RECEIVER_USER or r.recipients:
            return Counter()
        likely.update({r.user_id, r.receiver_id})
    return likely


def _synced(r: Sequence[Any]) -> StoredMessage:
    """A row of ``_SYNC_COLUMNS``."""
    return StoredMessage(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], bool(r[14])
    )


def _batch_reads_txn(
    txn: Txn,
    keys: Sequence[tuple[int, int, int]],
    requests: Sequence[SendRequest],
    extra: tuple[str, Sequence[Any]] | None = None,
) -> tuple[dict[tuple[int, int, int], tuple[int, int]], BatchFacts, list[tuple[Any, ...]]]:
    """What a batch's transaction reads before it decides: the sends already stored,
    ``{(device_id, epoch, send_sequence): (message_id, sender_seq)}``, the facts the
    rules need (the 1:1 friendships and the groups' members) and the rows of the
    ``extra`` query, all in one round trip on MySQL."""
    dialect = txn.dialect
    send_key = ("device_id", "epoch", "send_sequence")
    queries: list[tuple[str, Sequence[Any]]] = [
        dialect.select_keys("sends", [*send_key, "message_id", "sender_seq"], send_key, sorted(set(keys)))
    ]
    if extra is not None:
        queries.append(extra)
    pairs = sorted({(r.user_id, r.receiver_id) for r in requests if r.receiver_type == RECEIVER_USER})
    if pairs:
        friend_key = ("user_id", "friend_id")
        queries.append(dialect.select_keys("friends", friend_key, friend_key, pairs))
    groups = sorted({r.receiver_id for r in requests if r.receiver_type == RECEIVER_GROUP})
    if groups:
        member_read = (["group_id", "user_id"], f"FROM group_members WHERE group_id IN {in_clause(groups)}", groups)
        queries.append(dialect.int_rows_query(*member_read))
    results = txn.query_all(queries)
    earlier = {(int(r[0]), int(r[1]), int(r[2])): (int(r[3]), int(r[4])) for r in results[0]}
    extra_rows = results.pop(1) if extra is not None else []
    facts = BatchFacts()
    if pairs:
        facts.friendships = {(int(r[0]), int(r[1])) for r in results[1]}
    if groups:
        facts.members = {g: [] for g in groups}
        for group_id, user_id in dialect.read_int_rows(txn, results[-1], *member_read):
            facts.members[group_id].append(user_id)
    return earlier, facts, extra_rows
