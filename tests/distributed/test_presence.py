"""RedisPresence against a real Redis, each test under its own key prefix."""

from twisted.trial.unittest import TestCase

from goim.distributed.presence import RedisPresence
from tests.support.redis import RedisTestMixin


class PresenceTests(RedisTestMixin, TestCase):
    def presence(self) -> RedisPresence:
        redis, keys = self.open_redis()
        return RedisPresence(redis, keys, node_ttl=30)

    async def test_online_returns_the_previous_node(self) -> None:
        """online returns None for a first sign-in, then the node the device was on."""
        p = self.presence()
        self.assertIsNone(await p.online(device_id=10, user_id=1, node="c1"))
        self.assertEqual(await p.online(device_id=10, user_id=1, node="c2"), "c1")
        self.assertEqual(await p.online(device_id=10, user_id=1, node="c2"), "c2")
        self.assertEqual(await p.node_of(device_id=10, user_id=1), "c2")

    async def test_online_records_the_device_in_the_node_set(self) -> None:
        """online adds user:device to the node's set, which clear_node reads."""
        p = self.presence()
        await p.online(device_id=10, user_id=1, node="c1")
        await p.online(device_id=11, user_id=1, node="c1")
        members = await p.redis.call("smembers", p.keys.node_devices("c1"))
        self.assertEqual({str(m) for m in members}, {"1:10", "1:11"})

    async def test_offline_removes_the_entry_of_its_node(self) -> None:
        """offline from the node the device is on removes its entry and its set member."""
        p = self.presence()
        await p.online(device_id=10, user_id=1, node="c1")
        await p.offline(device_id=10, user_id=1, node="c1")
        self.assertIsNone(await p.node_of(device_id=10, user_id=1))
        self.assertFalse(await p.redis.call("smembers", p.keys.node_devices("c1")))

    async def test_late_offline_from_the_old_node_keeps_the_new_entry(self) -> None:
        """Compare-and-delete: node A's late offline after the device moved to B leaves B's entry."""
        p = self.presence()
        await p.online(device_id=10, user_id=1, node="a")
        await p.online(device_id=10, user_id=1, node="b")
        await p.offline(device_id=10, user_id=1, node="a")
        self.assertEqual(await p.node_of(device_id=10, user_id=1), "b")
        # A's set no longer lists the device; B's still does
        self.assertFalse(await p.redis.call("smembers", p.keys.node_devices("a")))
        self.assertEqual({str(m) for m in await p.redis.call("smembers", p.keys.node_devices("b"))}, {"1:10"})

    async def test_offline_leaves_sibling_devices(self) -> None:
        """offline of one device leaves the user's other devices online."""
        p = self.presence()
        await p.online(device_id=10, user_id=1, node="c1")
        await p.online(device_id=11, user_id=1, node="c2")
        await p.offline(device_id=10, user_id=1, node="c1")
        self.assertEqual(await p.node_of(device_id=11, user_id=1), "c2")

    async def test_offline_of_an_unknown_device_is_harmless(self) -> None:
        """offline for a device with no entry changes nothing and does not fail."""
        p = self.presence()
        await p.online(device_id=10, user_id=1, node="c1")
        await p.offline(device_id=99, user_id=1, node="c1")
        await p.offline(device_id=10, user_id=2, node="c1")
        self.assertEqual(await p.node_of(device_id=10, user_id=1), "c1")

    async def test_locate_filters_nodes_without_liveness(self) -> None:
        """locate returns, for several users at once, only devices on nodes that beat."""
        p = self.presence()
        await p.online(device_id=10, user_id=1, node="live1")
        await p.online(device_id=11, user_id=1, node="dead")
        await p.online(device_id=20, user_id=2, node="live2")
        await p.online(device_id=21, user_id=2, node="live1")
        await p.online(device_id=30, user_id=3, node="dead")
        await p.beat("live1")
        await p.beat("live2")
        located = await p.locate([1, 2, 3, 4, 2])
        self.assertEqual(
            located,
            {1: {10: "live1"}, 2: {20: "live2", 21: "live1"}, 3: {}, 4: {}},
        )

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
        """clear_node removes the node's entries and its set, and nothing of other nodes."""
        p = self.presence()
        await p.online(device_id=10, user_id=1, node="gone")
        await p.online(device_id=11, user_id=1, node="other")
        await p.online(device_id=20, user_id=2, node="gone")
        await p.online(device_id=30, user_id=3, node="other")
        self.assertEqual(await p.clear_node("gone"), 2)
        self.assertIsNone(await p.node_of(device_id=10, user_id=1))
        self.assertIsNone(await p.node_of(device_id=20, user_id=2))
        self.assertEqual(await p.node_of(device_id=11, user_id=1), "other")
        self.assertEqual(await p.node_of(device_id=30, user_id=3), "other")
        self.assertEqual(await p.redis.call("exists", p.keys.node_devices("gone")), 0)
        self.assertEqual(len(await p.redis.call("smembers", p.keys.node_devices("other"))), 2)

    async def test_clear_node_keeps_devices_that_moved_away(self) -> None:
        """A device that moved from the cleared node to another keeps its new entry."""
        p = self.presence()
        await p.online(device_id=10, user_id=1, node="gone")
        await p.online(device_id=10, user_id=1, node="new")
        await p.clear_node("gone")
        self.assertEqual(await p.node_of(device_id=10, user_id=1), "new")

    async def test_clear_node_with_nothing(self) -> None:
        """clear_node of a node without entries removes nothing."""
        p = self.presence()
        self.assertEqual(await p.clear_node("empty"), 0)

    async def test_restore_writes_back_missing_entries_only(self) -> None:
        """restore writes back missing entries (HSETNX) and leaves an entry naming another node."""
        p = self.presence()
        await p.online(device_id=11, user_id=1, node="elsewhere")
        await p.online(device_id=12, user_id=1, node="me")
        restored = await p.restore("me", [(1, 10), (1, 11), (1, 12), (2, 20)])
        self.assertEqual(restored, 2)
        self.assertEqual(await p.node_of(device_id=10, user_id=1), "me")
        self.assertEqual(await p.node_of(device_id=11, user_id=1), "elsewhere")
        self.assertEqual(await p.node_of(device_id=12, user_id=1), "me")
        self.assertEqual(await p.node_of(device_id=20, user_id=2), "me")
        members = {str(m) for m in await p.redis.call("smembers", p.keys.node_devices("me"))}
        self.assertEqual(members, {"1:10", "1:11", "1:12", "2:20"})
        # the restored entries are cleared with the node like any other
        await p.clear_node("me")
        self.assertEqual(await p.node_of(device_id=11, user_id=1), "elsewhere")
        self.assertIsNone(await p.node_of(device_id=10, user_id=1))

    async def test_prefixes_are_isolated(self) -> None:
        """Two presences under different prefixes do not see each other's entries."""
        p = self.presence()
        q = self.presence()
        await p.online(device_id=10, user_id=1, node="c1")
        await p.beat("c1")
        self.assertIsNone(await q.node_of(device_id=10, user_id=1))
        self.assertEqual(await q.locate([1]), {1: {}})

    async def test_numeric_looking_node_ids_round_trip(self) -> None:
        """Node ids that look like numbers ('01', '1_0', '2.50') come back unchanged."""
        p = self.presence()
        for device_id, node in enumerate(["01", "1_0", "2.50"], start=10):
            await p.online(device_id=device_id, user_id=1, node=node)
            await p.beat(node)
        self.assertEqual(await p.node_of(device_id=10, user_id=1), "01")
        self.assertEqual(await p.online(device_id=10, user_id=1, node="01"), "01")
        self.assertEqual(await p.locate([1]), {1: {10: "01", 11: "1_0", 12: "2.50"}})
