"""The seeded fault soak, short: 60 s of traffic and faults on 2 logic + 2 connect
nodes must end with every property of ``tests/soak/checker.py`` holding.

Longer runs: ``scripts/soak --duration 30m --seed N`` (docs/operations.md, "Fault soak").
"""

import shutil

from twisted.trial.unittest import TestCase

from tests.soak.runner import Options, run_soak
from tests.support.db import MYSQL_ENV, mysql_server_url
from tests.support.redis import REDIS_ENV, redis_test_url

#: the seed of the suite's run (any seed must pass): its first 60 s SIGKILL a logic
#: node, a connect node and Redis, SIGSTOP a logic and a connect node, and KILL
#: the MySQL connections
SEED = 16


class SoakTests(TestCase):
    timeout = 300

    if mysql_server_url() is None or redis_test_url() is None:
        skip = f"set {MYSQL_ENV} and {REDIS_ENV} to run the fault soak"
    elif shutil.which("redis-server") is None:
        skip = "redis-server is not installed"

    async def test_seeded_fault_soak_passes(self) -> None:
        """60 s of churn and seeded faults: exactly-once, per-sender order, dense seqs,
        complete online devices, no silent session loss, healthy nodes afterwards."""
        server = mysql_server_url()
        assert server is not None
        lines: list[str] = []
        options = Options(duration=60.0, seed=SEED, mysql=server)
        result = await run_soak(options, lines.append)
        self.assertTrue(
            result.passed,
            f"soak failed: first violated property {result.verdict.first}\n" + "\n".join(lines[-60:]),
        )
        # the run really exercised the cluster
        self.assertGreater(result.verdict.stats.get("sends_acked", 0), 200)
        self.assertGreater(result.verdict.stats.get("faults", 0), 3)
