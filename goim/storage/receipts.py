"""Read positions, conversations, read counts, and recall/edit of stored copies.

Every change a user's devices must learn (a read report, a recall, an edit) is
written as an event row of that user's own stream (``messages.kind`` non-zero) under
the user's next seq, in the transaction that makes the change, so it is synced,
acked and pushed like any message: never lost, in order after the original.

A conversation is named from one user's side: ``(1, peer user id)`` or
``(2, group id)``. A copy belongs to ``(2, receiver_id)`` when it went to a group,
else to ``(1, the other party)``.
"""

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Sequence

from goim.storage.database import Database, Txn, in_clause
from goim.storage.messages import reserve_seqs_txn
from goim.types import (
    KIND_EDIT,
    KIND_MESSAGE,
    KIND_READ,
    KIND_RECALL,
    RECEIVER_GROUP,
    RECEIVER_USER,
    StoredMessage,
)

_COPY_COLUMNS = (
    "user_id, seq, message_id, sender_type, sender_id, sender_device_id,"
    " receiver_type, receiver_id, type, content, send_time, kind, ref_seq, edited_at, recalled"
)
_INSERT = (
    f"INSERT INTO messages ({_COPY_COLUMNS}, created_at) VALUES ({', '.join('?' * 16)})"
)

#: outcomes of a recall or an edit (the logic layer maps them to API codes)
CHANGED = "changed"
UNCHANGED = "unchanged"  # a retry of a change already made: nothing written
NOT_FOUND = "not_found"
NOT_ALLOWED = "not_allowed"
TOO_LATE = "too_late"
RECALLED = "recalled"  # editing a recalled message


@dataclass(frozen=True, slots=True)
class Conversation:
    """One line of a user's chat list."""

    conv_type: int
    conv_id: int
    #: the newest message copy of the conversation in the user's stream
    last: StoredMessage
    #: messages from others after the read position (recalled ones not counted)
    unread: int
    #: the user's read position (a seq of the user's own stream; 0: nothing read)
    read_seq: int


@dataclass(frozen=True, slots=True)
class ChangeOutcome:
    """What a recall or an edit did."""

    status: str
    #: the event rows written (one per holder of a copy), to deliver after commit
    events: tuple[StoredMessage, ...] = ()


def conversation_of(m: StoredMessage) -> tuple[int, int]:
    """The conversation a copy belongs to, from its holder's side."""
    if m.receiver_type == RECEIVER_GROUP:
        return RECEIVER_GROUP, m.receiver_id
    return RECEIVER_USER, m.receiver_id if m.sender_id == m.user_id else m.sender_id


def _copy(r: Sequence[Any]) -> StoredMessage:
    return StoredMessage(
        int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]), int(r[6]), int(r[7]), int(r[8]),
        str(r[9]), int(r[10]), int(r[11]), int(r[12]), int(r[13]), bool(r[14]),
    )


def _conv_clause(user_id: int, conv_type: int, conv_id: int) -> tuple[str, list[int]]:
    """SQL matching the copies of ``user_id``'s conversation (``m`` unqualified)."""
    if conv_type == RECEIVER_GROUP:
        return "receiver_type = 2 AND receiver_id = ?", [conv_id]
    return (
        "receiver_type = 1 AND ((sender_id = ? AND receiver_id = ?) OR (sender_id = ? AND receiver_id = ?))",
        [user_id, conv_id, conv_id, user_id],
    )


def _next_seqs_txn(txn: Txn, users: Sequence[int]) -> dict[int, int]:
    """Lock the users' seq rows (ascending, as the send path does) and read them."""
    ordered = sorted(set(users))
    seqs = {u: 0 for u in ordered}
    seqs.update(
        (int(r[0]), int(r[1]))
        for r in txn.query(
            f"SELECT user_id, seq FROM user_seqs WHERE user_id IN {in_clause(ordered)}"
            f" ORDER BY user_id{txn.dialect.for_update}",
            ordered,
        )
    )
    return seqs


def _append_txn(txn: Txn, events: list[StoredMessage], now_ms: int) -> list[StoredMessage]:
    """Give each event its user's next seq and insert them."""
    if not events:
        return []
    seqs = reserve_seqs_txn(txn, Counter(e.user_id for e in events))
    placed = []
    for e in events:
        seqs[e.user_id] += 1
        placed.append(replace(e, seq=seqs[e.user_id]))
    txn.executemany(
        _INSERT,
        [
            (
                e.user_id, e.seq, e.message_id, e.sender_type, e.sender_id, e.sender_device_id,
                e.receiver_type, e.receiver_id, e.type, e.content, e.send_time, e.kind, e.ref_seq,
                e.edited_at, int(e.recalled), now_ms,
            )
            for e in placed
        ],
    )
    return placed


class ReceiptStore:
    """Rows of ``read_positions`` and the event rows of ``messages``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def mark_read(
        self, user_id: int, device_id: int, conv_type: int, conv_id: int, seq: int, now_ms: int
    ) -> list[StoredMessage]:
        """Move ``user_id``'s read position in a conversation up to ``seq``.

        The position stored is the seq of the conversation's last message at or
        below ``seq`` (so a report of an event's seq, or of a seq past the end,
        means "everything so far"). Monotonic: a position at or below the stored one
        changes nothing (a retried report writes nothing). When it advances, the
        user's stream gets a read event (their other devices clear the badge), and
        in 1:1 the peer's stream gets one naming the peer's own copy of that message.

        Returns:
            The event rows written (empty when nothing changed).
        """
        return await self.db.run("mark_read", self._mark_read_txn, user_id, device_id, conv_type, conv_id, seq, now_ms)

    def _mark_read_txn(
        self, txn: Txn, user_id: int, device_id: int, conv_type: int, conv_id: int, seq: int, now_ms: int
    ) -> list[StoredMessage]:
        dialect = txn.dialect
        # the seq rows first (ascending, as the send path locks them): read reports of
        # one user serialise here, and the events appended below need them anyway
        # (conv_id 0 is the business-push conversation: no peer, no peer stream)
        has_peer = conv_type == RECEIVER_USER and conv_id not in (0, user_id)
        _next_seqs_txn(txn, [user_id, conv_id] if has_peer else [user_id])
        clause, args = _conv_clause(user_id, conv_type, conv_id)
        last = txn.query(
            f"SELECT seq, message_id FROM messages WHERE user_id = ? AND kind = 0 AND seq <= ? AND {clause}"
            " ORDER BY seq DESC LIMIT 1",
            [user_id, seq, *args],
        )
        if not last:
            return []
        seq, message_id = int(last[0][0]), int(last[0][1])
        rows = txn.query(
            "SELECT read_seq FROM read_positions WHERE user_id = ? AND conv_type = ? AND conv_id = ?",
            (user_id, conv_type, conv_id),
        )
        current = int(rows[0][0]) if rows else 0
        if seq <= current:
            return []
        txn.execute(
            dialect.upsert(
                "read_positions", ["user_id", "conv_type", "conv_id"], ["read_seq", "updated_at"],
                ["read_seq", "updated_at"],
            ),
            (user_id, conv_type, conv_id, seq, now_ms),
        )
        receiver_type = RECEIVER_GROUP if conv_type == RECEIVER_GROUP else RECEIVER_USER
        event = StoredMessage(
            user_id=user_id, seq=0, message_id=message_id, sender_type=1, sender_id=user_id,
            sender_device_id=device_id, receiver_type=receiver_type, receiver_id=conv_id, type=0,
            content="", send_time=now_ms, kind=KIND_READ, ref_seq=seq,
        )
        events = [event]
        if has_peer:
            peer = txn.query(
                "SELECT seq FROM messages WHERE user_id = ? AND message_id = ? AND kind = 0", (conv_id, message_id)
            )
            if peer:
                events.append(replace(event, user_id=conv_id, ref_seq=int(peer[0][0])))
        return _append_txn(txn, events, now_ms)

    async def read_position(self, user_id: int, conv_type: int, conv_id: int) -> int:
        """The user's read position in the conversation (0: none)."""

        def read_position_txn(txn: Txn) -> int:
            rows = txn.query(
                "SELECT read_seq FROM read_positions WHERE user_id = ? AND conv_type = ? AND conv_id = ?",
                (user_id, conv_type, conv_id),
            )
            return int(rows[0][0]) if rows else 0

        return await self.db.run("read_position", read_position_txn)

    async def conversations(self, user_id: int, before: int, limit: int) -> tuple[list[Conversation], int | None]:
        """The user's conversations, newest first (by their last message's seq).

        Args:
            before: only conversations whose last message's seq is below this (0: all).
            limit: the page size.

        Returns:
            The page and the cursor of the next one (None: this was the last page).
        """
        return await self.db.run("conversations", self._conversations_txn, user_id, before, limit)

    def _conversations_txn(
        self, txn: Txn, user_id: int, before: int, limit: int
    ) -> tuple[list[Conversation], int | None]:
        # the last seq of every conversation of the user: one grouped scan of the
        # user's stream (DESIGN: the stream is the user's; no second index to keep)
        # (the cursor bounds each conversation's last seq, not the messages scanned:
        # a conversation shown on an earlier page must not come back with an older one)
        bound = " HAVING MAX(seq) < ?" if before > 0 else ""
        rows = txn.query(
            "SELECT MAX(seq) FROM messages WHERE user_id = ? AND kind = 0"
            " GROUP BY receiver_type, CASE WHEN receiver_type = 2 THEN receiver_id"
            " WHEN sender_id = ? THEN receiver_id ELSE sender_id END" + bound
            + " ORDER BY MAX(seq) DESC LIMIT ?",
            [user_id, user_id, *([before] if before > 0 else []), limit + 1],
        )
        last_seqs = [int(r[0]) for r in rows]
        more = len(last_seqs) > limit
        last_seqs = last_seqs[:limit]
        if not last_seqs:
            return [], None
        copies = [
            _copy(r)
            for r in txn.query(
                f"SELECT {_COPY_COLUMNS} FROM messages WHERE user_id = ? AND seq IN {in_clause(last_seqs)}"
                " ORDER BY seq DESC",
                [user_id, *last_seqs],
            )
        ]
        positions = {
            (int(r[0]), int(r[1])): int(r[2])
            for r in txn.query("SELECT conv_type, conv_id, read_seq FROM read_positions WHERE user_id = ?", (user_id,))
        }
        page = []
        for last in copies:
            conv_type, conv_id = conversation_of(last)
            read_seq = positions.get((conv_type, conv_id), 0)
            clause, args = _conv_clause(user_id, conv_type, conv_id)
            unread = txn.query(
                f"SELECT COUNT(*) FROM messages WHERE user_id = ? AND kind = 0 AND recalled = 0 AND seq > ?"
                f" AND sender_id <> ? AND {clause}",
                [user_id, read_seq, user_id, *args],
            )
            page.append(Conversation(conv_type, conv_id, last, int(unread[0][0]), read_seq))
        return page, (last_seqs[-1] if more else None)

    async def read_count(self, user_id: int, message_id: int) -> int | None:
        """How many members other than the sender have read a group message.

        Returns:
            The count, or None when ``user_id`` holds no copy of such a message.
        """

        def read_count_txn(txn: Txn) -> int | None:
            held = txn.query(
                "SELECT receiver_type FROM messages WHERE user_id = ? AND message_id = ? AND kind = 0",
                (user_id, message_id),
            )
            if not held or int(held[0][0]) != RECEIVER_GROUP:
                return None
            rows = txn.query(
                "SELECT COUNT(*) FROM messages m JOIN read_positions r ON r.user_id = m.user_id"
                " AND r.conv_type = 2 AND r.conv_id = m.receiver_id"
                " WHERE m.message_id = ? AND m.kind = 0 AND m.user_id <> m.sender_id AND r.read_seq >= m.seq",
                (message_id,),
            )
            return int(rows[0][0])

        return await self.db.run("read_count", read_count_txn)

    async def change(
        self,
        user_id: int,
        device_id: int,
        message_id: int,
        kind: int,
        content: str,
        now_ms: int,
        window_ms: int,
    ) -> ChangeOutcome:
        """Recall (``KIND_RECALL``) or edit (``KIND_EDIT``, new ``content``) a message.

        The sender may change its message within ``window_ms`` of storing it; a
        group's owner may also recall any message of the group (same window). Every
        holder of a copy gets its copy updated and an event row. Repeating a change
        already made (a retry) writes nothing and answers ``UNCHANGED``.
        """
        return await self.db.run("change_message", self._change_txn, user_id, device_id, message_id, kind, content, now_ms, window_ms)

    def _change_txn(
        self, txn: Txn, user_id: int, device_id: int, message_id: int, kind: int, content: str, now_ms: int,
        window_ms: int,
    ) -> ChangeOutcome:
        select = f"SELECT {_COPY_COLUMNS}, created_at FROM messages WHERE message_id = ? AND kind = 0 ORDER BY user_id"
        holders = [int(r[0]) for r in txn.query(select, (message_id,))]
        if user_id not in holders:
            return ChangeOutcome(NOT_FOUND)  # never say whether others hold it
        # the holders' seq rows first, in the send path's order; then the copies again,
        # read with a lock (a concurrent change of the same message committed before
        # this one got the seq locks: its result must be seen, not a stale snapshot)
        _next_seqs_txn(txn, holders)
        rows = txn.query(select + txn.dialect.for_update, (message_id,))
        copies = [_copy(r) for r in rows]
        original = copies[0]
        created_at = int(rows[0][15])
        allowed = original.sender_id == user_id
        if not allowed and kind == KIND_RECALL and original.receiver_type == RECEIVER_GROUP:
            owner = txn.query("SELECT owner_id FROM chat_groups WHERE id = ?", (original.receiver_id,))
            allowed = bool(owner) and int(owner[0][0]) == user_id
        if not allowed:
            return ChangeOutcome(NOT_ALLOWED)
        if original.recalled:
            return ChangeOutcome(UNCHANGED if kind == KIND_RECALL else RECALLED)
        if kind == KIND_EDIT and original.edited_at and original.content == content:
            return ChangeOutcome(UNCHANGED)
        if now_ms - created_at > window_ms:
            return ChangeOutcome(TOO_LATE)
        if kind == KIND_RECALL:
            txn.execute("UPDATE messages SET content = '', recalled = 1 WHERE message_id = ? AND kind = 0", (message_id,))
        else:
            txn.execute(
                "UPDATE messages SET content = ?, edited_at = ? WHERE message_id = ? AND kind = 0",
                (content, now_ms, message_id),
            )
        events = [
            replace(
                c,
                seq=0,
                sender_device_id=device_id,
                sender_id=c.sender_id,
                type=c.type,
                content=content if kind == KIND_EDIT else "",
                send_time=now_ms,
                kind=kind,
                ref_seq=c.seq,
                edited_at=now_ms if kind == KIND_EDIT else 0,
                recalled=kind == KIND_RECALL,
            )
            for c in copies
        ]
        return ChangeOutcome(CHANGED, tuple(_append_txn(txn, events, now_ms)))


__all__ = [
    "CHANGED",
    "ChangeOutcome",
    "Conversation",
    "KIND_MESSAGE",
    "NOT_ALLOWED",
    "NOT_FOUND",
    "RECALLED",
    "ReceiptStore",
    "TOO_LATE",
    "UNCHANGED",
    "conversation_of",
]
