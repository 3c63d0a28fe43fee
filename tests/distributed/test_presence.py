"""RedisPresence against a real Redis, each test under its own key prefix."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from goim.distributed.presence import LOCATE_CHUNK, Entry, RedisPresence
from goim.types import connection_id
from tests.support.redis import RedisTestMixin


def conn(node: str, serial: int = 1, boot: str = "b0") -> str:
    """A connection id of ``node``."""
    return connection_id(node, boot, serial)


class EntryTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """An entry encodes as "<conn>|<epoch>" and decodes (from str or bytes) to itself, node included."""
        entry = Entry(conn("c1", 7, "ab12"), 3)
        self.assertEqual(entry.encode(), "c1/ab12/7|3")
        self.assertEqual(Entry.decode("c1/ab12/7|3"), entry)
        self.assertEqual(Entry.decode(b"c1/ab12/7|3"), entry)
        self.assertEqual(entry.node, "c1")

    def test_values_in_no_known_format_decode_to_none(self) -> None:
        """A bare node id (the old format) and other malformed values decode to None."""
        for value in ["c1", "c1|3", "c1/b/7", "c1/b/7|", "c1/b/7|x", "c1/7|3", "a/b/c/7|3", b""]:
            self.assertIsNone(Entry.decode(value), repr(value))


class PresenceTests(RedisTestMixin, TestCase):
    def presence(self, clock: Clock | None = None) -> RedisPresence:
        redis, keys = self.open_redis()
        return RedisPresence(redis, keys, node_ttl=30, clock=clock)

    async def members(self, p: RedisPresence, node: str) -> set[str]:
        """The node's set of ``user:device``."""
        return {str(m) for m in await p.redis.call("smembers", p.keys.node_devices(node))}

    async def test_online_returns_the_previous_entry(self) -> None:
        """online returns (True, None) for a first sign-in, then (True, the entry it replaced)."""
        p = self.presence()
        first, second = conn("c1"), conn("c2")
        self.assertEqual(await p.online(device_id=10, user_id=1, conn=first, epoch=4), (True, None))
        self.assertEqual(await p.online(device_id=10, user_id=1, conn=second, epoch=5), (True, Entry(first, 4)))
        self.assertEqual(await p.online(device_id=10, user_id=1, conn=second, epoch=5), (True, Entry(second, 5)))
        self.assertEqual(await p.entry(device_id=10, user_id=1), Entry(second, 5))

    async def test_online_records_the_device_in_the_node_set(self) -> None:
        """online adds user:device to the set of the connection's node, which clear_node reads."""
        p = self.presence()
        await p.online(device_id=10, user_id=1, conn=conn("c1", 1), epoch=0)
        await p.online(device_id=11, user_id=1, conn=conn("c1", 2), epoch=0)
        self.assertEqual(await self.members(p, "c1"), {"1:10", "1:11"})

    async def test_newer_connection_of_the_same_boot_supersedes(self) -> None:
        """A sign-in finishing after a newer one of the same node boot is not taken and changes nothing."""
        p = self.presence()
        newer, older = conn("c1", 10), conn("c1", 9)  # "10" < "9" as text: serials compare as numbers
        await p.online(device_id=10, user_id=1, conn=newer, epoch=2)
        self.assertEqual(await p.online(device_id=10, user_id=1, conn=older, epoch=1), (False, Entry(newer, 2)))
        self.assertEqual(await p.entry(device_id=10, user_id=1), Entry(newer, 2))
        # a still newer connection of that boot takes over as usual
        newest = conn("c1", 11)
        self.assertEqual(await p.online(device_id=10, user_id=1, conn=newest, epoch=3), (True, Entry(newer, 2)))
        self.assertEqual(await p.entry(device_id=10, user_id=1), Entry(newest, 3))

    async def test_serials_of_another_boot_or_node_do_not_protect(self) -> None:
        """A lower serial of another boot of the same node, or of another node, overwrites the entry."""
        p = self.presence()
        old_boot = conn("c1", 50, "before")
        restarted = conn("c1", 1, "after")
        await p.online(device_id=10, user_id=1, conn=old_boot, epoch=1)
        self.assertEqual(await p.online(device_id=10, user_id=1, conn=restarted, epoch=2), (True, Entry(old_boot, 1)))
        self.assertEqual(await p.entry(device_id=10, user_id=1), Entry(restarted, 2))
        # another node whose id shares a prefix ("c1" / "c10") is another node too
        await p.online(device_id=11, user_id=1, conn=conn("c10", 50, "after"), epoch=1)
        taken, previous = await p.online(device_id=11, user_id=1, conn=conn("c1", 1, "after"), epoch=1)
        self.assertEqual((taken, previous), (True, Entry(conn("c10", 50, "after"), 1)))

    async def test_offline_removes_the_entry_of_its_connection(self) -> None:
        """offline of the connection the entry names removes the entry and its set member."""
        p = self.presence()
        await p.online(device_id=10, user_id=1, conn=conn("c1"), epoch=0)
        await p.offline(device_id=10, user_id=1, conn=conn("c1"))
        self.assertIsNone(await p.entry(device_id=10, user_id=1))
        self.assertEqual(await self.members(p, "c1"), set())

    async def test_late_offline_from_the_old_node_keeps_the_new_entry(self) -> None:
        """Compare-and-delete: node A's late offline after the device moved to B leaves B's entry."""
        p = self.presence()
        await p.online(device_id=10, user_id=1, conn=conn("a"), epoch=0)
        await p.online(device_id=10, user_id=1, conn=conn("b"), epoch=1)
        await p.offline(device_id=10, user_id=1, conn=conn("a"))
        self.assertEqual(await p.entry(device_id=10, user_id=1), Entry(conn("b"), 1))
        # A's set no longer lists the device; B's still does
        self.assertEqual(await self.members(p, "a"), set())
        self.assertEqual(await self.members(p, "b"), {"1:10"})

    async def test_late_offline_of_an_old_connection_of_the_same_node_keeps_the_new_entry(self) -> None:
        """offline of an older connection on the same node keeps the newer entry and the node set member."""
        p = self.presence()
        old, new = conn("c1", 1), conn("c1", 2)
        await p.online(device_id=10, user_id=1, conn=old, epoch=0)
        await p.online(device_id=10, user_id=1, conn=new, epoch=1)
        await p.offline(device_id=10, user_id=1, conn=old)
        self.assertEqual(await p.entry(device_id=10, user_id=1), Entry(new, 1))
        self.assertEqual(await self.members(p, "c1"), {"1:10"})
        # the same for a connection of an earlier boot of the node
        await p.offline(device_id=10, user_id=1, conn=conn("c1", 2, "earlier"))
        self.assertEqual(await p.entry(device_id=10, user_id=1), Entry(new, 1))
        self.assertEqual(await self.members(p, "c1"), {"1:10"})
        # and the newer connection's own offline still removes both
        await p.offline(device_id=10, user_id=1, conn=new)
        self.assertIsNone(await p.entry(device_id=10, user_id=1))
        self.assertEqual(await self.members(p, "c1"), set())

    async def test_offline_leaves_sibling_devices(self) -> None:
        """offline of one device leaves the user's other devices online."""
        p = self.presence()
        await p.online(device_id=10, user_id=1, conn=conn("c1"), epoch=0)
        await p.online(device_id=11, user_id=1, conn=conn("c2"), epoch=0)
        await p.offline(device_id=10, user_id=1, conn=conn("c1"))
        self.assertEqual(await p.entry(device_id=11, user_id=1), Entry(conn("c2"), 0))

    async def test_offline_of_an_unknown_device_is_harmless(self) -> None:
        """offline for a device with no entry (or under another user) changes nothing and does not fail."""
        p = self.presence()
        await p.online(device_id=10, user_id=1, conn=conn("c1"), epoch=0)
        await p.offline(device_id=99, user_id=1, conn=conn("c1"))
        await p.offline(device_id=10, user_id=2, conn=conn("c1"))
        self.assertEqual(await p.entry(device_id=10, user_id=1), Entry(conn("c1"), 0))

    async def test_locate_filters_nodes_without_liveness(self) -> None:
        """locate returns, for several users at once, only devices on nodes that beat."""
        p = self.presence()
        await p.online(device_id=10, user_id=1, conn=conn("live1", 1), epoch=0)
        await p.online(device_id=11, user_id=1, conn=conn("dead", 1), epoch=0)
        await p.online(device_id=20, user_id=2, conn=conn("live2", 1), epoch=0)
        await p.online(device_id=21, user_id=2, conn=conn("live1", 2), epoch=0)
        await p.online(device_id=30, user_id=3, conn=conn("dead", 2), epoch=0)
        await p.beat("live1")
        await p.beat("live2")
        located = await p.locate([1, 2, 3, 4, 2])
        self.assertEqual(
            located,
            {1: {10: "live1"}, 2: {20: "live2", 21: "live1"}, 3: {}, 4: {}},
        )

    async def test_locate_reuses_a_live_node_for_a_second(self) -> None:
        """A node locate found alive counts as alive for ALIVE_REUSE seconds without
        asking Redis; after that its expired (here: deleted) key drops its devices."""
        clock = Clock()
        p = self.presence(clock)
        await p.online(device_id=10, user_id=1, conn=conn("c1"), epoch=0)
        await p.beat("c1")
        self.assertEqual(await p.locate([1]), {1: {10: "c1"}})
        await p.redis.call("delete", p.keys.node_alive("c1"))
        clock.advance(p.ALIVE_REUSE - 0.01)
        self.assertEqual(await p.locate([1]), {1: {10: "c1"}})
        clock.advance(0.02)
        self.assertEqual(await p.locate([1]), {1: {}})
        # a node not alive is not remembered as such: its first beat counts at once
        await p.beat("c1")
        self.assertEqual(await p.locate([1]), {1: {10: "c1"}})

    async def test_locate_asks_about_a_node_it_does_not_know_alive(self) -> None:
        """A node without liveness is asked about on every locate, beside nodes reused."""
        clock = Clock()
        p = self.presence(clock)
        await p.online(device_id=10, user_id=1, conn=conn("c1"), epoch=0)
        await p.online(device_id=20, user_id=2, conn=conn("c2"), epoch=0)
        await p.beat("c1")
        self.assertEqual(await p.locate([1, 2]), {1: {10: "c1"}, 2: {}})
        await p.beat("c2")
        self.assertEqual(await p.locate([1, 2]), {1: {10: "c1"}, 2: {20: "c2"}})

    async def test_locate_reads_many_users_in_chunks(self) -> None:
        """Users past one script's LOCATE_CHUNK are read by further scripts, each user's devices kept apart."""
        p = self.presence()
        await p.beat("c1")
        users = range(1, 2 * LOCATE_CHUNK + 7)
        online = [u for u in users if u % 3 == 0]
        for u in online:
            await p.online(device_id=1000 + u, user_id=u, conn=conn("c1", u), epoch=0)
        located = await p.locate(list(users))
        self.assertEqual(located, {u: ({1000 + u: "c1"} if u % 3 == 0 else {}) for u in users})

    async def test_values_in_no_known_format_are_ignored(self) -> None:
        """An entry in the old format (a bare node id) counts for neither entry nor locate."""
        p = self.presence()
        await p.redis.call("hset", p.keys.presence(1), "10", "c1")
        await p.online(device_id=11, user_id=1, conn=conn("c1"), epoch=0)
        await p.beat("c1")
        self.assertIsNone(await p.entry(device_id=10, user_id=1))
        self.assertEqual(await p.locate([1]), {1: {11: "c1"}})

    async def test_locate_nobody(self) -> None:
        """locate of no users is an empty mapping."""
        p = self.presence()
        self.assertEqual(await p.locate([]), {})

    async def test_beat_sets_a_ttl(self) -> None:
        """beat makes the liveness key expire after node_ttl seconds."""
        p = self.presence()
        await p.beat("c1")
        ttl = await p.redis.call("ttl", p.keys.node_alive("c1"))
        self.assertTrue(0 < ttl <= 30, ttl)

    async def test_beat_says_whether_the_node_was_alive(self) -> None:
        """beat returns False for the first beat and after the key expired (or was lost), True otherwise."""
        p = self.presence()
        self.assertIs(await p.beat("c1"), False)
        self.assertIs(await p.beat("c1"), True)
        self.assertIs(await p.beat("c1"), True)
        # the key expired (or Redis lost it)
        await p.redis.call("delete", p.keys.node_alive("c1"))
        self.assertIs(await p.beat("c1"), False)
        self.assertIs(await p.beat("c1"), True)
        # each node has its own key
        self.assertIs(await p.beat("c2"), False)

    async def test_alive(self) -> None:
        """alive returns the nodes among those asked whose liveness key exists."""
        p = self.presence()
        await p.beat("c1")
        await p.beat("c3")
        self.assertEqual(await p.alive(["c1", "c2", "c3"]), {"c1", "c3"})
        self.assertEqual(await p.alive(["c2"]), set())

    async def test_alive_with_no_nodes(self) -> None:
        """alive of an empty list is an empty set (and sends no empty MGET)."""
        p = self.presence()
        self.assertEqual(await p.alive([]), set())

    async def test_clear_node_removes_exactly_its_entries(self) -> None:
        """clear_node removes the node's entries and its set, and nothing of other nodes (even "gone2")."""
        p = self.presence()
        await p.online(device_id=10, user_id=1, conn=conn("gone", 1), epoch=0)
        await p.online(device_id=11, user_id=1, conn=conn("other", 1), epoch=0)
        await p.online(device_id=20, user_id=2, conn=conn("gone", 2, "earlier-boot"), epoch=0)
        await p.online(device_id=30, user_id=3, conn=conn("other", 2), epoch=0)
        await p.online(device_id=40, user_id=4, conn=conn("gone2", 1), epoch=0)
        self.assertEqual(await p.clear_node("gone"), 2)
        self.assertIsNone(await p.entry(device_id=10, user_id=1))
        self.assertIsNone(await p.entry(device_id=20, user_id=2))
        self.assertEqual(await p.entry(device_id=11, user_id=1), Entry(conn("other", 1), 0))
        self.assertEqual(await p.entry(device_id=30, user_id=3), Entry(conn("other", 2), 0))
        self.assertEqual(await p.entry(device_id=40, user_id=4), Entry(conn("gone2", 1), 0))
        self.assertEqual(await p.redis.call("exists", p.keys.node_devices("gone")), 0)
        self.assertEqual(len(await self.members(p, "other")), 2)
        self.assertEqual(await self.members(p, "gone2"), {"4:40"})

    async def test_clear_node_keeps_devices_that_moved_away(self) -> None:
        """A device that moved from the cleared node to another keeps its new entry."""
        p = self.presence()
        await p.online(device_id=10, user_id=1, conn=conn("gone"), epoch=0)
        await p.online(device_id=10, user_id=1, conn=conn("new"), epoch=0)
        self.assertEqual(await p.clear_node("gone"), 0)
        self.assertEqual(await p.entry(device_id=10, user_id=1), Entry(conn("new"), 0))

    async def test_clear_node_with_nothing(self) -> None:
        """clear_node of a node without entries removes nothing."""
        p = self.presence()
        self.assertEqual(await p.clear_node("empty"), 0)

    async def test_restore_writes_back_missing_entries_only(self) -> None:
        """restore writes back missing entries and older ones of the same node boot, keeps its own, and reports
        the connections whose device signed in elsewhere meanwhile (another node, or a newer connection here)."""
        p = self.presence()
        elsewhere, mine_before, mine_newer = conn("elsewhere"), conn("me", 12), conn("me", 31)
        await p.online(device_id=11, user_id=1, conn=elsewhere, epoch=1)
        await p.online(device_id=12, user_id=1, conn=mine_before, epoch=1)
        await p.online(device_id=13, user_id=1, conn=mine_newer, epoch=1)
        await p.online(device_id=14, user_id=1, conn=conn("me", 14), epoch=5)
        restored, lost = await p.restore(
            "me",
            [
                (1, 10, conn("me", 10), 5),
                (1, 11, conn("me", 11), 5),
                (1, 12, conn("me", 13), 5),
                (1, 13, conn("me", 30), 5),
                (1, 14, conn("me", 14), 5),
                (2, 20, conn("me", 20), 6),
            ],
        )
        self.assertEqual(restored, 3)
        self.assertEqual(sorted(lost), [(11, conn("me", 11)), (13, conn("me", 30))])
        self.assertEqual(await p.entry(device_id=10, user_id=1), Entry(conn("me", 10), 5))
        self.assertEqual(await p.entry(device_id=11, user_id=1), Entry(elsewhere, 1))
        self.assertEqual(await p.entry(device_id=12, user_id=1), Entry(conn("me", 13), 5))
        self.assertEqual(await p.entry(device_id=13, user_id=1), Entry(mine_newer, 1))
        self.assertEqual(await p.entry(device_id=14, user_id=1), Entry(conn("me", 14), 5))
        self.assertEqual(await p.entry(device_id=20, user_id=2), Entry(conn("me", 20), 6))
        # a lost device is not added to the node's set (1:13 is there from its newer connection here)
        self.assertEqual(await self.members(p, "me"), {"1:10", "1:12", "1:13", "1:14", "2:20"})
        # the restored entries are cleared with the node like any other
        await p.clear_node("me")
        self.assertEqual(await p.entry(device_id=11, user_id=1), Entry(elsewhere, 1))
        self.assertIsNone(await p.entry(device_id=10, user_id=1))
        self.assertIsNone(await p.entry(device_id=20, user_id=2))

    async def test_prefixes_are_isolated(self) -> None:
        """Two presences under different prefixes do not see each other's entries."""
        p = self.presence()
        q = self.presence()
        await p.online(device_id=10, user_id=1, conn=conn("c1"), epoch=0)
        await p.beat("c1")
        self.assertIsNone(await q.entry(device_id=10, user_id=1))
        self.assertEqual(await q.locate([1]), {1: {}})

    async def test_numeric_looking_ids_round_trip(self) -> None:
        """Node ids and boots that look like numbers ('01', '1_0', '2.50', '0012') come back unchanged."""
        p = self.presence()
        for device_id, node in enumerate(["01", "1_0", "2.50"], start=10):
            await p.online(device_id=device_id, user_id=1, conn=conn(node, 1, "0012"), epoch=0)
            await p.beat(node)
        self.assertEqual(await p.entry(device_id=10, user_id=1), Entry("01/0012/1", 0))
        self.assertEqual(
            await p.online(device_id=10, user_id=1, conn=conn("01", 2, "0012"), epoch=0), (True, Entry("01/0012/1", 0))
        )
        self.assertEqual(await p.locate([1]), {1: {10: "01", 11: "1_0", 12: "2.50"}})
