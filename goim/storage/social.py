"""Friendships and groups."""

from dataclasses import dataclass
from typing import Sequence

from goim.storage.database import Database, Txn, in_clause


@dataclass(frozen=True, slots=True)
class GroupRow:
    id: int
    name: str
    owner_id: int


class SocialLimitError(Exception):
    """A write would take a user or a group past one of the social limits.

    Attributes:
        kind: ``"friends"``, ``"groups"`` or ``"group_size"``.
        subject_id: the user (friends, groups) or the group (group_size) at its limit.
        limit: the limit in force.
    """

    def __init__(self, kind: str, subject_id: int, limit: int) -> None:
        super().__init__(f"{kind} limit {limit} reached by {subject_id}")
        self.kind = kind
        self.subject_id = subject_id
        self.limit = limit


def _lock_users(txn: Txn, user_ids: Sequence[int]) -> None:
    """Lock the users' rows (MySQL) so that concurrent writes count one after the other.

    Rows are locked in id order, the same order everywhere, so two such
    transactions cannot deadlock on them. SQLite serialises writers anyway.
    """
    ids = sorted(set(user_ids))
    if ids and txn.dialect.for_update:
        txn.query(f"SELECT id FROM users WHERE id IN {in_clause(ids)} ORDER BY id{txn.dialect.for_update}", ids)


def _group_counts(txn: Txn, user_ids: Sequence[int]) -> dict[int, int]:
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    rows = txn.query(
        f"SELECT user_id, COUNT(*) FROM group_members WHERE user_id IN {in_clause(ids)} GROUP BY user_id", ids
    )
    return {int(r[0]): int(r[1]) for r in rows}


def _check_group_counts(txn: Txn, user_ids: Sequence[int], max_groups: int | None) -> None:
    if max_groups is None:
        return
    counts = _group_counts(txn, user_ids)
    for user_id in sorted(set(user_ids)):
        if counts.get(user_id, 0) >= max_groups:
            raise SocialLimitError("groups", user_id, max_groups)


class SocialStore:
    """Rows of ``friends``, ``chat_groups`` and ``group_members``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_friend(
        self, user_id: int, friend_id: int, label: str, now_ms: int, *, max_friends: int | None = None
    ) -> None:
        """Make the two users friends of each other (idempotent).

        ``label`` is what ``user_id`` calls ``friend_id``; the other direction keeps
        its label, or gets an empty one when it is new.

        Raises:
            SocialLimitError: ``"friends"``, when a new friendship would give
                either user more than ``max_friends`` friends.
        """

        def add_friend_txn(txn: Txn) -> None:
            d = txn.dialect
            if max_friends is not None:
                _lock_users(txn, [user_id, friend_id])
                existing = txn.query(
                    "SELECT 1 FROM friends WHERE user_id = ? AND friend_id = ?", (user_id, friend_id)
                )
                if not existing:
                    for uid in sorted((user_id, friend_id)):
                        count = int(txn.query("SELECT COUNT(*) FROM friends WHERE user_id = ?", (uid,))[0][0])
                        if count >= max_friends:
                            raise SocialLimitError("friends", uid, max_friends)
            txn.execute(
                d.upsert("friends", ["user_id", "friend_id"], ["label", "created_at"], ["label"]),
                (user_id, friend_id, label, now_ms),
            )
            txn.execute(
                d.insert_ignore("friends", ["user_id", "friend_id", "label", "created_at"]),
                (friend_id, user_id, "", now_ms),
            )

        await self.db.run("add_friend", add_friend_txn)

    async def delete_friend(self, user_id: int, friend_id: int) -> None:
        """End the friendship in both directions."""

        def delete_friend_txn(txn: Txn) -> None:
            txn.execute(
                "DELETE FROM friends WHERE (user_id = ? AND friend_id = ?) OR (user_id = ? AND friend_id = ?)",
                (user_id, friend_id, friend_id, user_id),
            )

        await self.db.run("delete_friend", delete_friend_txn)

    async def list_friends(self, user_id: int, *, after: int = 0, limit: int | None = None) -> list[tuple[int, str]]:
        """``(friend_id, label)`` of the friends with ids above ``after``, by friend id, at most ``limit``."""

        def list_friends_txn(txn: Txn) -> list[tuple[int, str]]:
            sql = "SELECT friend_id, label FROM friends WHERE user_id = ? AND friend_id > ? ORDER BY friend_id"
            args: list[int] = [user_id, after]
            if limit is not None:
                sql += " LIMIT ?"
                args.append(limit)
            rows = txn.query(sql, args)
            return [(int(r[0]), str(r[1])) for r in rows]

        return await self.db.run("list_friends", list_friends_txn)

    async def friends_among(self, user_id: int, user_ids: Sequence[int]) -> set[int]:
        """Those of ``user_ids`` who are friends of ``user_id``."""
        ids = sorted(set(user_ids))
        if not ids:
            return set()

        def friends_among_txn(txn: Txn) -> set[int]:
            rows = txn.query(
                f"SELECT friend_id FROM friends WHERE user_id = ? AND friend_id IN {in_clause(ids)}", [user_id, *ids]
            )
            return {int(r[0]) for r in rows}

        return await self.db.run("friends_among", friends_among_txn)

    async def create_group(
        self, name: str, owner_id: int, member_ids: Sequence[int], now_ms: int, *, max_groups: int | None = None
    ) -> int:
        """Create a group owned by ``owner_id``, who is a member with ``member_ids``.

        Raises:
            SocialLimitError: ``"groups"``, when a member is in ``max_groups`` groups already.
        """
        members = sorted(set(member_ids) | {owner_id})

        def create_group_txn(txn: Txn) -> int:
            if max_groups is not None:
                _lock_users(txn, members)
                _check_group_counts(txn, members, max_groups)
            txn.execute(
                "INSERT INTO chat_groups (name, owner_id, created_at) VALUES (?, ?, ?)",
                (name, owner_id, now_ms),
            )
            group_id = txn.lastrowid
            txn.executemany(
                "INSERT INTO group_members (group_id, user_id, label, created_at) VALUES (?, ?, '', ?)",
                [(group_id, m, now_ms) for m in members],
            )
            return group_id

        return await self.db.run("create_group", create_group_txn)

    async def get_group(self, group_id: int) -> GroupRow | None:
        """The group, or None."""

        def get_group_txn(txn: Txn) -> GroupRow | None:
            rows = txn.query("SELECT id, name, owner_id FROM chat_groups WHERE id = ?", (group_id,))
            return GroupRow(int(rows[0][0]), str(rows[0][1]), int(rows[0][2])) if rows else None

        return await self.db.run("get_group", get_group_txn)

    async def get_members(
        self, group_ids: Sequence[int], *, after: int = 0, limit: int | None = None
    ) -> dict[int, list[tuple[int, str]]]:
        """``{group_id: [(user_id, label), ...]}`` by user id, for each of the groups.

        With ``limit``, each group's list holds at most ``limit`` members with user
        ids above ``after``.
        """
        ids = sorted(set(group_ids))
        if not ids:
            return {}

        def get_members_txn(txn: Txn) -> dict[int, list[tuple[int, str]]]:
            if limit is not None or after:
                page: dict[int, list[tuple[int, str]]] = {}
                for group_id in ids:
                    sql = "SELECT user_id, label FROM group_members WHERE group_id = ? AND user_id > ? ORDER BY user_id"
                    args: list[int] = [group_id, after]
                    if limit is not None:
                        sql += " LIMIT ?"
                        args.append(limit)
                    page[group_id] = [(int(r[0]), str(r[1])) for r in txn.query(sql, args)]
                return page
            rows = txn.query(
                f"SELECT group_id, user_id, label FROM group_members WHERE group_id IN {in_clause(ids)}"
                " ORDER BY group_id, user_id",
                ids,
            )
            members: dict[int, list[tuple[int, str]]] = {g: [] for g in ids}
            for group_id, user_id, label in rows:
                members[int(group_id)].append((int(user_id), str(label)))
            return members

        return await self.db.run("get_members", get_members_txn)

    async def member_counts(self, group_ids: Sequence[int]) -> dict[int, int]:
        """``{group_id: number of members}`` for each of the groups."""
        ids = sorted(set(group_ids))
        if not ids:
            return {}

        def member_counts_txn(txn: Txn) -> dict[int, int]:
            rows = txn.query(
                f"SELECT group_id, COUNT(*) FROM group_members WHERE group_id IN {in_clause(ids)} GROUP BY group_id",
                ids,
            )
            counts = {g: 0 for g in ids}
            counts.update({int(r[0]): int(r[1]) for r in rows})
            return counts

        return await self.db.run("member_counts", member_counts_txn)

    async def group_count(self, user_id: int) -> int:
        """How many groups the user is a member of."""

        def group_count_txn(txn: Txn) -> int:
            return _group_counts(txn, [user_id]).get(user_id, 0)

        return await self.db.run("group_count", group_count_txn)

    async def is_member(self, group_id: int, user_id: int) -> bool:
        """True when the user is a member of the group."""

        def is_member_txn(txn: Txn) -> bool:
            return bool(
                txn.query(
                    "SELECT 1 FROM group_members WHERE group_id = ? AND user_id = ?", (group_id, user_id)
                )
            )

        return await self.db.run("is_member", is_member_txn)

    async def add_members(
        self,
        group_id: int,
        user_ids: Sequence[int],
        now_ms: int,
        *,
        max_size: int | None = None,
        max_groups: int | None = None,
    ) -> None:
        """Add users to the group; those already in it stay as they are.

        Raises:
            SocialLimitError: ``"group_size"`` when the group would have more than
                ``max_size`` members; ``"groups"`` when a new member is in
                ``max_groups`` groups already.
        """

        def add_members_txn(txn: Txn) -> None:
            ids = sorted(set(user_ids))
            if max_size is not None or max_groups is not None:
                # the group row serialises concurrent additions to one group
                txn.query(f"SELECT id FROM chat_groups WHERE id = ?{txn.dialect.for_update}", (group_id,))
                current = {int(r[0]) for r in txn.query("SELECT user_id FROM group_members WHERE group_id = ?", (group_id,))}
                new = [u for u in ids if u not in current]
                if max_size is not None and len(current) + len(new) > max_size:
                    raise SocialLimitError("group_size", group_id, max_size)
                _lock_users(txn, new)
                _check_group_counts(txn, new, max_groups)
                ids = new
            txn.executemany(
                txn.dialect.insert_ignore("group_members", ["group_id", "user_id", "label", "created_at"]),
                [(group_id, u, "", now_ms) for u in ids],
            )

        await self.db.run("add_members", add_members_txn)

    async def remove_members(self, group_id: int, user_ids: Sequence[int], owner_id: int) -> int | None:
        """Remove users from the group; when ``owner_id`` is among them, pass ownership on.

        Returns:
            The new owner's id when ownership passed to the remaining member with
            the lowest user id, else None.
        """
        ids = sorted(set(user_ids))
        if not ids:
            return None

        def remove_members_txn(txn: Txn) -> int | None:
            txn.execute(
                f"DELETE FROM group_members WHERE group_id = ? AND user_id IN {in_clause(ids)}",
                [group_id, *ids],
            )
            if owner_id not in ids:
                return None
            rows = txn.query("SELECT MIN(user_id) FROM group_members WHERE group_id = ?", (group_id,))
            new_owner = rows[0][0]
            if new_owner is None:
                return None
            txn.execute("UPDATE chat_groups SET owner_id = ? WHERE id = ?", (int(new_owner), group_id))
            return int(new_owner)

        return await self.db.run("remove_members", remove_members_txn)

    async def set_member_label(self, group_id: int, user_id: int, label: str) -> None:
        """Set what the member calls itself in the group."""

        def set_member_label_txn(txn: Txn) -> None:
            txn.execute(
                "UPDATE group_members SET label = ? WHERE group_id = ? AND user_id = ?",
                (label, group_id, user_id),
            )

        await self.db.run("set_member_label", set_member_label_txn)

    async def groups_of(self, user_id: int, *, after: int = 0, limit: int | None = None) -> list[GroupRow]:
        """The groups with ids above ``after`` the user is a member of, by id, at most ``limit``."""

        def groups_of_txn(txn: Txn) -> list[GroupRow]:
            sql = (
                "SELECT g.id, g.name, g.owner_id FROM group_members m JOIN chat_groups g ON g.id = m.group_id"
                " WHERE m.user_id = ? AND m.group_id > ? ORDER BY g.id"
            )
            args: list[int] = [user_id, after]
            if limit is not None:
                sql += " LIMIT ?"
                args.append(limit)
            rows = txn.query(sql, args)
            return [GroupRow(int(r[0]), str(r[1]), int(r[2])) for r in rows]

        return await self.db.run("groups_of", groups_of_txn)
