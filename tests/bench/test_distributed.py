"""``goim-bench --quick --cpus 0:1 --setup 2+2 one-to-one group`` end to end: a
distributed goim (2 logic + 2 connect nodes, a scratch MariaDB database, a private
Redis) started by the suite, pinned as in the reporting mode, both scenarios verified
through sync, the devices spread over both connect nodes, and everything stopped and
dropped afterwards. Speed is never asserted.

Needs MariaDB (``GOIM_TEST_MYSQL``) and ``redis-server``; about 50 s here. On a
one-CPU machine it runs unpinned.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 240


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is gone for our purposes
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class DistributedQuickRunTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.mysql = os.environ.get("GOIM_TEST_MYSQL")
        if not self.mysql:
            raise SkipTest("GOIM_TEST_MYSQL is not set (a MariaDB server URL)")
        if shutil.which("redis-server") is None:
            raise SkipTest("no redis-server on PATH")

    def test_quick_run_on_two_plus_two(self) -> None:
        """Both scenarios verify on 2 logic + 2 connect nodes; the devices use both connect
        nodes; the report shows the setup; no process or database is left behind."""
        output = Path(self.mktemp()).resolve()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = str(ROOT)
        assert self.mysql is not None
        database = "mysql://" + urlsplit(self.mysql).netloc
        pinned = (os.cpu_count() or 1) >= 2
        cpus = ["--cpus", "0:1"] if pinned else []
        try:
            run = subprocess.run(
                [sys.executable, "-m", "goim_bench.cli", "--quick", "--setup", "2+2", "--database", database,
                 *cpus, "--output", str(output), "one-to-one", "group"],  # fmt: skip
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=DEADLINE_S,
            )
        except subprocess.TimeoutExpired as e:
            self.fail(f"goim-bench did not finish in {DEADLINE_S} s:\n{(e.output or b'')[-4000:]!r}")
        text = run.stdout.decode(errors="replace")
        summary = text[text.rfind("goim-bench results") :]
        self.assertEqual(run.returncode, 0, f"exit status {run.returncode}:\n{summary or text[-4000:]}")
        self.assertIn("Setups side by side, same run:", summary)
        for name in ("one-to-one", "group"):
            result = json.loads((output / f"{name}@2+2.json").read_text())
            self.assertIs(result["verified"], True, f"{name}: {result.get('errors')} {result.get('verification')}")
            self.assertEqual(result["scenario"], name)
            self.assertEqual(result["setup"]["name"], "2+2")
            described = result["server"]
            self.assertEqual((described["logic_nodes"], described["connect_nodes"]), (2, 2))
            self.assertEqual(len(described["tcp"]), 2)
            spread = described["devices_per_connect_node"]
            self.assertEqual(sorted(spread), ["c1", "c2"], spread)
            self.assertTrue(all(count > 0 for count in spread.values()), spread)
            if pinned:
                # every node and Redis ran on the server's CPU, as the kernel reports it
                self.assertEqual(described["cpus_allowed"], {n: "0" for n in ("l1", "l2", "c1", "c2", "redis")})
                self.assertEqual(result["pinned"], {"server": "0", "load": "1"})
            self.assertEqual((output / f"{name}@2+2.png").read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
            # everything the run started is gone
            for pid in [*described["pids"].values(), described["redis_pid"]]:
                self.assertFalse(_alive(pid), f"{name}: process {pid} still runs")
            self.assertFalse(self.database_exists(described["database_name"]), described["database_name"])
        report = subprocess.run(
            [sys.executable, "-m", "goim_bench.report", str(output)], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
        )  # fmt: skip
        self.assertEqual(report.returncode, 0, report.stdout.decode(errors="replace"))
        self.assertIn("| measure | 2 logic + 2 connect (MariaDB, Redis) |", report.stdout.decode())

    def database_exists(self, name: str) -> bool:
        import pymysql

        assert self.mysql is not None
        parts = urlsplit(self.mysql)
        conn = pymysql.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                               user=parts.username or "root", password=parts.password or "")  # fmt: skip
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = %s", (name,))
                row = cursor.fetchone()
                return bool(row and row[0])
        finally:
            conn.close()
