"""goim.distributed.redis: URL parsing and key names (pure), and the command wrapper."""

import gc

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from goim.distributed.redis import Keys, Redis, RedisUnavailable, RedisURL, RedisURLError
from tests.support.redis import RedisTestMixin, ScriptedRedis, wait_until
from tests.support.server import free_port


class RedisURLTests(SynchronousTestCase):
    def test_full_url(self) -> None:
        """Host, port, database and a percent-encoded password are all read."""
        self.assertEqual(
            RedisURL.parse("redis://:p%40ss%3Aword@redis.example:6380/3"),
            RedisURL(host="redis.example", port=6380, db=3, password="p@ss:word"),
        )

    def test_defaults(self) -> None:
        """Port 6379, database 0 and no password when the URL names only the host."""
        self.assertEqual(RedisURL.parse("redis://127.0.0.1"), RedisURL("127.0.0.1", 6379, 0, None))
        self.assertEqual(RedisURL.parse("redis://127.0.0.1/"), RedisURL("127.0.0.1", 6379, 0, None))

    def test_ipv6_host(self) -> None:
        """A bracketed IPv6 address gives the bare address as host."""
        self.assertEqual(RedisURL.parse("redis://[::1]:7000/1"), RedisURL("::1", 7000, 1, None))

    def test_wrong_scheme_or_no_host(self) -> None:
        """Anything but redis://host is refused with RedisURLError naming the URL."""
        for url in ("http://127.0.0.1:6379/0", "rediss://h", "127.0.0.1:6379", "redis://", "redis:///0", ""):
            with self.assertRaises(RedisURLError, msg=url) as caught:
                RedisURL.parse(url)
            self.assertIn(repr(url), str(caught.exception))

    def test_bad_port_or_db(self) -> None:
        """A non-numeric or out-of-range port and a non-numeric database are refused."""
        for url in ("redis://h:port/0", "redis://h:99999/0", "redis://h:6379/zero", "redis://h/1/2"):
            with self.assertRaises(RedisURLError, msg=url):
                RedisURL.parse(url)

    def test_negative_db_refused(self) -> None:
        """A negative database number is refused (Redis would refuse SELECT -1 at every connect)."""
        with self.assertRaises(RedisURLError):
            RedisURL.parse("redis://h/-1")

    def test_url_error_is_a_value_error(self) -> None:
        """Config parsers catch ValueError; RedisURLError is one."""
        self.assertTrue(issubclass(RedisURLError, ValueError))


class KeysTests(SynchronousTestCase):
    def test_names_under_the_prefix(self) -> None:
        """Every key and channel starts with the prefix and names its user or node."""
        keys = Keys("t1:")
        self.assertEqual(keys.presence(42), "t1:presence:42")
        self.assertEqual(keys.node_devices("c-1"), "t1:node:c-1:devices")
        self.assertEqual(keys.node_alive("c-1"), "t1:node:c-1:alive")
        self.assertEqual(keys.channel("c-1"), "t1:node:c-1")

    def test_default_prefix(self) -> None:
        """Production keys live under goim:."""
        self.assertEqual(Keys().presence(1), "goim:presence:1")

    def test_channel_and_keys_do_not_collide(self) -> None:
        """A node's channel name is none of its keys (channels and keys share the prefix)."""
        keys = Keys("p:")
        self.assertNotIn(keys.channel("n"), {keys.node_alive("n"), keys.node_devices("n"), keys.presence(1)})


class RedisCallTests(RedisTestMixin, TestCase):
    async def test_call_round_trip(self) -> None:
        """A command runs and returns Redis's reply."""
        redis, keys = self.open_redis()
        await redis.call("set", keys.prefix + "k", "value")
        self.assertEqual(await redis.call("get", keys.prefix + "k"), "value")

    async def test_unreachable_server_raises_redis_unavailable(self) -> None:
        """With nothing listening, a command fails with RedisUnavailable within the deadline."""
        redis = Redis(RedisURL("127.0.0.1", free_port()), reactor, timeout=0.3)
        self.addCleanup(redis.close)
        with self.assertRaises(RedisUnavailable):
            await redis.call("get", "goimtest:nothing")


class HandshakeTests(TestCase):
    """txredisapi's handshake (AUTH, SELECT) against a scripted server: a failure never stops reconnecting."""

    def pool(self, url: RedisURL) -> Redis:
        redis = Redis(url, reactor, timeout=5.0, poolsize=1)
        self.addCleanup(redis.close)
        return redis

    async def test_connection_lost_during_select_is_retried(self) -> None:
        """The first connection is lost waiting for SELECT's reply; the pool connects again and serves commands."""

        def script(n: int, command: list[bytes]) -> bytes | None:
            if command[0] == b"SELECT":
                return None if n == 0 else b"+OK\r\n"
            return b"+PONG\r\n"

        server, port = await ScriptedRedis.listen(self, script)
        redis = self.pool(RedisURL("127.0.0.1", port, db=3))
        self.assertEqual(await redis.call("ping"), "PONG")
        self.assertEqual(server.names(0), [b"SELECT"])
        self.assertEqual(server.names(1), [b"SELECT", b"PING"])
        self.assertIn([b"SELECT", b"3"], [c for _, c in server.commands])

    async def test_refused_password_is_retried(self) -> None:
        """An error reply to AUTH closes that connection only; once Redis takes the password, commands run."""

        def script(n: int, command: list[bytes]) -> bytes | None:
            if command[0] == b"AUTH":
                return b"-WRONGPASS invalid password\r\n" if n == 0 else b"+OK\r\n"
            return b"+PONG\r\n"

        server, port = await ScriptedRedis.listen(self, script)
        redis = self.pool(RedisURL("127.0.0.1", port, password="s3cret"))
        self.assertEqual(await redis.call("ping"), "PONG")
        self.assertEqual([server.names(0), server.names(1)], [[b"AUTH"], [b"AUTH", b"PING"]])

    async def test_database_zero_needs_no_select(self) -> None:
        """A new connection is on database 0 already: the first command is the caller's own."""
        server, port = await ScriptedRedis.listen(self, lambda n, command: b"+PONG\r\n")
        redis = self.pool(RedisURL("127.0.0.1", port))
        self.assertEqual(await redis.call("ping"), "PONG")
        self.assertEqual(server.names(0), [b"PING"])

    async def test_closing_during_the_handshake_is_quiet(self) -> None:
        """A pool closed while a connection waits for SELECT stops, and leaves no unhandled error behind."""
        server, port = await ScriptedRedis.listen(self, lambda n, command: b"")  # never answers
        redis = Redis(RedisURL("127.0.0.1", port, db=1), reactor, timeout=5.0, poolsize=2)
        await wait_until(lambda: len(server.commands) == 2, "both connections sent SELECT")
        await redis.close()
        # an unhandled failure is logged when its Deferred is collected: trial fails the test on it
        del redis
        await deferLater(reactor, 0)
        gc.collect()
        self.assertEqual(len(server.connections), 2)
