"""A process that cannot start exits non-zero with one line naming the cause and the fix.

Real ``twistd`` processes, one per cause: port in use, unopenable SQLite file, unknown
MySQL database, unreachable MySQL, unreachable Redis (logic and connect nodes), a
schema newer than the code. Supervisors read exit status 0 as a clean stop, so every
one of these must exit 1, without a traceback.
"""

import secrets
import socket
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.support.db import MySQLBackend, mysql_server_url
from tests.support.server import free_port, run_to_exit

LOCAL = "interface=127.0.0.1"


class StartFailureMixin:
    """Helpers: run a plugin to its exit and check the status and the one line."""

    def assert_failed_start(self: TestCase, status: int, output: str, *expected: str) -> None:
        self.assertEqual(status, 1, output)
        self.assertNotIn("Traceback", output)
        lines = [line for line in output.splitlines() if "cannot start:" in line]
        self.assertEqual(len(lines), 1, output)
        for text in expected:
            self.assertIn(text, lines[0])

    def sqlite(self: TestCase) -> str:
        return f"sqlite:{Path(self.mktemp()).resolve()}.db"

    def secret_file(self: TestCase) -> str:
        path = Path(self.mktemp())
        path.write_text(secrets.token_hex(16))
        return str(path.resolve())


class StandaloneStartFailureTests(StartFailureMixin, TestCase):
    """``twistd goim`` with SQLite."""

    async def test_port_in_use(self) -> None:
        """A client port that another socket holds: status 1, the port named, ss and the fix in the line."""
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        status, output = await run_to_exit(
            self,
            "goim",
            ["--database", self.sqlite(), "--tcp", f"tcp:{port}:{LOCAL}", "--http", f"tcp:0:{LOCAL}"],
        )
        self.assert_failed_start(status, output, f"port {port} is in use", "ss -ltnp")

    async def test_unopenable_sqlite_file(self) -> None:
        """An SQLite path in a directory that does not exist: status 1 and the path in the line."""
        missing = Path(self.mktemp()).resolve() / "no" / "such" / "dir" / "goim.db"
        status, output = await run_to_exit(
            self,
            "goim",
            ["--database", f"sqlite:{missing}", "--tcp", f"tcp:0:{LOCAL}", "--http", f"tcp:0:{LOCAL}"],
        )
        self.assert_failed_start(status, output, "cannot open the SQLite file", str(missing))

    async def test_schema_newer_than_code(self) -> None:
        """A database migrated by a newer goim: status 1, "upgrade goim"."""
        import sqlite3

        url = self.sqlite()
        connection = sqlite3.connect(url[len("sqlite:") :])
        connection.execute("CREATE TABLE schema_version (version INTEGER NOT NULL PRIMARY KEY)")
        connection.execute("INSERT INTO schema_version VALUES (9999)")
        connection.commit()
        connection.close()
        status, output = await run_to_exit(
            self, "goim", ["--database", url, "--tcp", f"tcp:0:{LOCAL}", "--http", f"tcp:0:{LOCAL}"]
        )
        self.assert_failed_start(status, output, "upgrade goim", "9999")


class NodeStartFailureTests(StartFailureMixin, MySQLBackend, TestCase):
    """``twistd goim-logic`` and ``goim-connect`` against MySQL and Redis."""

    def redis_url(self) -> str:
        return "redis://127.0.0.1:6379/0"

    def logic_args(self, database: str, redis: str) -> list[str]:
        return [
            "--database", database,
            "--secret-file", self.secret_file(),
            "--redis", redis,
            "--redis-prefix", f"goimtest{secrets.token_hex(4)}:",
            "--http", f"tcp:0:{LOCAL}",
            "--pb", f"tcp:0:{LOCAL}",
        ]  # fmt: skip

    async def test_unknown_mysql_database(self) -> None:
        """A database that does not exist: status 1, its name and the CREATE DATABASE to run."""
        server = mysql_server_url()
        assert server is not None
        name = f"goim_missing_{secrets.token_hex(4)}"
        status, output = await run_to_exit(self, "goim-logic", self.logic_args(f"{server}/{name}", self.redis_url()))
        self.assert_failed_start(status, output, name, f"CREATE DATABASE `{name}`")

    async def test_unreachable_mysql(self) -> None:
        """Nothing listening at the MySQL address: status 1, "cannot reach MySQL"."""
        port = free_port()
        status, output = await run_to_exit(
            self, "goim-logic", self.logic_args(f"mysql://root@127.0.0.1:{port}/goim", self.redis_url()), timeout=60
        )
        self.assert_failed_start(status, output, "cannot reach MySQL")

    async def test_unreachable_redis_logic(self) -> None:
        """A logic node whose Redis does not answer: status 1, the Redis address in the line."""
        database = self.database_url()
        self.addCleanup(self._drop, database)
        port = free_port()
        status, output = await run_to_exit(
            self, "goim-logic", self.logic_args(database, f"redis://127.0.0.1:{port}/0"), timeout=60
        )
        self.assert_failed_start(status, output, "cannot reach Redis", f"127.0.0.1:{port}")

    async def test_unreachable_redis_connect(self) -> None:
        """A connect node whose Redis does not answer: status 1, the Redis address in the line."""
        port = free_port()
        status, output = await run_to_exit(
            self,
            "goim-connect",
            [
                "--node-id", "c1",
                "--secret-file", self.secret_file(),
                "--logic", f"127.0.0.1:{free_port()}",
                "--redis", f"redis://127.0.0.1:{port}/0",
                "--tcp", f"tcp:0:{LOCAL}",
            ],  # fmt: skip
            timeout=60,
        )
        self.assert_failed_start(status, output, "cannot reach Redis", f"127.0.0.1:{port}")

    async def test_missing_secret_file(self) -> None:
        """A secret file that does not exist is a usage error: status 1, the option named."""
        missing = str(Path(self.mktemp()).resolve())
        status, output = await run_to_exit(
            self, "goim-connect", ["--node-id", "c1", "--secret-file", missing, "--tcp", f"tcp:0:{LOCAL}"]
        )
        self.assertEqual(status, 1, output)
        self.assertIn("secret", output)
        self.assertNotIn("Traceback", output)
