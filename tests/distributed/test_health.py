"""A logic node's /healthz probes MySQL and Redis; each role exports only its metrics."""

from __future__ import annotations

import secrets

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from goim.distributed.nodes import LogicNodeConfig, LogicNodeService
from goim.metrics import Metrics
from tests.distributed.harness import RedisServer
from tests.support.db import MySQLBackend


class LogicHealthTests(MySQLBackend, TestCase):
    timeout = 60

    async def test_health_shows_database_and_redis(self) -> None:
        """Both answer: database_ok and redis_ok; Redis killed: redis_ok false with the
        reason, the database still ok."""
        redis = RedisServer(self)
        await redis.start()
        url = self.database_url()
        self.addCleanup(self._drop, url)
        service = LogicNodeService(
            LogicNodeConfig(
                database=url,
                secret=b"s" * 32,
                node_id="l1",
                redis=redis.url,
                redis_prefix=f"t{secrets.token_hex(4)}:",
            ),
            reactor,
        )
        service.HEALTH_TIMEOUT = 1.0
        self.addCleanup(service.container.get_database().close)
        self.addCleanup(service.redis.close)
        data = await service.health()
        self.assertEqual(
            (data["mode"], data["node"], data["database_ok"], data["redis_ok"]), ("logic", "l1", True, True)
        )
        redis.kill()
        data = await service.health()
        self.assertEqual((data["database_ok"], data["redis_ok"]), (True, False))
        self.assertIn("redis_error", data)


class RoleMetricsTests(SynchronousTestCase):
    def families(self, role: str) -> set[str]:
        text = Metrics(role).render().decode()
        return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}

    def test_each_role_exports_only_what_it_produces(self) -> None:
        """Connect nodes: connections and Redis timings; logic nodes: no connection
        gauge; standalone: no Redis timings; every role: full-collection pauses and the
        process collector."""
        connect, logic, standalone = self.families("connect"), self.families("logic"), self.families("standalone")
        goim = lambda names: {n for n in names if n.startswith("goim_")}  # noqa: E731
        self.assertEqual(
            goim(connect),
            {"goim_connections", "goim_redis_command_seconds", "goim_gc_full_seconds", "goim_gc_full_seconds_created"},
        )
        self.assertNotIn("goim_connections", logic)
        self.assertIn("goim_redis_command_seconds", logic)
        self.assertIn("goim_sends_total", logic)
        self.assertNotIn("goim_redis_command_seconds", standalone)
        for names in (connect, logic, standalone):
            self.assertIn("goim_gc_full_seconds", names)
            self.assertTrue({"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"} <= names)

    def test_unexported_families_still_count(self) -> None:
        """A component may touch a family its role does not export: nothing breaks and
        nothing shows."""
        metrics = Metrics("connect")
        metrics.sends.labels("0").inc()
        self.assertNotIn(b"goim_sends", metrics.render())
        self.assertRaises(ValueError, Metrics, "nope")
