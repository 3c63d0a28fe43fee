"""A distributed goim on this machine: logic and connect processes, their own
Redis server (so tests may kill and restart it), a fresh MariaDB database and a
unique Redis key prefix. Every process is stopped when the test ends.
"""

import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.trial.unittest import SynchronousTestCase

from tests.support.server import LOOPBACK, GoimProcess, _accepts, free_port, pause


class RedisServer:
    """A private ``redis-server`` on a free port (no persistence)."""

    def __init__(self, testcase: SynchronousTestCase) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        testcase.addCleanup(self.kill)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start it and wait until it accepts connections."""
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            if _accepts(self.port):
                return
            await pause(0.02)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL (an outage; everything it held is gone)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class MariaDBServer:
    """A private ``mariadbd`` on a free port with its own data directory, so a test
    may kill it and start it again (root, no password, over TCP)."""

    def __init__(self, testcase: SynchronousTestCase) -> None:
        self.port = free_port()
        # short: the unix socket path must stay under 108 bytes (trial's and
        # pytest's temporary paths can be longer)
        self.dir = Path(tempfile.mkdtemp(prefix="goim-mariadb-"))
        testcase.addCleanup(shutil.rmtree, self.dir, True)
        self.process: subprocess.Popen[bytes] | None = None
        self.binary = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        testcase.addCleanup(self.kill)

    @staticmethod
    def available() -> bool:
        return shutil.which("mariadb-install-db") is not None and (
            shutil.which("mariadbd") is not None or Path("/usr/sbin/mariadbd").exists()
        )

    @property
    def url(self) -> str:
        """The URL of the database ``goim`` on this server."""
        return f"mysql://root@127.0.0.1:{self.port}/goim"

    async def start(self) -> None:
        """Create the data directory on the first start; start; wait until it answers."""
        data = self.dir / "data"
        first = not data.exists()
        if first:
            subprocess.run(
                ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                 "--auth-root-authentication-method=normal", "--skip-test-db"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
            )
        self.process = subprocess.Popen(
            [self.binary, "--no-defaults", f"--datadir={data}", f"--socket={self.dir / 'sock'}",
             f"--port={self.port}", "--bind-address=127.0.0.1", "--user=root", "--skip-log-bin",
             "--innodb-buffer-pool-size=32M", f"--pid-file={self.dir / 'pid'}", f"--log-error={self.dir / 'err.log'}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import pymysql

        for _ in range(300):
            try:
                connection = pymysql.connect(host="127.0.0.1", port=self.port, user="root", autocommit=True)
            except pymysql.err.OperationalError:
                await pause(0.05)
                continue
            with connection.cursor() as cursor:
                if first:
                    cursor.execute("CREATE DATABASE goim CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            connection.close()
            return
        error_log = (self.dir / "err.log").read_text(errors="replace") if (self.dir / "err.log").exists() else ""
        raise AssertionError(f"mariadbd did not start:\n{error_log[-3000:]}")

    def kill(self) -> None:
        """SIGKILL (a crash: InnoDB recovers committed transactions at the next start)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class Cluster:
    """N logic nodes and M connect nodes sharing one database and one Redis.

    Every node listens on ports the kernel picks (the shared harness reads them
    back); a connect node is told the logic nodes' PB ports when it first starts.
    """

    def __init__(
        self, testcase: Any, *, logic_nodes: int = 2, connect_nodes: int = 2, database: str | None = None
    ) -> None:
        """
        Args:
            database: the database URL; by default a fresh one on the test backend.
        """
        self.testcase = testcase
        self.redis = RedisServer(testcase)
        self.prefix = f"goimtest{secrets.token_hex(4)}:"
        if database is None:
            database = testcase.database_url()
            testcase.addCleanup(testcase._drop, database)
        self.database = database
        secret_dir = Path(testcase.mktemp()).absolute()
        secret_dir.mkdir(parents=True)
        self.secret_file = secret_dir / "secret"
        self.secret_file.write_text(secrets.token_hex(16))
        shared = ["--redis", self.redis.url, "--redis-prefix", self.prefix, "--secret-file", str(self.secret_file)]
        self.logic: list[GoimProcess] = [
            GoimProcess(
                testcase,
                "goim-logic",
                {"--http": LOOPBACK, "--pb": LOOPBACK},
                ["--database", self.database, *shared, "--node-id", f"l{i + 1}"],
            )
            for i in range(logic_nodes)
        ]
        self.connect: list[GoimProcess] = [
            GoimProcess(
                testcase,
                "goim-connect",
                {"--tcp": LOOPBACK, "--http": LOOPBACK},
                [*shared, "--node-id", f"c{i + 1}"],
            )
            for i in range(connect_nodes)
        ]

    @property
    def pb_ports(self) -> list[int]:
        """The logic nodes' PB ports (known once they started)."""
        return [node.port("--pb") for node in self.logic]

    async def start(self) -> None:
        """Redis, then the logic nodes one by one (the first migrates), then connect nodes."""
        await self.start_logic()
        await self.start_connect()

    async def start_logic(self) -> None:
        """Redis, then the logic nodes one by one (the first migrates)."""
        await self.redis.start()
        for node in self.logic:
            await node.start()

    async def start_connect(self) -> None:
        """The connect nodes, told the logic nodes' PB ports (after ``start_logic``)."""
        logic = ",".join(f"127.0.0.1:{p}" for p in self.pb_ports)
        for node in self.connect:
            if "--logic" not in node.args:
                node.args[:0] = ["--logic", logic]
            await node.start()

    def tcp_port(self, i: int) -> int:
        return self.connect[i].tcp_port

    def http(self, i: int = 0) -> str:
        return self.logic[i].http

    def logs(self) -> str:
        """Every process's log, for failure messages."""
        return "\n".join(f"===== {p.plugin} {p.args[-1]}\n{p.log_text()[-6000:]}" for p in [*self.logic, *self.connect])


def kill_database_connections(url: str) -> int:
    """KILL every server connection to the database of ``url`` (as a MySQL restart would drop them)."""
    import pymysql

    parts = urlsplit(url)
    admin = pymysql.connect(
        host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
        password=parts.password or "", autocommit=True,
    )
    try:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()",
                (parts.path.lstrip("/"),),
            )
            ids = [row[0] for row in cursor.fetchall()]
            for connection_id in ids:
                try:
                    cursor.execute(f"KILL {int(connection_id)}")
                except pymysql.err.OperationalError:
                    pass  # gone already
        return len(ids)
    finally:
        admin.close()
