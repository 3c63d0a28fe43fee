"""Friendships and groups."""

from dataclasses import dataclass
from typing import Sequence

from goim.storage.database import Database, Txn, in_clause


@dataclass(frozen=True, slots=True)
class GroupRow:
    id: int
    name: str
    owner_id: int


class SocialStore:
    """Rows of ``friends``, ``chat_groups`` and ``group_members``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_friend(self, user_id: int, friend_id: int, label: str, now_ms: int) -> None:
        """Make the two users friends of each other (idempotent).

        ``label`` is what ``user_id`` calls ``friend_id``; the other direction keeps
        its label, or gets an empty one when it is new.
        """

        def add_friend_txn(txn: Txn) -> None:
            d = txn.dialect
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

    async def list_friends(self, user_id: int) -> list[tuple[int, str]]:
        """``(friend_id, label)`` of every friend, by friend id."""

        def list_friends_txn(txn: Txn) -> list[tuple[int, str]]:
            rows = txn.query(
                "SELECT friend_id, label FROM friends WHERE user_id = ? ORDER BY friend_id", (user_id,)
            )
            return [(int(r[0]), str(r[1])) for r in rows]

        return await self.db.run("list_friends", list_friends_txn)

    async def create_group(self, name: str, owner_id: int, member_ids: Sequence[int], now_ms: int) -> int:
        """Create a group owned by ``owner_id``, who is a member with ``member_ids``."""
        members = sorted(set(member_ids) | {owner_id})

        def create_group_txn(txn: Txn) -> int:
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

    async def get_members(self, group_ids: Sequence[int]) -> dict[int, list[tuple[int, str]]]:
        """``{group_id: [(user_id, label), ...]}`` by user id, for each of the groups."""
        ids = sorted(set(group_ids))
        if not ids:
            return {}

        def get_members_txn(txn: Txn) -> dict[int, list[tuple[int, str]]]:
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

    async def is_member(self, group_id: int, user_id: int) -> bool:
        """True when the user is a member of the group."""

        def is_member_txn(txn: Txn) -> bool:
            return bool(
                txn.query(
                    "SELECT 1 FROM group_members WHERE group_id = ? AND user_id = ?", (group_id, user_id)
                )
            )

        return await self.db.run("is_member", is_member_txn)

    async def add_members(self, group_id: int, user_ids: Sequence[int], now_ms: int) -> None:
        """Add users to the group; those already in it stay as they are."""

        def add_members_txn(txn: Txn) -> None:
            txn.executemany(
                txn.dialect.insert_ignore("group_members", ["group_id", "user_id", "label", "created_at"]),
                [(group_id, u, "", now_ms) for u in sorted(set(user_ids))],
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

    async def groups_of(self, user_id: int) -> list[GroupRow]:
        """The groups the user is a member of, by id."""

        def groups_of_txn(txn: Txn) -> list[GroupRow]:
            rows = txn.query(
                "SELECT g.id, g.name, g.owner_id FROM group_members m JOIN chat_groups g ON g.id = m.group_id"
                " WHERE m.user_id = ? ORDER BY g.id",
                (user_id,),
            )
            return [GroupRow(int(r[0]), str(r[1]), int(r[2])) for r in rows]

        return await self.db.run("groups_of", groups_of_txn)
