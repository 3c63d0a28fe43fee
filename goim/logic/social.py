"""Friends and groups."""

from dataclasses import dataclass
from typing import Sequence

from twisted.logger import Logger

from goim.logic.accounts import MAX_NAME, check_text, is_id
from goim.logic.errors import (
    GROUP_NOT_FOUND,
    NOT_GROUP_MEMBER,
    PERMISSION_DENIED,
    USER_NOT_FOUND,
    GoimError,
    bad_request,
)
from goim.logs import goim_observer
from goim.storage.accounts import AccountStore, UserRow
from goim.storage.social import GroupRow, SocialStore
from goim.util import Clock, now_ms

log = Logger(observer=goim_observer)

#: the most members a group may have (every send stores one copy per member)
MAX_GROUP_MEMBERS = 2000


@dataclass(frozen=True, slots=True)
class Contact:
    """A friend or a group member: the relation's label plus the user's profile."""

    user_id: int
    label: str
    number: str
    nickname: str
    sex: int
    avatar: str


@dataclass(frozen=True, slots=True)
class GroupInfo:
    id: int
    name: str
    owner_id: int
    users: list[Contact]


class SocialService:
    """Friendships (always mutual) and groups (owner plus members)."""

    def __init__(self, accounts: AccountStore, social: SocialStore, clock: Clock) -> None:
        self.accounts = accounts
        self.social = social
        self._clock = clock

    async def _require_users(self, user_ids: Sequence[int]) -> dict[int, UserRow]:
        for user_id in user_ids:
            if not is_id(user_id):
                raise bad_request("user ids must be positive 64-bit integers")
        users = await self.accounts.get_users(user_ids)
        missing = sorted(set(user_ids) - users.keys())
        if missing:
            raise GoimError(USER_NOT_FOUND, f"user {missing[0]} not found")
        return users

    async def add_friend(self, user_id: int, friend_id: int, label: str) -> None:
        """Make two users friends both ways (idempotent); ``label`` is the caller's name for the friend.

        Raises:
            GoimError: 1004 for an unknown user, 2 for befriending oneself.
        """
        check_text("label", label, max_length=MAX_NAME, allow_empty=True)
        if friend_id == user_id:
            raise bad_request("a user cannot befriend itself")
        await self._require_users([friend_id])
        await self.social.add_friend(user_id, friend_id, label, now_ms(self._clock))
        log.info("users {user_id} and {friend_id} are friends", user_id=user_id, friend_id=friend_id)

    async def delete_friend(self, user_id: int, friend_id: int) -> None:
        """End a friendship in both directions (a no-op when there is none)."""
        await self.social.delete_friend(user_id, friend_id)
        log.info("users {user_id} and {friend_id} are no longer friends", user_id=user_id, friend_id=friend_id)

    async def list_friends(self, user_id: int) -> list[Contact]:
        """The user's friends with their profiles."""
        friends = await self.social.list_friends(user_id)
        return await self._contacts(friends)

    async def _contacts(self, relations: Sequence[tuple[int, str]]) -> list[Contact]:
        users = await self.accounts.get_users([u for u, _ in relations])
        return [
            Contact(u, label, p.number, p.nickname, p.sex, p.avatar)
            for u, label in relations
            if (p := users.get(u)) is not None
        ]

    async def create_group(self, owner_id: int, name: str, user_ids: Sequence[int]) -> int:
        """Create a group; the creator is its owner and a member.

        Raises:
            GoimError: 1004 when one of ``user_ids`` is unknown.
        """
        check_text("name", name, max_length=MAX_NAME)
        members = set(user_ids) | {owner_id}
        if len(members) > MAX_GROUP_MEMBERS:
            raise bad_request(f"a group has at most {MAX_GROUP_MEMBERS} members")
        await self._require_users(sorted(members - {owner_id}))
        group_id = await self.social.create_group(name, owner_id, sorted(members), now_ms(self._clock))
        log.info("user {owner_id} created group {group_id}", owner_id=owner_id, group_id=group_id)
        return group_id

    async def _group_for_member(self, user_id: int, group_id: int) -> GroupRow:
        group = await self.social.get_group(group_id) if is_id(group_id) else None
        if group is None:
            raise GoimError(GROUP_NOT_FOUND, f"group {group_id} not found")
        if not await self.social.is_member(group_id, user_id):
            raise GoimError(NOT_GROUP_MEMBER, f"not a member of group {group_id}")
        return group

    async def add_members(self, caller_id: int, group_id: int, user_ids: Sequence[int]) -> None:
        """A member adds users to a group.

        Raises:
            GoimError: 1005 unknown group, 1006 caller not a member, 1004 unknown user.
        """
        await self._group_for_member(caller_id, group_id)
        await self._require_users(user_ids)
        current = (await self.social.get_members([group_id]))[group_id]
        if len({u for u, _ in current} | set(user_ids)) > MAX_GROUP_MEMBERS:
            raise bad_request(f"a group has at most {MAX_GROUP_MEMBERS} members")
        await self.social.add_members(group_id, user_ids, now_ms(self._clock))
        log.info("user {caller_id} added {user_ids} to group {group_id}", caller_id=caller_id, user_ids=list(user_ids), group_id=group_id)

    async def remove_members(self, caller_id: int, group_id: int, user_ids: Sequence[int]) -> None:
        """The owner removes anyone; any other member only itself.

        An owner who leaves passes the group to the remaining member with the
        lowest user id; a group nobody is left in keeps its rows but has no owner
        who can act on it.

        Raises:
            GoimError: 1005, 1006, or 1007 when a non-owner removes someone else.
        """
        group = await self._group_for_member(caller_id, group_id)
        if caller_id != group.owner_id and set(user_ids) - {caller_id}:
            raise GoimError(PERMISSION_DENIED, "only the group owner can remove other members")
        new_owner = await self.social.remove_members(group_id, user_ids, group.owner_id)
        if new_owner is not None:
            log.info("group {group_id} passed to user {owner_id}", group_id=group_id, owner_id=new_owner)
        log.info("user {caller_id} removed {user_ids} from group {group_id}", caller_id=caller_id, user_ids=list(user_ids), group_id=group_id)

    async def set_label(self, caller_id: int, group_id: int, label: str) -> None:
        """Set the caller's own label in a group."""
        check_text("label", label, max_length=MAX_NAME, allow_empty=True)
        await self._group_for_member(caller_id, group_id)
        await self.social.set_member_label(group_id, caller_id, label)

    async def get_group(self, caller_id: int, group_id: int) -> GroupInfo:
        """A group with its members, for a member.

        Raises:
            GoimError: 1005 unknown group, 1006 caller not a member.
        """
        group = await self._group_for_member(caller_id, group_id)
        return (await self._with_members([group]))[0]

    async def list_groups(self, user_id: int) -> list[GroupInfo]:
        """Every group the user belongs to, with members."""
        return await self._with_members(await self.social.groups_of(user_id))

    async def _with_members(self, groups: Sequence[GroupRow]) -> list[GroupInfo]:
        members = await self.social.get_members([g.id for g in groups])
        result = []
        for g in groups:
            result.append(GroupInfo(g.id, g.name, g.owner_id, await self._contacts(members[g.id])))
        return result
