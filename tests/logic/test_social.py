"""SocialService on SQLite and on MariaDB/MySQL: friendships and groups."""

from typing import TYPE_CHECKING

from twisted.trial.unittest import TestCase

from twisted.internet import reactor

from goim.logic import social as social_module
from goim.logic.social import Contact, GroupInfo, SocialLimits, SocialService
from goim.storage.database import Txn
from tests.support.db import BackendMixin, MySQLBackend, SQLiteBackend
from tests.support.services import Services, ServiceTests

if TYPE_CHECKING:

    class _Base(BackendMixin, TestCase):
        pass

else:
    _Base = object


class SocialTests(ServiceTests, _Base):
    """Runs on each backend through the subclasses at the bottom of the module."""

    async def user(self, s: Services, number: str, *, sex: int = 0, avatar: str = "") -> int:
        """Register a user with nickname ``Nick <number>``; returns its id."""
        device_id, _ = await s.accounts.register_device(
            device_type=5, brand="Firefox", model="128", system_version="Linux", app_version="1.0"
        )
        session = await s.accounts.register_user(
            device_id, number=number, nickname=f"Nick {number}", sex=sex, avatar=avatar, password="secret-pw"
        )
        return session.user_id

    async def users(self, s: Services, *numbers: str) -> list[int]:
        """Register one user per number; returns their ids in order."""
        return [await self.user(s, n) for n in numbers]

    def contact(self, user_id: int, number: str, label: str = "", *, sex: int = 0, avatar: str = "") -> Contact:
        """The Contact expected for a user registered by ``user``."""
        return Contact(user_id, label, number, f"Nick {number}", sex, avatar)

    def member(self, user_id: int, number: str, label: str = "", *, sex: int = 0, avatar: str = "") -> Contact:
        """The Contact of a group member who is not the viewer's friend: no number."""
        return Contact(user_id, label, "", f"Nick {number}", sex, avatar)

    async def friends(self, s: Services, user_id: int) -> list[Contact]:
        """The first page of the user's friends."""
        return (await s.social.list_friends(user_id)).items

    async def groups(self, s: Services, user_id: int) -> list[GroupInfo]:
        """The first page of the user's groups."""
        return (await s.social.list_groups(user_id)).items

    async def friend_rows(self, s: Services) -> list[tuple[int, int, str]]:
        """Every ``(user_id, friend_id, label)`` row of ``friends``."""

        def txn(t: Txn) -> list[tuple[int, int, str]]:
            rows = t.query("SELECT user_id, friend_id, label FROM friends ORDER BY user_id, friend_id")
            return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]

        return await s.db.run("test_friends", txn)

    async def group_count(self, s: Services) -> int:
        """How many rows ``chat_groups`` has."""

        def txn(t: Txn) -> int:
            return int(t.query("SELECT COUNT(*) FROM chat_groups")[0][0])

        return await s.db.run("test_groups", txn)

    async def member_ids(self, s: Services, caller_id: int, group_id: int) -> list[int]:
        """The member ids of a group as seen by ``caller_id``."""
        group = await s.social.get_group(caller_id, group_id)
        return [u.user_id for u in group.users]

    # friends

    async def test_add_friend_is_mutual(self) -> None:
        """Both users list each other, with profiles; the caller's label goes on its own side only."""
        s = await self.services()
        a = await self.user(s, "alice", sex=2, avatar="https://a.example/alice.png")
        b = await self.user(s, "bob", sex=1, avatar="https://a.example/bob.png")
        await s.social.add_friend(a, b, "Bobby")
        self.assertEqual(
            await self.friends(s, a), [self.contact(b, "bob", "Bobby", sex=1, avatar="https://a.example/bob.png")]
        )
        self.assertEqual(
            await self.friends(s, b), [self.contact(a, "alice", "", sex=2, avatar="https://a.example/alice.png")]
        )

    async def test_add_friend_is_idempotent(self) -> None:
        """Adding twice keeps one row each way; the second call updates the caller's label only."""
        s = await self.services()
        a, b = await self.users(s, "alice", "bob")
        await s.social.add_friend(a, b, "Bobby")
        await s.social.add_friend(b, a, "Ally")
        await s.social.add_friend(a, b, "Bob")
        await s.social.add_friend(a, b, "Bob")
        self.assertEqual(await self.friend_rows(s), sorted([(a, b, "Bob"), (b, a, "Ally")]))
        self.assertEqual(await self.friends(s, a), [self.contact(b, "bob", "Bob")])
        self.assertEqual(await self.friends(s, b), [self.contact(a, "alice", "Ally")])

    async def test_add_friend_back_keeps_the_other_label(self) -> None:
        """When the friend adds the caller back, the caller's label for the friend is kept."""
        s = await self.services()
        a, b = await self.users(s, "alice", "bob")
        await s.social.add_friend(a, b, "Bobby")
        await s.social.add_friend(b, a, "")
        self.assertEqual(await self.friend_rows(s), sorted([(a, b, "Bobby"), (b, a, "")]))

    async def test_add_friend_unknown_user(self) -> None:
        """Befriending a user who does not exist gives 1004 and stores nothing."""
        s = await self.services()
        a = await self.user(s, "alice")
        await self.assert_code(s.social.add_friend(a, a + 100, "ghost"), 1004)
        self.assertEqual(await self.friend_rows(s), [])

    async def test_add_friend_self_or_bad_input(self) -> None:
        """Befriending oneself, a non-positive id or an over-long label gives code 2."""
        s = await self.services()
        a, b = await self.users(s, "alice", "bob")
        await self.assert_code(s.social.add_friend(a, a, "me"), 2)
        await self.assert_code(s.social.add_friend(a, 0, "x"), 2)
        await self.assert_code(s.social.add_friend(a, -b, "x"), 2)
        await self.assert_code(s.social.add_friend(a, b, "l" * 65), 2)
        self.assertEqual(await self.friend_rows(s), [])

    async def test_delete_friend_removes_both_directions(self) -> None:
        """Deleting a friendship removes both rows, whoever deletes, and leaves other friendships."""
        s = await self.services()
        a, b, c = await self.users(s, "alice", "bob", "carol")
        await s.social.add_friend(a, b, "B")
        await s.social.add_friend(a, c, "C")
        await s.social.add_friend(c, b, "B")
        await s.social.delete_friend(b, a)
        self.assertEqual(await self.friends(s, a), [self.contact(c, "carol", "C")])
        self.assertEqual(await self.friends(s, b), [self.contact(c, "carol", "")])
        self.assertEqual(await self.friend_rows(s), sorted([(a, c, "C"), (c, a, ""), (c, b, "B"), (b, c, "")]))
        await s.social.delete_friend(a, c)
        await s.social.delete_friend(a, c)
        self.assertEqual(await self.friends(s, a), [])
        self.assertEqual(await self.friend_rows(s), sorted([(c, b, "B"), (b, c, "")]))

    async def test_list_friends_order_and_profiles(self) -> None:
        """Friends are listed by user id whatever the order they were added in, with all profile fields."""
        s = await self.services()
        a = await self.user(s, "alice")
        b = await self.user(s, "bob", sex=1, avatar="b.png")
        c = await self.user(s, "carol", sex=2, avatar="c.png")
        d = await self.user(s, "dave")
        self.assertEqual(await self.friends(s, a), [])
        await s.social.add_friend(a, d, "D")
        await s.social.add_friend(a, b, "B")
        await s.social.add_friend(c, a, "A")
        friends = await self.friends(s, a)
        self.assertEqual(
            friends,
            [
                self.contact(b, "bob", "B", sex=1, avatar="b.png"),
                self.contact(c, "carol", "", sex=2, avatar="c.png"),
                self.contact(d, "dave", "D"),
            ],
        )
        self.assertEqual(await self.friends(s, d), [self.contact(a, "alice")])

    # groups

    async def test_create_group_creator_is_owner_and_member(self) -> None:
        """The creator owns the group and is a member alongside the listed users."""
        s = await self.services()
        a, b, c = await self.users(s, "alice", "bob", "carol")
        group_id = await s.social.create_group(b, "team", [c, a, c])
        self.assertGreater(group_id, 0)
        group = await s.social.get_group(b, group_id)
        self.assertEqual((group.id, group.name, group.owner_id), (group_id, "team", b))
        self.assertEqual(
            group.users, [self.member(a, "alice"), self.contact(b, "bob"), self.member(c, "carol")]
        )
        solo = await s.social.create_group(a, "solo", [])
        self.assertNotEqual(solo, group_id)
        self.assertEqual(await self.member_ids(s, a, solo), [a])
        with_self = await s.social.create_group(c, "with self", [c, a])
        self.assertEqual(await self.member_ids(s, c, with_self), [a, c])

    async def test_create_group_unknown_member(self) -> None:
        """An unknown member gives 1004 and creates no group."""
        s = await self.services()
        a, b = await self.users(s, "alice", "bob")
        await self.assert_code(s.social.create_group(a, "team", [b, b + 100]), 1004)
        self.assertEqual(await self.group_count(s), 0)
        self.assertEqual(await self.groups(s, a), [])

    async def test_create_group_bad_input(self) -> None:
        """An empty, blank or over-long name, or a non-positive member id, gives code 2."""
        s = await self.services()
        a, b = await self.users(s, "alice", "bob")
        for name in ("", "   ", "n" * 65):
            await self.assert_code(s.social.create_group(a, name, [b]), 2)
        await self.assert_code(s.social.create_group(a, "team", [b, 0]), 2)
        self.assertEqual(await self.group_count(s), 0)

    async def test_add_members(self) -> None:
        """A member (not only the owner) adds users, who then see the group."""
        s = await self.services()
        a, b, c, d = await self.users(s, "alice", "bob", "carol", "dave")
        group_id = await s.social.create_group(a, "team", [b])
        await s.social.add_members(b, group_id, [d, c])
        self.assertEqual(await self.member_ids(s, c, group_id), [a, b, c, d])
        group = await s.social.get_group(d, group_id)
        self.assertEqual(group.owner_id, a)

    async def test_add_members_caller_not_member(self) -> None:
        """A caller outside the group gets 1006 and nobody is added."""
        s = await self.services()
        a, b, c = await self.users(s, "alice", "bob", "carol")
        group_id = await s.social.create_group(a, "team", [])
        await self.assert_code(s.social.add_members(b, group_id, [b, c]), 1006)
        self.assertEqual(await self.member_ids(s, a, group_id), [a])

    async def test_add_members_unknown_group(self) -> None:
        """An unknown or non-positive group id gives 1005."""
        s = await self.services()
        a, b = await self.users(s, "alice", "bob")
        group_id = await s.social.create_group(a, "team", [])
        for bad in (group_id + 1, group_id + 1000, 0, -group_id):
            await self.assert_code(s.social.add_members(a, bad, [b]), 1005)

    async def test_add_members_unknown_user(self) -> None:
        """An unknown user gives 1004 and none of the listed users is added."""
        s = await self.services()
        a, b = await self.users(s, "alice", "bob")
        group_id = await s.social.create_group(a, "team", [])
        await self.assert_code(s.social.add_members(a, group_id, [b, b + 100]), 1004)
        self.assertEqual(await self.member_ids(s, a, group_id), [a])

    async def test_add_existing_members_is_a_no_op(self) -> None:
        """Adding users already in the group changes nothing, labels included."""
        s = await self.services()
        a, b, c = await self.users(s, "alice", "bob", "carol")
        group_id = await s.social.create_group(a, "team", [b])
        await s.social.set_label(b, group_id, "bee")
        before = await s.social.get_group(a, group_id)
        await s.social.add_members(a, group_id, [b, a])
        await s.social.add_members(b, group_id, [])
        self.assertEqual(await s.social.get_group(a, group_id), before)
        await s.social.add_members(b, group_id, [b, c])
        after = await s.social.get_group(a, group_id)
        self.assertEqual(
            after.users, [self.contact(a, "alice"), self.member(b, "bob", "bee"), self.member(c, "carol")]
        )

    async def test_owner_removes_anyone(self) -> None:
        """The owner removes other members, who then lose access."""
        s = await self.services()
        a, b, c, d = await self.users(s, "alice", "bob", "carol", "dave")
        group_id = await s.social.create_group(a, "team", [b, c, d])
        await s.social.remove_members(a, group_id, [b, d])
        self.assertEqual(await self.member_ids(s, a, group_id), [a, c])
        await self.assert_code(s.social.get_group(b, group_id), 1006)
        await self.assert_code(s.social.add_members(d, group_id, [d]), 1006)
        self.assertEqual([g.id for g in await self.groups(s, b)], [])

    async def test_owner_leaving_passes_the_group_on(self) -> None:
        """An owner who leaves hands ownership to the remaining member with the lowest id."""
        s = await self.services()
        a, b, c = await self.users(s, "alice", "bob", "carol")
        group_id = await s.social.create_group(a, "team", [c, b])
        await s.social.remove_members(a, group_id, [a])
        group = await s.social.get_group(c, group_id)
        self.assertEqual((group.owner_id, [u.user_id for u in group.users]), (b, [b, c]))
        await s.social.remove_members(b, group_id, [c])
        self.assertEqual(await self.member_ids(s, b, group_id), [b])

    async def test_non_owner_cannot_remove_others(self) -> None:
        """A member who is not the owner gets 1007 for removing anyone else, itself included in the list."""
        s = await self.services()
        a, b, c = await self.users(s, "alice", "bob", "carol")
        group_id = await s.social.create_group(a, "team", [b, c])
        await self.assert_code(s.social.remove_members(b, group_id, [c]), 1007)
        await self.assert_code(s.social.remove_members(b, group_id, [a]), 1007)
        await self.assert_code(s.social.remove_members(b, group_id, [b, c]), 1007)
        self.assertEqual(await self.member_ids(s, a, group_id), [a, b, c])

    async def test_non_owner_removes_itself(self) -> None:
        """A member who is not the owner may leave the group."""
        s = await self.services()
        a, b, c = await self.users(s, "alice", "bob", "carol")
        group_id = await s.social.create_group(a, "team", [b, c])
        await s.social.remove_members(b, group_id, [b])
        self.assertEqual(await self.member_ids(s, a, group_id), [a, c])
        await self.assert_code(s.social.get_group(b, group_id), 1006)
        await self.assert_code(s.social.remove_members(b, group_id, [b]), 1006)

    async def test_remove_members_unknown_group_or_outsider(self) -> None:
        """Removing from an unknown group gives 1005; an outsider removing gives 1006."""
        s = await self.services()
        a, b, c = await self.users(s, "alice", "bob", "carol")
        group_id = await s.social.create_group(a, "team", [b])
        await self.assert_code(s.social.remove_members(a, group_id + 1, [b]), 1005)
        await self.assert_code(s.social.remove_members(c, group_id, [b]), 1006)
        await self.assert_code(s.social.remove_members(c, group_id, [c]), 1006)
        self.assertEqual(await self.member_ids(s, a, group_id), [a, b])

    async def test_set_label(self) -> None:
        """A member sets its own label in one group, seen by everyone there and nowhere else."""
        s = await self.services()
        a, b, c = await self.users(s, "alice", "bob", "carol")
        g1 = await s.social.create_group(a, "one", [b])
        g2 = await s.social.create_group(a, "two", [b])
        await s.social.set_label(b, g1, "Bee 🐝")
        await s.social.set_label(a, g1, "boss")
        await s.social.set_label(a, g1, "chief")
        self.assertEqual(
            (await s.social.get_group(b, g1)).users,
            [self.member(a, "alice", "chief"), self.contact(b, "bob", "Bee 🐝")],
        )
        self.assertEqual((await s.social.get_group(a, g2)).users, [self.contact(a, "alice"), self.member(b, "bob")])
        await s.social.set_label(b, g1, "")
        self.assertEqual((await s.social.get_group(a, g1)).users[1].label, "")
        await self.assert_code(s.social.set_label(c, g1, "intruder"), 1006)
        await self.assert_code(s.social.set_label(b, g2 + 100, "x"), 1005)
        await self.assert_code(s.social.set_label(b, g1, "l" * 65), 2)

    async def test_get_group_for_member(self) -> None:
        """get_group returns id, name, owner_id and the members by user id with labels and profiles."""
        s = await self.services()
        a = await self.user(s, "alice", sex=2, avatar="alice.png")
        b = await self.user(s, "bob", sex=1)
        c = await self.user(s, "carol")
        group_id = await s.social.create_group(c, "Ωmega team", [b, a])
        await s.social.set_label(a, group_id, "Al")
        group = await s.social.get_group(b, group_id)
        self.assertEqual(
            group,
            GroupInfo(
                group_id,
                "Ωmega team",
                c,
                [
                    self.member(a, "alice", "Al", sex=2, avatar="alice.png"),
                    self.contact(b, "bob", sex=1),
                    self.member(c, "carol"),
                ],
                3,
            ),
        )

    async def test_get_group_non_member_or_unknown(self) -> None:
        """get_group gives 1006 to a non-member and 1005 for an unknown group."""
        s = await self.services()
        a, b = await self.users(s, "alice", "bob")
        group_id = await s.social.create_group(a, "team", [])
        await self.assert_code(s.social.get_group(b, group_id), 1006)
        await self.assert_code(s.social.get_group(a, group_id + 1), 1005)
        await self.assert_code(s.social.get_group(a, 0), 1005)

    async def test_list_groups_only_the_users_groups(self) -> None:
        """list_groups returns exactly the user's groups, by id, each with its members."""
        s = await self.services()
        a, b, c = await self.users(s, "alice", "bob", "carol")
        g1 = await s.social.create_group(a, "one", [b])
        g2 = await s.social.create_group(c, "two", [a])
        g3 = await s.social.create_group(c, "three", [])
        g4 = await s.social.create_group(b, "four", [c])
        groups = await self.groups(s, a)
        self.assertEqual(
            groups,
            [
                GroupInfo(g1, "one", a, [self.contact(a, "alice"), self.member(b, "bob")], 2),
                GroupInfo(g2, "two", c, [self.contact(a, "alice"), self.member(c, "carol")], 2),
            ],
        )
        self.assertEqual([g.id for g in await self.groups(s, c)], [g2, g3, g4])
        self.assertEqual([g.id for g in await self.groups(s, b)], [g1, g4])
        await s.social.remove_members(c, g2, [a])
        self.assertEqual([g.id for g in await self.groups(s, a)], [g1])
        d = await self.user(s, "dave")
        self.assertEqual(await self.groups(s, d), [])

    # limits (issue 11)

    def limit(self, s: Services, **limits: int) -> None:
        """Replace the service with one under the given limits."""
        s.social = SocialService(s.account_store, s.social_store, reactor, limits=SocialLimits(**limits))

    async def test_group_size_limit(self) -> None:
        """Creating or growing a group past group_size gives 1008 and changes nothing."""
        s = await self.services()
        a, b, c, d = await self.users(s, "alice", "bob", "carol", "dave")
        self.limit(s, group_size=3)
        await self.assert_code(s.social.create_group(a, "big", [b, c, d]), 1008)
        self.assertEqual(await self.group_count(s), 0)
        group_id = await s.social.create_group(a, "team", [b])
        await s.social.add_members(a, group_id, [b, c])
        await self.assert_code(s.social.add_members(a, group_id, [d]), 1008)
        await self.assert_code(s.social.add_members(a, group_id, [b, d]), 1008)
        self.assertEqual(await self.member_ids(s, a, group_id), [a, b, c])
        await s.social.add_members(a, group_id, [a, b, c])  # nobody new: still allowed

    async def test_groups_per_user_limit(self) -> None:
        """A user in groups_per_user groups cannot create, be put in or be added to another (1009)."""
        s = await self.services()
        a, b, c = await self.users(s, "alice", "bob", "carol")
        self.limit(s, groups_per_user=2)
        g1 = await s.social.create_group(a, "one", [])
        await s.social.create_group(b, "two", [a])
        await self.assert_code(s.social.create_group(a, "three", []), 1009)
        error = await self.assert_code(s.social.create_group(c, "four", [a]), 1009)
        self.assertIn(f"user {a}", error.message)
        g5 = await s.social.create_group(c, "five", [b])
        await self.assert_code(s.social.add_members(c, g5, [a]), 1009)
        self.assertEqual(await self.member_ids(s, c, g5), [b, c])
        await s.social.remove_members(a, g1, [a])
        await s.social.add_members(c, g5, [a])
        self.assertEqual(await self.member_ids(s, c, g5), [a, b, c])

    async def test_friends_per_user_limit(self) -> None:
        """A new friendship past friends_per_user on either side gives 1010; relabelling a friend does not count."""
        s = await self.services()
        a, b, c, d = await self.users(s, "alice", "bob", "carol", "dave")
        self.limit(s, friends_per_user=2)
        await s.social.add_friend(a, b, "")
        await s.social.add_friend(a, c, "")
        await self.assert_code(s.social.add_friend(a, d, ""), 1010)
        error = await self.assert_code(s.social.add_friend(d, a, ""), 1010)
        self.assertIn(f"user {a}", error.message)
        await s.social.add_friend(a, b, "again")
        self.assertEqual([f.user_id for f in await self.friends(s, a)], [b, c])
        await s.social.delete_friend(a, c)
        await s.social.add_friend(d, a, "")
        self.assertEqual([f.user_id for f in await self.friends(s, a)], [b, d])

    async def test_limits_hold_under_concurrent_requests(self) -> None:
        """Concurrent befriendings and additions cannot overshoot the limits (the check is inside the transaction)."""
        from twisted.internet.defer import Deferred, DeferredList

        s = await self.services()
        a, *others = await self.users(s, "alice", "u1", "u2", "u3", "u4", "u5", "u6")
        self.limit(s, friends_per_user=3, group_size=4)

        async def outcomes(calls: list) -> list[bool]:  # type: ignore[type-arg]
            results = await DeferredList([Deferred.fromCoroutine(c) for c in calls], consumeErrors=True)
            return [ok for ok, _ in results]

        befriended = await outcomes([s.social.add_friend(a, u, "") for u in others])
        self.assertEqual(sum(befriended), 3)
        self.assertEqual(len(await self.friends(s, a)), 3)
        group_id = await s.social.create_group(a, "team", [])
        added = await outcomes([s.social.add_members(a, group_id, [u]) for u in others])
        self.assertEqual(sum(added), 3)
        self.assertEqual(len(await self.member_ids(s, a, group_id)), 4)

    async def test_friend_pages(self) -> None:
        """list_friends pages by user id with a cursor; the page size is capped at FRIEND_PAGE."""
        s = await self.services()
        a, *others = await self.users(s, "alice", "u1", "u2", "u3", "u4", "u5")
        for u in others:
            await s.social.add_friend(a, u, "")
        first = await s.social.list_friends(a, limit=2)
        self.assertEqual(([f.user_id for f in first.items], first.next), (others[:2], others[1]))
        second = await s.social.list_friends(a, after=first.next or 0, limit=2)
        third = await s.social.list_friends(a, after=second.next or 0, limit=2)
        self.assertEqual([f.user_id for f in second.items + third.items], others[2:])
        self.assertIsNone(third.next)
        self.patch(social_module, "FRIEND_PAGE", 3)
        capped = await s.social.list_friends(a, limit=10**6)
        self.assertEqual((len(capped.items), capped.next), (3, others[2]))

    async def test_group_pages_and_member_pages(self) -> None:
        """list_groups pages groups; members past MEMBER_PAGE come from group_members by cursor."""
        s = await self.services()
        a, b, c, d = await self.users(s, "alice", "bob", "carol", "dave")
        groups = [await s.social.create_group(a, f"g{i}", [b, c, d]) for i in range(3)]
        page = await s.social.list_groups(a, limit=2)
        self.assertEqual(([g.id for g in page.items], page.next), (groups[:2], groups[1]))
        rest = await s.social.list_groups(a, after=page.next or 0)
        self.assertEqual(([g.id for g in rest.items], rest.next), (groups[2:], None))
        self.patch(social_module, "MEMBER_PAGE", 2)
        group = await s.social.get_group(a, groups[0])
        self.assertEqual(([u.user_id for u in group.users], group.member_count, group.members_next), ([a, b], 4, b))
        members = await s.social.group_members(a, groups[0], after=group.members_next or 0)
        self.assertEqual(([u.user_id for u in members.items], members.next), ([c, d], None))
        await self.assert_code(s.social.group_members(d + 100, groups[0]), 1006)

    async def test_group_page_member_budget(self) -> None:
        """A page of groups ends before the member entries would pass GROUP_PAGE_MEMBERS (one group at least)."""
        s = await self.services()
        a, b, c = await self.users(s, "alice", "bob", "carol")
        g1 = await s.social.create_group(a, "big", [b, c])
        g2 = await s.social.create_group(a, "pair", [b])
        g3 = await s.social.create_group(a, "solo", [])
        self.patch(social_module, "GROUP_PAGE_MEMBERS", 4)
        page = await s.social.list_groups(a)
        self.assertEqual(([g.id for g in page.items], page.next), ([g1], g1))
        page = await s.social.list_groups(a, after=g1)
        self.assertEqual(([g.id for g in page.items], page.next), ([g2, g3], None))
        self.patch(social_module, "GROUP_PAGE_MEMBERS", 1)
        page = await s.social.list_groups(a)
        self.assertEqual(([g.id for g in page.items], page.next), ([g1], g1))

    async def test_numbers_only_for_friends(self) -> None:
        """Group members see each other's numbers only when friends; friend lists show numbers."""
        s = await self.services()
        a, b, c = await self.users(s, "alice", "bob", "carol")
        group_id = await s.social.create_group(a, "team", [b, c])
        await s.social.add_friend(a, b, "")
        numbers = {u.user_id: u.number for u in (await s.social.get_group(a, group_id)).users}
        self.assertEqual(numbers, {a: "alice", b: "bob", c: ""})
        numbers = {u.user_id: u.number for u in (await s.social.get_group(c, group_id)).users}
        self.assertEqual(numbers, {a: "", b: "", c: "carol"})
        [listed] = await self.groups(s, b)
        self.assertEqual({u.user_id: u.number for u in listed.users}, {a: "alice", b: "bob", c: ""})
        page = await s.social.group_members(c, group_id)
        self.assertEqual([u.number for u in page.items], ["", "", "carol"])


class SocialSQLiteTests(SocialTests, SQLiteBackend, TestCase):
    pass


class SocialMySQLTests(SocialTests, MySQLBackend, TestCase):
    pass
