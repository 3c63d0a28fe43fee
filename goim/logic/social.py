"""Friends and groups."""

from dataclasses import dataclass, field
from typing import Any, Sequence

from twisted.logger import Logger

from goim.logic.accounts import MAX_NAME, check_text, is_id
from goim.logic.errors import (
    GROUP_FULL,
    GROUP_NOT_FOUND,
    NOT_GROUP_MEMBER,
    PERMISSION_DENIED,
    TOO_MANY_FRIENDS,
    TOO_MANY_GROUPS,
    USER_NOT_FOUND,
    GoimError,
    bad_request,
)
from goim.logs import goim_observer
from goim.storage.accounts import AccountStore, UserRow
from goim.storage.social import GroupRow, SocialLimitError, SocialStore
from goim.util import Clock, now_ms

log = Logger(observer=goim_observer)

#: the most members a group may have by default (every send stores one copy per member)
MAX_GROUP_MEMBERS = 500

#: page sizes: the default and the most one page of a list may hold
FRIEND_PAGE = 1000
GROUP_PAGE = 100
MEMBER_PAGE = 500
#: the most member entries one page of ``GET /group/all`` carries, all groups together
GROUP_PAGE_MEMBERS = 1000


@dataclass(frozen=True)
class SocialLimits:
    """How large the social graph may grow (``--max-group-size`` and friends)."""

    #: members of one group, the owner included
    group_size: int = MAX_GROUP_MEMBERS
    #: groups one user is a member of
    groups_per_user: int = 200
    #: friends of one user
    friends_per_user: int = 1000


@dataclass(frozen=True, slots=True)
class Contact:
    """A friend or a group member: the relation's label plus the user's profile.

    ``number`` (the sign-in name, often a phone number) is empty unless the user
    is the viewer or one of the viewer's friends.
    """

    user_id: int
    label: str
    number: str
    nickname: str
    sex: int
    avatar: str


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A group with (a page of) its members."""

    id: int
    name: str
    owner_id: int
    users: list[Contact]
    #: how many members the group has (``users`` may hold fewer)
    member_count: int = 0
    #: cursor for the members after ``users`` (``GET /group/members``), None when ``users`` is complete
    members_next: int | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: the items and the cursor of the next page (None on the last)."""

    items: list[Any] = field(default_factory=list)
    next: int | None = None


class SocialService:
    """Friendships (always mutual) and groups (owner plus members)."""

    def __init__(
        self, accounts: AccountStore, social: SocialStore, clock: Clock, *, limits: SocialLimits = SocialLimits()
    ) -> None:
        self.accounts = accounts
        self.social = social
        self._clock = clock
        self.limits = limits

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
            GoimError: 1004 for an unknown user, 2 for befriending oneself,
                1010 when either user has the most friends allowed.
        """
        check_text("label", label, max_length=MAX_NAME, allow_empty=True)
        if friend_id == user_id:
            raise bad_request("a user cannot befriend itself")
        await self._require_users([friend_id])
        try:
            await self.social.add_friend(
                user_id, friend_id, label, now_ms(self._clock), max_friends=self.limits.friends_per_user
            )
        except SocialLimitError as e:
            raise self._limit_error(e, user_id) from None
        log.info("users {user_id} and {friend_id} are friends", user_id=user_id, friend_id=friend_id)

    async def delete_friend(self, user_id: int, friend_id: int) -> None:
        """End a friendship in both directions (a no-op when there is none)."""
        await self.social.delete_friend(user_id, friend_id)
        log.info("users {user_id} and {friend_id} are no longer friends", user_id=user_id, friend_id=friend_id)

    def _limit_error(self, error: SocialLimitError, caller_id: int) -> GoimError:
        """The API error for a limit the storage refused a write at."""
        who = "you have" if error.subject_id == caller_id else f"user {error.subject_id} has"
        log.info(
            "refused: {kind} limit {limit} reached by {subject_id} (caller {caller_id})",
            kind=error.kind,
            limit=error.limit,
            subject_id=error.subject_id,
            caller_id=caller_id,
        )
        if error.kind == "friends":
            return GoimError(TOO_MANY_FRIENDS, f"{who} {error.limit} friends, the most allowed")
        if error.kind == "groups":
            return GoimError(TOO_MANY_GROUPS, f"{who} joined {error.limit} groups, the most allowed")
        return GoimError(GROUP_FULL, f"a group has at most {error.limit} members")

    async def list_friends(self, user_id: int, *, after: int = 0, limit: int = FRIEND_PAGE) -> Page:
        """One page of the user's friends with their profiles, by user id.

        Args:
            after: the cursor: friends with user ids above it.
            limit: the page size (at most ``FRIEND_PAGE``).
        """
        limit = max(1, min(limit, FRIEND_PAGE))
        friends = await self.social.list_friends(user_id, after=after, limit=limit + 1)
        more = len(friends) > limit
        friends = friends[:limit]
        contacts = await self._contacts(friends, visible={u for u, _ in friends})
        return Page(contacts, friends[-1][0] if more else None)

    async def _contacts(
        self, relations: Sequence[tuple[int, str]], *, visible: set[int], users: dict[int, UserRow] | None = None
    ) -> list[Contact]:
        """Contacts of the relations; numbers only for the users in ``visible``."""
        if users is None:
            users = await self.accounts.get_users([u for u, _ in relations])
        return [
            Contact(u, label, p.number if u in visible else "", p.nickname, p.sex, p.avatar)
            for u, label in relations
            if (p := users.get(u)) is not None
        ]

    async def _members_as_seen_by(self, viewer_id: int, relations: Sequence[tuple[int, str]]) -> list[Contact]:
        """Group members' contacts; the viewer sees the numbers of its friends and its own."""
        visible = await self.social.friends_among(viewer_id, [u for u, _ in relations]) | {viewer_id}
        return await self._contacts(relations, visible=visible)

    async def create_group(self, owner_id: int, name: str, user_ids: Sequence[int]) -> int:
        """Create a group; the creator is its owner and a member.

        Raises:
            GoimError: 1004 when one of ``user_ids`` is unknown, 1008 for more
                members than a group may have, 1009 when a member (the owner
                included) is in the most groups allowed.
        """
        check_text("name", name, max_length=MAX_NAME)
        members = set(user_ids) | {owner_id}
        if len(members) > self.limits.group_size:
            log.info("refused: group of {count} members by {owner_id}", count=len(members), owner_id=owner_id)
            raise GoimError(GROUP_FULL, f"a group has at most {self.limits.group_size} members")
        await self._require_users(sorted(members - {owner_id}))
        try:
            group_id = await self.social.create_group(
                name, owner_id, sorted(members), now_ms(self._clock), max_groups=self.limits.groups_per_user
            )
        except SocialLimitError as e:
            raise self._limit_error(e, owner_id) from None
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
            GoimError: 1005 unknown group, 1006 caller not a member, 1004 unknown
                user, 1008 group full, 1009 a new member is in the most groups allowed.
        """
        await self._group_for_member(caller_id, group_id)
        if len(set(user_ids)) > self.limits.group_size:
            raise GoimError(GROUP_FULL, f"a group has at most {self.limits.group_size} members")
        await self._require_users(user_ids)
        try:
            await self.social.add_members(
                group_id,
                user_ids,
                now_ms(self._clock),
                max_size=self.limits.group_size,
                max_groups=self.limits.groups_per_user,
            )
        except SocialLimitError as e:
            raise self._limit_error(e, caller_id) from None
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
        """A group with the first page of its members (``MEMBER_PAGE``), for a member.

        Raises:
            GoimError: 1005 unknown group, 1006 caller not a member.
        """
        group = await self._group_for_member(caller_id, group_id)
        return (await self._with_members(caller_id, [group], member_budget=MEMBER_PAGE))[0]

    async def group_members(self, caller_id: int, group_id: int, *, after: int = 0, limit: int = MEMBER_PAGE) -> Page:
        """One page of a group's members, by user id, for a member.

        Raises:
            GoimError: 1005 unknown group, 1006 caller not a member.
        """
        await self._group_for_member(caller_id, group_id)
        limit = max(1, min(limit, MEMBER_PAGE))
        members = (await self.social.get_members([group_id], after=after, limit=limit + 1))[group_id]
        more = len(members) > limit
        members = members[:limit]
        return Page(await self._members_as_seen_by(caller_id, members), members[-1][0] if more else None)

    async def list_groups(self, user_id: int, *, after: int = 0, limit: int = GROUP_PAGE) -> Page:
        """One page of the user's groups, by group id, each with (the first of) its members.

        A page holds at most ``limit`` groups (at most ``GROUP_PAGE``) and at most
        ``GROUP_PAGE_MEMBERS`` member entries: it ends before a group whose
        members would not fit, except that its first group always comes, with at
        most ``MEMBER_PAGE`` members (``members_next`` says when there are more).
        """
        limit = max(1, min(limit, GROUP_PAGE))
        groups = await self.social.groups_of(user_id, after=after, limit=limit + 1)
        more = len(groups) > limit
        groups = groups[:limit]
        counts = await self.social.member_counts([g.id for g in groups])
        budget = GROUP_PAGE_MEMBERS
        chosen: list[GroupRow] = []
        for g in groups:
            shown = min(counts[g.id], MEMBER_PAGE)
            if chosen and shown > budget:
                more = True
                break
            chosen.append(g)
            budget -= shown
        infos = await self._with_members(user_id, chosen, member_budget=MEMBER_PAGE, counts=counts)
        return Page(infos, chosen[-1].id if more and chosen else None)

    async def _with_members(
        self,
        viewer_id: int,
        groups: Sequence[GroupRow],
        *,
        member_budget: int,
        counts: dict[int, int] | None = None,
    ) -> list[GroupInfo]:
        """The groups with up to ``member_budget`` members each, as ``viewer_id`` sees them."""
        if not groups:
            return []
        ids = [g.id for g in groups]
        if counts is None:
            counts = await self.social.member_counts(ids)
        members = await self.social.get_members(ids, limit=member_budget)
        every = [m for g in ids for m in members[g]]
        visible = await self.social.friends_among(viewer_id, [u for u, _ in every]) | {viewer_id}
        users = await self.accounts.get_users([u for u, _ in every])
        result = []
        for g in groups:
            page = members[g.id]
            complete = len(page) >= counts[g.id]
            contacts = await self._contacts(page, visible=visible, users=users)
            result.append(
                GroupInfo(g.id, g.name, g.owner_id, contacts, counts[g.id], None if complete or not page else page[-1][0])
            )
        return result
